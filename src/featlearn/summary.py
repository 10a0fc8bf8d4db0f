"""The report's front page: what a run computed and what it found, read from its outputs.

``featlearn summary TEMPLATE DATASETS... --output results/summary.rst`` (rule
``summary``, after every analysis of the run) reads the run's mechanisms,
phases and nonlinear datasets and writes the page ``snakemake --report`` opens
on (reStructuredText): what was run, what it found (per classified plane the
agreement of classifier and predictor, per experiment the mechanism labels,
the test accuracy against init scale) and the paper's results with the
figures of this run that reproduce them. TEMPLATE is the report's static page
(``workflow/report/workflow.rst``: the guide to the report and the folded
configuration); the summary takes the place of its :data:`MARKER` line.

Everything is read from the datasets themselves: label names from their flag
attributes, sweeps from their dims, numbers from their attributes, so a new
phase label, attribute or variable shows up without touching this module, or
with one line in :data:`PHASE_ATTRIBUTE_PREFIXES` or :data:`NONLINEAR_RUN_VARIABLES`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Number
from typing import Any, NamedTuple

import numpy as np
import xarray as xr

from featlearn import contract
from featlearn.errors import InputError

#: The template's line that the summary replaces (a reStructuredText comment: invisible without a summary).
MARKER = ".. featlearn-summary"

#: Global attributes of a phases file reported with its agreement: numeric ones whose names start so.
PHASE_ATTRIBUTE_PREFIXES = ("agreement", "boundary", "decided")

#: Per-run variables of a nonlinear dataset reported when present, with what their values say.
NONLINEAR_RUN_VARIABLES: dict[str, str] = {
    "converged": "converged",
    "stop_step": "stopped at step",
    "lr_selected": "learning rate selected",
}


@dataclass(frozen=True)
class PaperResult:
    """A result of the paper (or one the project adds) and the figures of the table that show it.

    A figure job shows the result when its figure is in ``figures`` and, where
    ``experiments`` is given (figures that several results share), when it
    draws one of those experiments.
    """

    result: str
    figures: tuple[str, ...]
    experiments: tuple[str, ...] = ()
    beyond_the_paper: bool = False


#: The paper's results in the order of the README's paper map, then the ones the project adds.
PAPER: tuple[PaperResult, ...] = (
    PaperResult("The exact solution of the network at finite width", ("solver_comparison",)),
    PaperResult(
        "The phase diagram over width, layer-wise learning rates, output scale and init scale",
        (
            "phases_diagram_scale",
            "phases_diagram_imbalance",
            "phases_diagram_rate",
            "phases_diagram_oblique",
            "phases_kernel_change_width",
            "phases_kernel_change_map",
            "phases_learning_time",
        ),
    ),
    PaperResult(
        "The three mechanisms (alignment, disalignment, rescaling) and their absence in the kernel regime",
        ("mechanism_map", "mechanism_trajectories", "mechanism_width_scaling"),
    ),
    PaperResult(
        "Figure 1: the alignment zeta of five activations, alignment and disalignment cases",
        ("nonlinear_zeta", "nonlinear_mechanisms"),
        ("two_layer_regression",),
    ),
    PaperResult("The cross-entropy version", ("nonlinear_zeta", "nonlinear_mechanisms"), ("two_layer_classification",)),
    PaperResult(
        "The 4-layer network on MNIST at several init scales",
        ("nonlinear_zeta", "nonlinear_mechanisms"),
        ("mnist_depth4",),
    ),
    PaperResult(
        "The phase diagrams in nonlinear networks: linear, ReLU and deeper networks under the same width exponents",
        ("nonlinear_phase_diagram",),
    ),
    PaperResult("Figure 3: larger initialization is worse (CIFAR-10)", ("nonlinear_accuracy",)),
    PaperResult("Gradient descent phases and the catapult", ("phases_gd_step",), beyond_the_paper=True),
    PaperResult(
        "Exact O(1) gradient descent at any width (the Gram recursion)",
        ("solver_comparison",),
        ("compare_gd",),
        beyond_the_paper=True,
    ),
    PaperResult(
        "The empirical phase classifier's agreement with the predictor",
        ("phases_diagram_scale", "phases_diagram_imbalance", "phases_diagram_rate"),
        beyond_the_paper=True,
    ),
    PaperResult("Kernel change against width in nonlinear networks", ("nonlinear_ntk_width",), beyond_the_paper=True),
)


class Figure(NamedTuple):
    """A figure of the run: its file stem, its figure of the table and the experiments it draws."""

    stem: str
    figure: str
    experiments: Sequence[str]


class Settings(NamedTuple):
    """What the summary needs beyond the datasets: the run's figures (``featlearn summary --settings``)."""

    figures: Sequence[Mapping[str, Any]]


def front_page(template: str, datasets: Iterable[xr.Dataset], figures: Sequence[Figure]) -> str:
    """The report's front page: ``template`` with the summary of ``datasets`` in place of :data:`MARKER`.

    Parameters
    ----------
    template : str
        The report's static page (reStructuredText with Jinja, as Snakemake
        renders it), holding the line :data:`MARKER`.
    datasets : iterable of xarray.Dataset
        The run's mechanisms, phases and nonlinear datasets (any order; each
        records its kind and experiment).
    figures : sequence of Figure
        The run's figures.

    Returns
    -------
    str
        The page. The summary is wrapped in a Jinja ``raw`` block: names and
        descriptions are never read as template code.

    Examples
    --------
    >>> from featlearn import summary
    >>> page = summary.front_page(f"{summary.MARKER}\\n", [], [])
    >>> page.splitlines()[:4]
    ['{% raw %}', 'What this run found', '===================', '']
    """
    lines = template.splitlines()
    if MARKER not in lines:
        raise InputError(f"the report template has no line {MARKER!r} to put the summary in")
    at = lines.index(MARKER)
    summary = ["{% raw %}", *summary_lines(datasets, figures), "{% endraw %}"]
    return "\n".join([*lines[:at], *summary, *lines[at + 1 :]]) + "\n"


def summary_lines(datasets: Iterable[xr.Dataset], figures: Sequence[Figure]) -> list[str]:
    """The summary as reStructuredText lines (see :func:`front_page`)."""
    by_kind: dict[str, list[xr.Dataset]] = {"mechanisms": [], "phases": [], "nonlinear": []}
    for ds in datasets:
        kind = contract.kind_of(ds)
        if kind not in by_kind:
            raise InputError(
                f"the summary reads mechanisms, phases and nonlinear files, not {kind or 'unknown'!r} ones"
            )
        by_kind[kind].append(ds)
    linear, classified, nonlinear = by_kind["mechanisms"], by_kind["phases"], by_kind["nonlinear"]
    runs = sum(ds["primary"].size for ds in linear)
    nonlinear_runs = sum(ds["train_loss"].isel(step=0).size for ds in nonlinear)
    lines = [
        *_heading("What this run found", "="),
        f"This run simulated {len(linear)} experiments of the linear network ({runs} runs), classified the phases "
        f"of {len(classified)}, trained {len(nonlinear)} nonlinear experiments ({nonlinear_runs} runs) and drew "
        f"{len(figures)} figures (under **Results**, with their captions).",
        "",
    ]
    if classified:
        lines += [*_heading("Phase diagrams"), *_bullets(_phase_line(ds) for ds in classified)]
    if linear:
        lines += [*_heading("Mechanisms of every run"), *_bullets(_mechanism_line(ds) for ds in linear)]
    if nonlinear:
        lines += [*_heading("Nonlinear networks"), *_bullets(_nonlinear_line(ds) for ds in nonlinear)]
    lines += _paper_map(figures)
    return lines


def _heading(title: str, underline: str = "-") -> list[str]:
    return [title, underline * len(title), ""]


def _bullets(items: Iterable[str]) -> list[str]:
    return [*(f"- {item}" for item in items), ""]


def _name(ds: xr.Dataset) -> str:
    return f"``{ds.attrs.get('experiment', '?')}``"


def _counts(variable: xr.DataArray) -> str:
    """How often each label of a flag variable occurs, in the order of its flag values (zeros left out)."""
    counts = Counter(np.asarray(variable.values).ravel().tolist())
    names = variable.attrs["flag_meanings"].split()
    values = np.atleast_1d(variable.attrs["flag_values"]).tolist()
    return ", ".join(f"{name} {counts[value]}" for value, name in zip(values, names) if counts[value])


def _sweep(ds: xr.Dataset, dims: Iterable[str]) -> str:
    """``dim size x dim size ...`` over the dims of ``dims`` that ``ds`` sweeps."""
    swept = [f"{dim} {ds.sizes[dim]}" for dim in dims if dim in ds.sizes and ds.sizes[dim] > 1]
    return " x ".join(swept) or "one point"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _runs(ds: xr.Dataset, runs: int, dims: Iterable[str]) -> str:
    """``N runs (sweep x S seeds)``."""
    seeds = _plural(ds.sizes["seed"], "seed")
    swept = _sweep(ds, dims)
    return f"{_plural(runs, 'run')} ({seeds if swept == 'one point' else f'{swept} x {seeds}'})"


def _phase_line(ds: xr.Dataset) -> str:
    parts = []
    if "agreement" in ds.attrs:
        # The agreement is over the decided cells (boundary cells are neither agreeing nor not).
        decided = int(ds.attrs.get("decided_cells", ds.attrs["cells"]))
        agreement = float(ds.attrs["agreement"])
        parts.append(
            f"classifier and predictor agree on {round(agreement * decided)} of {decided} decided cells "
            f"({agreement:.1%})"
        )
        parts += [
            f"{key} {float(value):.3g}"
            for key, value in ds.attrs.items()
            if key != "agreement" and key.startswith(PHASE_ATTRIBUTE_PREFIXES) and isinstance(value, Number)
        ]
        parts.append(f"measured phases: {_counts(ds['phase'])}")
        if ds.attrs.get("disagreeing_cells", "none") != "none":
            parts.append(f"disagreeing: {ds.attrs['disagreeing_cells']}")
    else:
        parts.append(f"predicted phases: {_counts(ds['phase_theory'])} (too few widths to classify)")
    if "gd_phase" in ds:
        gd = ds["gd_phase"]
        parts.append(f"gradient descent over {_plural(gd.size, 'grid point')} ({_sweep(ds, gd.dims)}): {_counts(gd)}")
    cells = ds["phase_theory"]
    return f"{_name(ds)}, {_plural(cells.size, 'cell')} ({_sweep(ds, cells.dims)}): " + "; ".join(parts)


def _mechanism_line(ds: xr.Dataset) -> str:
    primary = ds["primary"]
    grid = [dim for dim in primary.dims if dim != "seed"]
    return f"{_name(ds)}, {ds.attrs.get('solver', '?')}, {_runs(ds, primary.size, grid)}: {_counts(primary)}"


def _last_logged(variable: xr.DataArray) -> xr.DataArray:
    """Each run's last finite value along ``step`` (NaN where it has none)."""
    values = np.asarray(variable.transpose(..., "step").values, dtype=float)
    finite = np.isfinite(values)
    last = np.where(finite.any(axis=-1), values.shape[-1] - 1 - np.argmax(finite[..., ::-1], axis=-1), 0)
    picked = np.take_along_axis(values, last[..., None], axis=-1)[..., 0]
    picked = np.where(finite.any(axis=-1), picked, np.nan)
    dims = [dim for dim in variable.dims if dim != "step"]
    return xr.DataArray(picked, dims=dims, coords={dim: variable[dim] for dim in dims if dim in variable.coords})


def _describe(values: xr.DataArray) -> str:
    """A per-run variable in a few words: a share for flags, the values or their range otherwise."""
    flat = np.asarray(values.values).ravel()
    if flat.dtype == bool:
        return f"{int(flat.sum())} of {flat.size} runs"
    distinct = np.unique(flat[np.isfinite(flat)]) if flat.dtype.kind == "f" else np.unique(flat)
    if distinct.size <= 4:
        return ", ".join(f"{value:g}" for value in distinct.tolist())
    return f"{distinct.min():g} to {distinct.max():g} (median {float(np.median(distinct)):g})"


def _nonlinear_line(ds: xr.Dataset) -> str:
    sweep = [dim for dim in contract.NONLINEAR_SWEEP_DIMS if dim in ds.sizes]
    runs = ds["train_loss"].isel(step=0).size
    network = ", ".join(str(ds.attrs.get(key, "?")) for key in ("dataset", "loss"))
    parts = [f"{_name(ds)}, {network}, depth {ds.attrs.get('depth', '?')}, {_runs(ds, runs, sweep)}"]
    parts += [f"{words} {_describe(ds[name])}" for name, words in NONLINEAR_RUN_VARIABLES.items() if name in ds]
    accuracy = _last_logged(ds["test_accuracy"]) if "test_accuracy" in ds else None
    others = [dim for dim in sweep if dim != "init_scale" and ds.sizes[dim] > 1]
    if accuracy is not None and bool(np.isfinite(accuracy).any()) and ds.sizes.get("init_scale", 1) > 1 and not others:
        mean = accuracy.mean([dim for dim in accuracy.dims if dim != "init_scale"])
        spread = accuracy.std([dim for dim in accuracy.dims if dim != "init_scale"])
        scales = ds["init_scale"].values.tolist()
        table = ", ".join(f"{s:g}: {m:.3f} ± {d:.3f}" for s, m, d in zip(scales, mean.values, spread.values))
        best = scales[int(np.nanargmax(mean.values))]
        parts.append(f"test accuracy by init scale {table} (best {best:g})")
    elif accuracy is not None and bool(np.isfinite(accuracy).any()):
        parts.append(f"final test accuracy {float(accuracy.min()):.3f} to {float(accuracy.max()):.3f}")
    zeta = _last_logged(ds["zeta"].isel(layer=0))
    parts.append(f"final zeta of layer 1 {float(zeta.min()):.2f} to {float(zeta.max()):.2f}")
    head, *found = parts
    return head + (": " + "; ".join(found) if found else "")


def _paper_map(figures: Sequence[Figure]) -> list[str]:
    lines = [
        *_heading("The paper, result by result"),
        "Each result of the paper, and the figures of this run that reproduce it (the README's paper map "
        "adds the experiments, rules and files, and what the default run found):",
        "",
    ]
    for beyond in (False, True):
        if beyond:
            lines += ["Beyond the paper:", ""]
        for entry in (entry for entry in PAPER if entry.beyond_the_paper == beyond):
            shown = [
                figure.stem
                for figure in figures
                if figure.figure in entry.figures
                and (not entry.experiments or set(entry.experiments) & set(figure.experiments))
            ]
            links = ", ".join(f"`{stem}.png`_" for stem in shown) if shown else "not drawn in this run"
            lines.append(f"- {entry.result}: {links}")
        lines.append("")
    return lines
