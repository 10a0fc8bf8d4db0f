"""The figure table: every figure featlearn draws, what it reads and how a configuration asks for it.

One figure = one function = one entry here. An entry names the function
(module ``featlearn.figures.<module>``, function ``<name>``), the stage
outputs it reads *by kind* (``trajectories``, ``mechanisms``, ``phases``,
``nonlinear``: the function's keyword arguments of the same names, one
dataset or a list), its option keys, its report category and its caption
(``workflow/report/<name>.rst``), and how the configuration asks for it:
:func:`figure_jobs` turns a resolved configuration into the figures to draw,
and ``workflow/rules/figures.smk`` makes one rule of each (the pattern of
showyourwork's ``figure.smk``). This module is light (no plotting library):
the workflow reads it while it builds the DAG.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

#: How many datasets of a kind a figure reads: exactly one, or a list (in configuration order).
Count = Literal["one", "many"]


@dataclass(frozen=True)
class FigureJob:
    """One figure a configuration asks for.

    ``stem`` names its files (``results/figures/<stem>.png`` and ``.pdf``);
    ``inputs`` are ``(output, experiment)`` pairs in the order the function
    receives them, ``output`` the kind of the file (or the entry's ``sources``
    for it: the output that holds that kind); ``options`` are its keyword options.
    """

    figure: str
    stem: str
    inputs: tuple[tuple[str, str], ...]
    options: Mapping[str, Any]


Instances = Callable[[Mapping[str, Any]], Iterator[FigureJob]]


@dataclass(frozen=True)
class FigureEntry:
    """A figure of the table (see the module docstring).

    ``sources`` names, for a kind the figure reads, the output it is read
    from when that is not the output named after the kind (a nonlinear
    plane's phases, kind ``phases``, are the output ``plane_phases``): the
    first element of its jobs' inputs.
    """

    name: str
    module: str
    reads: Mapping[str, Count]
    options: tuple[str, ...]
    category: str
    instances: Instances
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def caption(self) -> str:
        """The caption file, relative to ``workflow/report``."""
        return f"{self.name}.rst"

    @property
    def outputs(self) -> set[str]:
        """The outputs its jobs read (the first element of their inputs)."""
        return {self.sources.get(kind, kind) for kind in self.reads}


def _job(name: str, stem: str, reads: Mapping[str, Count], experiments: list[str], options: Mapping) -> FigureJob:
    return FigureJob(name, stem, tuple((kind, e) for kind in reads for e in experiments), dict(options))


def _phase_figure(name: str, reads: Mapping[str, Count], options: tuple[str, ...]) -> Instances:
    """Instances of a phase figure: ``phases.figures.<name>: {experiment, x, y}``."""

    def instances(config: Mapping[str, Any]) -> Iterator[FigureJob]:
        spec = config["phases"]["figures"].get(name)
        if spec is not None:
            yield _job(name, name, reads, [spec["experiment"]], {k: spec[k] for k in options if k in spec})

    return instances


def _phase_entry(name: str, reads: Mapping[str, Count], options: tuple[str, ...] = ("x", "y")) -> FigureEntry:
    """A phase figure (module ``figures.phases``), configured as ``phases.figures.<name>``."""
    return FigureEntry(name, "phases", reads, options, "Phases", _phase_figure(name, reads, options))


def _solver_comparison(config: Mapping[str, Any]) -> Iterator[FigureJob]:
    spec = config["figures"].get("solver_comparison")
    if spec is not None:
        options = {key: spec[key] for key in ("seed",) if key in spec}
        yield _job("solver_comparison", "solver_comparison", {"trajectories": "many"}, spec["experiments"], options)


def _mechanism_maps(config: Mapping[str, Any]) -> Iterator[FigureJob]:
    for key, spec in config["mechanisms"]["maps"].items():
        options = {k: v for k, v in spec.items() if k != "experiment"}
        yield _job("mechanism_map", f"mechanism_map_{key}", {"mechanisms": "one"}, [spec["experiment"]], options)


def _mechanism_trajectories(config: Mapping[str, Any]) -> Iterator[FigureJob]:
    if "trajectories" in config["mechanisms"]:
        panels = config["mechanisms"]["trajectories"]["panels"]
        experiments = sorted({panel["experiment"] for panel in panels.values()})
        yield _job(
            "mechanism_trajectories",
            "mechanism_trajectories",
            {"mechanisms": "many"},
            experiments,
            {"panels": panels},
        )


def _mechanism_width_scaling(config: Mapping[str, Any]) -> Iterator[FigureJob]:
    spec = config["mechanisms"].get("width_scaling")
    if spec is not None:
        options = {k: v for k, v in spec.items() if k != "experiment"}
        yield _job(
            "mechanism_width_scaling", "mechanism_width_scaling", {"mechanisms": "one"}, [spec["experiment"]], options
        )


def _nonlinear_each(name: str) -> Instances:
    """One figure per experiment listed in ``nonlinear.figures.<key>`` (``nonlinear_<key>_<experiment>``)."""
    key = name.removeprefix("nonlinear_")

    def instances(config: Mapping[str, Any]) -> Iterator[FigureJob]:
        for experiment in config["nonlinear"]["figures"].get(key, []):
            yield _job(name, f"{name}_{experiment}", {"nonlinear": "one"}, [experiment], {})

    return instances


def _nonlinear_together(
    name: str, reads: Count, options: Callable[[Mapping[str, Any]], dict] | None = None
) -> Instances:
    """One figure of the experiments named by ``nonlinear.figures.<key>`` (a name or a list)."""
    key = name.removeprefix("nonlinear_")

    def instances(config: Mapping[str, Any]) -> Iterator[FigureJob]:
        named = config["nonlinear"]["figures"].get(key)
        if named:
            experiments = [named] if isinstance(named, str) else list(named)
            yield _job(name, name, {"nonlinear": reads}, experiments, options(config) if options else {})

    return instances


def _nonlinear_planes(config: Mapping[str, Any]) -> Iterator[FigureJob]:
    """One phase diagram per nonlinear phase plane (``nonlinear_phase_diagram_<plane>``), its x and y if set."""
    for name, plane in config["nonlinear"]["planes"].items():
        options = {key: plane[key] for key in ("x", "y") if key in plane}
        stem = f"nonlinear_phase_diagram_{name}"
        yield FigureJob("nonlinear_phase_diagram", stem, (("plane_phases", name),), options)


def _mechanism_thresholds(config: Mapping[str, Any]) -> dict[str, float]:
    return {key: config["mechanisms"][key] for key in ("eps_c", "eps_rho", "eps_K")}


FIGURES: tuple[FigureEntry, ...] = (
    FigureEntry(
        "solver_comparison", "simulation", {"trajectories": "many"}, ("seed",), "Simulation", _solver_comparison
    ),
    FigureEntry(
        "mechanism_map", "mechanisms", {"mechanisms": "one"}, ("x", "y", "select"), "Mechanisms", _mechanism_maps
    ),
    FigureEntry(
        "mechanism_trajectories",
        "mechanisms",
        {"mechanisms": "many"},
        ("panels",),
        "Mechanisms",
        _mechanism_trajectories,
    ),
    FigureEntry(
        "mechanism_width_scaling",
        "mechanisms",
        {"mechanisms": "one"},
        ("select",),
        "Mechanisms",
        _mechanism_width_scaling,
    ),
    *(
        _phase_entry(name, {"phases": "one"})
        for name in (
            "phases_diagram_scale",
            "phases_diagram_imbalance",
            "phases_diagram_rate",
            "phases_diagram_oblique",
            "phases_gd_step",
        )
    ),
    _phase_entry("phases_kernel_change_width", {"trajectories": "one", "phases": "one"}, ()),
    _phase_entry("phases_learning_time", {"trajectories": "one", "phases": "one"}, ()),
    _phase_entry("phases_kernel_change_map", {"trajectories": "one"}),
    FigureEntry(
        "nonlinear_zeta", "nonlinear", {"nonlinear": "one"}, (), "Nonlinear", _nonlinear_each("nonlinear_zeta")
    ),
    FigureEntry(
        "nonlinear_ntk_width",
        "nonlinear",
        {"nonlinear": "one"},
        (),
        "Nonlinear",
        _nonlinear_together("nonlinear_ntk_width", "one"),
    ),
    FigureEntry(
        "nonlinear_accuracy",
        "nonlinear",
        {"nonlinear": "many"},
        (),
        "Nonlinear",
        _nonlinear_together("nonlinear_accuracy", "many"),
    ),
    FigureEntry(
        "nonlinear_mechanisms",
        "nonlinear",
        {"nonlinear": "many"},
        ("eps_c", "eps_rho", "eps_K"),
        "Nonlinear",
        _nonlinear_together("nonlinear_mechanisms", "many", _mechanism_thresholds),
    ),
    FigureEntry(
        "nonlinear_phase_diagram",
        "phases",
        {"phases": "one"},
        ("x", "y"),
        "Nonlinear",
        _nonlinear_planes,
        sources={"phases": "plane_phases"},
    ),
)

BY_NAME: dict[str, FigureEntry] = {entry.name: entry for entry in FIGURES}


def entry(name: str) -> FigureEntry:
    """The table entry of figure ``name`` (``KeyError`` listing the known figures)."""
    if name not in BY_NAME:
        raise KeyError(f"unknown figure {name!r}; known: {', '.join(sorted(BY_NAME))}")
    return BY_NAME[name]


def figure_jobs(config: Mapping[str, Any], available: Collection[tuple[str, str]] | None = None) -> list[FigureJob]:
    """Every figure a resolved configuration asks for, in table order.

    ``available`` are the ``(kind, experiment)`` outputs the run produces
    (for example without CIFAR-10 experiments when no CIFAR-10 folder is
    configured): inputs outside it are left out, and a figure left without
    any input of a kind it reads is not drawn. ``None`` keeps every input.
    """
    jobs = []
    for figure in FIGURES:
        for job in figure.instances(config):
            if available is not None:
                inputs = tuple(item for item in job.inputs if item in available)
                if {output for output, _ in inputs} != figure.outputs:
                    continue
                job = FigureJob(job.figure, job.stem, inputs, job.options)
            jobs.append(job)
    return jobs
