"""Figures of the simulation stage."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from featlearn.figures.style import new_figure
from featlearn.figures.style import palette as colours

_LINESTYLES = {"flow": "-", "gd": "--", "explicit": ":"}
_QUANTITIES = (
    ("beta", r"output $\beta(t)$"),
    ("kernel_ratio", r"kernel $K_\eta(t)/K_\eta(0)$"),
    ("cos_uw", r"$\cos\theta(u, w)$"),
)


def _quantity(ds: xr.Dataset, name: str) -> xr.DataArray:
    if name == "kernel_ratio":
        return ds["ntk_eta"] / ds["ntk_eta"].isel(time=0)
    return ds[name]


def solver_comparison(*, trajectories: Sequence[xr.Dataset], seed: int = 0) -> Figure:
    """Exact flow vs Gram-recursion GD vs explicit width-d GD, against time.

    Rows: beta, relative kernel, cos(u, w). Columns: the values of the
    ``parametrization`` dimension. Colour: width. Line style: solver. One
    seed (``seed``) is drawn, so the curves of solvers that share an initial
    state (``init: vectors``) lie on each other.
    """
    parametrizations = (
        list(trajectories[0]["parametrization"].values) if "parametrization" in trajectories[0].dims else [None]
    )
    widths = sorted({int(w) for ds in trajectories for w in np.atleast_1d(ds["width"].values)})
    palette = dict(zip(widths, colours("viridis", len(widths))))
    figure, axes = new_figure(len(_QUANTITIES), len(parametrizations), sharex=True)
    for column, parametrization in enumerate(parametrizations):
        for ds in trajectories:
            selected = ds.sel(seed=seed)
            if parametrization is not None:
                selected = selected.sel(parametrization=parametrization)
            solver = ds.attrs["solver"]
            for width in np.atleast_1d(selected["width"].values):
                run = selected.sel(width=width) if "width" in selected.dims else selected
                for row, (name, label) in enumerate(_QUANTITIES):
                    ax = axes[row, column]
                    ax.plot(run["time"], _quantity(run, name), _LINESTYLES[solver], color=palette[int(width)], lw=1.4)
                    ax.set_ylabel(label)
        axes[0, column].set_title(str(parametrization).replace("_", "-") if parametrization else "")
        axes[-1, column].set_xlabel("time $t$")
    handles = [Line2D([], [], color=palette[w], label=f"d = {w:,}") for w in widths]
    solvers = [ds.attrs["solver"] for ds in trajectories]
    handles += [Line2D([], [], color="k", ls=_LINESTYLES[s], label=s) for s in solvers]
    figure.legend(handles=handles, loc="outside right center", frameon=False)
    return figure
