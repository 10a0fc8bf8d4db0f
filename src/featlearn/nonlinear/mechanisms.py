"""Analyses of stored nonlinear results: measures at the stopping point, mechanism flags, width slopes.

Kept free of torch so that figures and analyses of stored results load fast.
The flags use the thresholds of ``docs/mechanisms.md`` ("Definitions"), per layer.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from featlearn import contract
from featlearn.contract import STOP_REASONS

#: Series read at each run's stop_step by :func:`at_stop`, and the name of the value there.
_FINALS = {
    "rho": "rho_final",
    "distance": "distance_final",
    "ntk_change": "ntk_change_final",
    "layer_ntk_change": "layer_ntk_change_final",
    "test_accuracy": "test_accuracy_final",
    "train_loss": "train_loss_final",
}


def at_stop(ds: xr.Dataset) -> xr.Dataset:
    """Each run's measures at its own ``stop_step`` ``T``.

    ``delta_zeta = zeta(T) - zeta(0)`` and ``rho_final``, ``distance_final``,
    ``layer_ntk_change_final`` per layer; ``ntk_change_final``,
    ``test_accuracy_final`` and ``train_loss_final`` per run (those series that
    ``ds`` holds). Read at ``stop_step`` itself, not at the last logged step.
    """
    stopped = ds.sel(step=ds["stop_step"]).drop_vars("step")
    measures = {"delta_zeta": stopped["zeta"] - ds["zeta"].isel(step=0, drop=True)}
    measures.update({final: stopped[name] for name, final in _FINALS.items() if name in ds})
    return contract.annotate(xr.Dataset(measures), "nonlinear")


def mechanism_flags(ds: xr.Dataset, *, eps_c: float, eps_rho: float, eps_k: float) -> xr.Dataset:
    """Per-layer mechanism flags of nonlinear runs at their stopping point.

    With ``delta_zeta``, ``rho_final`` and ``ntk_change_final`` of
    :func:`at_stop`: a run is ``kernel`` when ``ntk_change_final < eps_k`` and
    then carries no other flag; otherwise a layer shows ``alignment`` when
    ``delta_zeta >= eps_c``, ``disalignment`` when ``delta_zeta <= -eps_c``,
    ``rescaling`` when ``|rho_final| >= eps_rho``. ``none`` marks a run with
    no flag at all: its kernel moved by ``eps_k`` or more, yet no layer's
    alignment or norm changed by a threshold. A run that diverged (its
    ``stop_reason``) carries only the flag ``diverged``. ``zeta`` is unsigned,
    so for the linear model it is ``|cos|`` and ``delta_zeta`` equals the
    solvable model's ``delta_c`` whenever ``cos`` keeps the target's sign.
    """
    final = at_stop(ds)
    diverged = ds["stop_reason"] == STOP_REASONS.index("diverged")
    kernel = (final["ntk_change_final"] < eps_k) & ~diverged
    feature = ~kernel & ~diverged
    flags = xr.Dataset(
        {
            "kernel": kernel,
            "alignment": feature & (final["delta_zeta"] >= eps_c),
            "disalignment": feature & (final["delta_zeta"] <= -eps_c),
            "rescaling": feature & (np.abs(final["rho_final"]) >= eps_rho),
        }
    )
    layer_flags = flags["alignment"] | flags["disalignment"] | flags["rescaling"]
    flags["none"] = feature & ~layer_flags.any("layer")
    flags["diverged"] = diverged
    flags = flags.merge(final[["delta_zeta", "rho_final", "ntk_change_final"]])
    flags.attrs.update(eps_c=eps_c, eps_rho=eps_rho, eps_K=eps_k)
    return flags


def loglog_slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of ``log y`` against ``log x`` and its standard error.

    ``x`` and ``y`` have the same shape (every seed's value at every width, for
    example); non-finite or non-positive ``y`` are left out. The error is the
    usual ``sqrt(residual variance / sum (log x - mean)^2)`` with ``n - 2``
    degrees of freedom (NaN with fewer than three points).
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    keep = np.isfinite(y) & (y > 0)
    lx, ly = np.log(x[keep]), np.log(y[keep])
    centred = lx - lx.mean()
    slope = float(centred @ (ly - ly.mean()) / (centred @ centred))
    if len(lx) < 3:
        return slope, float("nan")
    residual = ly - ly.mean() - slope * centred
    return slope, float(np.sqrt(residual @ residual / (len(lx) - 2) / (centred @ centred)))
