"""Phase diagram: the analytical predictor and the empirical classifier from width sweeps.

Pure functions on arrays and datasets (no file I/O); see ``docs/phases.md``.

*Predictor.* With every hyperparameter written as ``prefactor * d^-exponent``
(kappa ~ d^-a, sigma_u ~ d^-b_u, sigma_w ~ d^-b_w, eta_u ~ d^-c_u,
eta_w ~ d^-c_w), the width exponents of the initial output (e0), the laziness
scale (eM), the force ``kappa s`` (eF) and the convergence rate (elam) decide
the phase as d -> infinity, first match wins, in the order of :data:`PHASES`.

*Classifier.* It never evaluates those formulas. For every cell of an
exponent grid it measures, per run, four quantities against width — the
initial |output|, the kernel scale and the relative kernel change read at the
learning time t_c (when the loss has fallen to a fixed fraction of its start)
and t_c itself — fits their log-log slopes with seed-noise errors (bootstrap
over seeds) and a curvature allowance, and decides the sign of each decisive
exponent only where its decision interval excludes zero, in the order of
:data:`PHASES`; a cell whose decisive exponent cannot be told from zero is
``boundary`` (:data:`CLASSIFIED_PHASES`).

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
from scipy import stats

from featlearn import contract
from featlearn.contract import CLASSIFIED_PHASES, GD_PHASES, PHASE_CRITERIA, PHASES

#: Flag value of an empirical phase whose decisive exponent cannot be told from zero.
BOUNDARY = CLASSIFIED_PHASES.index("boundary")
#: Tolerance of the exponent comparisons of the predictor (exponents are exact rationals in configs).
EXPONENT_TOLERANCE = 1e-9

IntArray = NDArray[np.int8]


# ---------------------------------------------------------------------------
# analytical predictor (docs/phases.md)


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


def measured_exponents(e: Exponents) -> dict[str, NDArray[np.float64]]:
    """Width exponents the predictor gives for each measured quantity of :data:`QUANTITIES`.

    From the closed form (``docs/model.md``): K_eta(t)^2 = K_eta(0)^2 +
    4 (kappa s)^2 (beta(t)^2 - beta0^2) with K_eta(0) = kappa s M, and at the
    learning time beta - beta* is a fixed fraction of beta0 - beta*. So the
    kernel there scales like the rate (elam), its relative change like
    g = 2 max(e0, 0) - 2 eM when g < 0 (small change: -2 eM for e0 <= 0) and
    like g / 2 when g > 0 (-eM), and the learning time like -elam (in
    feature-learning cells with eM < 0 it grows like log d: exponent 0).
    Only compared with the fits in :func:`analyse`; never used by them.
    """
    growth = 2 * np.maximum(e.e0, 0.0) - 2 * e.eM
    return {
        "beta0": e.e0,
        "kernel_scale": e.elam,
        "kernel_change": np.where(growth < 0, growth, growth / 2),
        "learning_time": -e.elam,
    }


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
#: The quantities read at the learning time (at the horizon in runs that do not reach it).
AT_LEARNING_TIME: tuple[str, ...] = ("kernel_scale", "kernel_change")


def _learning_readings(
    loss: NDArray[np.float64], kernel: NDArray[np.float64], *, time: NDArray[np.float64], fraction: float
) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Per run (time is the last axis): learned, t_c, the kernel at t_c, the largest kernel up to t_c.

    t_c is the first time the loss falls to ``fraction`` of its start,
    interpolated between the record before the crossing and the crossing
    record linearly in log-loss (exact for an exponential decay); the kernel
    is interpolated linearly in the residual sqrt(loss) ~ |beta - beta*|, a
    smooth function of the output along the flow however fast the loss falls.
    t_c is NaN where it is not reached or not resolved (the crossing falls
    before the first record after t = 0). A run that does not learn is read at
    its last record and over its whole horizon. NaN records (a diverged run)
    never cross and are skipped by the maximum.
    """
    log_loss = np.log(np.maximum(loss, np.finfo(float).tiny))
    target = log_loss[..., 0] + np.log(fraction)
    with np.errstate(invalid="ignore"):
        below = log_loss <= target[..., None]
    learned = below.any(-1)
    # The crossing record (1 where the run never crosses: a placeholder, masked below).
    crossing = np.where(learned, np.argmax(below, axis=-1), 1)[..., None]

    def around(values: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        return np.take_along_axis(values, crossing - 1, -1)[..., 0], np.take_along_axis(values, crossing, -1)[..., 0]

    with np.errstate(invalid="ignore", divide="ignore"):
        log_before, log_after = around(log_loss)
        time_fraction = (log_before - target) / (log_before - log_after)
        root_before, root_after = around(np.sqrt(loss))
        root_fraction = (root_before - np.exp(target / 2)) / (root_before - root_after)
    t_before, t_after = time[crossing[..., 0] - 1], time[crossing[..., 0]]
    kernel_before, kernel_after = around(kernel)
    with np.errstate(invalid="ignore"):  # the placeholder crossing of runs that never learn
        kernel_at = np.where(learned, kernel_before + root_fraction * (kernel_after - kernel_before), kernel[..., -1])
        learning_time = np.where(learned & (t_before > 0), t_before + time_fraction * (t_after - t_before), np.nan)
    # Records before the crossing and the crossing itself (every record when the run never learns).
    until = np.arange(kernel.shape[-1]) < np.where(learned, crossing[..., 0], kernel.shape[-1])[..., None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a run diverged from its first record: NaN
        scale = np.fmax(np.nanmax(np.where(until, kernel, np.nan), axis=-1), np.where(learned, kernel_at, np.nan))
    return learned, learning_time, kernel_at, scale


def measure(trajectories: xr.Dataset, learning_fraction: float) -> xr.Dataset:
    """Per-run measurements of a trajectories dataset (dims: grid dims and seed).

    The learning time t_c is when the loss first falls to ``learning_fraction``
    times its start; the kernel scale (the largest kernel up to t_c) and the
    kernel change are read at t_c (:func:`_learning_readings`), so runs of any
    speed are compared at the same stage of learning; a run that does not
    reach t_c within the horizon (``learned`` false) is read at its last
    record. ``learning_time`` is NaN where t_c is not reached or falls before
    the first record after t = 0 (not resolved). Diverged runs have NaN kernel
    change (their kernel scale is the largest finite one) and never learn.
    Lazy when ``trajectories`` is: each block of whole runs is reduced in one
    task (no time-resolved intermediate outlives it), run by run, so the
    result does not depend on the blocking.
    """
    diverged = trajectories["diverged"].astype(bool)
    # Blocks of whole runs (the files featlearn writes have them already; others are joined along time).
    runs = [trajectories[name] for name in ("loss", "ntk_eta")]
    runs = [run.chunk({"time": -1}) if run.chunks is not None else run for run in runs]
    learned, learning_time, kernel_at, scale = xr.apply_ufunc(
        _learning_readings,
        *runs,
        input_core_dims=[["time"], ["time"]],
        output_core_dims=[[], [], [], []],
        kwargs={"time": trajectories["time"].values, "fraction": learning_fraction},
        dask="parallelized",
        output_dtypes=[bool, float, float, float],
    )
    kernel0 = trajectories["ntk_eta"].isel(time=0, drop=True)
    # A vanishing initial kernel (a layer that cannot move) has no relative change.
    change = np.abs(kernel_at / xr.where(kernel0 > 0, kernel0, np.nan) - 1.0)
    measured = xr.Dataset(
        {
            "beta0": np.abs(trajectories["beta"].isel(time=0, drop=True)),
            "kernel_scale": scale,
            "kernel_change": change.where(~diverged),
            "learning_time": learning_time.where(~diverged),
            "learned": learned & ~diverged,
            "diverged": diverged,
        }
    )
    return measured.drop_vars([name for name in measured.coords if name not in measured.dims])


# ---------------------------------------------------------------------------
# width fits and the empirical classification


@dataclass(frozen=True)
class FitSettings:
    """How slopes are fitted and decided (``docs/phases.md``, "Decisions").

    ``resolution``: relative kernel changes below this
    are float64 rounding; they are left out of the fits, and a change that no
    seed resolves at the largest fitted width counts as vanishing; no seed
    average is taken to be known better than this. ``bootstrap``: resamples
    of the seeds for the seed-noise errors (0: no noise estimate, every bend
    counts; for quick looks). ``divergence_fraction``: share of diverged seeds
    at the largest width that makes a cell unstable-training.
    ``false_decision_rate``: probability, per criterion and cell, that seed
    noise alone decides the sign of an exponent that is zero (two-sided; sets
    the Student-t quantile of the decision intervals and of the bend tests).
    ``learning_fraction``: the learning time is when the loss first falls to
    this fraction of its start. ``trend_resolution``: a seed average that
    changes by less than this relative amount across the fitted widths shows
    no trend (the decision intervals are widened by ``log(1 + r) / span``,
    ``span`` the log-width range fitted).
    """

    resolution: float
    bootstrap: int
    divergence_fraction: float
    false_decision_rate: float
    learning_fraction: float
    trend_resolution: float


def _polynomial_weights(x: NDArray[np.float64], weight: NDArray[np.float64], degree: int) -> NDArray[np.float64]:
    """Weighted least-squares weights of the highest coefficient of a polynomial in ``x`` (last axis).

    For ``degree`` 1 the coefficient is the slope, for 2 the curvature (the
    coefficient of (x - mean)^2); either equals ``sum(result * y)``. Points
    with ``weight`` 0 are left out; the result is 0 for cells with too few
    distinct points.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = (weight * x).sum(-1, keepdims=True) / weight.sum(-1, keepdims=True)
    powers = np.stack([np.nan_to_num(x - centre) ** k for k in range(degree + 1)], axis=-1)  # (..., width, k)
    normal = np.einsum("...w,...wi,...wj->...ij", weight, powers, powers)
    solvable = np.abs(np.linalg.det(normal)) > 0
    safe = np.where(solvable[..., None, None], normal, np.eye(degree + 1))
    rows = np.linalg.solve(safe, np.einsum("...w,...wi->...iw", weight, powers))
    return np.where(solvable[..., None], rows[..., degree, :], 0.0)


def _slopes(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Least-squares slope of ``y`` against ``x`` along the last axis, skipping NaN (NaN if < 2 points)."""
    mask = np.isfinite(y)
    x = np.broadcast_to(x, y.shape)
    slope = (_polynomial_weights(x, mask.astype(float), 1) * np.where(mask, y, 0.0)).sum(-1)
    return np.where(mask.sum(-1) >= 2, slope, np.nan)


def _seed_average(y: NDArray[np.float64]) -> NDArray[np.float64]:
    """log of the root mean square over the last (seed) axis of ``exp(y)``, skipping NaN.

    The root mean square is the efficient scale estimate of the Gaussian
    initial output (slope errors about 1.5 times smaller than with the mean
    of the logs); for the concentrated quantities any average gives the same
    slope. Computed from the logs (no overflow); NaN where every seed is NaN.
    """
    finite = np.isfinite(y)
    count = finite.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: NaN, silently
        top = np.nanmax(y, axis=-1)
        power = np.where(finite, np.exp(2 * (y - top[..., None])), 0.0).sum(-1) / count
        return np.where(count > 0, top + 0.5 * np.log(power), np.nan)


def _noise_model_weights(
    x: NDArray[np.float64], variance: NDArray[np.float64], used: NDArray[np.bool_]
) -> NDArray[np.float64]:
    """Fit weights: the inverse of a power law in width fitted to the per-width variances.

    The noise of most quantities scales like a power of the width (the
    initial output's not at all, the kernel's like 1/d), so a two-parameter
    fit of log variance against log width describes it without following each
    width's own noisy (few-seed) variance estimate, which would tie the
    weights to the data and bias the errors low. Relative weights, the
    largest 1; equal weights where fewer than two widths are used.
    """
    positive = used & (variance > 0)
    trend = np.nan_to_num(_slopes(x, np.where(positive, np.log(np.where(positive, variance, 1.0)), np.nan)))
    log_weight = np.where(used, -trend[..., None] * x, -np.inf)
    with np.errstate(invalid="ignore"):
        relative = np.exp(log_weight - np.max(log_weight, axis=-1, keepdims=True))
    return np.where(used & np.isfinite(relative), relative, 0.0)


class _Fit(NamedTuple):
    """Line and parabola through the per-width seed averages of one quantity (arrays over cells)."""

    slope: NDArray[np.float64]
    std: NDArray[np.float64]
    dof: NDArray[np.float64]
    curvature: NDArray[np.float64]
    curvature_std: NDArray[np.float64]
    #: The local slope measurably rises / falls with width (the asymptote lies above / below).
    rises: NDArray[np.bool_]
    falls: NDArray[np.bool_]
    #: |curvature| where a bend is found (by either test), else 0.
    bend: NDArray[np.float64]
    #: The slope is ``sum(slope_weights * average)`` over the widths.
    slope_weights: NDArray[np.float64]
    #: Log-width range of the fitted widths.
    span: NDArray[np.float64]


def _fit(
    x: NDArray[np.float64],
    average: NDArray[np.float64],
    variance: NDArray[np.float64],
    seeds: NDArray[np.int64],
    rate: float,
) -> _Fit:
    """Slope and curvature of the seed averages against log width, with seed-noise errors and a bend test.

    Widths whose average rests on a single seed carry no noise estimate and
    are left out, unless no width has one (``bootstrap = 0``; the errors are
    then 0). The widths are independent draws, so a coefficient
    ``sum(w * average)`` has the standard deviation ``sqrt(sum(w^2
    variance))``, with Welch-Satterthwaite degrees of freedom (``seeds - 1``
    per width). Slope and curvature (the quadratic coefficient of the
    parabola, NaN with fewer than 3 widths) are least squares weighted by
    :func:`_noise_model_weights`: where the noise shrinks with width they lean
    on the widest runs, nearest the asymptote.

    A bend is found where the curvature differs from zero by more than its
    two-sided Student-t quantile at ``rate``, weighted or with every width
    weighing the same (which sees a bend among the narrow, noisy widths that
    the weights play down); any curvature counts without a noise estimate,
    none with fewer than 3 widths. ``rises`` / ``falls``: a bend found with
    positive / negative curvature; ``bend``: then the weighted curvature's
    magnitude (the slope decided on is the weighted one).
    """
    finite = np.isfinite(average)
    known = finite & (seeds >= 2)
    used = np.where(known.any(-1, keepdims=True), known, finite)
    noise = np.where(used & known, variance, 0.0)
    y = np.where(used, average, 0.0)
    x = np.broadcast_to(x, y.shape)

    def coefficient(weight: NDArray[np.float64], degree: int) -> tuple[NDArray[np.float64], ...]:
        w = _polynomial_weights(x, weight, degree)
        terms = w**2 * noise
        total = terms.sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            dof = total**2 / (terms**2 / np.maximum(seeds - 1, 1)).sum(-1)
        value = np.where(used.sum(-1) > degree, (w * y).sum(-1), np.nan)
        return value, np.sqrt(total), np.where(total > 0, dof, np.inf), w

    weight = _noise_model_weights(x, noise, used)
    slope, std, dof, slope_weights = coefficient(weight, 1)
    curvature, curvature_std, curvature_dof, _ = coefficient(weight, 2)
    even, even_std, even_dof, _ = coefficient(used.astype(float), 2)
    enough = used.sum(-1) >= 3
    with np.errstate(invalid="ignore"):
        found = [
            (c, enough & (np.abs(c) > _quantile(rate, d) * s))
            for c, s, d in ((curvature, curvature_std, curvature_dof), (even, even_std, even_dof))
        ]
    rises = np.logical_or.reduce([seen & (c > 0) for c, seen in found])
    falls = np.logical_or.reduce([seen & (c < 0) for c, seen in found])
    # The size of the bend that matters is that of the weighted fit, whose slope is decided on.
    bend = np.where(rises | falls, np.abs(np.nan_to_num(curvature)), 0.0)
    span = np.where(used, x, -np.inf).max(-1) - np.where(used, x, np.inf).min(-1)
    return _Fit(slope, std, dof, curvature, curvature_std, rises, falls, bend, slope_weights, np.maximum(span, 0.0))


def _quantile(rate: float, dof: NDArray[np.float64]) -> NDArray[np.float64]:
    """Two-sided Student-t quantile for ``rate`` (the normal one for infinite or unknown dof)."""
    return stats.t.ppf(1.0 - rate / 2, np.where(np.isfinite(dof) & (dof > 0), dof, np.inf))


def _curvature_allowance(fit: _Fit) -> NDArray[np.float64]:
    """How far the asymptotic exponent may lie beyond the fitted slope: max(sqrt(2 c), 2 c R).

    c is the curvature found (:func:`_fit`), R the log-width range. If the
    log-log curve bends by one crossover (a competing power law, or a
    correction d^-q: its local slope is a logistic in log d of height q and
    width 1/q) centred in the lower half of the width range or below it, the
    fitted slope misses the asymptote by about this much at most, on the side
    the local slope moves to as the width grows. The first term is the miss
    of a slow crossover spread over the whole range (the local slope changes
    by q^2 / 4 per unit log width, curvature q^2 / 8, while missing the
    asymptote by q / 2 = sqrt(2 c)), the second that of a sharp one in
    mid-range (a kink of height q: best parabola c = q / (4 R), miss q / 2).
    Checked numerically on logistic crossovers of every height 0.01..10 and
    midpoint up to the middle of the range: the miss exceeds the allowance by
    at most 2 % (the two limits are exact, in between they overlap). Zero
    where no bend is found (a straight line fits).
    """
    return np.maximum(np.sqrt(2 * fit.bend), 2 * fit.bend * fit.span)


def fit_exponents(
    measured: xr.Dataset, settings: FitSettings, *, min_widths: int, rng: np.random.Generator | None = None
) -> xr.Dataset:
    """Log-log slopes against width of every measured quantity, per cell, with decision intervals.

    Per width the seeds are averaged (:func:`_seed_average`); the variance of
    each width's average is its variance over ``settings.bootstrap`` resamples
    of the seeds, times n/(n - 1), and at least ``settings.resolution``
    squared (no average is known better than the float64 resolution of what it
    averages). :func:`_fit` fits slope and curvature. For each quantity:

    - ``<name>_exponent``, its seed-noise ``_std`` and the effective degrees
      of freedom ``_dof`` of that standard deviation;
    - ``<name>_exponent_curvature`` (half the change of the local slope per
      unit log width: what seed resampling does not see) with ``_curvature_std``;
    - ``<name>_exponent_allowance``: :func:`_curvature_allowance` (for the
      kernel scale also the share of its slope that a vanishing kernel change
      carries, see below);
    - ``<name>_exponent_low`` / ``_high``: the decision interval, slope -/+
      (t std + log(1 + trend_resolution) / span), widened by the allowance on
      the side a bend points to (the asymptotic exponent lies that way); t is
      the two-sided Student-t quantile of ``settings.false_decision_rate`` at
      the effective dof, span the log-width range fitted.

    The kernel moves from K(0) by the kernel change while the network learns,
    so the kernel scale carries the factor 1 + change; where the change
    vanishes with width (its interval below zero, or unresolved), that
    factor's share of the slope vanishes with it: a correction, not the
    rate's exponent, so the interval of the kernel scale is widened by it.

    Fit domain: the kernel scale and change of a cell are fitted over the
    widths where every seed reached its learning time, when there are at least
    ``min_widths`` of them (``at_learning_time``); otherwise over all widths,
    read at the horizon (cells that do not learn within it). The learning time
    is fitted over the widths where every seed reached it. Kernel changes below
    ``settings.resolution`` are left out; ``kernel_change_at_resolution``
    marks cells where no seed resolves it at the largest fitted width. Also
    ``learning_widths`` and ``diverged_fraction`` (at the largest width).
    Dims: the cell dims (grid dims without width and seed).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    measured = measured.sortby("width")
    x = np.log(measured["width"].values.astype(float))
    cells = list(measured["beta0"].transpose(..., "width", "seed").dims[:-2])

    def values(name: str) -> NDArray[Any]:
        return measured[name].transpose(*cells, "width", "seed").values

    learned_widths = values("learned").all(-1)
    learning_widths = learned_widths.sum(-1)
    at_learning = learning_widths >= min_widths
    n_seeds = measured.sizes["seed"]
    resamples = [rng.integers(0, n_seeds, n_seeds) for _ in range(settings.bootstrap)]
    rate = settings.false_decision_rate
    fits, allowances, raws = {}, {}, {}
    for name, _ in QUANTITIES:
        raw = values(name).astype(float)
        if name in AT_LEARNING_TIME:
            raw = np.where(at_learning[..., None, None] & ~learned_widths[..., None], np.nan, raw)
        elif name == "learning_time":
            raw = np.where(learned_widths[..., None], raw, np.nan)
        raws[name] = raw
        floor = settings.resolution if name == "kernel_change" else np.finfo(float).tiny
        with np.errstate(invalid="ignore", divide="ignore"):
            y = np.where((raw < floor) | np.isnan(raw), np.nan, np.log(raw))
        average = _seed_average(y)
        # Bootstrap variance of each width's average, accumulated about the estimate (no stack of resamples).
        shift, square, count = np.zeros_like(average), np.zeros_like(average), np.zeros_like(average)
        for index in resamples:
            deviation = _seed_average(y[..., index]) - average
            ok = np.isfinite(deviation)
            shift += np.where(ok, deviation, 0.0)
            square += np.where(ok, deviation**2, 0.0)
            count += ok
        with np.errstate(invalid="ignore", divide="ignore"):
            variance = np.nan_to_num((square / count - (shift / count) ** 2) * n_seeds / max(n_seeds - 1, 1))
        seeds = np.where(count > 0, np.isfinite(y).sum(-1), 0)
        fits[name] = _fit(x, average, np.maximum(variance, settings.resolution**2), seeds, rate)
        allowances[name] = _curvature_allowance(fits[name])

    # The decision interval: seed noise (t std) and the trend resolution both ways, the allowance on
    # the side(s) a bend points to.
    def half_width(fit: _Fit) -> NDArray[np.float64]:
        with np.errstate(divide="ignore"):
            trend = np.where(fit.span > 0, np.log1p(settings.trend_resolution) / fit.span, np.inf)
        return _quantile(rate, fit.dof) * fit.std + trend

    bounds = {
        name: (
            fit.slope - half_width(fit) - np.where(fit.falls, allowances[name], 0.0),
            fit.slope + half_width(fit) + np.where(fit.rises, allowances[name], 0.0),
        )
        for name, fit in fits.items()
    }
    change = raws["kernel_change"]
    with np.errstate(invalid="ignore"):
        unresolved = change < settings.resolution
        at_resolution = _unresolved_at_largest(unresolved, np.isfinite(change) & ~unresolved)
        vanishes = (bounds["kernel_change"][1] < 0) | at_resolution
    # While it learns, the kernel moves from K(0) by the kernel change, so the kernel scale carries
    # the factor 1 + change. Where the change vanishes with width, so does that factor's share of
    # the slope (a correction, not the rate's exponent): it is allowed for like curvature.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # widths without a measured change
        share = np.nan_to_num(np.nanmean(np.log1p(change), axis=-1))
    drift = np.where(vanishes, np.abs((fits["kernel_scale"].slope_weights * share).sum(-1)), 0.0)
    low, high = bounds["kernel_scale"]
    bounds["kernel_scale"] = (low - drift, high + drift)
    allowances["kernel_scale"] = np.maximum(allowances["kernel_scale"], drift)
    fitted: dict[str, Any] = {}
    for name, _ in QUANTITIES:
        fit = fits[name]
        entries = {
            "": fit.slope,
            "_std": fit.std,
            "_dof": fit.dof,
            "_curvature": fit.curvature,
            "_curvature_std": fit.curvature_std,
            "_allowance": allowances[name],
            "_low": bounds[name][0],
            "_high": bounds[name][1],
        }
        for suffix, data in entries.items():
            fitted[f"{name}_exponent{suffix}"] = (cells, data)
    fitted["kernel_change_at_resolution"] = (cells, at_resolution)
    fitted["learning_widths"] = (cells, learning_widths)
    fitted["at_learning_time"] = (cells, at_learning)
    fitted["diverged_fraction"] = (cells, values("diverged")[..., -1, :].mean(-1))
    return xr.Dataset(fitted, coords={d: measured[d] for d in cells})


def _unresolved_at_largest(unresolved: NDArray[np.bool_], resolved: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """At the largest width where any seed was measured (cells, width, seed): some unresolved, none resolved."""
    measured = (unresolved | resolved).any(-1)
    last = measured.shape[-1] - 1 - np.argmax(measured[..., ::-1], axis=-1)
    pick = last[..., None, None]
    return (
        measured.any(-1)
        & np.take_along_axis(unresolved, pick, axis=-2)[..., 0, :].any(-1)
        & ~np.take_along_axis(resolved, pick, axis=-2)[..., 0, :].any(-1)
    )


def decide_sign(fitted: xr.Dataset, name: str) -> NDArray[np.int8]:
    """Sign of the exponent of quantity ``name`` where it is told from zero: +1, -1, or 0 (undecided).

    Decided when the decision interval ``[<name>_exponent_low,
    <name>_exponent_high]`` (:func:`fit_exponents`) excludes zero; an
    unmeasurable (NaN) slope is undecided.
    """
    low, high = fitted[f"{name}_exponent_low"].values, fitted[f"{name}_exponent_high"].values
    with np.errstate(invalid="ignore"):
        return np.where(low > 0, 1, np.where(high < 0, -1, 0)).astype(np.int8)


def classify(fitted: xr.Dataset, settings: FitSettings) -> xr.Dataset:
    """Empirical phase codes from the fitted slopes alone, and the criterion that decided each.

    The criteria, in order (see :data:`~featlearn.contract.PHASE_CRITERIA`):

    - ``e0``, the initial-output exponent: positive is unstable-init; not told
      from zero is ``boundary``; negative goes on;
    - ``divergence``: at least ``divergence_fraction`` of the seeds diverged at
      the largest width (GD) is unstable-training;
    - ``elam``, the kernel-scale exponent (the rate): negative is frozen,
      positive unstable-training; not told from zero is the elam = 0 of the
      last two rows (the condition of those phases, not a boundary between
      them) and goes on; unmeasurable is ``boundary``;
    - ``eM``, read from the kernel-change exponent: a change that vanishes
      (decision interval below zero, or unresolved at the largest fitted
      width) is kernel, one that grows is feature-learning; not told from
      zero is ``boundary``.

    A sign is decided by :func:`decide_sign`; the classifier reads no
    predicted exponent.

    Returns ``phase`` (codes into :data:`CLASSIFIED_PHASES`; 5 is boundary)
    and ``phase_criterion`` (codes into :data:`~featlearn.contract.PHASE_CRITERIA`).
    """
    e0 = decide_sign(fitted, "beta0")
    rate = decide_sign(fitted, "kernel_scale")
    rate_measured = np.isfinite(fitted["kernel_scale_exponent"].values)
    change = decide_sign(fitted, "kernel_change")
    vanishes = (change == -1) | fitted["kernel_change_at_resolution"].values
    diverging = fitted["diverged_fraction"].values >= settings.divergence_fraction
    code = {name: i for i, name in enumerate(CLASSIFIED_PHASES)}
    # (condition, phase, criterion), first match wins; every cell matches the last row.
    rows = [
        (e0 == 1, "unstable-init", "e0"),
        (e0 == 0, "boundary", "e0"),
        (diverging, "unstable-training", "divergence"),
        (rate == -1, "frozen", "elam"),
        (rate == 1, "unstable-training", "elam"),
        (~rate_measured, "boundary", "elam"),
        (vanishes, "kernel", "eM"),
        (change == 1, "feature-learning", "eM"),
        (np.ones_like(vanishes), "boundary", "eM"),
    ]
    shape = e0.shape
    match = _first_match([np.broadcast_to(condition, shape) for condition, _, _ in rows], shape)
    phase = np.array([code[row[1]] for row in rows], dtype=np.int8)[match]
    criterion = np.array([PHASE_CRITERIA.index(row[2]) for row in rows], dtype=np.int8)[match]
    dims, coords = fitted["beta0_exponent"].dims, fitted["beta0_exponent"].coords
    return xr.Dataset({"phase": (dims, phase), "phase_criterion": (dims, criterion)}, coords=coords)


# ---------------------------------------------------------------------------
# gradient descent: converging, catapult, divergent


def gd_run_labels(trajectories: xr.Dataset, rise: float) -> xr.Dataset:
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


#: The measured quantity each criterion of :func:`classify` reads (divergence: the diverged seeds).
CRITERION_QUANTITY = {"e0": "beta0", "elam": "kernel_scale", "eM": "kernel_change"}


def _decisive_reading(result: xr.Dataset, criterion: str, index: tuple[int, ...]) -> str:
    """What decided a cell: `` (CRITERION: QUANTITY exponent E +- STD [LOW, HIGH], predicted P)``."""
    if criterion not in CRITERION_QUANTITY:
        return f" ({criterion}: diverged fraction {result['diverged_fraction'].values[index]:.2f})"
    name = f"{CRITERION_QUANTITY[criterion]}_exponent"
    value, std, low, high, predicted = (
        float(result[f"{name}{suffix}"].values[index]) for suffix in ("", "_std", "_low", "_high", "_predicted")
    )
    return f" ({criterion}: {name} {value:.3f} +- {std:.3f} [{low:.3f}, {high:.3f}], predicted {predicted:.3f})"


#: Predicted phases whose decision each measured exponent takes part in (the summaries use these cells).
DECIDES: dict[str, tuple[str, ...]] = {
    "beta0": PHASES,
    "kernel_scale": PHASES[1:],
    "kernel_change": ("kernel", "feature-learning"),
    "learning_time": PHASES[1:],
}


def _difference_summary(result: xr.Dataset) -> dict[str, float]:
    """Median and 95th percentile of |measured - predicted| per exponent (attributes of phases.nc).

    Over the cells whose predicted phase the exponent helps decide
    (:data:`DECIDES`: the initial output everywhere, the rate wherever the
    initial output is stable, the kernel change where the rate is of order
    one) and where both are finite; for the quantities read at the learning
    time, only cells fitted there (``at_learning_time``), since the
    predicted exponents describe the learning time, not the horizon.
    """
    summary = {}
    at_learning = result["at_learning_time"].values
    predicted = result["phase_theory"].values
    for name, _ in QUANTITIES:
        difference = np.abs(result[f"{name}_exponent_difference"].values)
        decides = np.isin(predicted, [PHASES.index(phase) for phase in DECIDES[name]])
        used = np.isfinite(difference) & decides & (at_learning if name != "beta0" else True)
        values = difference[used]
        summary[f"{name}_difference_median"] = float(np.median(values)) if values.size else float("nan")
        summary[f"{name}_difference_p95"] = float(np.percentile(values, 95)) if values.size else float("nan")
    return summary


@dataclass(frozen=True)
class PhaseSettings:
    """Settings of the phase stage: the configuration's ``phases`` section (defaults in its schema).

    ``fit``: how slopes are fitted and decided; ``min_widths``: widths an
    experiment needs for slopes to be fitted (and a cell for its fit at the
    learning time); ``gd_rise``: the loss rise of a catapult;
    ``min_agreement``: the agreement over decided cells a strict run must
    reach (``None`` when ``strict`` is off).
    """

    fit: FitSettings
    min_widths: int
    gd_rise: float
    min_agreement: float | None

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> PhaseSettings:
        """From the ``phases`` section of a resolved configuration (``experiments`` and ``figures`` not needed).

        ``fit.tolerance``, which the first classifier compared slopes with, is
        accepted by the schema for existing configurations and ignored: the
        decisions are statistical (``docs/phases.md``).
        """
        fit = {key: value for key, value in section["fit"].items() if key not in ("min_widths", "tolerance")}
        min_agreement = section["min_agreement"] if section["strict"] else None
        return cls(FitSettings(**fit), section["fit"]["min_widths"], section["gd_rise"], min_agreement)


def analyse(trajectories: xr.Dataset, settings: PhaseSettings) -> xr.Dataset:
    """The phases dataset of one experiment (``results/<experiment>/phases.nc`` without provenance).

    Always: the predicted phase ``phase_theory`` and exponents of every cell
    (grid dims without width). With a ``width`` dim of at least
    ``settings.min_widths`` values: the fitted exponents with their errors next
    to the predicted ones (``<quantity>_exponent_predicted``,
    ``<quantity>_exponent_difference``), the empirical ``phase`` (``boundary``
    where undecided) and the ``phase_criterion`` that decided it, the per-cell
    ``agrees``, and the attributes ``agreement`` (over decided cells),
    ``boundary_fraction``, the per-exponent difference summaries and the
    disagreeing cells. With the gd solver: the per-run and per-cell
    discrete-time labels of :func:`gd_run_labels` and :func:`gd_cells`.
    """
    fit_settings, min_widths = settings.fit, settings.min_widths
    cells = [d for d in trajectories["beta"].dims if d not in ("width", "seed", "time")]
    exps = [_cell_exponents(trajectories, cells)[n] for n in ("a", "b_u", "b_w", "c_u", "c_w", "rho")]
    theory_codes = predict(*exps)
    data: dict[str, Any] = {"phase_theory": (cells, theory_codes)}
    predicted_exponents = exponents(*exps)
    for key, value in predicted_exponents._asdict().items():
        data[f"theory_{key}"] = (cells, value)
    result = xr.Dataset(data, coords={d: trajectories[d].reset_coords(drop=True) for d in cells})
    attrs: dict[str, Any] = {}

    fits = "width" in trajectories.dims and trajectories.sizes["width"] >= min_widths
    gd = trajectories.attrs.get("solver") == "gd"
    # One pass over the runs for every per-run quantity: lazily read grids stream through it.
    per_run = xr.merge(
        [
            measure(trajectories, fit_settings.learning_fraction) if fits else xr.Dataset(),
            gd_run_labels(trajectories, settings.gd_rise) if gd else xr.Dataset(),
        ]
    ).compute()
    if fits:
        result = result.merge(fit_exponents(per_run, fit_settings, min_widths=min_widths))
        for name, _ in QUANTITIES:
            predicted = measured_exponents(predicted_exponents)[name]
            result[f"{name}_exponent_predicted"] = (cells, predicted)
            result[f"{name}_exponent_difference"] = (cells, result[f"{name}_exponent"].values - predicted)
        classified = classify(result, fit_settings)
        phase = classified["phase"].values
        decided = phase != BOUNDARY
        agrees = phase == theory_codes
        result["phase"] = (cells, phase)
        result["phase_criterion"] = (cells, classified["phase_criterion"].values)
        result["agrees"] = (cells, agrees)
        disagreeing = [
            _describe_cell({d: result[d].values[i] for d, i in zip(cells, index)})
            + f": measured {CLASSIFIED_PHASES[phase[index]]}, predicted {PHASES[theory_codes[index]]}"
            + _decisive_reading(result, PHASE_CRITERIA[classified["phase_criterion"].values[index]], index)
            for index in np.ndindex(phase.shape)
            if decided[index] and not agrees[index]
        ]
        on_boundary = classified["phase_criterion"].values[~decided]
        attrs.update(
            agreement=float(agrees[decided].mean()) if decided.any() else float("nan"),
            cells=int(agrees.size),
            decided_cells=int(decided.sum()),
            boundary_fraction=float(1.0 - decided.mean()),
            boundary_criteria=", ".join(f"{c} {int((on_boundary == i).sum())}" for i, c in enumerate(PHASE_CRITERIA)),
            disagreeing_cells="; ".join(disagreeing) if disagreeing else "none",
            widths_fitted=int(trajectories.sizes["width"]),
            **_difference_summary(result),
            **{f"fit_{key}": value for key, value in asdict(fit_settings).items()},
        )
    if gd:
        result = result.merge(gd_cells(per_run))
        attrs["gd_rise"] = settings.gd_rise
    result.attrs.update(attrs)
    return contract.annotate(result, "phases")
