"""Phase predictor, empirical classifier, GD labels, derived config values, CLI and figures."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import yaml

import featlearn as fl
from featlearn import cli, contract, grid, io, phase_diagram, simulation, validation
from featlearn.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CODE = {name: code for code, name in enumerate(contract.PHASES)}
GD_CODE = {name: code for code, name in enumerate(contract.GD_PHASES)}
WIDTHS = [100, 1000, 10000, 100000, 1000000]


def run_experiment(spec: dict[str, Any], name: str = "test") -> xr.Dataset:
    """Simulate one in-memory experiment (one chunk) and return its trajectories on the grid."""
    config = validation.validate({"experiments": {name: spec}})
    experiment = grid.Experiment.from_config(config, name)
    chunk = simulation.simulate_chunk(experiment, 0, 1, config=config, progress=lambda message: None)
    return simulation.merge_chunks([chunk])


def flow_spec(parameters: dict[str, Any], seeds: int = 6, **extra: Any) -> dict[str, Any]:
    return {
        "solver": "flow",
        "seeds": seeds,
        "time": {"stop": 50.0, "num": 30, "spacing": "log", "start": 1.0e-3},
        "parameters": parameters,
        **extra,
    }


#: The fit settings of the schema's defaults.
FIT = phase_diagram.PhaseSettings.from_config(validation.defaults("phases")).fit

# ---------------------------------------------------------------------------
# predictor


# (a, b_u, b_w, c_u, c_w) -> phase, e0, eM, eF, elam, worked out by hand from the SPEC section 5 formulas.
SPEC_PARAMETRIZATIONS = {
    "ntk": ((0.5, 0, 0, 0, 0), "kernel", (0.0, 0.5, -0.5, 0.0)),
    "mean_field": ((1, 0, 0, -1, -1), "feature-learning", (-0.5, 0.0, 0.0, 0.0)),
    "standard_scaled_lr": ((0, 0.5, 0, 1, 1), "kernel", (0.0, 1.0, -1.0, 0.0)),
    "standard": ((0, 0.5, 0, 0, 0), "unstable-training", (0.0, 1.0, 0.0, 1.0)),
    "small_init": ((0.5, 0.5, 0.5, -0.5, -0.5), "feature-learning", (-1.0, -0.5, 0.0, 0.0)),
}


@pytest.mark.parametrize("name", SPEC_PARAMETRIZATIONS)
def test_predictor_reproduces_the_reference_parametrizations(name):
    point, phase, expected = SPEC_PARAMETRIZATIONS[name]
    assert point == pytest.approx(grid.PARAMETRIZATIONS[name])
    predicted = phase_diagram.predict_phase(*point)._asdict()
    assert predicted["phase"] == phase
    assert [predicted[k] for k in ("e0", "eM", "eF", "elam")] == pytest.approx(expected)


@pytest.mark.parametrize(
    "point, phase",
    [
        # e0 > 0 wins even where the rate would say frozen or unstable (first match).
        ((0.0, 0.0, 0.0, 2.0, 2.0), "unstable-init"),
        ((0.0, 0.0, 0.0, -2.0, -2.0), "unstable-init"),
        # elam < 0: NTK with learning rates ~ 1/d.
        ((0.5, 0.0, 0.0, 1.0, 1.0), "frozen"),
        # elam > 0: NTK with learning rates ~ d.
        ((0.5, 0.0, 0.0, -1.0, -1.0), "unstable-training"),
        # elam = 0 and eM > 0 / eM = 0 / eM < 0.
        ((0.75, 0.0, 0.0, -0.5, -0.5), "kernel"),
        ((1.0, 0.0, 0.0, -1.0, -1.0), "feature-learning"),
        ((1.5, 0.0, 0.0, -1.5, -1.5), "feature-learning"),
    ],
)
def test_predictor_follows_the_table_in_order(point, phase):
    assert phase_diagram.predict_phase(*point)._asdict()["phase"] == phase


def test_predictor_tolerance_and_coherent_initial_output():
    # Rounding-size departures from the boundary (1e-12) stay on it; 1e-6 does not.
    assert phase_diagram.predict_phase(0.5 + 1e-12, 0, 0, 0, 0)._asdict()["phase"] == "kernel"
    assert phase_diagram.predict_phase(0.5 - 1e-12, 0, 0, 0, 0)._asdict()["phase"] == "kernel"
    assert phase_diagram.predict_phase(0.5 - 1e-6, 0, 0, 0, 0)._asdict()["phase"] == "unstable-init"
    # Mean-field: a random output vanishes (e0 = -1/2), a coherent one (rho != 0) is order one.
    assert phase_diagram.predict_phase(1, 0, 0, -1, -1, rho=0.5)._asdict()["e0"] == pytest.approx(0.0)
    assert phase_diagram.predict_phase(1, 0, 0, -1, -1, rho=0.5)._asdict()["phase"] == "feature-learning"
    assert phase_diagram.predict_phase(0.5, 0, 0, 0, 0, rho=0.5)._asdict()["phase"] == "unstable-init"


def test_predict_broadcasts_like_the_scalar_prediction():
    rng = np.random.default_rng(3)
    points = rng.choice(np.arange(-2, 2.25, 0.25), size=(200, 5))
    codes = phase_diagram.predict(*points.T)
    assert [contract.PHASES[c] for c in codes] == [phase_diagram.predict_phase(*p)._asdict()["phase"] for p in points]


def test_cli_predict_prints_one_json_object(capsys):
    assert cli.main(["predict", "--a", "0.5", "--b-u", "0", "--b-w", "0", "--c-u", "0", "--c-w", "0", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"phase": "kernel", "e0": 0.0, "eM": 0.5, "eF": -0.5, "elam": 0.0}
    assert cli.main(["predict", "--a", "0", "--b-u", "0.5", "--b-w", "0", "--c-u", "0", "--c-w", "0"]) == 0
    assert capsys.readouterr().out.startswith("unstable-training")


# ---------------------------------------------------------------------------
# fits


def test_slopes_match_numpy_polyfit_and_skip_nan():
    rng = np.random.default_rng(0)
    x = np.log(np.array(WIDTHS, dtype=float))
    y = rng.normal(size=(7, len(x)))
    expected = [np.polyfit(x, row, 1)[0] for row in y]
    assert phase_diagram._slopes(x, y) == pytest.approx(expected)
    y[0, 2] = np.nan
    assert phase_diagram._slopes(x, y)[0] == pytest.approx(np.polyfit(np.delete(x, 2), np.delete(y[0], 2), 1)[0])
    y[1, 1:] = np.nan
    assert np.isnan(phase_diagram._slopes(x, y)[1])


def synthetic_measurements(exponents: dict[str, float], noise: float, seeds: int = 8) -> xr.Dataset:
    """Quantities C d^p with log-normal seed noise, on (cell, width, seed)."""
    rng = np.random.default_rng(1)
    widths = np.array(WIDTHS, dtype=float)
    data = {}
    for name, power in exponents.items():
        values = widths[:, None] ** power * np.exp(noise * rng.normal(size=(len(widths), seeds)))
        data[name] = (("cell", "width", "seed"), values[None])
    data["diverged"] = (("cell", "width", "seed"), np.zeros((1, len(widths), seeds), dtype=bool))
    return xr.Dataset(data, coords={"cell": [0], "width": WIDTHS, "seed": np.arange(seeds)})


def test_fit_recovers_power_laws_with_bootstrap_errors():
    truth = {"beta0": -0.5, "loss_decrease": 0.0, "kernel_scale": 0.25, "kernel_change": -1.0}
    fitted = phase_diagram.fit_exponents(synthetic_measurements(truth, noise=0.3), FIT)
    for name, power in truth.items():
        slope = float(fitted[f"{name}_exponent"][0])
        std = float(fitted[f"{name}_exponent_std"][0])
        assert 0 < std < 0.1
        assert slope == pytest.approx(power, abs=4 * std)
    exact = phase_diagram.fit_exponents(synthetic_measurements(truth, noise=0.0), FIT)
    assert float(exact["kernel_change_exponent"][0]) == pytest.approx(-1.0, abs=1e-12)
    assert float(exact["kernel_change_exponent_std"][0]) == pytest.approx(0.0, abs=1e-12)


def test_changes_below_resolution_count_as_vanishing():
    measured = synthetic_measurements(
        {"beta0": 0.0, "loss_decrease": 0.0, "kernel_scale": 0.0, "kernel_change": -3.0}, 0.0
    )
    fitted = phase_diagram.fit_exponents(measured, dataclasses.replace(FIT, resolution=1e-12))
    # 1e6^-3 = 1e-18 is unresolved: left out of the fit, flagged at the largest width.
    assert bool(fitted["kernel_change_at_resolution"][0])
    assert float(fitted["kernel_change_exponent"][0]) == pytest.approx(-3.0)
    assert contract.PHASES[int(phase_diagram.classify(fitted, FIT)[0])] == "kernel"


# ---------------------------------------------------------------------------
# empirical classification of simulated width sweeps


def test_classifier_returns_the_predicted_phase_of_the_reference_parametrizations():
    trajectories = run_experiment(flow_spec({"parametrization": list(SPEC_PARAMETRIZATIONS), "width": WIDTHS}))
    result = fl.phases(trajectories)
    for name, (_, phase, _) in SPEC_PARAMETRIZATIONS.items():
        assert contract.PHASES[int(result["phase"].sel(parametrization=name))] == phase, name
        assert contract.PHASES[int(result["phase_theory"].sel(parametrization=name))] == phase, name
    assert result.attrs["agreement"] == 1.0
    # The measured kernel-change slopes are those of the SPEC table (d^-1, flat, d^-2, d^(1/2)).
    slopes = result["kernel_change_exponent"]
    assert float(slopes.sel(parametrization="ntk")) == pytest.approx(-1.0, abs=0.1)
    assert float(slopes.sel(parametrization="mean_field")) == pytest.approx(0.0, abs=0.05)
    assert float(slopes.sel(parametrization="standard_scaled_lr")) == pytest.approx(-2.0, abs=0.15)
    assert float(slopes.sel(parametrization="small_init")) == pytest.approx(0.5, abs=0.05)
    assert float(result["kernel_scale_exponent"].sel(parametrization="standard")) == pytest.approx(1.0, abs=0.05)


def test_classifier_finds_every_row_of_the_table_on_an_exponent_grid():
    # Output scale a against learning-rate exponent c (init scale 1): all five phases.
    spec = flow_spec(
        {
            "width": [2**k for k in range(8, 31, 4)],
            "kappa": {"exponent": [0.25, 0.5, 1.0]},
            "eta_u": {"exponent": [-1.0, 0.0, 0.5]},
            "eta_w": {"exponent": "c_u"},
        }
    )
    result = fl.phases(run_experiment(spec))
    expected = {
        (0.25, -1.0): "unstable-init",
        (0.5, 0.5): "frozen",
        (0.5, -1.0): "unstable-training",
        (0.5, 0.0): "kernel",
        (1.0, -1.0): "feature-learning",
    }
    for (a, c), phase in expected.items():
        assert contract.PHASES[int(result["phase"].sel(a=a, c_u=c))] == phase, (a, c)
    np.testing.assert_array_equal(result["phase"].values, result["phase_theory"].values)
    assert result.attrs["disagreeing_cells"] == "none"


def test_unstable_cells_under_gd_are_classified_not_dropped():
    # Standard parametrization with lr = O(1): step x kernel ~ d, so GD diverges at large width;
    # a = 0 with b = 0 makes the initial output itself grow (unstable-init).
    spec = {
        "solver": "gd",
        "dt": 0.1,
        "seeds": 4,
        "time": {"stop": 20.0, "num": 21},
        "parameters": {
            "width": [16, 256, 4096, 65536, 1048576],
            "kappa": {"exponent": [0.0]},
            "sigma_u": {"exponent": [0.0, 0.5]},
            "eta_u": {"exponent": 0.0},
            "eta_w": {"exponent": 0.0},
        },
    }
    trajectories = run_experiment(spec)
    assert trajectories["diverged"].values.astype(bool).any()
    result = fl.phases(trajectories)
    assert set(result["phase"].values.ravel()) <= set(range(len(contract.PHASES)))
    assert contract.PHASES[int(result["phase"].sel(a=0.0, b_u=0.0))] == "unstable-init"
    assert contract.PHASES[int(result["phase"].sel(a=0.0, b_u=0.5))] == "unstable-training"
    assert float(result["diverged_fraction"].sel(a=0.0, b_u=0.5)) == 1.0
    # The initial output is measurable in every cell, diverged or not.
    assert np.isfinite(result["beta0_exponent"]).all()
    assert (
        "gd_phase" in result and (result["gd_phase"].sel(a=0.0, b_u=0.5, width=1048576) == GD_CODE["divergent"]).all()
    )


def test_catapult_sits_where_linear_theory_puts_it():
    # NTK at width 4096: output and target (order one) are small next to the laziness scale
    # M ~ 2 sqrt(d) = 128, the regime of the linear-model catapult 2 < h K(0) < 4.
    steps = [0.25, 0.75, 0.95, 1.1, 1.4, 1.7, 1.9, 2.1, 2.5, 3.0]
    spec = {
        "solver": "gd",
        "dt": 1.0,
        "seeds": 4,
        "time": {"stop": 400.0, "num": 201},
        "parameters": {
            "width": 4096,
            "parametrization": "ntk",
            "eta_u": {"prefactor": steps},
            "eta_w": {"prefactor": "eta_u0"},
        },
    }
    labels = phase_diagram.gd_cells(phase_diagram.gd_run_labels(run_experiment(spec)))
    step_kernel = labels["step_kernel"].values
    assert step_kernel == pytest.approx(2 * np.array(steps), rel=0.05)  # K(0) = 2 at init scale 1
    per_run = labels["gd_phase_run"].values
    for x, runs in zip(step_kernel, per_run):
        if abs(x - 2) < 0.15 or abs(x - 4) < 0.15:
            continue  # at the boundaries the horizon decides
        expected = "converging" if x < 2 else "catapult" if x < 4 else "divergent"
        assert {contract.GD_PHASES[r] for r in runs} == {expected}, x
    # A catapult run: the loss rises by orders of magnitude, then converges with a smaller kernel.
    run = run_experiment(spec)["loss"].sel(eta_u0=1.4, seed=0)
    assert float(run.max()) > 100 * float(run.isel(time=0)) and float(run.isel(time=-1)) < 1e-6


def test_gd_labels_of_synthetic_runs():
    time = np.arange(5.0)
    loss = np.array(
        [
            [1.0, 0.5, 0.2, 0.1, 0.05],
            [1.0, 30.0, 2.0, 0.1, 0.01],
            [1.0, 0.9, 0.8, 0.7, 0.6],
            [1.0, 10.0, 1e3, np.nan, np.nan],
        ]
    )
    kernel = np.array(
        [[2.0] * 5, [3.0, 3.0, 1.5, 1.5, 1.5], [2.0, 2.2, 2.4, 2.6, 2.8], [5.0, 6.0, 7.0, np.nan, np.nan]]
    )
    ds = xr.Dataset(
        {
            "loss": (("run", "seed", "time"), loss[:, None]),
            "ntk_eta": (("run", "seed", "time"), kernel[:, None]),
            "diverged": (("run", "seed"), np.array([[False], [False], [False], [True]])),
        },
        coords={"run": np.arange(4), "seed": [0], "time": time, "dt": 0.5, "sigma2": 1.0},
    )
    labels = phase_diagram.gd_cells(phase_diagram.gd_run_labels(ds))
    assert [contract.GD_PHASES[c] for c in labels["gd_phase"].values] == [
        "converging",
        "catapult",
        "converging",
        "divergent",
    ]
    assert labels["step_kernel"].values == pytest.approx([1.0, 1.5, 1.0, 2.5])


# ---------------------------------------------------------------------------
# derived values in configurations


def test_expressions_tie_and_derive_exponents():
    spec = flow_spec(
        {
            "width": 64,
            "kappa": {"exponent": [0.5, 1.0]},
            "sigma_u": {"exponent": "0.5 + b_imbalance / 2"},
            "sigma_w": {"exponent": "0.5 - b_imbalance / 2"},
            "eta_u": {"prefactor": [0.5, 2.0], "exponent": "-a + max(1 - a - 2 * min(b_u, b_w), 0)"},
            "eta_w": {"prefactor": "2 * eta_u0", "exponent": "c_u"},
        },
        axes={"b_imbalance": [-0.5, 0.5]},
    )
    experiment = grid.Experiment.from_config(validation.validate({"experiments": {"x": spec}}), "x")
    assert experiment.grid.dims == ("b_imbalance", "a", "eta_u0")
    for index in range(experiment.grid.size):
        point = experiment.grid.point(index)
        values = experiment.hyperparameters(index)
        b_u, b_w = 0.5 + point["b_imbalance"] / 2, 0.5 - point["b_imbalance"] / 2
        c = -point["a"] + max(1 - point["a"] - 2 * min(b_u, b_w), 0)
        assert (values["b_u"], values["b_w"], values["c_u"], values["c_w"]) == pytest.approx((b_u, b_w, c, c))
        assert values["sigma_w"] == pytest.approx(64.0**-b_w)
        assert values["eta_w"] == pytest.approx(2 * point["eta_u0"] * 64.0**-c)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"eta_w": {"exponent": "b_u + nope"}}, "reads nope"),
        ({"sigma_u": {"exponent": "c_w"}}, "reads c_w, not defined before it"),
        ({"eta_w": {"exponent": "__import__('os').getpid()"}}, "only numbers, names"),
        ({"eta_w": {"exponent": "1 +"}}, "not an arithmetic expression"),
    ],
)
def test_bad_expressions_are_rejected_naming_the_field(change, message):
    spec = flow_spec({"width": 64, "sigma_u": {"exponent": [0.0, 0.5]}, "eta_w": {"exponent": "b_u"}})
    spec["parameters"].update(change)
    with pytest.raises(ConfigError, match=message) as error:
        validation.validate({"experiments": {"x": spec}})
    assert "experiments.x.parameters." in str(error.value)


def test_axes_must_be_read_and_must_not_shadow_hyperparameters():
    spec = flow_spec({"width": 64, "sigma_u": {"exponent": "tilt"}}, axes={"tilt": [0.0, 1.0], "unused": [1.0]})
    with pytest.raises(ConfigError, match="axes.unused: no prefactor or exponent expression reads"):
        validation.validate({"experiments": {"x": spec}})
    spec = flow_spec({"width": 64, "sigma_u": {"exponent": "a"}}, axes={"a": [0.0, 1.0]})
    with pytest.raises(ConfigError, match="axes.a: clashes"):
        validation.validate({"experiments": {"x": spec}})


def test_phases_section_names_known_and_classified_experiments():
    config = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    broken = copy.deepcopy(config)
    broken["phases"]["experiments"].append("nope")
    broken["phases"]["figures"]["phases_diagram_rate"]["experiment"] = "compare_flow"
    with pytest.raises(ConfigError) as error:
        validation.validate(broken)
    assert "phases.experiments" in str(error.value) and "'nope'" in str(error.value)
    assert "phases.figures.phases_diagram_rate.experiment: 'compare_flow' must also be listed" in str(error.value)


# ---------------------------------------------------------------------------
# the configured grids


def configured_experiment(path: str, name: str) -> grid.Experiment:
    return grid.Experiment.from_config(validation.load(str(REPO / path)), name)


def predicted_phases(experiment: grid.Experiment) -> set[str]:
    points = [experiment.hyperparameters(i) for i in range(experiment.grid.size)]
    codes = phase_diagram.predict(*(np.array([p[k] for p in points]) for k in ("a", "b_u", "b_w", "c_u", "c_w", "rho")))
    return {contract.PHASES[c] for c in codes}


def test_smoke_grid_holds_every_phase():
    assert predicted_phases(configured_experiment("config/smoke.yaml", "phase_rate_plane")) == set(contract.PHASES)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["phase_scale_plane", "phase_imbalance_plane", "phase_rate_plane", "parametrizations"])
def test_default_grid_agreement(name):
    config = validation.load(str(REPO / "config" / "config.yaml"))
    assert name in config["phases"]["experiments"]
    experiment = grid.Experiment.from_config(config, name)
    trajectories = simulation.merge_chunks(
        [simulation.simulate_chunk(experiment, config=config, progress=lambda m: None)]
    )
    result = phase_diagram.analyse(trajectories, phase_diagram.PhaseSettings.from_config(config["phases"]))
    assert result.attrs["agreement"] >= config["phases"]["min_agreement"]
    assert set(np.unique(result["phase"].values)) <= set(range(len(contract.PHASES)))


# ---------------------------------------------------------------------------
# command line and data contract


def test_cli_phases_writes_the_data_contract(tmp_path, capsys):
    trajectories = run_experiment(flow_spec({"parametrization": ["ntk", "mean_field"], "width": WIDTHS}, seeds=3))
    source = io.write_netcdf(trajectories, tmp_path / "trajectories.nc")
    output = tmp_path / "phases.nc"
    settings = {**{key: validation.defaults("phases")[key] for key in ("fit", "gd_rise", "strict", "min_agreement")}}
    settings["fit"]["bootstrap"] = 20
    assert cli.main(["phases", str(source), "--output", str(output), "--settings", json.dumps(settings)]) == 0
    result = io.read_netcdf(output)
    for name in ("phase", "phase_theory"):
        assert list(result[name].attrs["flag_values"]) == list(range(5))
        assert result[name].attrs["flag_meanings"].split() == list(contract.PHASES)
    for name, variable in result.variables.items():
        assert "long_name" in variable.attrs, name
        # Units for every number (a string coordinate such as the parametrization name has none).
        assert variable.dtype.kind not in "biuf" or "units" in variable.attrs, name
    assert result.attrs["agreement"] == 1.0
    assert result.attrs["disagreeing_cells"] == "none"
    for key in ("title", "Conventions", "featlearn_version", "git_commit", "config_sha256", "created", "solver"):
        assert key in result.attrs
    assert "agreement 1.000" in capsys.readouterr().err
    # Strict: an agreement below the floor fails the command (exit 2, one message).
    settings["min_agreement"] = 1.5
    assert cli.main(["phases", str(source), "--output", str(output), "--settings", json.dumps(settings)]) == 2


@pytest.mark.slow
def test_every_phase_figure_draws(tmp_path):
    plane = run_experiment(
        flow_spec(
            {
                "width": [2**k for k in range(8, 25, 4)],
                "kappa": {"exponent": [0.25, 0.5, 1.0]},
                "eta_u": {"exponent": [-1.0, 0.0, 0.5]},
                "eta_w": {"exponent": "c_u"},
            },
            seeds=3,
        )
    )
    widths = run_experiment(flow_spec({"parametrization": list(SPEC_PARAMETRIZATIONS), "width": WIDTHS}, seeds=3))
    finite = run_experiment(
        flow_spec(
            {
                "width": 1000,
                "kappa": {"prefactor": [0.01, 0.1, 1.0]},
                "sigma_u": {"prefactor": [0.1, 1.0]},
                "sigma_w": {"prefactor": "sigma_u0"},
            },
            seeds=2,
        )
    )
    gd = run_experiment(
        {
            "solver": "gd",
            "dt": 1.0,
            "seeds": 2,
            "time": {"stop": 100.0, "num": 51},
            "parameters": {
                "width": [256, 4096],
                "kappa": {"exponent": [0.5, 1.0, 1.5]},
                "eta_u": {"prefactor": [0.5, 1.5, 3.0], "exponent": "-a + max(1 - a, 0)"},
                "eta_w": {"prefactor": "eta_u0", "exponent": "c_u"},
            },
        }
    )
    drawn = {
        "phases_diagram_rate": {"phases": fl.phases(plane), "x": "c_u", "y": "a"},
        "phases_kernel_change_width": {"trajectories": widths, "phases": fl.phases(widths)},
        "phases_kernel_change_map": {"trajectories": finite},
        "phases_gd_step": {"phases": fl.phases(gd)},
    }
    for name, arguments in drawn.items():
        written = io.save_figure(fl.figure(name, **arguments), tmp_path / f"{name}.png")
        assert all(path.stat().st_size > 1000 for path in written), name
