"""Figures of the nonlinear experiments (featlearn.nonlinear): alignment per layer over
training, NTK change against width, test accuracy against init scale, mechanism summary."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.figure import Figure

from featlearn.contract import NONLINEAR_SWEEP_DIMS as SWEEP_DIMS
from featlearn.figures.style import new_figure
from featlearn.nonlinear.mechanisms import mechanism_flags

#: Dimensions that index panels (rows) when they hold more than one value.
PANEL_DIMS = ("setting", "parametrization", "width")
MECHANISMS = ("alignment", "disalignment", "rescaling")


def _varying(ds: xr.Dataset, dims: tuple[str, ...]) -> list[str]:
    return [dim for dim in dims if ds.sizes.get(dim, 1) > 1]


def _label(point: dict[str, Any]) -> str:
    return ", ".join(
        f"{value}" if dim in ("setting", "activation", "parametrization") else f"{dim} {value:g}"
        for dim, value in point.items()
    )


def _drop_sweeps(data: xr.DataArray | xr.Dataset) -> xr.DataArray | xr.Dataset:
    """Squeeze the swept dimensions left with one value (never ``seed``, ``step`` or ``layer``)."""
    return data.squeeze([d for d in SWEEP_DIMS if d in data.dims and data.sizes[d] == 1])


def _points(ds: xr.Dataset, dims: list[str]) -> list[dict[str, Any]]:
    return [dict(zip(dims, values)) for values in itertools.product(*(ds[d].values.tolist() for d in dims))]


def nonlinear_zeta(*, nonlinear: xr.Dataset) -> Figure:
    """Alignment zeta_l against step, one colour per init scale (seed mean, min-max band).

    Columns: activation x layer (the last layer has no successor); rows: the
    setting, parametrization and width combinations. Dashed: the solvable
    linear model's prediction from the same start, where the dataset has it.
    """
    ds = nonlinear.squeeze([d for d in (*PANEL_DIMS, "activation") if nonlinear.sizes[d] == 1])
    layers = ds["layer"].values[:-1]
    row_dims = _varying(ds, PANEL_DIMS)
    rows = _points(ds, row_dims) or [{}]
    columns = [(a, l) for a in np.atleast_1d(ds["activation"].values).tolist() for l in layers]
    figure, axes = new_figure(len(rows), len(columns), width=2.6, height=2.1, sharex=True, sharey=True)
    scales = ds["init_scale"].values
    colours = colormaps["viridis"](np.linspace(0.0, 0.9, len(scales)))
    steps = ds["step"].values
    top = min(1.02, 1.1 * float(max(ds["zeta"].max(), ds["zeta_theory"].max() if "zeta_theory" in ds else 0.0)))
    for (i, row), (j, (activation, layer)) in itertools.product(enumerate(rows), enumerate(columns)):
        ax = axes[i, j]
        select = {**row, **({"activation": activation} if "activation" in ds["zeta"].dims else {})}
        for scale, colour in zip(scales, colours):
            zeta = ds["zeta"].sel(select).sel(init_scale=scale, layer=layer)
            ax.plot(steps, zeta.mean("seed"), color=colour, label=f"init {scale:g}")
            ax.fill_between(steps, zeta.min("seed"), zeta.max("seed"), color=colour, alpha=0.2, linewidth=0)
            if "zeta_theory" in ds:
                theory = ds["zeta_theory"].sel(select).sel(init_scale=scale).mean("seed")
                ax.plot(steps, theory, color=colour, linestyle="--", linewidth=1)
        ax.set_xscale("symlog", linthresh=1)
        # Shared y axis from 0: up to 1 when something aligns fully, else zoomed on the data.
        ax.set_ylim(0, top)
        ax.set_title(_label({**row, "activation": activation}) + f"; layer {layer}", fontsize=7)
        if i == len(rows) - 1:
            ax.set_xlabel("step")
        if j == 0:
            ax.set_ylabel(r"$\zeta_l$")
    axes[0, 0].legend(fontsize=6, title="dashed: linear theory" if "zeta_theory" in ds else None, title_fontsize=6)
    figure.suptitle(
        f"{ds.attrs.get('experiment', '')} ({ds.attrs.get('dataset', '')}, depth {ds.attrs.get('depth', '')})"
    )
    return figure


def nonlinear_ntk_width(*, nonlinear: xr.Dataset) -> Figure:
    """Final relative NTK change against width, one line per parametrization (and activation).

    Dots: seeds; line: their mean; the legend gives the log-log slope fitted to the means.
    """
    ds = nonlinear
    change = ds["ntk_change"].isel(step=-1)
    figure, axes = new_figure(1, 1, width=4.2, height=3.2)
    ax = axes[0, 0]
    widths = ds["width"].values
    for point in _points(ds, ["parametrization", *_varying(ds, ("activation", "setting", "init_scale"))]):
        values = _drop_sweeps(change.sel(point))
        mean = values.mean("seed")
        slope = np.polyfit(np.log(widths), np.log(mean), 1)[0]
        line = ax.plot(widths, mean, marker="o", label=f"{_label(point)} (slope {slope:.2f})")
        for seed in values["seed"].values:
            ax.scatter(widths, values.sel(seed=seed), color=line[0].get_color(), s=8, alpha=0.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width")
    ax.set_ylabel(r"$|K_T - K_0|_F / |K_0|_F$")
    ax.legend(fontsize=7)
    return figure


def nonlinear_accuracy(*, nonlinear: list[xr.Dataset]) -> Figure:
    """Final test accuracy against init scale, one line per dataset (and parametrization, width).

    Mean over seeds with the seed standard deviation as error bars.
    """
    figure, axes = new_figure(1, 1, width=4.2, height=3.2)
    ax = axes[0, 0]
    for ds in nonlinear:
        accuracy = ds["test_accuracy"].isel(step=-1)
        for point in _points(ds, _varying(ds, ("parametrization", "width", "activation"))):
            values = _drop_sweeps(accuracy.sel(point))
            label = ds.attrs.get("dataset", "?") + (f" ({_label(point)})" if point else "")
            ax.errorbar(
                ds["init_scale"], values.mean("seed"), yerr=values.std("seed"), marker="o", capsize=3, label=label
            )
    ax.set_xscale("log")
    ax.set_xlabel("init scale")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=7)
    return figure


def nonlinear_mechanisms(*, nonlinear: list[xr.Dataset], eps_c: float, eps_rho: float, eps_K: float) -> Figure:
    """Which mechanisms each run shows, per layer, by the mechanism thresholds (docs/mechanisms.md).

    One block of rows per experiment, one row per configuration; columns
    ``kernel`` and, per layer, alignment (A), disalignment (D) and rescaling
    (R). Colour: fraction of seeds with the flag.
    """
    blocks = []
    for ds in nonlinear:
        flags = mechanism_flags(ds, eps_c=eps_c, eps_rho=eps_rho, eps_k=eps_K)
        dims = _varying(ds, ("setting", "activation", "parametrization", "width", "init_scale"))
        last = int(ds["layer"].values[-1])
        # The last layer has no successor, hence no alignment of its own: rescaling only.
        cells = [(int(l), m) for l in ds["layer"].values for m in MECHANISMS if l < last or m == "rescaling"]
        rows, labels = [], []
        for point in _points(ds, dims) or [{}]:
            flag = _drop_sweeps(flags.sel(point)).astype(float)
            values = [float(flag["kernel"].mean("seed"))]
            values += [float(flag[mechanism].sel(layer=layer).mean("seed")) for layer, mechanism in cells]
            rows.append(values)
            labels.append(_label(point))
        columns = ["kernel"] + [f"{layer}{mechanism[0].upper()}" for layer, mechanism in cells]
        blocks.append((ds.attrs.get("experiment", ds.attrs.get("dataset", "")), np.array(rows), labels, columns))
    heights = [len(labels) for _, _, labels, _ in blocks]
    figure, axes = new_figure(len(blocks), 1, width=6.0, height=1.0, gridspec_kw={"height_ratios": heights})
    figure.set_size_inches(6.0, 0.9 + 0.17 * sum(heights) + 0.5 * len(blocks))
    for ax, (name, matrix, labels, columns) in zip(axes[:, 0], blocks):
        image = ax.imshow(matrix, aspect="auto", cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
        ax.set_xticks(range(len(columns)), columns, fontsize=6)
        ax.grid(False)
        ax.set_title(name, fontsize=8)
    figure.colorbar(image, ax=axes[:, 0], label="fraction of seeds", shrink=0.6)
    figure.suptitle(f"mechanisms per layer (A/D/R), eps_c={eps_c:g}, eps_rho={eps_rho:g}, eps_K={eps_K:g}", fontsize=8)
    return figure
