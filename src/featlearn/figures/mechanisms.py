"""Figures of the mechanism stage: maps, one trajectory panel per mechanism, width scaling.

Every function reads ``mechanisms.nc`` datasets (the output of
:func:`featlearn.mechanism_detection.detect`); the thresholds drawn are the ones the
dataset was classified with (its ``eps_*`` attributes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from featlearn import mechanism_detection
from featlearn.contract import MAGNITUDES, PRIMARY_LABELS
from featlearn.errors import InputError
from featlearn.figures.style import new_figure
from featlearn.figures.style import palette as colours

#: One colour per primary label (kernel grey-blue, mechanisms distinct, diverged black).
LABEL_COLOURS = dict(zip(PRIMARY_LABELS, ("#8da0cb", "#66c2a5", "#fc8d62", "#e78ac3", "#222222")))


def _select(ds: xr.Dataset, select: Mapping[str, Any] | None, keep: Sequence[str]) -> xr.Dataset:
    """Fix the grid dims named in ``select``; fail if a grid dim other than ``keep`` and seed is left."""
    selected = ds.sel(dict(select or {}))
    extra = [d for d in selected["primary"].dims if d not in (*keep, "seed")]
    if extra:
        raise InputError(
            f"{ds.attrs.get('experiment')}: fix the dims {extra} with 'select' (values: "
            + "; ".join(f"{d} = {list(ds[d].values)}" for d in extra)
            + ")"
        )
    return selected


def _tick_labels(values: np.ndarray) -> list[str]:
    return [str(v).replace("_", "-") if isinstance(v, str) else f"{v:g}" for v in values]


def _map_panel(ax, field: xr.DataArray, x: str, y: str, **kwargs) -> Any:
    """Colour ``field`` on the (x, y) cells, with the swept values as tick labels."""
    values = field.transpose(y, x).values
    mesh = ax.pcolormesh(np.arange(values.shape[1] + 1) - 0.5, np.arange(values.shape[0] + 1) - 0.5, values, **kwargs)
    ax.set_xticks(range(field.sizes[x]), _tick_labels(field[x].values), rotation=45)
    ax.set_yticks(range(field.sizes[y]), _tick_labels(field[y].values))
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(False)
    return mesh


def _threshold_contour(ax, field: xr.DataArray, x: str, y: str, levels: Sequence[float]) -> None:
    values = field.transpose(y, x).values
    if min(values.shape) >= 2 and np.isfinite(values).any():
        ax.contour(
            np.arange(values.shape[1]),
            np.arange(values.shape[0]),
            values,
            levels=sorted(levels),
            colors="k",
            linewidths=1.2,
            linestyles="--",
        )


def mechanism_map(*, mechanisms: xr.Dataset, x: str, y: str, select: Mapping[str, Any] | None = None) -> Figure:
    """Primary mechanism over two swept hyperparameters, with the three magnitudes beside it.

    Panels: the most frequent primary label over seeds; the median of
    ``delta_c`` (dashed: +-eps_c); the median rescaling ``max(|rho_u|, |rho_w|)``
    (dashed: eps_rho); the median ``|kernel_change|`` (log colour, dashed:
    eps_K). ``select`` fixes every other grid dim.
    """
    ds = _select(mechanisms, select, (x, y))
    figure, axes = new_figure(1, 4, width=3.6, height=3.2)
    label = mechanism_detection.majority_label(ds["primary"])
    colours = ListedColormap([LABEL_COLOURS[name] for name in PRIMARY_LABELS])
    bounds = np.arange(len(PRIMARY_LABELS) + 1) - 0.5
    _map_panel(axes[0, 0], label, x, y, cmap=colours, norm=BoundaryNorm(bounds, colours.N))
    axes[0, 0].set_title("primary mechanism (majority of seeds)")
    present = [PRIMARY_LABELS[code] for code in np.unique(label.values)]
    axes[0, 0].legend(
        handles=[Patch(color=LABEL_COLOURS[name], label=name) for name in present],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.42),
        ncol=2,
        frameon=False,
    )

    delta_c = ds["delta_c"].median("seed")
    mesh = _map_panel(axes[0, 1], delta_c, x, y, cmap="RdBu_r", vmin=-1.0, vmax=1.0)
    _threshold_contour(axes[0, 1], delta_c, x, y, (-ds.attrs["eps_c"], ds.attrs["eps_c"]))
    figure.colorbar(mesh, ax=axes[0, 1], label=r"$\Delta c$")
    axes[0, 1].set_title(r"alignment $\Delta c = c(T) - c(0)$")

    rescaling = np.maximum(abs(ds["rho_u"]), abs(ds["rho_w"])).median("seed")
    mesh = _map_panel(axes[0, 2], rescaling, x, y, cmap="magma_r", vmin=0.0)
    _threshold_contour(axes[0, 2], rescaling, x, y, (ds.attrs["eps_rho"],))
    figure.colorbar(mesh, ax=axes[0, 2], label=r"$\max(|\rho_u|, |\rho_w|)$")
    axes[0, 2].set_title("rescaling (log norm ratio)")

    with np.errstate(divide="ignore"):
        kernel = np.log10(abs(ds["kernel_change"]).median("seed"))
    mesh = _map_panel(axes[0, 3], kernel, x, y, cmap="viridis")
    _threshold_contour(axes[0, 3], kernel, x, y, (np.log10(ds.attrs["eps_K"]),))
    figure.colorbar(mesh, ax=axes[0, 3], label=r"$\log_{10} |K_\eta(T)/K_\eta(0) - 1|$")
    axes[0, 3].set_title("kernel change")
    figure.suptitle(f"{ds.attrs.get('experiment', '')}: dashed lines are the flag thresholds")
    return figure


def _trajectory_rows(run: xr.Dataset) -> list[tuple[str, dict[str, xr.DataArray], str]]:
    """Rows of the trajectory figure: (y label, curves by name, y scale), from the time-resolved magnitudes."""
    return [
        (r"$c(t) = \mathrm{sign}(\beta^*) \cos\theta$", {"c": run["c_initial"] + run["delta_c_t"]}, "linear"),
        (r"log norm ratio $\rho_u(t)$, $\rho_w(t)$", {"u": run["rho_u_t"], "w": run["rho_w_t"]}, "linear"),
        (r"kernel $K_\eta(t)/K_\eta(0)$", {"K": 1 + run["kernel_change_t"]}, "log"),
        (r"output change: turning $A$, norms $R$", {"A": run["a_part_t"], "R": run["r_part_t"]}, "linear"),
    ]


_CURVE_STYLE = {"c": "-", "u": "-", "w": "--", "K": "-", "A": "-", "R": "--"}


def mechanism_trajectories(*, mechanisms: Sequence[xr.Dataset], panels: Mapping[str, Mapping[str, Any]]) -> Figure:
    """One column per mechanism: c(t), layer norms, kernel and the path split against time.

    ``panels`` maps a label (kernel, alignment, disalignment, rescaling) to
    ``{experiment, select}``: the grid point drawn, all seeds (thin lines; the
    first seed thick). The column title says in how many seeds that point's
    primary label is the column's label.
    """
    by_experiment = {ds.attrs["experiment"]: ds for ds in mechanisms}
    # Rows share their y range, so a mechanism's signature stands out against the others (kernel: flat).
    figure, axes = new_figure(4, len(panels), width=3.2, height=2.3, sharex=True, sharey="row")
    for column, (label, spec) in enumerate(panels.items()):
        run = _select(by_experiment[spec["experiment"]], spec.get("select"), ())
        times = run["time"].values
        shown = times > 0  # log time axis
        colour = LABEL_COLOURS[label]
        for row, (ylabel, curves, scale) in enumerate(_trajectory_rows(run)):
            ax = axes[row, column]
            for name, values in curves.items():
                for index, seed in enumerate(run["seed"].values):
                    first = index == 0
                    ax.plot(
                        times[shown],
                        values.sel(seed=seed).values[shown],
                        _CURVE_STYLE[name],
                        color=colour,
                        lw=2.0 if first else 0.6,
                        alpha=1.0 if first else 0.5,
                        label=name if first else None,
                    )
            ax.set_xscale("log")
            ax.set_yscale(scale)
            if column == 0:
                ax.set_ylabel(ylabel)
            if len(curves) > 1:
                ax.legend(frameon=False, fontsize="small")
        agreeing = int((run["primary"] == PRIMARY_LABELS.index(label)).sum())
        point = ", ".join(f"{k} {v}" for k, v in (spec.get("select") or {}).items())
        axes[0, column].set_title(
            f"{label}\n{spec['experiment']}\n{point}\n{label} in {agreeing}/{run.sizes['seed']} seeds", fontsize="small"
        )
        axes[-1, column].set_xlabel("time $t$")
    return figure


_MAGNITUDE_LABELS = {
    "delta_c": r"$|\Delta c|$",
    "rho_u": r"$|\rho_u|$",
    "rho_w": r"$|\rho_w|$",
    "kernel_change": r"$|K_\eta(T)/K_\eta(0) - 1|$",
}
_THRESHOLD_OF = {"delta_c": "eps_c", "rho_u": "eps_rho", "rho_w": "eps_rho", "kernel_change": "eps_K"}


def mechanism_width_scaling(*, mechanisms: xr.Dataset, select: Mapping[str, Any] | None = None) -> Figure:
    """Mechanism magnitudes (rms over seeds) against width, one line per point of the other grid dim.

    Dots: measured; lines: the stored least-squares fits ``C width^p``, with
    ``p +- standard error`` in the legend. Dotted: the flag threshold. In the
    kernel phase all four magnitudes fall as a power of width; in the
    feature-learning phase they stay finite (or grow).
    """
    ds = mechanisms
    series_dims = [d for d in ds["primary"].dims if d not in ("width", "seed") and d not in (select or {})]
    if len(series_dims) > 1:
        raise InputError(f"width scaling draws one line per value of one dim; fix {series_dims[1:]} with 'select'")
    ds = ds.sel(dict(select or {}))
    series = list(ds[series_dims[0]].values) if series_dims else [None]
    palette = dict(zip(series, colours("tab10", len(series))))
    figure, axes = new_figure(1, len(MAGNITUDES), width=3.3, height=3.0, sharex=True)
    widths = ds["width"].values.astype(float)
    for ax, name in zip(axes[0], MAGNITUDES):
        for value in series:
            part = ds.sel({series_dims[0]: value}) if value is not None else ds
            rms = mechanism_detection.seed_rms(part[name]).values
            fit = part.sel(magnitude=name)
            exponent, stderr = float(fit["width_exponent"]), float(fit["width_exponent_stderr"])
            text = "" if value is None else str(value).replace("_", "-") + ": "
            ax.plot(widths, rms, "o", color=palette[value], ms=4)
            ax.plot(
                widths,
                float(fit["width_prefactor"]) * widths**exponent,
                "-",
                color=palette[value],
                label=f"{text}$p = {exponent:.2f} \\pm {stderr:.2f}$",
            )
        ax.axhline(ds.attrs[_THRESHOLD_OF[name]], color="k", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("width $d$")
        ax.set_title(_MAGNITUDE_LABELS[name] + " (rms over seeds)")
        ax.legend(frameon=False, fontsize="x-small")
    return figure
