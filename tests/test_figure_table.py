"""The figure table: one function, one caption and one configured rule per figure."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import featlearn.figures
from featlearn import validation
from featlearn.errors import InputError
from featlearn.figures import table

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = REPO / "workflow" / "report"


@pytest.mark.parametrize("entry", table.FIGURES, ids=lambda entry: entry.name)
def test_entry_names_a_function_that_takes_what_the_table_says(entry):
    function = getattr(importlib.import_module(f"featlearn.figures.{entry.module}"), entry.name)
    parameters = inspect.signature(function).parameters
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values()), "figures take keywords only"
    assert set(parameters) == {*entry.reads, *entry.options}
    assert all(parameters[kind].default is inspect.Parameter.empty for kind in entry.reads)
    assert entry.category in {"Simulation", "Mechanisms", "Phases", "Nonlinear"}
    assert (function.__doc__ or "").strip(), "every figure function says what it draws"
    assert (CAPTIONS / entry.caption).is_file()


def test_every_figure_function_and_caption_is_in_the_table():
    functions = set()
    for module in pkgutil.iter_modules(featlearn.figures.__path__):
        if module.name in ("table", "style"):
            continue
        loaded = importlib.import_module(f"featlearn.figures.{module.name}")
        functions |= {
            name
            for name, value in vars(loaded).items()
            if inspect.isfunction(value) and value.__module__ == loaded.__name__ and not name.startswith("_")
        }
    assert functions == set(table.BY_NAME)
    captions = {path.name for path in CAPTIONS.glob("*.rst")} - {"workflow.rst"}
    assert captions == {entry.caption for entry in table.FIGURES}


@pytest.mark.parametrize("path", ["config/config.yaml", "config/smoke.yaml"])
def test_configured_figures_read_existing_outputs_and_have_unique_files(path):
    config = validation.load(str(REPO / path))
    jobs = table.figure_jobs(config)
    assert len({job.stem for job in jobs}) == len(jobs)
    known = {
        "nonlinear": set(config["nonlinear"]["experiments"]),
        "phases": set(config["phases"]["experiments"]),
        "plane_phases": set(config["nonlinear"]["planes"]),
    }
    for job in jobs:
        entry = table.entry(job.figure)
        # The outputs read: the kinds, or the output named in the entry's sources for a kind.
        assert {output for output, _ in job.inputs} == entry.outputs, job.stem
        assert {entry.sources.get(kind, kind) for kind in entry.reads} == entry.outputs, job.stem
        assert set(job.options) <= set(entry.options), job.stem
        for kind, experiment in job.inputs:
            assert experiment in known.get(kind, config["experiments"]), (job.stem, kind, experiment)


def test_unavailable_inputs_are_left_out_and_a_figure_without_inputs_is_not_drawn():
    config = validation.load(str(REPO / "config" / "config.yaml"))
    everything = {(kind, name) for job in table.figure_jobs(config) for kind, name in job.inputs}
    without_mnist = everything - {("nonlinear", "accuracy_mnist"), ("nonlinear", "mnist_depth4")}
    jobs = {job.stem: job for job in table.figure_jobs(config, without_mnist)}
    assert ("nonlinear", "accuracy_mnist") not in jobs["nonlinear_accuracy"].inputs
    assert ("nonlinear", "accuracy_digits") in jobs["nonlinear_accuracy"].inputs
    assert "nonlinear_zeta_mnist_depth4" not in jobs


def test_draw_refuses_what_the_table_does_not_allow():
    with pytest.raises(InputError, match="unknown figure 'nope'"):
        featlearn.figures.draw("nope", {}, {})
    with pytest.raises(InputError, match="reads mechanisms; missing"):
        featlearn.figures.draw("mechanism_map", {}, {"x": "rho", "y": "beta_star"})
    with pytest.raises(InputError, match="reads one mechanisms dataset, got 2"):
        featlearn.figures.draw("mechanism_map", {"mechanisms": [None, None]}, {"x": "rho", "y": "beta_star"})
    with pytest.raises(InputError, match=r"unknown options \['colour'\]"):
        featlearn.figures.draw("solver_comparison", {"trajectories": []}, {"colour": "red"})
