"""Mechanism detection: the reference examples (docs/mechanisms.md#reference-examples), the exact path split,
flags and thresholds, width scaling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from scipy.integrate import solve_ivp

import featlearn as fl
from featlearn import contract, grid, io, mechanism_detection, simulation, theory, validation
from featlearn.errors import InputError
from featlearn.mechanism_detection import Thresholds
from featlearn.theory import Gram, Hyperparameters

REPO = Path(__file__).resolve().parents[1]
LOG_TIME = {"stop": 100.0, "num": 201, "spacing": "log", "start": 1.0e-3}


def run_experiment(spec: dict, name: str = "e") -> xr.Dataset:
    """Trajectories of one experiment, through the simulation stage (one chunk, merged)."""
    config = validation.validate({"experiments": {name: spec}})
    experiment = grid.Experiment.from_config(config, name)
    chunk = simulation.simulate_chunk(experiment, config=config, progress=lambda message: None)
    return simulation.merge_chunks([chunk])


@pytest.fixture(scope="module")
def examples() -> tuple[xr.Dataset, xr.Dataset]:
    """The reference examples at d = 10^4 (docs/mechanisms.md#reference-examples): trajectories and mechanisms."""
    spec = {
        "solver": "flow",
        "seeds": 6,
        "time": LOG_TIME,
        "parameters": {
            "width": 10_000,
            "parametrization": ["ntk", "mean_field", "small_init"],
            "rho": [0.0, 0.5],
            "beta_star": [0.1, 1.0],
        },
    }
    trajectories = run_experiment(spec)
    return trajectories, fl.mechanisms(trajectories)


def label(code: int) -> str:
    return contract.PRIMARY_LABELS[code]


def labels_of(run: xr.Dataset) -> set[str]:
    return {label(int(c)) for c in run["primary"].values.ravel()}


# ---------------------------------------------------------------------------
# the reference examples (docs/mechanisms.md#reference-examples)


def test_mean_field_init_is_alignment(examples):
    _, detected = examples
    run = detected.sel(parametrization="mean_field", rho=0.0, beta_star=1.0)
    assert labels_of(run) == {"alignment"}
    assert run["alignment"].all() and not run["kernel"].any() and not run["disalignment"].any()
    # Reference: A_part 0.79, R_part 0.21, kernel change 0.41 (one seed-averaged run, a few % spread).
    np.testing.assert_allclose(run["a_part"].mean(), 0.79, atol=0.03)
    np.testing.assert_allclose(run["r_part"].mean(), 0.21, atol=0.03)
    np.testing.assert_allclose(run["kernel_change"].mean(), 0.41, atol=0.03)


def test_small_init_is_rescaling_with_the_alignment_flag(examples):
    _, detected = examples
    run = detected.sel(parametrization="small_init", rho=0.0, beta_star=1.0)
    assert labels_of(run) == {"rescaling"}
    assert run["alignment"].all() and run["rescaling"].all()
    # Reference: A_part 0.02, R_part 0.98, delta_c 0.99.
    np.testing.assert_allclose(run["a_part"].mean(), 0.02, atol=0.01)
    np.testing.assert_allclose(run["r_part"].mean(), 0.98, atol=0.01)
    # delta_c = 1 - c(0) with c(0) ~ N(0, 1/d): 0.99 to within a few d^-1/2.
    np.testing.assert_allclose(run["c_final"], 1.0, atol=1e-3)
    np.testing.assert_allclose(run["delta_c"].mean(), 0.99, atol=0.03)


def test_ntk_is_kernel(examples):
    _, detected = examples
    run = detected.sel(parametrization="ntk", rho=0.0, beta_star=1.0)
    assert labels_of(run) == {"kernel"}
    assert run["kernel"].all()
    assert not (run["alignment"] | run["disalignment"] | run["rescaling"]).any()
    # Reference: kernel change ~1e-4 and delta_c 0.03 at d = 10^4: both vanish like a power of d.
    assert (np.abs(run["kernel_change"]) < 1e-3).all()
    assert (np.abs(run["delta_c"]) < 0.1).all()


def test_correlated_init_with_small_target_is_disalignment(examples):
    _, detected = examples
    run = detected.sel(parametrization="mean_field", rho=0.5, beta_star=0.1)
    assert labels_of(run) == {"disalignment"}
    assert run["disalignment"].all() and not run["alignment"].any()
    # Reference: cos 0.50 -> 0.12, A_part -0.35, R_part -0.05, kernel change -0.13.
    np.testing.assert_allclose(run["c_initial"].mean(), 0.50, atol=0.02)
    np.testing.assert_allclose(run["c_final"].mean(), 0.12, atol=0.02)
    np.testing.assert_allclose(run["a_part"].mean(), -0.35, atol=0.02)
    np.testing.assert_allclose(run["r_part"].mean(), -0.05, atol=0.02)
    np.testing.assert_allclose(run["kernel_change"].mean(), -0.13, atol=0.02)


def test_fast_readout_is_kernel_although_u_turns():
    # eta_u >> eta_w: the readout moves along frozen features; K_eta hardly changes.
    spec = {
        "solver": "flow",
        "seeds": 4,
        "time": LOG_TIME,
        "parameters": {"width": 10_000, "parametrization": "mean_field", "eta_u": {"prefactor": [1.0, 1.0e4]}},
    }
    detected = fl.mechanisms(run_experiment(spec))
    balanced, imbalanced = (detected.sel(eta_u0=value) for value in (1.0, 1.0e4))
    assert labels_of(balanced) == {"alignment"}
    assert labels_of(imbalanced) == {"kernel"}
    assert (imbalanced["delta_c"] > 0.5).all()  # u and w do align ...
    assert not imbalanced["alignment"].any()  # ... yet the kernel flag, decided first, excludes it


def test_magnitudes_match_independent_computations(examples):
    trajectories, detected = examples
    initial = trajectories.isel(time=0)
    names = ("uu", "ww", "uw", "kappa", "eta_u", "eta_w", "beta_star", "sigma2")
    values = [x.transpose(*detected["primary"].dims).values for x in xr.broadcast(*(initial[name] for name in names))]
    gram0, hyper = Gram(*values[:3]), Hyperparameters(*values[3:])
    # At T = 100 every run has converged: the closed-form kernel ratio at t -> infinity applies.
    np.testing.assert_allclose(
        detected["kernel_change"], theory.final_kernel_ratio(gram0, hyper) - 1, rtol=1e-6, atol=1e-12
    )
    last = trajectories.isel(time=-1)
    np.testing.assert_allclose(detected["rho_u"], np.log(np.sqrt(last["uu"] / initial["uu"])), rtol=1e-9, atol=1e-15)
    sign = np.sign(trajectories["beta_star"])
    expected = sign * (last["cos_uw"] - initial["cos_uw"])
    np.testing.assert_allclose(detected["delta_c"], expected.transpose(*detected["delta_c"].dims), atol=1e-15)


# ---------------------------------------------------------------------------
# the exact path split


def test_path_parts_add_up_to_the_output_change_exactly(examples):
    trajectories, detected = examples
    change = trajectories["beta"] - trajectories["beta"].isel(time=0)
    scale = float(np.abs(change).max())
    np.testing.assert_allclose(detected["a_part_t"] + detected["r_part_t"], change, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(
        detected["a_part"] + detected["r_part"], change.isel(time=-1), rtol=0, atol=1e-12 * scale
    )


def test_path_parts_add_up_on_any_grid():
    rng = np.random.default_rng(3)
    n = np.abs(rng.normal(size=(5, 17))) + 0.1
    cos = rng.uniform(-1, 1, size=(5, 17))
    kappa = rng.uniform(0.1, 2, size=5)
    a_part, r_part = mechanism_detection.path_split(kappa, n, cos)
    beta = kappa[:, None] * n * cos
    np.testing.assert_allclose(a_part + r_part, beta - beta[:, :1], atol=1e-13)
    assert (a_part[:, 0] == 0).all() and (r_part[:, 0] == 0).all()


def _ode_parts(gram0: Gram, hyper: Hyperparameters, stop: float) -> tuple[float, float]:
    """Turning and norm parts integrated with the gradient-flow ODE itself (no closed form, no grid)."""
    kappa, eta_u, eta_w, beta_star, sigma2 = hyper

    def rhs(t, y):
        uu, ww, uw, _, _ = y
        force = sigma2 * kappa * (kappa * uw - beta_star)
        d_uu, d_ww, d_uw = -2 * eta_u * force * uw, -2 * eta_w * force * uw, -force * (eta_u * ww + eta_w * uu)
        n = np.sqrt(uu * ww)
        cos = uw / n
        d_n = 0.5 * n * (d_uu / uu + d_ww / ww)
        d_cos = d_uw / n - cos * d_n / n
        return [d_uu, d_ww, d_uw, kappa * n * d_cos, kappa * cos * d_n]

    solution = solve_ivp(rhs, (0, stop), [*gram0, 0.0, 0.0], method="DOP853", rtol=1e-12, atol=1e-14)
    return float(solution.y[3, -1]), float(solution.y[4, -1])


@pytest.mark.parametrize(
    ("parametrization", "rho", "beta_star"),
    [("mean_field", 0.0, 1.0), ("small_init", 0.0, 1.0), ("mean_field", 0.5, 0.1)],
)
def test_a_part_converges_with_second_order_under_grid_refinement(parametrization, rho, beta_star):
    width = 10_000
    a, b_u, b_w, c_u, c_w = grid.PARAMETRIZATIONS[parametrization]
    draw_ = theory.sample_gram(np.random.default_rng(1), width, width**-b_u, width**-b_w, rho, 1)
    gram0 = Gram(*(float(x[0]) for x in draw_))
    hyper = Hyperparameters(width**-a, width**-c_u, width**-c_w, beta_star, 1.0)
    exact_a, exact_r = _ode_parts(gram0, hyper, LOG_TIME["stop"])
    errors = []
    for num in (51, 101, 201, 401, 801):
        times = np.concatenate([[0.0], np.geomspace(LOG_TIME["start"], LOG_TIME["stop"], num - 1)])
        gram = theory.flow_trajectory(gram0, hyper, times)
        a_part, r_part = mechanism_detection.path_split(hyper.kappa, np.sqrt(gram.uu * gram.ww), theory.cosine(gram))
        errors.append(abs(a_part[-1] - exact_a))
        np.testing.assert_allclose(a_part[-1] + r_part[-1], exact_a + exact_r, atol=1e-9)
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    np.testing.assert_allclose(orders, 2.0, atol=0.25)
    assert errors[2] < 5e-5  # the 201-point log grid of the default experiments


# ---------------------------------------------------------------------------
# flags follow the thresholds


def test_flags_follow_the_thresholds(examples):
    trajectories, _ = examples
    for thresholds in (Thresholds(0.1, 0.1, 0.1), Thresholds(0.5, 0.05, 0.5), Thresholds(0.02, 1.0, 1.0e-3)):
        detected = mechanism_detection.detect(trajectories, thresholds)
        assert {k: detected.attrs[k] for k in ("eps_c", "eps_rho", "eps_K")} == thresholds._asdict()
        kernel = np.abs(detected["kernel_change"]) < thresholds.eps_K
        xr.testing.assert_equal(detected["kernel"], kernel)
        xr.testing.assert_equal(detected["alignment"], ~kernel & (detected["delta_c"] >= thresholds.eps_c))
        xr.testing.assert_equal(detected["disalignment"], ~kernel & (detected["delta_c"] <= -thresholds.eps_c))
        rescaled = np.maximum(np.abs(detected["rho_u"]), np.abs(detected["rho_w"])) >= thresholds.eps_rho
        xr.testing.assert_equal(detected["rescaling"], ~kernel & rescaled)


def test_raising_eps_K_turns_mean_field_alignment_into_kernel(examples):
    trajectories, _ = examples
    point = {"parametrization": "mean_field", "rho": 0.0, "beta_star": 1.0}  # kernel change 0.41
    assert labels_of(fl.mechanisms(trajectories, eps_K=0.1).sel(point)) == {"alignment"}
    assert labels_of(fl.mechanisms(trajectories, eps_K=0.6).sel(point)) == {"kernel"}


def test_classify_primary_rules():
    delta_c = np.array([0.5, -0.5, 0.5, 0.01, 0.5, np.nan])
    rho = np.array([0.0, 0.0, 2.0, 0.0, 0.0, np.nan])
    kernel_change = np.array([0.5, 0.5, 0.5, 0.01, 0.5, np.nan])
    a_part = np.array([0.9, -0.3, 0.1, 0.5, 0.3, np.nan])
    r_part = np.array([0.1, 0.0, 0.9, 0.0, -0.4, np.nan])
    diverged = np.array([False] * 5 + [True])
    flags = mechanism_detection.classify(
        delta_c, rho, rho, kernel_change, a_part, r_part, diverged, Thresholds(0.1, 0.1, 0.1)
    )
    assert [label(c) for c in flags["primary"]] == [
        "alignment",
        "disalignment",
        "rescaling",
        "kernel",
        "rescaling",
        "diverged",
    ]
    assert flags["rescaling"].tolist() == [False, False, True, False, False, False]
    assert not any(flags[name][-1] for name in contract.MECHANISM_FLAGS)


def test_target_sign_and_zero_target():
    cos = np.array([0.3, -0.3])
    np.testing.assert_array_equal(mechanism_detection.target_signed_cosine(cos, 1.0), cos)
    np.testing.assert_array_equal(mechanism_detection.target_signed_cosine(cos, -2.0), -cos)
    np.testing.assert_array_equal(mechanism_detection.target_signed_cosine(cos, 0.0), [0.3, 0.3])


def test_diverged_runs_are_marked_not_dropped():
    spec = {
        "solver": "gd",
        "dt": 0.5,  # step times kernel: 1 for kappa0 = 1 (stable), 400 for kappa0 = 20 (diverges)
        "seeds": 2,
        "time": {"stop": 100.0, "num": 21},
        "parameters": {"width": 10_000, "parametrization": "ntk", "kappa": {"prefactor": [1.0, 20.0]}},
    }
    trajectories = run_experiment(spec)
    assert trajectories["diverged"].sel(kappa0=20.0).all() and not trajectories["diverged"].sel(kappa0=1.0).any()
    detected = fl.mechanisms(trajectories)
    assert detected["primary"].shape == trajectories["diverged"].shape
    blown = detected.sel(kappa0=20.0)
    assert labels_of(blown) == {"diverged"}
    assert blown["diverged"].all() and np.isnan(blown["kernel_change"]).all()
    assert not any(blown[name].any() for name in contract.MECHANISM_FLAGS)
    assert labels_of(detected.sel(kappa0=1.0)) == {"kernel"}


# ---------------------------------------------------------------------------
# width scaling


@pytest.fixture(scope="module")
def width_sweep() -> xr.Dataset:
    spec = {
        "solver": "flow",
        "seeds": 32,
        "time": LOG_TIME,
        "parameters": {"parametrization": ["ntk", "mean_field"], "width": [100, 1000, 10_000, 100_000, 1_000_000]},
    }
    return fl.mechanisms(run_experiment(spec))


def test_ntk_magnitudes_vanish_at_the_theory_exponents(width_sweep):
    fit = width_sweep.sel(parametrization="ntk")
    exponent = fit["width_exponent"].to_series()
    stderr = fit["width_exponent_stderr"].to_series()
    # Theory: |delta_c| ~ d^-1/2 (cos moves by O(1)/sqrt(d)); kernel change and log norm ratios ~ d^-1.
    theory_exponents = {"delta_c": -0.5, "rho_u": -1.0, "rho_w": -1.0, "kernel_change": -1.0}
    for name, expected in theory_exponents.items():
        assert abs(exponent[name] - expected) < max(3 * stderr[name], 0.05), (name, exponent[name], stderr[name])
        assert stderr[name] < 0.1


def test_mean_field_magnitudes_stay_finite(width_sweep):
    fit = width_sweep.sel(parametrization="mean_field")
    assert (np.abs(fit["width_exponent"]) < 0.1).all()
    at_largest = mechanism_detection.seed_rms(fit[["delta_c", "kernel_change"]].isel(width=-1))
    assert float(at_largest["delta_c"]) > 0.5 and float(at_largest["kernel_change"]) > 0.3


def test_width_fit_recovers_a_known_power_law():
    widths = np.array([10, 100, 1000, 10_000])
    values = 3.0 * widths[:, None] ** -0.7 * np.array([[1.0, -1.0]])  # rms over the two seeds = 3 d^-0.7
    ds = xr.Dataset(
        {name: (("width", "seed"), values) for name in contract.MAGNITUDES}, coords={"width": widths, "seed": [0, 1]}
    )
    fit = mechanism_detection.width_scaling(ds)
    np.testing.assert_allclose(fit["width_exponent"], -0.7, rtol=1e-10)
    np.testing.assert_allclose(fit["width_prefactor"], 3.0, rtol=1e-10)
    np.testing.assert_allclose(fit["width_exponent_stderr"], 0.0, atol=1e-6)


# ---------------------------------------------------------------------------
# data contract, CLI, figures


def test_dataset_contract(examples):
    _, detected = examples
    for name, variable in detected.data_vars.items():
        assert "long_name" in variable.attrs and "units" in variable.attrs, name
    primary = detected["primary"]
    assert list(primary.attrs["flag_values"]) == list(range(len(contract.PRIMARY_LABELS)))
    assert primary.attrs["flag_meanings"].split() == list(contract.PRIMARY_LABELS)
    for name in (*contract.MAGNITUDES, "a_part", "r_part"):
        assert detected[name].dims == ("parametrization", "rho", "beta_star", "seed")
        assert detected[f"{name}_t"].dims == ("parametrization", "rho", "beta_star", "seed", "time")


def test_cli_writes_mechanisms_with_the_given_thresholds(tmp_path, run_featlearn, examples):
    trajectories, _ = examples
    io.write_netcdf(trajectories, tmp_path / "trajectories.nc")
    settings = '{"eps_c": 0.1, "eps_rho": 0.1, "eps_K": 0.6}'
    result = run_featlearn("mechanisms", "trajectories.nc", "--output", "mechanisms.nc", "--settings", settings)
    assert result.returncode == 0, result.stderr
    written = io.read_netcdf(tmp_path / "mechanisms.nc")
    assert written.attrs["eps_K"] == 0.6 and written.attrs["eps_c"] == 0.1
    assert written.attrs["config_sha256"] == trajectories.attrs["config_sha256"]
    for key in ("title", "Conventions", "featlearn_version", "git_commit", "created", "solver"):
        assert key in written.attrs
    expected = fl.mechanisms(trajectories, eps_K=0.6)
    xr.testing.assert_equal(written["primary"], expected["primary"])
    assert "kernel" in result.stderr


def test_figures_draw_from_mechanisms(examples, width_sweep):
    _, detected = examples
    figure = fl.figure(
        "mechanism_map", mechanisms=detected, x="rho", y="beta_star", select={"parametrization": "mean_field"}
    )
    assert len(figure.axes) >= 4
    panels = {
        "kernel": {"experiment": "e", "select": {"parametrization": "ntk", "rho": 0.0, "beta_star": 1.0}},
        "rescaling": {"experiment": "e", "select": {"parametrization": "small_init", "rho": 0.0, "beta_star": 1.0}},
    }
    figure = fl.figure("mechanism_trajectories", mechanisms=[detected], panels=panels)
    assert figure.axes[0].get_title().startswith("kernel") and "kernel in 6/6 seeds" in figure.axes[0].get_title()
    figure = fl.figure("mechanism_width_scaling", mechanisms=width_sweep)
    legend = " ".join(t.get_text() for t in figure.axes[-1].get_legend().get_texts())
    assert "ntk" in legend and "mean-field" in legend
    with pytest.raises(InputError, match="select"):
        fl.figure("mechanism_map", mechanisms=detected, x="rho", y="beta_star")


def test_configs_define_the_mechanism_figures_and_all_four_smoke_labels():
    for path in ("config/config.yaml", "config/smoke.yaml"):
        config = validation.validate(yaml.safe_load((REPO / path).read_text()))
        section = config["mechanisms"]
        assert set(section["trajectories"]["panels"]) == set(contract.MECHANISM_FLAGS)
        for spec in (*section["maps"].values(), *section["trajectories"]["panels"].values(), section["width_scaling"]):
            assert spec["experiment"] in config["experiments"]


@pytest.mark.slow
def test_smoke_run_writes_mechanisms_for_every_experiment_and_all_four_labels(smoke_run):
    smoke = validation.validate(yaml.safe_load((smoke_run / "config" / "smoke.yaml").read_text()))
    seen: set[str] = set()
    for name in smoke["experiments"]:
        detected = io.read_netcdf(smoke_run / "results" / name / "mechanisms.nc")
        assert detected.attrs["eps_K"] == smoke["mechanisms"]["eps_K"]
        seen |= labels_of(detected)
    assert set(contract.MECHANISM_FLAGS) <= seen
    figures = smoke_run / "results" / "figures"
    expected = [
        "mechanism_trajectories",
        "mechanism_width_scaling",
        *(f"mechanism_map_{m}" for m in smoke["mechanisms"]["maps"]),
    ]
    for stem in expected:
        assert (figures / f"{stem}.png").stat().st_size > 10_000
        assert (figures / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
