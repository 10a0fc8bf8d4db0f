"""Shared look of all figures."""

from __future__ import annotations

import seaborn as sns
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

THEME = {"style": "whitegrid", "context": "paper", "font_scale": 1.1}


def new_figure(rows: int, columns: int, *, width: float = 3.4, height: float = 2.6, **kwargs) -> tuple[Figure, object]:
    """A figure with a grid of axes in the project theme (``axes`` is always 2-D)."""
    sns.set_theme(**THEME)
    figure, axes = plt.subplots(
        rows, columns, figsize=(width * columns, height * rows), squeeze=False, constrained_layout=True, **kwargs
    )
    return figure, axes
