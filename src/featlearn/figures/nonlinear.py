"""Figures of the nonlinear experiments (featlearn.nonlinear): alignment per layer over
training, NTK change against width, test accuracy and the mechanism measures against
init scale, mechanism summary.

Every run is drawn over its whole run: after its ``stop_step`` its values are held
(``docs/nonlinear.md``), and its stop is marked, a cross where the rule did not stop
it (the ``max_steps`` guard, or divergence).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from featlearn.contract import NONLINEAR_SWEEP_DIMS as SWEEP_DIMS
from featlearn.contract import STOP_REASONS
from featlearn.figures.style import new_figure
from featlearn.nonlinear.mechanisms import at_stop, loglog_slope, mechanism_flags

#: Dimensions that index panels (rows) when they hold more than one value.
PANEL_DIMS = ("setting", "parametrization", "width")
MECHANISMS = ("alignment", "disalignment", "rescaling")
GUARD_NOTE = "x: stopped by the step guard or diverged"
DIVERGED = STOP_REASONS.index("diverged")


def _varying(ds: xr.Dataset, dims: tuple[str, ...]) -> list[str]:
    return [dim for dim in dims if ds.sizes.get(dim, 1) > 1]


def _label(point: dict[str, Any]) -> str:
    named = ("setting", "activation", "parametrization")
    return ", ".join(f"{value}" if dim in named else f"{dim} {value:g}" for dim, value in point.items())


def _drop_sweeps(data: xr.DataArray | xr.Dataset) -> xr.DataArray | xr.Dataset:
    """Squeeze the swept dimensions left with one value (never ``seed``, ``step`` or ``layer``)."""
    return data.squeeze([d for d in SWEEP_DIMS if d in data.dims and data.sizes[d] == 1])


def _points(ds: xr.Dataset, dims: list[str]) -> list[dict[str, Any]]:
    return [dict(zip(dims, values)) for values in itertools.product(*(ds[d].values.tolist() for d in dims))]


def _draw_seeds(ax: Axes, run: xr.Dataset, values: xr.DataArray, colour, label: str) -> None:
    """Series ``values`` (``seed, step``) of one grid point: seed mean and min-max band, and each stop.

    Each run's stop is a dot where its rule stopped it, else a cross. A diverged
    run stays out of the mean and band: its finite part is dotted, with a cross
    where it left the float range.
    """
    valid = _valid(run)
    kept = values.where(valid)
    ax.plot(run["step"], kept.mean("seed"), color=colour, label=label)
    ax.fill_between(run["step"], kept.min("seed"), kept.max("seed"), color=colour, alpha=0.2, linewidth=0)
    for seed in run["seed"].values:
        stop = run["stop_step"].sel(seed=seed)
        if bool(valid.sel(seed=seed)):
            marker = "o" if int(run["converged"].sel(seed=seed)) else "x"
            value = float(values.sel(seed=seed, step=stop))
            ax.scatter([int(stop)], [value], color=colour, marker=marker, s=14, zorder=3)
            continue
        series = values.sel(seed=seed)
        path = series.where(np.isfinite(series) & (run["step"] < stop), drop=True)
        ax.plot(path["step"], path, color=colour, linestyle=":", linewidth=1)
        ax.scatter(path["step"][-1:], path[-1:], color=colour, marker="x", s=14, zorder=3)


def _not_converged(ds: xr.Dataset) -> int:
    return int((ds["converged"] == 0).sum())


def _valid(ds: xr.Dataset) -> xr.DataArray:
    """Runs that did not diverge: their numbers mean something (diverged runs are drawn apart)."""
    return ds["stop_reason"] != DIVERGED


def nonlinear_zeta(*, nonlinear: xr.Dataset) -> Figure:
    """Alignment zeta_l against step, one colour per init scale (seed mean, min-max band).

    Columns: activation x layer (the last layer has no successor); rows: the
    setting, parametrization and width combinations. Markers: each run's stop
    step (cross: not stopped by its rule). Dashed: the solvable linear model's
    prediction from the same start, where the dataset has it.
    """
    ds = nonlinear.squeeze([d for d in (*PANEL_DIMS, "activation") if nonlinear.sizes[d] == 1])
    layers = ds["layer"].values[:-1]
    row_dims = _varying(ds, PANEL_DIMS)
    rows = _points(ds, row_dims) or [{}]
    columns = [(a, layer) for a in np.atleast_1d(ds["activation"].values).tolist() for layer in layers]
    figure, axes = new_figure(len(rows), len(columns), width=2.6, height=2.1, sharex=True, sharey=True)
    scales = ds["init_scale"].values
    colours = colormaps["viridis"](np.linspace(0.0, 0.9, len(scales)))
    steps = ds["step"].values
    largest = float(ds["zeta"].where(_valid(ds)).max())
    top = min(1.02, 1.1 * max(largest, float(ds["zeta_theory"].max()) if "zeta_theory" in ds else 0.0))
    for (i, row), (j, (activation, layer)) in itertools.product(enumerate(rows), enumerate(columns)):
        ax = axes[i, j]
        select = {**row, **({"activation": activation} if "activation" in ds["zeta"].dims else {})}
        for scale, colour in zip(scales, colours):
            run = ds.sel(select).sel(init_scale=scale)
            _draw_seeds(ax, run, run["zeta"].sel(layer=layer), colour, f"init {scale:g}")
            if "zeta_theory" in ds:
                theory = run["zeta_theory"].where(_valid(run)).mean("seed")
                ax.plot(steps, theory, color=colour, linestyle="--", linewidth=1)
        ax.set_xscale("symlog", linthresh=1)
        # Values are held after each run's stop: the axis ends a little after the last stop.
        ax.set_xlim(0, min(steps[-1], 1.5 * float(ds["stop_step"].max())))
        # Shared y axis from 0: up to 1 when something aligns fully, else zoomed on the data.
        ax.set_ylim(0, top)
        ax.set_title(_label({**row, "activation": activation}) + f"; layer {layer}", fontsize=7)
        if i == len(rows) - 1:
            ax.set_xlabel("step")
        if j == 0:
            ax.set_ylabel(r"$\zeta_l$")
    title = "dashed: linear theory; " + GUARD_NOTE if "zeta_theory" in ds else GUARD_NOTE
    axes[0, 0].legend(fontsize=6, title=title, title_fontsize=5)
    diverged = int((~_valid(ds)).sum())
    figure.suptitle(
        f"{ds.attrs.get('experiment', '')} ({ds.attrs.get('dataset', '')}, depth {ds.attrs.get('depth', '')}); "
        f"{_not_converged(ds)} of {ds['converged'].size} runs not stopped by their rule"
        + (f" ({diverged} diverged, dotted)" if diverged else ""),
        fontsize=9,
    )
    return figure


def nonlinear_ntk_width(*, nonlinear: xr.Dataset) -> Figure:
    """Relative NTK change at the stopping point against width, one line per parametrization (and activation).

    Dots: seeds (crosses: not stopped by their rule); line: their mean; the
    legend gives the least-squares log-log slope over all seeds with its
    standard error.
    """
    ds = nonlinear
    change = at_stop(ds)["ntk_change_final"]
    figure, axes = new_figure(1, 1, width=4.6, height=3.4)
    ax = axes[0, 0]
    widths = ds["width"].values
    for point in _points(ds, ["parametrization", *_varying(ds, ("activation", "setting", "init_scale"))]):
        values = _drop_sweeps(change.where(_valid(ds)).sel(point)).transpose("width", "seed")
        converged = _drop_sweeps(ds["converged"].sel(point)).transpose("width", "seed")
        slope, error = loglog_slope(np.broadcast_to(widths[:, None], values.shape), values.values)
        label = f"{_label(point)}: slope {slope:.2f} ± {error:.2f}"
        line = ax.plot(widths, values.mean("seed"), marker="o", label=label)
        for seed in values["seed"].values:
            for rule_stopped, marker in ((1, "o"), (0, "x")):
                keep = converged.sel(seed=seed).values == rule_stopped
                ax.scatter(
                    widths[keep],
                    values.sel(seed=seed).values[keep],
                    color=line[0].get_color(),
                    s=8,
                    alpha=0.6,
                    marker=marker,
                )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width")
    ax.set_ylabel(r"$|K_T - K_0|_F / |K_0|_F$ at the stop")
    ax.legend(fontsize=7, title=GUARD_NOTE, title_fontsize=6)
    return figure


#: Panels of the accuracy figure: (variable of :func:`at_stop`, y label, log scale).
_MEASURE_PANELS = (
    ("delta_zeta", r"$\Delta\zeta_l = \zeta_l(T) - \zeta_l(0)$", False),
    ("rho_final", r"$\rho_l(T)$", False),
    ("distance_final", r"$|W_l(T) - W_l(0)|_F / |W_l(0)|_F$", True),
    ("layer_ntk_change_final", r"layer NTK change $|K_{l,T} - K_{l,0}| / |K_{l,0}|$", True),
)
_LAYER_STYLES = ("-", "--", ":", "-.")


def nonlinear_accuracy(*, nonlinear: list[xr.Dataset]) -> Figure:
    """Test accuracy at the stopping point and the mechanism measures against init scale.

    One colour per dataset (and parametrization, width). Top row: test
    accuracy (seed mean, error bar: sample standard deviation over seeds; crosses: runs not
    stopped by their rule); the validation accuracy of every candidate learning
    rate of the selection (the chosen one circled); the NTK change; test
    accuracy against the NTK change. Bottom row, one line style per layer:
    alignment change, rescaling, distance travelled and each layer's NTK change.
    """
    figure, axes = new_figure(2, 4, width=3.0, height=2.5)
    colours = itertools.cycle(colormaps["tab10"].colors)
    layers = 0
    for ds in nonlinear:
        final = at_stop(ds).where(_valid(ds))
        layers = max(layers, ds.sizes["layer"])
        for point in _points(ds, _varying(ds, ("parametrization", "width", "activation"))):
            colour = next(colours)
            run = _drop_sweeps(ds.sel(point))
            measures = _drop_sweeps(final.sel(point))
            label = ds.attrs.get("dataset", "?") + (f" ({_label(point)})" if point else "")
            scales = run["init_scale"].values
            accuracy = measures["test_accuracy_final"]
            label += f", {run.sizes['seed']} seeds"
            if int((~_valid(run)).sum()):
                label += f" ({int((~_valid(run)).sum())} diverged, left out)"
            axes[0, 0].errorbar(
                scales,
                accuracy.mean("seed"),
                yerr=accuracy.std("seed", ddof=1),
                marker="o",
                capsize=3,
                color=colour,
                label=label,
            )
            missed = run["converged"] == 0
            axes[0, 0].scatter(
                np.broadcast_to(scales[:, None], accuracy.shape)[missed.values],
                accuracy.values[missed.values],
                marker="x",
                color=colour,
            )
            if "validation_score" in run and ds.attrs.get("selection_metric") == "accuracy":
                # candidates whose selection runs did not all converge are not drawn
                score = run["validation_score"].where(run["validation_converged"] == 1)
                score = score.mean("selection_seed", skipna=False)
                count = run.sizes["lr_factor"]
                for k, factor in enumerate(run["lr_factor"].values):
                    shade = 0.3 + 0.7 * k / max(1, count - 1)
                    axes[0, 1].plot(
                        scales,
                        score.isel(lr_factor=k),
                        color=colour,
                        linewidth=1,
                        marker=".",
                        alpha=shade,
                        label=f"{ds.attrs.get('dataset')} lr x{factor:g}",
                    )
                chosen = score.sel(lr_factor=run["lr_factor_selected"])
                axes[0, 1].scatter(scales, chosen, s=60, facecolors="none", edgecolors=colour)
            change = measures["ntk_change_final"]
            axes[0, 2].errorbar(
                scales, change.mean("seed"), yerr=change.std("seed", ddof=1), marker="o", capsize=3, color=colour
            )
            axes[0, 3].scatter(change.values.ravel(), accuracy.values.ravel(), color=colour, s=12)
            for (name, _, _), ax in zip(_MEASURE_PANELS, axes[1]):
                for layer, style in zip(measures["layer"].values, itertools.cycle(_LAYER_STYLES)):
                    values = measures[name].sel(layer=layer)
                    if not np.isfinite(values).any():
                        continue
                    ax.plot(scales, values.mean("seed"), color=colour, linestyle=style, marker="o", markersize=3)
    titles = (
        "test accuracy at the stop",
        "validation accuracy per candidate lr",
        "NTK change at the stop",
        "test accuracy vs NTK change",
    )
    for ax, title in zip(axes[0], titles):
        ax.set_title(title, fontsize=8)
    axes[0, 0].legend(fontsize=6, title=GUARD_NOTE, title_fontsize=5)
    axes[0, 1].legend(fontsize=5, ncol=2)
    axes[0, 2].set_yscale("log")
    axes[0, 3].set_xscale("log")
    axes[0, 3].set_xlabel(r"$|K_T - K_0|_F / |K_0|_F$")
    axes[0, 3].set_ylabel("test accuracy")
    for (_, ylabel, log), ax in zip(_MEASURE_PANELS, axes[1]):
        ax.set_ylabel(ylabel, fontsize=7)
        if log:
            ax.set_yscale("log")
    styles = [
        Line2D([], [], color="grey", linestyle=style, label=f"layer {layer}")
        for layer, style in zip(range(1, layers + 1), itertools.cycle(_LAYER_STYLES))
    ]
    axes[1, 0].legend(handles=styles, fontsize=6)
    for ax in [*axes[0, :3], *axes[1]]:
        ax.set_xscale("log")
        ax.set_xlabel("init scale")
    return figure


def nonlinear_mechanisms(*, nonlinear: list[xr.Dataset], eps_c: float, eps_rho: float, eps_K: float) -> Figure:
    """Which mechanisms each run shows at its stopping point, per layer, by the thresholds of docs/mechanisms.md.

    One block of rows per experiment, one row per configuration (with the count
    of seeds not stopped by their rule); columns ``kernel``, per layer
    alignment (A), disalignment (D) and rescaling (R), ``none`` (no flag
    although the kernel moved) and, where a run diverged, ``diverged``.
    Colour: fraction of seeds with the flag.
    """
    blocks = []
    for ds in nonlinear:
        flags = mechanism_flags(ds, eps_c=eps_c, eps_rho=eps_rho, eps_k=eps_K)
        dims = _varying(ds, SWEEP_DIMS)
        last = int(ds["layer"].values[-1])
        # The last layer has no successor, hence no alignment of its own: rescaling only.
        cells = [(int(k), m) for k in ds["layer"].values for m in MECHANISMS if k < last or m == "rescaling"]
        extra = ["none", "diverged"] if bool(flags["diverged"].any()) else ["none"]
        rows, labels = [], []
        for point in _points(ds, dims) or [{}]:
            flag = _drop_sweeps(flags.sel(point)).astype(float)
            values = [float(flag["kernel"].mean("seed"))]
            values += [float(flag[mechanism].sel(layer=layer).mean("seed")) for layer, mechanism in cells]
            values += [float(flag[name].mean("seed")) for name in extra]
            rows.append(values)
            missed = int((_drop_sweeps(ds["converged"].sel(point)) == 0).sum())
            labels.append(_label(point) + (f" ({missed} not stopped by rule)" if missed else ""))
        columns = ["kernel"] + [f"{layer}{mechanism[0].upper()}" for layer, mechanism in cells] + extra
        blocks.append((ds.attrs.get("experiment", ds.attrs.get("dataset", "")), np.array(rows), labels, columns))
    heights = [len(labels) for _, _, labels, _ in blocks]
    width = max(6.0, 3.5 + 0.3 * max(len(columns) for _, _, _, columns in blocks))
    figure, axes = new_figure(len(blocks), 1, width=width, height=1.0, gridspec_kw={"height_ratios": heights})
    figure.set_size_inches(width, 0.9 + 0.17 * sum(heights) + 0.6 * len(blocks))
    for ax, (name, matrix, labels, columns) in zip(axes[:, 0], blocks):
        image = ax.imshow(matrix, aspect="auto", cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
        ax.set_xticks(range(len(columns)), columns, fontsize=6)
        ax.grid(False)
        ax.set_title(name, fontsize=8)
    figure.colorbar(image, ax=axes[:, 0], label="fraction of seeds", shrink=0.6)
    figure.suptitle(
        f"mechanisms per layer at the stop (A/D/R), eps_c={eps_c:g}, eps_rho={eps_rho:g}, eps_K={eps_K:g}", fontsize=8
    )
    return figure
