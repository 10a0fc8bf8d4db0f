"""Mechanism detection: alignment, disalignment and rescaling, and their absence (kernel).

Pure functions on arrays and xarray objects (no file I/O, no configuration
parsing). The definitions are the project's operational ones (see
``docs/mechanisms.md``). Write ``beta = kappa |u| |w| cos(theta)`` and let
``c(t) = sign(beta*) cos(theta(t))`` (``|cos|`` when ``beta* = 0``). Over a
run of horizon ``T`` (the last stored time):

- ``delta_c = c(T) - c(0)``, absolute so that it vanishes in the kernel phase;
- ``rho_u = log(|u(T)| / |u(0)|)`` and ``rho_w`` likewise;
- ``kernel_change = K_eta(T) / K_eta(0) - 1``.

The output change splits exactly along the path, with ``n = |u||w|``:
``beta(T) - beta(0) = int kappa n dcos + int kappa cos dn = a_part + r_part``.
On the stored time grid both integrals use the product (trapezoid) rule,
each factor taken as the mean of its two end values over a step; the two
discrete parts then telescope to ``beta(T) - beta(0)`` exactly, and each
converges to its integral with second order in the time step.

Thresholds ``eps_c``, ``eps_rho``, ``eps_K`` turn the magnitudes into flags.
The kernel flag (``|kernel_change| < eps_K``) is decided first and excludes
the three mechanism flags; ``primary`` names the mechanism that produced
the output change (``rescaling`` when ``|r_part| > |a_part|``, otherwise the
sign of ``delta_c``). Diverged runs (gradient descent that left the float
range) keep their NaN magnitudes, carry no flag and get the primary label
``diverged``: they are marked, never dropped. A run that cannot move (no
kernel, ``K_eta(0) = 0``: ``kappa = 0`` or both learning rates 0) changes
nothing: its relative changes are 0 (:func:`relative_change`), so it is a
``kernel`` run, flag and label. A norm that shrinks to 0 within float64
(u -> 0 when ``rho = -1`` pulls u and w to the origin) has ``rho = -inf``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike, NDArray

from featlearn import contract
from featlearn.contract import MAGNITUDES, PRIMARY_LABELS

FloatArray = NDArray[np.float64]


class Thresholds(NamedTuple):
    """Flag thresholds: on ``|delta_c|``, on ``max(|rho_u|, |rho_w|)`` and on ``|kernel_change|``.

    The settings of the mechanism stage (the configuration's ``mechanisms``
    section, whose schema holds their defaults).
    """

    eps_c: float
    eps_rho: float
    eps_K: float


# ---------------------------------------------------------------------------
# array core (time is the last axis)


def target_signed_cosine(cos: ArrayLike, beta_star: ArrayLike) -> FloatArray:
    """``c = sign(beta*) cos``; ``|cos|`` where ``beta* = 0`` (``beta_star`` broadcasts against ``cos``)."""
    cos = np.asarray(cos, dtype=float)
    beta_star = np.asarray(beta_star, dtype=float)
    return np.where(beta_star == 0, np.abs(cos), np.sign(beta_star) * cos)


def path_split(kappa: ArrayLike, norm_product: ArrayLike, cos: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Cumulative turning and norm parts of ``beta(t) - beta(0)`` on the stored times (last axis).

    With ``n = |u||w|`` and steps k -> k+1,

        a_part(t_K) = sum_k kappa (n_k + n_{k+1})/2 (cos_{k+1} - cos_k)
        r_part(t_K) = sum_k kappa (cos_k + cos_{k+1})/2 (n_{k+1} - n_k)

    Each step's two terms add up to ``kappa (n_{k+1} cos_{k+1} - n_k cos_k)``,
    so ``a_part + r_part = beta(t) - beta(0)`` exactly (to rounding) on any
    grid; each part is the trapezoid rule of its Stieltjes integral and has a
    local error O(h^3), so the sums converge with second order in the step.
    Both start at 0 at the first time.
    """
    kappa = np.asarray(kappa, dtype=float)[..., None]
    n = np.asarray(norm_product, dtype=float)
    cos = np.asarray(cos, dtype=float)
    mean_n = (n[..., 1:] + n[..., :-1]) / 2
    mean_cos = (cos[..., 1:] + cos[..., :-1]) / 2
    zero = np.zeros((*np.broadcast_shapes(kappa.shape, n.shape)[:-1], 1))
    a_part = np.concatenate([zero, np.cumsum(kappa * mean_n * np.diff(cos, axis=-1), axis=-1)], axis=-1)
    r_part = np.concatenate([zero, np.cumsum(kappa * mean_cos * np.diff(n, axis=-1), axis=-1)], axis=-1)
    return a_part, r_part


def classify(
    delta_c: ArrayLike,
    rho_u: ArrayLike,
    rho_w: ArrayLike,
    kernel_change: ArrayLike,
    a_part: ArrayLike,
    r_part: ArrayLike,
    diverged: ArrayLike,
    thresholds: Thresholds,
) -> dict[str, NDArray]:
    """Flags and primary label (an index into :data:`PRIMARY_LABELS`) of each run.

    The kernel flag is decided first and excludes the mechanism flags.
    Diverged runs get no flag and the label ``diverged``.
    """
    delta_c, rho_u, rho_w, kernel_change, a_part, r_part = (
        np.asarray(x, dtype=float) for x in (delta_c, rho_u, rho_w, kernel_change, a_part, r_part)
    )
    valid = ~np.asarray(diverged, dtype=bool)
    kernel = valid & (np.abs(kernel_change) < thresholds.eps_K)
    learning = valid & ~kernel
    flags = {
        "kernel": kernel,
        "alignment": learning & (delta_c >= thresholds.eps_c),
        "disalignment": learning & (delta_c <= -thresholds.eps_c),
        "rescaling": learning & (np.maximum(np.abs(rho_u), np.abs(rho_w)) >= thresholds.eps_rho),
    }
    code = {label: PRIMARY_LABELS.index(label) for label in PRIMARY_LABELS}
    by_turning = np.where(delta_c > 0, code["alignment"], code["disalignment"])
    mechanism = np.where(np.abs(r_part) > np.abs(a_part), code["rescaling"], by_turning)
    primary = np.where(kernel, code["kernel"], np.where(valid, mechanism, code["diverged"]))
    return {**flags, "primary": primary.astype(np.int8)}


# ---------------------------------------------------------------------------
# datasets


def _time_resolved(trajectories: xr.Dataset) -> dict[str, xr.DataArray]:
    """Magnitudes and path parts against time, on the trajectories' dims."""
    uu, ww, cos = trajectories["uu"], trajectories["ww"], trajectories["cos_uw"]
    c = xr.apply_ufunc(target_signed_cosine, cos, trajectories["beta_star"])
    kernel = trajectories["ntk_eta"]
    a_part, r_part = xr.apply_ufunc(
        path_split,
        trajectories["kappa"],
        np.sqrt(uu * ww),
        cos,
        input_core_dims=[[], ["time"], ["time"]],
        output_core_dims=[["time"], ["time"]],
    )
    # Relative increments first, then log1p: keeps the tiny changes of the kernel phase accurate.
    with np.errstate(divide="ignore"):  # log1p(-1) = -inf: a norm that vanished
        return {
            "c_t": c,
            "delta_c_t": c - c.isel(time=0),
            "rho_u_t": 0.5 * np.log1p(relative_change(uu)),
            "rho_w_t": 0.5 * np.log1p(relative_change(ww)),
            "kernel_change_t": relative_change(kernel),
            "a_part_t": a_part,
            "r_part_t": r_part,
        }


def relative_change(values: xr.DataArray) -> xr.DataArray:
    """``x(t) / x(0) - 1`` along ``time``, and 0 where x did not change, also where it is 0.

    A run with no kernel (``K_eta = 0``: ``kappa = 0``, both learning rates
    0, or u = w = 0) cannot move: every quantity keeps its start, and 0/0
    must read as no change, not NaN. A quantity that grows from 0 changes
    infinitely (``inf``); one that shrinks to 0 has ``log1p(-1) = -inf``.
    """
    start = values.isel(time=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return xr.where(values == start, 0.0, (values - start) / start)


def detect_runs(trajectories: xr.Dataset, thresholds: Thresholds) -> xr.Dataset:
    """Per-run and time-resolved magnitudes, flags and primary label of in-memory runs.

    Every run is computed on its own (nothing couples runs), so any block of
    runs gives the values the whole grid would. :func:`detect` adds the width
    fits, attributes and the streaming of dask-backed input.
    """
    resolved = _time_resolved(trajectories)
    # Copies, not views: a view of the last time keeps the whole time-resolved block alive,
    # and streamed blocks then pile up in memory until the end.
    final = {name.removesuffix("_t"): value.isel(time=-1, drop=True).copy() for name, value in resolved.items()}
    diverged = trajectories["diverged"]
    run_dims = diverged.dims
    labels = classify(
        *(final[name].transpose(*run_dims).values for name in (*MAGNITUDES, "a_part", "r_part")),
        diverged.values,
        thresholds,
    )
    data_vars: dict[str, xr.DataArray] = {
        "c_initial": resolved["c_t"].isel(time=0, drop=True).copy(),
        "c_final": final["c"],
        **{name: final[name] for name in (*MAGNITUDES, "a_part", "r_part")},
        **{f"{name}_t": resolved[f"{name}_t"] for name in (*MAGNITUDES, "a_part", "r_part")},
        **{name: xr.DataArray(value, dims=run_dims) for name, value in labels.items()},
        "diverged": diverged,
    }
    return xr.Dataset(data_vars, coords=trajectories.coords)


#: Variables of ``trajectories.nc`` the detection reads.
INPUTS = ("uu", "ww", "cos_uw", "ntk_eta", "diverged")


def _detect_blocks(trajectories: xr.Dataset, thresholds: Thresholds) -> xr.Dataset:
    """:func:`detect_runs` of dask-backed runs, lazily, one task per block of whole runs.

    One task computes everything of its block: split into many small dask
    operations sharing their inputs, the graph was scheduled so that blocks
    piled up (memory grew with the grid).
    """
    # The path sums need a run's whole time axis: blocks hold runs, not times.
    inputs = trajectories[list(INPUTS)].chunk({"time": -1}).unify_chunks()
    run_dims = inputs["diverged"].dims
    sample = detect_runs(inputs.isel({dim: [0] for dim in run_dims}).compute(), thresholds)
    template = xr.Dataset(
        {
            name: xr.zeros_like(inputs["uu" if "time" in variable.dims else "diverged"], dtype=variable.dtype)
            for name, variable in sample.data_vars.items()
        }
    )
    return xr.map_blocks(detect_runs, inputs, kwargs={"thresholds": thresholds}, template=template)


def detect(trajectories: xr.Dataset, thresholds: Thresholds) -> xr.Dataset:
    """Mechanism magnitudes, path split, flags and primary label of every run.

    ``trajectories`` follows the data contract of ``trajectories.nc`` (dims
    ``(*grid, seed, time)``; variables ``uu``, ``ww``, ``cos_uw``, ``ntk_eta``,
    ``diverged``; coordinates ``kappa``, ``beta_star``, ...). The result keeps
    the grid and seed dims and coordinates; per-run variables have dims
    ``(*grid, seed)``, their time-resolved versions (suffix ``_t``) add
    ``time``. The thresholds are stored as the attributes ``eps_c``,
    ``eps_rho``, ``eps_K``. When the grid has a ``width`` dim the width fits
    of :func:`width_scaling` are added.

    Dask-backed ``trajectories`` (``io.read_netcdf(path, lazy=True)``) stream
    through in blocks of whole runs: the per-run variables are computed here,
    in one pass; the time-resolved ones stay lazy and are computed block by
    block when the result is written. The values are those of the in-memory
    computation, whatever the blocks.
    """
    if any(variable.chunks is not None for variable in trajectories.data_vars.values()):
        ds = _detect_blocks(trajectories, thresholds)
        per_run = [name for name, variable in ds.data_vars.items() if "time" not in variable.dims]
        ds = ds.assign(ds[per_run].compute().data_vars)
    else:
        ds = detect_runs(trajectories, thresholds)
    for variable in ds.data_vars.values():
        variable.attrs = {}
    if "width" in ds.dims and ds.sizes["width"] >= 3:
        ds = ds.merge(width_scaling(ds))
    ds.attrs = {key: trajectories.attrs[key] for key in ("experiment", "solver") if key in trajectories.attrs}
    ds.attrs.update(thresholds._asdict())
    return contract.annotate(ds, "mechanisms")


def seed_rms(values: xr.DataArray) -> xr.DataArray:
    """Root mean square over seeds, ignoring NaN (diverged) runs: the typical size of a magnitude."""
    return np.sqrt((values**2).mean("seed", skipna=True))


def width_scaling(mechanisms: xr.Dataset) -> xr.Dataset:
    """Fit ``rms_seeds(|m|) ~ C width^p`` for each magnitude m, per point of the other grid dims.

    Least squares of ``log rms`` on ``log width`` over the widths where the rms
    is positive and finite (at least 3, else NaN). Returns ``width_exponent``
    (p), ``width_exponent_stderr`` and ``width_prefactor`` (C), with a
    ``magnitude`` dim listing :data:`MAGNITUDES`.
    """
    from scipy.stats import linregress  # only width sweeps need it: other jobs skip its import time

    log_width = np.log(mechanisms["width"].values.astype(float))
    rms = xr.concat([seed_rms(mechanisms[name]) for name in MAGNITUDES], dim="magnitude")
    rms = rms.assign_coords(magnitude=list(MAGNITUDES))

    def fit(values: FloatArray) -> tuple[float, float, float]:
        usable = np.isfinite(values) & (values > 0)
        if usable.sum() < 3:
            return np.nan, np.nan, np.nan
        result = linregress(log_width[usable], np.log(values[usable]))
        return result.slope, result.stderr, np.exp(result.intercept)

    exponent, stderr, prefactor = xr.apply_ufunc(
        np.vectorize(fit, otypes=[float, float, float], signature="(n)->(),(),()"),
        rms,
        input_core_dims=[["width"]],
        output_core_dims=[[], [], []],
    )
    return xr.Dataset({"width_exponent": exponent, "width_exponent_stderr": stderr, "width_prefactor": prefactor})


def majority_label(primary: xr.DataArray) -> xr.DataArray:
    """The most frequent primary label over seeds (ties: the smaller label value)."""
    counts = xr.concat([(primary == code).sum("seed") for code in range(len(PRIMARY_LABELS))], dim="label")
    return counts.argmax("label")
