"""Figures of the phase stage: diagrams, kernel change and learning time against width, finite-width map, GD steps.

The phase diagrams read ``phases.nc`` (:func:`featlearn.phase_diagram.analyse`),
of a linear experiment or of a nonlinear phase plane (``nonlinear_phase_diagram``,
predicted and classified side by side):
the colour is the phase classified from measurements (hatched white where
the decisive exponent cannot be told from zero: ``boundary``), the black
lines are the boundaries between the predicted phases (drawn along cell
edges) and a cross marks every decided cell where the two disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.collections import PatchCollection
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import NullFormatter

from featlearn import phase_diagram, theory
from featlearn.contract import CLASSIFIED_PHASES, GD_PHASES
from featlearn.errors import InputError
from featlearn.figures.style import new_figure

PHASE_COLOURS = ("#444444", "#bcbddc", "#fb6a4a", "#6baed6", "#74c476")
#: Undecided (``boundary``) cells: white, hatched in this colour.
BOUNDARY_HATCH = "#737373"
GD_COLOURS = ("#74c476", "#fdae6b", "#de2d26")
AXIS_LABELS = {
    "a": r"output-scale exponent $a$ ($\kappa \sim d^{-a}$)",
    "b_u": r"init-scale exponent $b$ ($\sigma_u = \sigma_w \sim d^{-b}$)",
    "c_u": r"learning-rate exponent $c$ ($\eta_u = \eta_w \sim d^{-c}$)",
    "b_imbalance": r"init imbalance $b_u - b_w$",
    "c_imbalance": r"learning-rate imbalance $c_u - c_w$",
    "eta_u0": r"step $h\,\eta_0$ (learning-rate prefactor, $h = 1$)",
    "kappa0": r"output scale $\kappa$",
    "sigma_u0": r"init scale $\sigma_u = \sigma_w$",
    "oblique_s": r"oblique coordinate $s$ (all five exponents vary)",
    "oblique_t": r"oblique coordinate $t$ (all five exponents vary)",
}


def _edges(values: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres (midpoints; half a step beyond the ends)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return values + np.array([-0.5, 0.5])
    middle = (values[1:] + values[:-1]) / 2
    return np.concatenate([[2 * values[0] - middle[0]], middle, [2 * values[-1] - middle[-1]]])


def _categorical(names: Sequence[str], colours: Sequence[str]) -> tuple[ListedColormap, BoundaryNorm, list[Patch]]:
    cmap = ListedColormap(colours)
    norm = BoundaryNorm(np.arange(len(names) + 1) - 0.5, len(names))
    handles = [Patch(color=c, label=n) for n, c in zip(names, colours)]
    return cmap, norm, handles


def _boundaries(ax, codes: np.ndarray, x_edges: np.ndarray, y_edges: np.ndarray, **style) -> None:
    """Draw the cell edges separating different codes (``codes`` has shape (y, x))."""
    for i, j in zip(*np.nonzero(codes[:, 1:] != codes[:, :-1])):
        ax.plot([x_edges[j + 1]] * 2, [y_edges[i], y_edges[i + 1]], **style)
    for i, j in zip(*np.nonzero(codes[1:, :] != codes[:-1, :])):
        ax.plot([x_edges[j], x_edges[j + 1]], [y_edges[i + 1]] * 2, **style)


def _plane_codes(ds: xr.Dataset, x: str, y: str) -> tuple[xr.Dataset, np.ndarray, np.ndarray]:
    """``ds`` sorted along x and y, with its measured and predicted phase codes as (y, x) arrays."""
    extra = [d for d in ds["phase"].dims if d not in (x, y)]
    if extra:
        raise InputError(
            f"phase diagram over ({x}, {y}) needs a 2-D grid; {ds.attrs.get('experiment')} also sweeps {extra}"
        )
    ds = ds.sortby([x, y])
    return ds, ds["phase"].transpose(y, x).values, ds["phase_theory"].transpose(y, x).values


def _phase_panel(ax, ds: xr.Dataset, x: str, y: str, codes: np.ndarray, predicted: np.ndarray) -> list:
    """Draw phase ``codes`` over (x, y) (boundary cells hatched), the predicted boundaries and the disagreements.

    ``codes`` and ``predicted`` are (y, x) arrays of ``ds`` sorted along x and
    y (:func:`_plane_codes`). Returns the legend handles.
    """
    x_edges, y_edges = _edges(ds[x].values), _edges(ds[y].values)
    cmap, norm, handles = _categorical(CLASSIFIED_PHASES, (*PHASE_COLOURS, "#ffffff"))
    ax.pcolormesh(x_edges, y_edges, codes, cmap=cmap, norm=norm)
    # Hatching marks the undecided cells (on the boundary of the criterion they sit on).
    undecided = [
        Rectangle((x_edges[j], y_edges[i]), x_edges[j + 1] - x_edges[j], y_edges[i + 1] - y_edges[i])
        for i, j in zip(*np.nonzero(codes == phase_diagram.BOUNDARY))
    ]
    ax.add_collection(PatchCollection(undecided, facecolor="none", edgecolor=BOUNDARY_HATCH, hatch="////", linewidth=0))
    handles[-1] = Patch(facecolor="#ffffff", edgecolor=BOUNDARY_HATCH, hatch="////", label="boundary (undecided)")
    _boundaries(ax, predicted, x_edges, y_edges, color="k", lw=1.8)
    wrong_y, wrong_x = np.nonzero((codes != predicted) & (codes != phase_diagram.BOUNDARY))
    ax.plot(
        ds[x].values[wrong_x],
        ds[y].values[wrong_y],
        "x",
        color="k",
        ms=8 if codes.size < 400 else 4,
        mew=2 if codes.size < 400 else 1,
    )
    handles += [
        Line2D([], [], color="k", lw=1.8, label="predicted boundary"),
        Line2D([], [], color="k", marker="x", ls="none", mew=2, label="disagreement"),
    ]
    ax.set_xlabel(AXIS_LABELS.get(x, x))
    ax.set_ylabel(AXIS_LABELS.get(y, y))
    ax.grid(False)
    return handles


def _agreement_text(ds: xr.Dataset) -> str:
    """The agreement over decided cells and the boundary fraction, as the titles state them."""
    agreement = ds.attrs.get("agreement", float("nan"))
    decided = ds.attrs.get("decided_cells", "?")
    boundary = ds.attrs.get("boundary_fraction", float("nan"))
    widths = ds.attrs.get("widths_fitted", "?")
    return f"agreement {agreement:.1%} of {decided} decided cells, boundary {boundary:.1%} ({widths} widths per cell)"


def _phase_plane(ds: xr.Dataset, x: str, y: str, title: str) -> Figure:
    """Empirical phase (colour, boundary cells hatched) over the (x, y) plane, predicted boundaries, disagreements."""
    ds, measured, predicted = _plane_codes(ds, x, y)
    figure, axes = new_figure(1, 1, width=5.8, height=4.4)
    handles = _phase_panel(axes[0, 0], ds, x, y, measured, predicted)
    axes[0, 0].set_title(f"{title}\n{_agreement_text(ds)}", fontsize=9)
    figure.legend(handles=handles, loc="outside right center", frameon=False)
    return figure


def nonlinear_phase_diagram(*, phases: xr.Dataset, x: str | None = None, y: str | None = None) -> Figure:
    """A nonlinear phase plane: the predicted phases and the phases classified from the networks, side by side.

    ``x`` and ``y`` are the plane's two grid dims besides width (default:
    its second and its first). The right panel marks the decided cells that
    disagree with the prediction; the title states the agreement.
    """
    dims = list(phases["phase"].dims)
    x, y = x or dims[-1], y or dims[0]
    ds, measured, predicted = _plane_codes(phases, x, y)
    figure, axes = new_figure(1, 2, width=4.6, height=4.4)
    _phase_panel(axes[0, 0], ds, x, y, predicted, predicted)
    axes[0, 0].set_title("predicted (the solvable model's exponents)", fontsize=9)
    handles = _phase_panel(axes[0, 1], ds, x, y, measured, predicted)
    axes[0, 1].set_title("classified from the networks' width sweeps", fontsize=9)
    name = str(ds.attrs.get("experiment", "")).replace("_", " ")
    network = ds.attrs.get("network", "")
    figure.suptitle(f"{name}: {network}\n{_agreement_text(ds)}", fontsize=9)
    figure.legend(handles=handles, loc="outside right center", frameon=False)
    return figure


def phases_diagram_scale(*, phases: xr.Dataset, x: str = "b_u", y: str = "a") -> Figure:
    """Output scale against init scale, learning rates at their largest stable scaling."""
    return _phase_plane(phases, x, y, "output scale vs init scale (learning rate at its largest stable scaling)")


def phases_diagram_imbalance(*, phases: xr.Dataset, x: str = "b_imbalance", y: str = "c_imbalance") -> Figure:
    """Layer imbalance of the init scales against that of the learning rates."""
    return _phase_plane(phases, x, y, "layer imbalance: init scales vs learning rates")


def phases_diagram_rate(*, phases: xr.Dataset, x: str = "c_u", y: str = "a") -> Figure:
    """Output scale against learning-rate scaling (NTK init): every phase of the table."""
    return _phase_plane(phases, x, y, "output scale vs learning-rate scaling (init scale fixed)")


def phases_diagram_oblique(*, phases: xr.Dataset, x: str = "oblique_s", y: str = "oblique_t") -> Figure:
    """A plane through all five exponents (derived values of two oblique axes)."""
    return _phase_plane(phases, x, y, "oblique plane through all five exponents")


def phases_kernel_change_width(*, trajectories: xr.Dataset, phases: xr.Dataset) -> Figure:
    """Relative kernel change at the learning time against width, one line per parametrization, fitted slopes annotated.

    Inputs: the experiment's trajectories and its phases dataset (for the
    fitted slopes, their bootstrap errors and the predicted exponents).
    """
    fitted = phases
    change = phase_diagram.measure(trajectories, float(fitted.attrs["fit_learning_fraction"]))["kernel_change"]
    figure, axes = new_figure(1, 1, width=6.2, height=4.6)
    ax = axes[0, 0]
    widths = change["width"].values.astype(float)
    for index, name in enumerate(change["parametrization"].values):
        runs = change.sel(parametrization=name).transpose("width", "seed").values
        log_runs = np.log(runs)
        centre = np.exp(np.nanmean(log_runs, axis=1))
        low, high = np.nanpercentile(runs, [16, 84], axis=1)
        colour, marker = f"C{index}", "osD^v"[index % 5]
        slope = float(fitted["kernel_change_exponent"].sel(parametrization=name))
        error = float(fitted["kernel_change_exponent_std"].sel(parametrization=name))
        # Small changes go like d^(-2 eM), large ones (eM < 0) like d^(-eM) (phase_diagram.measured_exponents).
        predicted = float(fitted["kernel_change_exponent_predicted"].sel(parametrization=name)) + 0.0
        ax.errorbar(widths, centre, yerr=[centre - low, high - centre], fmt=marker, color=colour, ms=4, capsize=2)
        intercept = np.nanmean(np.log(centre) - slope * np.log(widths))
        # Dashed every other line: parametrizations with equal changes (one learning-rate scale apart) stay visible.
        ax.plot(
            widths,
            np.exp(intercept + slope * np.log(widths)),
            "-" if index % 2 == 0 else "--",
            color=colour,
            lw=1.2,
            label=f"{str(name).replace('_', '-')}: slope {slope:+.2f} ± {error:.2f} (theory {predicted:+.1f})",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width $d$")
    ax.set_ylabel(r"relative kernel change at the learning time $|K_\eta(t_c)/K_\eta(0) - 1|$")
    ax.legend(fontsize=7, loc="best")
    return figure


def phases_learning_time(*, trajectories: xr.Dataset, phases: xr.Dataset) -> Figure:
    """Learning time t_c against width for each parametrization: measured, fitted, and the closed form.

    Inputs: the experiment's trajectories and its phases dataset (fitted
    learning-time exponents and the learning fraction). Markers: median over
    seeds of the measured t_c (:func:`featlearn.phase_diagram.measure`; 16-84 %
    bars), where every seed reached it within the horizon and the records
    resolve it. Lines: median of the closed form ``theory.learning_time`` of
    the same runs. The legend gives the fitted exponent with its seed-noise
    error and the predicted one, -elam (t_c ~ log d in feature-learning cells
    with eM < 0, exponent 0).
    """
    fitted = phases
    fraction = float(fitted.attrs["fit_learning_fraction"])
    measured = phase_diagram.measure(trajectories, fraction)["learning_time"]
    start = trajectories.isel(time=0)
    names = ("kappa", "eta_u", "eta_w", "beta_star", "sigma2")
    uu, ww, uw, *hyper = xr.broadcast(start["uu"], start["ww"], start["uw"], *(trajectories[name] for name in names))
    closed = uu.copy(
        data=theory.learning_time(
            theory.Gram(uu.values, ww.values, uw.values), theory.Hyperparameters(*(h.values for h in hyper)), fraction
        )
    )
    figure, axes = new_figure(1, 1, width=6.4, height=4.6)
    ax = axes[0, 0]
    widths = measured["width"].values.astype(float)
    for index, name in enumerate(measured["parametrization"].values):
        runs = measured.sel(parametrization=name).transpose("width", "seed").values
        complete = np.isfinite(runs).all(axis=1)
        centre = np.where(complete, np.median(runs, axis=1), np.nan)
        low, high = (
            np.where(complete, np.percentile(np.where(np.isfinite(runs), runs, 0.0), q, axis=1), np.nan)
            for q in (16, 84)
        )
        colour, marker = f"C{index}", "osD^v"[index % 5]
        slope = float(fitted["learning_time_exponent"].sel(parametrization=name))
        error = float(fitted["learning_time_exponent_std"].sel(parametrization=name))
        predicted = float(fitted["learning_time_exponent_predicted"].sel(parametrization=name)) + 0.0
        ax.errorbar(
            widths,
            centre,
            yerr=[centre - low, high - centre],
            fmt=marker,
            color=colour,
            ms=4,
            capsize=2,
            label=f"{str(name).replace('_', '-')}: slope {slope:+.2f} ± {error:.2f} (theory {predicted:+.1f})",
        )
        reference = closed.sel(parametrization=name).transpose("width", "seed").values
        ax.plot(widths, np.median(reference, axis=1), "-" if index % 2 == 0 else "--", color=colour, lw=1.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width $d$")
    ax.set_ylabel(rf"learning time $t_c$: loss down to {fraction:g} of its start")
    ax.set_title("markers: measured (median over seeds); lines: closed form of the same runs", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    return figure


def phases_kernel_change_map(*, trajectories: xr.Dataset, x: str = "sigma_u0", y: str = "kappa0") -> Figure:
    """Kernel change at one finite width over init scale and output scale.

    Colour: median over seeds of log10 |K_eta(T)/K_eta(0) - 1| from the runs.
    Dashed contours: the gradient-flow prediction |sqrt(1 + 4 (beta*^2 -
    beta0^2)/M^2) - 1| at the typical initial state (uu = d sigma_u^2,
    ww = d sigma_w^2, uw = sqrt(d) sigma_u sigma_w, its root mean square).
    """
    ds = trajectories.sortby([x, y])
    # At the horizon (long enough for these runs to converge), which the final ratio of the closed form describes.
    kernel = ds["ntk_eta"]
    change = np.abs(kernel.isel(time=-1) / kernel.isel(time=0) - 1.0).median("seed").transpose(y, x)
    width = float(ds["width"].values.flat[0])
    hyper = {
        name: ds[name].transpose(y, x).values
        for name in ("kappa", "sigma_u", "sigma_w", "eta_u", "eta_w", "beta_star", "sigma2")
    }
    # A random initial output matters where it is large, so uw takes its typical size, not 0.
    typical = theory.Gram(
        width * hyper["sigma_u"] ** 2,
        width * hyper["sigma_w"] ** 2,
        np.sqrt(width) * hyper["sigma_u"] * hyper["sigma_w"],
    )
    predicted = np.abs(
        theory.final_kernel_ratio(
            typical,
            theory.Hyperparameters(hyper["kappa"], hyper["eta_u"], hyper["eta_w"], hyper["beta_star"], hyper["sigma2"]),
        )
        - 1.0
    )
    figure, axes = new_figure(1, 1, width=5.6, height=4.4)
    ax = axes[0, 0]
    x_values, y_values = ds[x].values.astype(float), ds[y].values.astype(float)
    log_x, log_y = np.log10(x_values), np.log10(y_values)
    mesh = ax.pcolormesh(
        10 ** _edges(log_x), 10 ** _edges(log_y), np.log10(change.values), cmap="viridis", shading="flat"
    )
    figure.colorbar(mesh, ax=ax, label=r"$\log_{10}$ relative kernel change (measured)")
    levels = [1e-2, 1.0, 1e2]
    contours = ax.contour(x_values, y_values, predicted, levels=levels, colors="w", linestyles="--", linewidths=1.2)
    ax.clabel(contours, fmt=lambda v: f"{v:g}", fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(AXIS_LABELS.get(x, x))
    ax.set_ylabel(AXIS_LABELS.get(y, y))
    ax.set_title(f"width d = {width:,.0f}; dashed: gradient-flow prediction", fontsize=9)
    ax.grid(False)
    return figure


def phases_gd_step(*, phases: xr.Dataset, x: str = "eta_u0", y: str = "a") -> Figure:
    """Gradient-descent behaviour over step size and output-scale exponent, one panel per width.

    Colour: converging / catapult / divergent (most frequent over seeds).
    White lines: step x initial kernel = 2 and 4, where linear-model theory
    puts the catapult window. Black line: the predicted kernel /
    feature-learning boundary of gradient flow.
    """
    ds = phases.sortby([x, y])
    widths = np.atleast_1d(ds["width"].values) if "width" in ds["gd_phase"].dims else [None]
    cmap, norm, handles = _categorical(GD_PHASES, GD_COLOURS)
    figure, axes = new_figure(1, len(widths), width=4.6, height=4.2, sharey=True)
    log_x = np.log10(ds[x].values.astype(float))
    x_edges, y_edges = 10 ** _edges(log_x), _edges(ds[y].values)
    flow = ds["phase_theory"].transpose(y, x).values
    for ax, width in zip(axes[0], widths):
        panel = ds if width is None else ds.sel(width=width)
        ax.pcolormesh(x_edges, y_edges, panel["gd_phase"].transpose(y, x).values, cmap=cmap, norm=norm)
        step_kernel = panel["step_kernel"].transpose(y, x).values
        contours = ax.contour(ds[x].values, ds[y].values, step_kernel, levels=[2.0, 4.0], colors="w", linewidths=1.6)
        ax.clabel(contours, fmt=lambda v: f"hK0={v:g}", fontsize=7)
        _boundaries(ax, flow, x_edges, y_edges, color="k", lw=1.8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(AXIS_LABELS.get(x, x))
        ax.set_title(f"width d = {int(width):,}" if width is not None else "", fontsize=9)
        ax.grid(False)
    axes[0, 0].set_ylabel(AXIS_LABELS.get(y, y))
    handles += [
        Line2D([], [], color="#999999", lw=1.6, label="step x initial kernel = 2, 4"),
        Line2D([], [], color="k", lw=1.8, label="flow: kernel | feature learning"),
    ]
    figure.legend(handles=handles, loc="outside right center", frameon=False)
    return figure
