"""The three solvers: Gram-recursion GD against explicit width-d GD, flow against the explicit ODE,
divergence handling, and the width scaling of docs/model.md#width-scaling measured from simulated width sweeps."""

from __future__ import annotations

import numpy as np
import pytest

from featlearn import grid, simulation, solvers, theory, validation
from featlearn.theory import Hyperparameters


def batch(seed: int, n: int = 6, d: int = 200):
    rng = np.random.default_rng(seed)
    u, w = theory.sample_vectors(rng, d, 0.1, 0.1, 0.3, n)
    hyper = Hyperparameters(
        rng.uniform(0.3, 1.0, n),
        rng.uniform(0.2, 1.5, n),
        rng.uniform(0.2, 1.5, n),
        rng.uniform(-2, 2, n),
        rng.uniform(0.5, 1.5, n),
    )
    return u, w, hyper


@pytest.mark.parametrize("dt", [0.01, 0.1])
def test_gram_recursion_matches_explicit_gd_on_the_same_vectors(dt):
    u, w, hyper = batch(1)
    times = np.linspace(0, 10, 21)
    recursion = solvers.gd(theory.gram_from_vectors(u, w), hyper, times, dt)
    explicit = solvers.explicit(u, w, hyper, times, dt)
    assert not recursion.diverged.any() and not explicit.diverged.any()
    for fast, slow in zip(recursion.gram, explicit.gram):
        scale = np.sqrt(explicit.gram.uu * explicit.gram.ww)
        assert np.max(np.abs(fast - slow) / scale) <= 1e-10


def test_explicit_flow_matches_the_closed_form():
    u, w, hyper = batch(2, n=3, d=50)
    times = np.linspace(0, 8, 17)
    closed = solvers.flow(theory.gram_from_vectors(u, w), hyper, times)
    ode = solvers.explicit(u, w, hyper, times, 0.0)
    scale = np.sqrt(ode.gram.uu * ode.gram.ww)
    for a, b in zip(closed.gram, ode.gram):
        assert np.max(np.abs(a - b) / scale) <= 1e-8


def test_gd_approaches_the_flow_at_first_order_in_the_step():
    u, w, hyper = batch(3, n=4, d=100)
    gram0 = theory.gram_from_vectors(u, w)
    times = np.linspace(0, 4, 5)
    flow = solvers.flow(gram0, hyper, times).gram.uw
    errors = [np.max(np.abs(solvers.gd(gram0, hyper, times, dt).gram.uw - flow)) for dt in (0.02, 0.01, 0.005)]
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    np.testing.assert_allclose(orders, 1.0, atol=0.1)


def test_divergent_gd_is_flagged_not_crashed():
    # Step times kernel far above 2: the residual is multiplied by |1 - h K| > 1 each step.
    gram0 = theory.Gram(np.array([1.0, 1.0]), np.array([1.0, 1.0]), np.array([0.1, 0.1]))
    hyper = Hyperparameters(1.0, 1.0, 1.0, 1.0, 1.0)
    times = np.linspace(0, 50, 11)
    with np.errstate(all="raise"):  # no overflow warning may escape either
        result = solvers.gd(gram0, hyper, times, 5.0)
    assert result.diverged.all()
    assert np.isnan(result.gram.uu[:, -1]).all() and np.isfinite(result.gram.uu[:, 0]).all()
    stable = solvers.gd(gram0, hyper, times, 0.1)
    assert not stable.diverged.any() and np.all(np.isfinite(stable.gram.uu))


def test_divergence_is_per_run_in_a_mixed_batch():
    gram0 = theory.Gram(np.array([1.0, 1.0]), np.array([1.0, 1.0]), np.array([0.1, 0.1]))
    hyper = Hyperparameters(1.0, np.array([0.1, 20.0]), np.array([0.1, 20.0]), 1.0, 1.0)
    explicit_u = np.array([[1.0, 0.0], [1.0, 0.0]])
    explicit_w = np.array([[0.1, np.sqrt(0.99)], [0.1, np.sqrt(0.99)]])
    for result in (
        solvers.gd(gram0, hyper, np.linspace(0, 20, 5), 0.1),
        solvers.explicit(explicit_u, explicit_w, hyper, np.linspace(0, 20, 5), 0.1),
    ):
        assert result.diverged.tolist() == [False, True]
        assert np.all(np.isfinite(result.gram.uu[0]))


def test_record_steps_and_solver_errors():
    assert solvers.record_steps([0.0, 0.1, 0.1000001, 0.36], 0.1).tolist() == [0, 1, 4]
    gram0 = theory.Gram(1.0, 1.0, 0.0)
    hyper = Hyperparameters(1.0, 1.0, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="positive step"):
        solvers.gd(gram0, hyper, [0, 1], 0.0)
    with pytest.raises(ValueError, match="initial vectors"):
        solvers.solve("explicit", hyper, [0, 1], 0.1, gram0=gram0)
    with pytest.raises(ValueError, match="unknown solver"):
        solvers.solve("euler", hyper, [0, 1], 0.1, gram0=gram0)


# --- docs/model.md#width-scaling: kernel-change exponents measured from width sweeps -------------------------

WIDTHS = [100, 1000, 10_000, 100_000, 1_000_000]


@pytest.fixture(scope="module")
def width_sweep():
    config = validation.validate(
        {
            "experiments": {
                "scaling": {
                    "solver": "flow",
                    "seeds": 32,
                    "time": {"stop": 200.0, "num": 41, "spacing": "log", "start": 1.0e-3},
                    "parameters": {"parametrization": list(grid.PARAMETRIZATIONS), "width": WIDTHS},
                }
            }
        }
    )
    experiment = grid.Experiment.from_config(config, "scaling")
    return simulation.merge_chunks([simulation.simulate_chunk(experiment, progress=lambda _: None)])


def kernel_change(ds):
    return np.abs(ds["ntk_eta"].isel(time=-1) / ds["ntk_eta"].isel(time=0) - 1).mean("seed")


@pytest.mark.parametrize(
    ("parametrization", "exponent"),
    [("ntk", -1.0), ("mean_field", 0.0), ("standard_scaled_lr", -2.0), ("small_init", 0.5)],
)
def test_kernel_change_exponents_of_the_reference_parametrizations(width_sweep, parametrization, exponent):
    change = kernel_change(width_sweep.sel(parametrization=parametrization))
    slope = np.polyfit(np.log(WIDTHS), np.log(change.values), 1)[0]
    assert slope == pytest.approx(exponent, abs=0.08)


def test_mean_field_kernel_grows_by_sqrt2_at_every_width(width_sweep):
    ratio = (width_sweep["ntk_eta"].isel(time=-1) / width_sweep["ntk_eta"].isel(time=0)).sel(
        parametrization="mean_field"
    )
    np.testing.assert_allclose(ratio.mean("seed").sel(width=WIDTHS[-1]), np.sqrt(2), rtol=2e-3)


def test_standard_parametrization_with_order_one_rate_has_lambda_growing_like_width(width_sweep):
    ds = width_sweep.sel(parametrization="standard").isel(time=0)
    ds = ds.assign_coords(
        {name: ds[name].broadcast_like(ds["uu"]) for name in ("kappa", "eta_u", "eta_w", "beta_star", "sigma2")}
    )
    gram0 = theory.Gram(*(ds[name].values for name in ("uu", "ww", "uw")))
    hyper = Hyperparameters(*(ds[name].values for name in ("kappa", "eta_u", "eta_w", "beta_star", "sigma2")))
    lam = theory.convergence_rate(gram0, hyper).mean(axis=-1)
    slope = np.polyfit(np.log(WIDTHS), np.log(lam), 1)[0]
    assert slope == pytest.approx(1.0, abs=0.05)
    # The same growth in the measured trajectories: at the widest net the loss has collapsed
    # by the first recorded time, t = 1e-3.
    widest = width_sweep.sel(parametrization="standard", width=WIDTHS[-1])
    assert float((widest["loss"].isel(time=1) / widest["loss"].isel(time=0)).max()) < 1e-3
