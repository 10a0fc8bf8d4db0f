"""Figures: one plotting function per figure, one entry of the figure table each.

Each function takes the stage outputs it reads as keyword arguments named
after their kind (``trajectories``, ``mechanisms``, ``phases``,
``nonlinear``; one dataset or a list, as :mod:`featlearn.figures.table`
declares) and its options, and returns a matplotlib figure; it does no file
I/O. :func:`draw` checks the datasets and options against the table and
calls the function; ``featlearn figure NAME INPUTS... --output`` and
:func:`featlearn.figure` are built on it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import xarray as xr

from featlearn.errors import InputError
from featlearn.figures import table


def draw(name: str, datasets: Mapping[str, xr.Dataset | Sequence[xr.Dataset]], options: Mapping[str, Any]) -> Any:
    """Draw figure ``name`` of the table from ``datasets`` (by kind) with ``options``.

    A kind the figure reads once may be given as one dataset or a list of
    one. Raises :class:`~featlearn.errors.InputError` naming what does not
    fit the table: an unknown figure, a missing or unexpected kind, more
    datasets than the figure reads, an unknown option.
    """
    try:
        entry = table.entry(name)
    except KeyError as error:
        raise InputError(error.args[0]) from None
    missing = sorted(set(entry.reads) - set(datasets))
    unexpected = sorted(set(datasets) - set(entry.reads))
    if missing or unexpected:
        raise InputError(
            f"figure {name} reads {', '.join(entry.reads)}; "
            + "; ".join(
                part
                for part in (f"missing {missing}" if missing else "", f"not read: {unexpected}" if unexpected else "")
                if part
            )
        )
    arguments: dict[str, Any] = {}
    for kind, count in entry.reads.items():
        given = datasets[kind]
        listed = [given] if isinstance(given, xr.Dataset) else list(given)
        if count == "one":
            if len(listed) != 1:
                raise InputError(f"figure {name} reads one {kind} dataset, got {len(listed)}")
            arguments[kind] = listed[0]
        else:
            arguments[kind] = listed
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        raise InputError(f"figure {name}: unknown options {unknown} (allowed: {', '.join(entry.options) or 'none'})")
    function = getattr(importlib.import_module(f"{__name__}.{entry.module}"), name)
    return function(**arguments, **options)
