"""Shared look of all figures."""

from __future__ import annotations

from typing import Any

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

THEME = {"style": "whitegrid", "context": "paper", "font_scale": 1.1}


def new_figure(
    rows: int, columns: int, *, width: float = 3.4, height: float = 2.6, **kwargs: Any
) -> tuple[Figure, np.ndarray]:
    """A figure with a grid of axes in the project theme (``axes`` is always 2-D).

    Built without pyplot: no global figure registry and no GUI backend, so it
    works the same in a batch job and in a notebook (where it displays inline).
    """
    sns.set_theme(**THEME)
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False, **kwargs)
    return figure, axes
