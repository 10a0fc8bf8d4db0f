"""Figures: one plotting function per figure, registered by name.

Each function takes the input datasets (already opened) and keyword options
(from the configuration's ``figures`` section) and returns a matplotlib
figure; it does no file I/O. ``featlearn figure NAME INPUTS... --output``
opens the inputs, calls the function and saves PNG and PDF.
"""

from __future__ import annotations

import importlib
import pkgutil

from collections.abc import Callable, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import xarray as xr  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

FigureFunction = Callable[..., Figure]
FIGURES: dict[str, FigureFunction] = {}


def register(name: str) -> Callable[[FigureFunction], FigureFunction]:
    """Register a figure function under ``name`` (the figure's file stem)."""

    def decorator(function: FigureFunction) -> FigureFunction:
        if name in FIGURES:
            raise ValueError(f"figure {name!r} is registered twice")
        FIGURES[name] = function
        return function

    return decorator


def _import_figure_modules() -> None:
    # Imported by discovery, not by name: the workflow hashes each figure
    # module's own imports, so one figure's code change reruns only that figure.
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def draw(name: str, datasets: Sequence[xr.Dataset], **options: Any) -> Figure:
    """Draw the registered figure ``name``."""
    _import_figure_modules()
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; known: {', '.join(sorted(FIGURES))}")
    return FIGURES[name](list(datasets), **options)
