"""Phase diagram: the analytical predictor and the empirical classifier from width sweeps.

Pure functions on arrays and datasets (no file I/O); see ``docs/phases.md``.

*Predictor.* With every hyperparameter written as ``prefactor * d^-exponent``
(kappa ~ d^-a, sigma_u ~ d^-b_u, sigma_w ~ d^-b_w, eta_u ~ d^-c_u,
eta_w ~ d^-c_w), the width exponents of the initial output (e0), the laziness
scale (eM), the force ``kappa s`` (eF) and the convergence rate (elam) decide
the phase as d -> infinity, first match wins, in the order of :data:`PHASES`.

*Classifier.* It never evaluates those formulas. For every cell of an
exponent grid it measures, per run, four quantities against width — the
initial |output|, the log-loss decrease over the horizon, the largest
learning-rate weighted kernel along the run and the relative kernel change —
fits their log-log slopes (mean over seeds, bootstrap over seeds for the
uncertainty) and decides the phase from those slopes alone, in the same order.

*Discrete time.* Runs of the ``gd`` solver are also labelled one by one as
converging, catapult or divergent (:func:`gd_run_labels`, :func:`gd_cells`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike, NDArray

from featlearn import contract
from featlearn.contract import GD_PHASES, PHASES

#: Tolerance of the exponent comparisons of the predictor (exponents are exact rationals in configs).
EXPONENT_TOLERANCE = 1e-9

IntArray = NDArray[np.int8]


# ---------------------------------------------------------------------------
# analytical predictor (docs/phases.md, the predictor)


class Exponents(NamedTuple):
    """Width exponents: beta0 ~ d^e0, M ~ d^eM, kappa s ~ d^eF, lambda ~ d^elam."""

    e0: NDArray[np.float64]
    eM: NDArray[np.float64]
    eF: NDArray[np.float64]
    elam: NDArray[np.float64]


def exponents(
    a: ArrayLike, b_u: ArrayLike, b_w: ArrayLike, c_u: ArrayLike, c_w: ArrayLike, rho: ArrayLike = 0.0
) -> Exponents:
    """Width exponents of the initial output, laziness scale, force and rate (broadcasting).

    ``rho != 0`` (correlated initial layers) makes the initial output coherent:
    ``e0 = 1 - a - b_u - b_w`` instead of the random ``1/2 - a - b_u - b_w``.
    """
    a, b_u, b_w, c_u, c_w, rho = (np.asarray(x, dtype=float) for x in (a, b_u, b_w, c_u, c_w, rho))
    e0 = np.where(rho != 0, 1.0, 0.5) - a - b_u - b_w
    e_m = -a + np.maximum((c_u - c_w) / 2 + 1 - 2 * b_u, (c_w - c_u) / 2 + 1 - 2 * b_w)
    e_f = -a - (c_u + c_w) / 2
    e_lam = e_f + np.maximum(e_m, 0.0)
    return Exponents(*np.broadcast_arrays(e0, e_m, e_f, e_lam))


def predict(
    a: ArrayLike, b_u: ArrayLike, b_w: ArrayLike, c_u: ArrayLike, c_w: ArrayLike, rho: ArrayLike = 0.0
) -> IntArray:
    """Predicted phase codes (indices into :data:`PHASES`), first matching row of the phase table."""
    e = exponents(a, b_u, b_w, c_u, c_w, rho)
    tol = EXPONENT_TOLERANCE
    return _first_match(
        [
            e.e0 > tol,  # unstable-init
            e.elam < -tol,  # frozen
            e.elam > tol,  # unstable-training
            e.eM > tol,  # kernel (elam = 0 and e0 <= 0 hold here)
        ],
        e.e0.shape,
    )


class PhasePrediction(NamedTuple):
    """The predicted phase (a name of :data:`PHASES`) and the width exponents that decide it."""

    phase: Any
    e0: Any
    eM: Any
    eF: Any
    elam: Any


def predict_phase(
    a: ArrayLike, b_u: ArrayLike, b_w: ArrayLike, c_u: ArrayLike, c_w: ArrayLike, rho: ArrayLike = 0.0
) -> PhasePrediction:
    """The phase that width exponents predict as d -> infinity, with the exponents ``e0, eM, eF, elam``.

    Parameters
    ----------
    a, b_u, b_w, c_u, c_w : float or array_like
        Width exponents of kappa, sigma_u, sigma_w, eta_u and eta_w (each
        hyperparameter scales like ``width^-exponent``); they broadcast.
    rho : float or array_like, optional
        Initial correlation of the two layers; nonzero makes the initial
        output coherent (``e0 = 1 - a - b_u - b_w``).

    Returns
    -------
    PhasePrediction
        ``phase`` (a name of :data:`PHASES`) and the exponents. Plain
        ``str`` and ``float`` for scalar input, arrays of the broadcast shape
        otherwise.

    Examples
    --------
    >>> predict_phase(0.5, 0, 0, 0, 0)
    PhasePrediction(phase='kernel', e0=0.0, eM=0.5, eF=-0.5, elam=0.0)
    >>> predict_phase([0.5, 1.0], 0, 0, [0.0, -1.0], [0.0, -1.0]).phase.tolist()
    ['kernel', 'feature-learning']
    """
    e = exponents(a, b_u, b_w, c_u, c_w, rho)
    phase = np.asarray(np.asarray(PHASES)[predict(a, b_u, b_w, c_u, c_w, rho)])
    if phase.ndim == 0:
        # + 0.0 turns a negative zero into zero for printing.
        return PhasePrediction(str(phase), *(float(value) + 0.0 for value in e))
    return PhasePrediction(phase, *(np.asarray(value) + 0.0 for value in e))


def _first_match(conditions: Sequence[NDArray[np.bool_]], shape: tuple[int, ...]) -> IntArray:
    """Index of the first true condition, or ``len(conditions)`` where none holds."""
    codes = np.full(shape, len(conditions), dtype=np.int8)
    for code in reversed(range(len(conditions))):
        codes = np.where(conditions[code], np.int8(code), codes)
    return codes.astype(np.int8)


# ---------------------------------------------------------------------------
# measurements of every run (no theory)


#: Measured quantities fitted against width: (name, long_name).
QUANTITIES: tuple[tuple[str, str], ...] = tuple(contract.PHASE_QUANTITIES.items())


def measure(trajectories: xr.Dataset) -> xr.Dataset:
    """Per-run measurements of a trajectories dataset (dims: grid dims and seed).

    The horizon T is the last record time. Diverged runs have NaN loss
    decrease and kernel change (their kernel scale is the largest finite one):
    these quantities are not measurable there, and the fits skip them.
    """
    loss = trajectories["loss"]
    kernel = trajectories["ntk_eta"]
    loss0, loss_end = loss.isel(time=0), loss.isel(time=-1)
    kernel0, kernel_end = kernel.isel(time=0), kernel.isel(time=-1)
    tiny = np.finfo(float).tiny
    with np.errstate(divide="ignore", invalid="ignore"):
        # A loss that underflowed to 0 has decreased by at least the float range.
        decrease = -np.log(np.maximum(loss_end, tiny) / loss0)
        change = np.abs(kernel_end / kernel0 - 1.0)
    diverged = trajectories["diverged"].astype(bool)
    measured = xr.Dataset(
        {
            "beta0": np.abs(trajectories["beta"].isel(time=0)),
            "loss_decrease": decrease.where(~diverged),
            "kernel_scale": kernel.max("time", skipna=True),
            "kernel_change": change.where(~diverged),
            "diverged": diverged,
        }
    )
    return measured.drop_vars([name for name in measured.coords if name not in measured.dims])


# ---------------------------------------------------------------------------
# width fits and the empirical classification


@dataclass(frozen=True)
class FitSettings:
    """How slopes are fitted and read.

    ``tolerance``: a fitted slope counts as zero when its magnitude is below
    this (exponents on the configured grids differ by at least 0.25).
    ``resolution``: relative quantities (loss decrease, kernel change) below
    this are not resolved in float64; they are left out of the fits, and a
    quantity unresolved at the largest width counts as vanishing. A loss that
    fell by more than this factor counts as converged (decrease capped).
    ``bootstrap``: resamples of the seeds for the slope uncertainties.
    ``divergence_fraction``: share of diverged seeds at the largest width that
    makes a cell unstable-training.
    """

    tolerance: float
    resolution: float
    bootstrap: int
    divergence_fraction: float


def _log_quantities(
    measured: xr.Dataset, resolution: float
) -> dict[str, tuple[NDArray[np.float64], NDArray[np.bool_]]]:
    """log of each quantity and where it is unresolved, arrays (cells..., width, seed).

    Relative quantities below ``resolution`` are rounding noise: their log is
    NaN (left out of the fits) and they are marked unresolved. A loss that fell
    below ``resolution`` times its start has converged as far as float64 can
    tell (how far below is rounding, which grows with width): its decrease is
    capped at ``-log(resolution)``.
    """
    logs = {}
    for name, _ in QUANTITIES:
        values = measured[name].transpose(..., "width", "seed").values.astype(float)
        if name == "loss_decrease":
            values = np.minimum(values, -np.log(resolution))
        floor = np.finfo(float).tiny if name in ("beta0", "kernel_scale") else resolution
        with np.errstate(invalid="ignore", divide="ignore"):
            unresolved = values < floor
            logs[name] = (np.where(unresolved | np.isnan(values), np.nan, np.log(values)), unresolved)
    return logs


def _slopes(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Least-squares slope of ``y`` against ``x`` along the last axis, skipping NaN (NaN if < 2 points)."""
    mask = np.isfinite(y)
    count = mask.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        x_mean = np.where(mask, x, 0.0).sum(-1) / count
        y_mean = np.where(mask, y, 0.0).sum(-1) / count
        dx = np.where(mask, x - x_mean[..., None], 0.0)
        dy = np.where(mask, y - y_mean[..., None], 0.0)
        slope = (dx * dy).sum(-1) / (dx * dx).sum(-1)
    return np.where(count >= 2, slope, np.nan)


def _seed_mean(y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Mean over the last (seed) axis, skipping NaN; NaN where every seed is NaN."""
    count = np.isfinite(y).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.where(np.isfinite(y), y, 0.0).sum(-1) / count, np.nan)


def fit_exponents(measured: xr.Dataset, settings: FitSettings, *, rng: np.random.Generator | None = None) -> xr.Dataset:
    """Log-log slopes against width of every measured quantity, per cell, with bootstrap errors.

    For each quantity: ``<name>_exponent`` (fit of the seed-mean of the log),
    ``<name>_exponent_std`` (standard deviation over ``settings.bootstrap``
    resamples of the seeds) and, for the relative quantities,
    ``<name>_at_resolution`` (no seed resolves it at the largest width).
    Unresolved values are left out of the fits; a slope is NaN where fewer
    than two widths are left. Also ``diverged_fraction``
    at the largest width. Dims: the cell dims (grid dims without width).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    measured = measured.sortby("width")
    x = np.log(measured["width"].values.astype(float))
    logs = _log_quantities(measured, settings.resolution)
    cells = list(measured["beta0"].transpose(..., "width", "seed").dims[:-2])
    coords = {d: measured[d] for d in cells}
    n_seeds = measured.sizes["seed"]
    resamples = [rng.integers(0, n_seeds, n_seeds) for _ in range(settings.bootstrap)]
    fitted: dict[str, Any] = {}
    for name, long_name in QUANTITIES:
        y, unresolved = logs[name]
        slope = _slopes(x, _seed_mean(y))
        boot = np.stack([_slopes(x, _seed_mean(y[..., index])) for index in resamples]) if resamples else slope[None]
        with warnings.catch_warnings():
            # Cells with no measurable slope (every run diverged) keep a NaN error, silently.
            warnings.simplefilter("ignore", RuntimeWarning)
            std = np.nanstd(boot, axis=0)
        # Vanishing below the resolution at the largest width: no seed resolved, some unresolved.
        at_resolution = unresolved[..., -1, :].any(-1) & ~np.isfinite(y[..., -1, :]).any(-1)
        fitted[f"{name}_exponent"] = (
            cells,
            slope,
            {"long_name": f"log-log slope against width of the {long_name}", "units": "1"},
        )
        fitted[f"{name}_exponent_std"] = (
            cells,
            std,
            {"long_name": f"bootstrap standard deviation of {name}_exponent", "units": "1"},
        )
        if name in ("loss_decrease", "kernel_change"):
            fitted[f"{name}_at_resolution"] = (
                cells,
                at_resolution,
                {"long_name": f"{long_name} below the float64 resolution at the largest width", "units": "1"},
            )
    diverged = measured["diverged"].transpose(..., "width", "seed").values[..., -1, :]
    fitted["diverged_fraction"] = (
        cells,
        diverged.mean(-1),
        {"long_name": "fraction of seeds whose gradient descent diverged at the largest width", "units": "1"},
    )
    return xr.Dataset(fitted, coords=coords)


def classify(fitted: xr.Dataset, settings: FitSettings) -> xr.DataArray:
    """Empirical phase codes from fitted slopes alone (first match wins, order of :data:`PHASES`).

    - unstable-init: |beta(0)| grows with width;
    - frozen: the log-loss decrease over the horizon vanishes with width;
    - unstable-training: GD diverges at the largest width, or the kernel
      (hence the rate, and ``step x kernel``) grows with width;
    - kernel: the relative kernel change vanishes with width;
    - feature-learning: otherwise (the kernel change stays finite or grows).
    NaN slopes (unmeasurable quantities) never match a condition.
    """
    tol = settings.tolerance
    with np.errstate(invalid="ignore"):
        conditions = [
            fitted["beta0_exponent"].values > tol,
            (fitted["loss_decrease_exponent"].values < -tol) | fitted["loss_decrease_at_resolution"].values,
            (fitted["diverged_fraction"].values >= settings.divergence_fraction)
            | (fitted["kernel_scale_exponent"].values > tol),
            (fitted["kernel_change_exponent"].values < -tol) | fitted["kernel_change_at_resolution"].values,
        ]
    codes = _first_match(conditions, fitted["beta0_exponent"].shape)
    return xr.DataArray(codes, coords=fitted["beta0_exponent"].coords, dims=fitted["beta0_exponent"].dims)


# ---------------------------------------------------------------------------
# gradient descent: converging, catapult, divergent


def gd_run_labels(trajectories: xr.Dataset, rise: float = 1.1) -> xr.Dataset:
    """Discrete-time behaviour ``gd_phase_run`` and ``step_kernel_run`` of every GD run.

    *divergent* if the run diverged or its loss at the horizon is not below
    the initial loss; *catapult* if otherwise its loss rose above ``rise``
    times the initial loss on the way and its kernel K_eta ends smaller than
    it started; *converging* otherwise. ``step_kernel_run = dt sigma2
    K_eta(0)`` is the quantity linear-model theory compares with 2 and 4.
    Lazy when ``trajectories`` is.
    """
    loss = trajectories["loss"]
    kernel = trajectories["ntk_eta"]
    loss0 = loss.isel(time=0)
    with np.errstate(invalid="ignore"):
        divergent = trajectories["diverged"].astype(bool) | ~(loss.isel(time=-1) < loss0)
        rose = loss.max("time", skipna=True) > rise * loss0
        shrank = kernel.isel(time=-1) < kernel.isel(time=0)
    runs = xr.Dataset(
        {
            "gd_phase_run": xr.where(divergent, 2, xr.where(rose & shrank, 1, 0)).astype(np.int8),
            "step_kernel_run": float(trajectories["dt"]) * trajectories["sigma2"] * kernel.isel(time=0),
        }
    )
    return runs.drop_vars([name for name in runs.coords if name not in runs.dims])


def gd_cells(runs: xr.Dataset) -> xr.Dataset:
    """Per grid point: the most frequent GD label over seeds and the median ``step_kernel``."""
    labels = runs["gd_phase_run"]
    counts = xr.concat([(labels == code).sum("seed") for code in range(len(GD_PHASES))], dim="gd_phase_code")
    return xr.Dataset(
        {
            "gd_phase_run": labels,
            "gd_phase": counts.argmax("gd_phase_code").astype(np.int8),
            "step_kernel": runs["step_kernel_run"].median("seed"),
        }
    )


# ---------------------------------------------------------------------------
# the whole analysis of one experiment


def _flag_attrs(long_name: str, names: Sequence[str]) -> dict[str, Any]:
    return {
        "long_name": long_name,
        "units": "1",
        "flag_values": np.arange(len(names), dtype=np.int8),
        "flag_meanings": " ".join(names),
    }


def _cell_exponents(trajectories: xr.Dataset, cells: Sequence[str]) -> dict[str, NDArray[np.float64]]:
    """The configured exponents and rho of every cell (constant along width), arrays over ``cells``."""
    template = trajectories["beta"].isel({d: 0 for d in trajectories["beta"].dims if d not in cells}, drop=True)
    values = {}
    for name in ("a", "b_u", "b_w", "c_u", "c_w", "rho"):
        variable = trajectories[name].reset_coords(drop=True) if name in trajectories.dims else trajectories[name]
        extra = [d for d in variable.dims if d not in cells]
        variable = variable.isel({d: 0 for d in extra}, drop=True) if extra else variable
        values[name] = xr.broadcast(template, variable)[1].transpose(*cells).values.astype(float)
    return values


def _describe_cell(cell: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v.item() if hasattr(v, 'item') else v}" for k, v in cell.items())


@dataclass(frozen=True)
class PhaseSettings:
    """Settings of the phase stage: the configuration's ``phases`` section (defaults in its schema).

    ``fit``: how slopes are fitted and read; ``min_widths``: widths an
    experiment needs for slopes to be fitted; ``gd_rise``: the loss rise of
    a catapult; ``min_agreement``: the agreement a strict run must reach
    (``None`` when ``strict`` is off).
    """

    fit: FitSettings
    min_widths: int
    gd_rise: float
    min_agreement: float | None

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> PhaseSettings:
        """From the ``phases`` section of a resolved configuration (``experiments`` and ``figures`` not needed)."""
        fit = dict(section["fit"])
        min_widths = fit.pop("min_widths")
        min_agreement = section["min_agreement"] if section["strict"] else None
        return cls(FitSettings(**fit), min_widths, section["gd_rise"], min_agreement)


def analyse(trajectories: xr.Dataset, settings: PhaseSettings) -> xr.Dataset:
    """The phases dataset of one experiment (``results/<experiment>/phases.nc`` without provenance).

    Always: the predicted phase ``phase_theory`` and exponents of every cell
    (grid dims without width). With a ``width`` dim of at least ``min_widths``
    values: the fitted exponents, the empirical ``phase``, the per-cell
    ``agrees`` and the attribute ``agreement``, with the disagreeing cells
    listed in the attribute ``disagreeing_cells``. With the gd solver: the
    per-run and per-cell discrete-time labels of :func:`gd_run_labels` and :func:`gd_cells`.
    """
    cells = [d for d in trajectories["beta"].dims if d not in ("width", "seed", "time")]
    exps = [_cell_exponents(trajectories, cells)[n] for n in ("a", "b_u", "b_w", "c_u", "c_w", "rho")]
    theory_codes = predict(*exps)
    data: dict[str, Any] = {
        "phase_theory": (
            cells,
            theory_codes,
            _flag_attrs("phase predicted from the width exponents (docs/phases.md, the predictor)", PHASES),
        )
    }
    names = {
        "e0": "initial output",
        "eM": "laziness scale M",
        "eF": "force kappa sqrt(eta_u eta_w)",
        "elam": "convergence rate",
    }
    for key, value in exponents(*exps)._asdict().items():
        data[f"theory_{key}"] = (
            cells,
            value,
            {"long_name": f"predicted width exponent of the {names[key]}", "units": "1"},
        )
    result = xr.Dataset(data, coords={d: trajectories[d].reset_coords(drop=True) for d in cells})
    attrs: dict[str, Any] = {}

    fits = "width" in trajectories.dims and trajectories.sizes["width"] >= settings.min_widths
    gd = trajectories.attrs.get("solver") == "gd"
    # One pass over the runs for every per-run quantity: lazily read grids stream through it.
    per_run = xr.merge(
        [
            measure(trajectories) if fits else xr.Dataset(),
            gd_run_labels(trajectories, settings.gd_rise) if gd else xr.Dataset(),
        ]
    ).compute()
    if fits:
        fitted = fit_exponents(per_run, settings.fit)
        phase = classify(fitted, settings.fit)
        agrees = phase.values == theory_codes
        result = result.merge(fitted)
        result["phase"] = (
            phase.dims,
            phase.values,
            _flag_attrs("phase classified from the width scaling of measurements", PHASES),
        )
        result["agrees"] = (
            phase.dims,
            agrees,
            {"long_name": "empirical phase equals the predicted phase", "units": "1"},
        )
        disagreeing = [
            _describe_cell({d: result[d].values[i] for d, i in zip(phase.dims, index)})
            + f": measured {PHASES[phase.values[index]]}, predicted {PHASES[theory_codes[index]]}"
            for index in zip(*np.nonzero(~agrees))
        ]
        attrs.update(
            agreement=float(agrees.mean()),
            cells=int(agrees.size),
            disagreeing_cells="; ".join(disagreeing) if disagreeing else "none",
            widths_fitted=int(trajectories.sizes["width"]),
            **{f"fit_{key}": value for key, value in asdict(settings.fit).items()},
        )
    if gd:
        result = result.merge(gd_cells(per_run))
        result["gd_phase"].attrs.update(_flag_attrs("gradient-descent behaviour, most frequent over seeds", GD_PHASES))
        result["gd_phase_run"].attrs.update(_flag_attrs("gradient-descent behaviour of each run", GD_PHASES))
        result["step_kernel"].attrs.update(
            long_name="step times initial kernel dt sigma2 K_eta(0), median over seeds", units="1"
        )
        attrs["gd_rise"] = settings.gd_rise
    for name in result.coords:
        result[name].attrs.update({k: v for k, v in trajectories[name].attrs.items() if k in ("long_name", "units")})
    result.attrs.update(attrs)
    return contract.annotate(result, "phases")
