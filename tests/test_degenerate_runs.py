"""Runs at the edges of the valid settings: no kernel (nothing can move) and rho = -1 (issue 11, items 5 and 6)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import xarray as xr

from featlearn import grid, mechanism_detection, simulation, validation
from featlearn.contract import PRIMARY_LABELS

THRESHOLDS = mechanism_detection.Thresholds(eps_c=0.1, eps_rho=0.1, eps_K=0.1)


def quiet(_message: str) -> None:
    """A progress callback that prints nothing."""


def runs(solver: str, init: str = "gram", stop: float = 5.0, **parameters: Any) -> xr.Dataset:
    """The merged trajectories of a small experiment (widths 10 and 100, 4 seeds; GD steps stable at both)."""
    spec = {
        "solver": solver,
        "init": init,
        "seeds": 4,
        "time": {"stop": stop, "num": 11},
        "parameters": {"width": [10, 100], **parameters},
    }
    if solver != "flow":
        spec["dt"] = 0.005
    config = validation.validate({"experiments": {"x": spec}})
    experiment = grid.Experiment.from_config(config, "x")
    return simulation.merge_chunks([simulation.simulate_chunk(experiment, config=config, progress=quiet)])


@pytest.mark.parametrize("solver", ["flow", "gd", "explicit"])
@pytest.mark.parametrize(
    "parameters",
    [{"kappa": 0.0}, {"eta_u": 0.0, "eta_w": 0.0}, {"sigma_u": 0.0, "sigma_w": 0.0}],
    ids=["kappa-0", "learning-rates-0", "origin"],
)
def test_a_run_that_cannot_move_is_a_kernel_run(solver, parameters):
    """K_eta = 0: nothing changes, so every relative change is 0 (not 0/0 = NaN) and the label is kernel."""
    trajectories = runs(solver, **parameters)
    assert (trajectories["ntk_eta"] == 0).all()
    detected = mechanism_detection.detect(trajectories, THRESHOLDS)
    for name in ("kernel_change", "rho_u", "rho_w", "delta_c"):
        assert (detected[name] == 0).all(), name
    assert detected["kernel"].all()
    assert not (detected["alignment"] | detected["disalignment"] | detected["rescaling"]).any()
    assert (detected["primary"] == PRIMARY_LABELS.index("kernel")).all()


@pytest.mark.parametrize(("solver", "init"), [("flow", "gram"), ("flow", "vectors"), ("gd", "gram"), ("gd", "vectors")])
def test_rho_minus_one_keeps_squared_norms_nonnegative(solver, init):
    """u = -w shrinks both layers towards the origin: |u|^2 -> 0 must not round below 0 (NaN rescalings)."""
    # Long enough for |u|^2 to fall below float64's resolution of its start.
    trajectories = runs(solver, init, stop=50.0, rho=-1.0, beta_star=[0.5, 1.0])
    assert not trajectories["diverged"].any()
    assert (trajectories["uu"] >= 0).all() and (trajectories["ww"] >= 0).all()
    detected = mechanism_detection.detect(trajectories, THRESHOLDS)
    for name in ("rho_u", "rho_w"):
        values = detected[name].values
        assert not np.isnan(values).any(), name
        # Finite, or -inf where the norm reached 0 within float64 (documented in mechanism_detection).
        vanished = (trajectories["uu" if name == "rho_u" else "ww"].isel(time=-1) == 0).values
        assert np.isfinite(values[~vanished]).all(), name
        assert (values[vanished] == -np.inf).all(), name
