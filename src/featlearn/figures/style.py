"""Shared look of all figures."""

from __future__ import annotations

from typing import Any

import matplotlib.style
import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

#: Matplotlib's copies of seaborn's white-grid style and paper context (seaborn itself is not
#: needed, nor its import time in every figure job), with slightly larger fonts.
THEME = (
    "seaborn-v0_8-whitegrid",
    "seaborn-v0_8-paper",
    {"font.size": 8.8, "axes.labelsize": 9.6, "axes.titlesize": 10.5},
)


def new_figure(
    rows: int, columns: int, *, width: float = 3.4, height: float = 2.6, **kwargs: Any
) -> tuple[Figure, np.ndarray]:
    """A figure with a grid of axes in the project theme (``axes`` is always 2-D).

    Built without pyplot: no global figure registry and no GUI backend, so it
    works the same in a batch job and in a notebook (where it displays inline).
    """
    matplotlib.style.use(THEME)
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False, **kwargs)
    return figure, axes


def palette(name: str, count: int) -> list[tuple[float, ...]]:
    """``count`` colours of a matplotlib colormap: evenly spaced along it, or its first ones if it is a list."""
    colormap = colormaps[name]
    if hasattr(colormap, "colors") and len(colormap.colors) < 256:
        return [colormap.colors[i % len(colormap.colors)] for i in range(count)]
    return [colormap(x) for x in np.linspace(0.0, 1.0, count)]
