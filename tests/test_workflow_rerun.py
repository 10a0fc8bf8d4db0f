"""Rerun only what changed: Snakemake's dry-run plan after each kind of edit to a finished smoke run.

Every case edits a private copy of a finished smoke run (and, for code edits, a
private copy of the featlearn source put first on PYTHONPATH) and compares the
jobs Snakemake plans, per rule, with the plan it makes when told explicitly
which jobs are out of date (``--forcerun``: those jobs and everything
downstream of them). The expectation is thus "exactly these jobs and their
dependents", read from the same DAG, without hard-coding the job counts of
stages that other rule files add.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import featlearn

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SMOKE_CONFIG = "config/smoke.yaml"


def dry_run(workdir: Path, *args: str, pythonpath: Path | None = None) -> dict[str, int]:
    """Jobs Snakemake would run, per rule (``rule all`` left out); empty when nothing is to do."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    command = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--cores", "2", *args]
    result = subprocess.run(
        [*command, "--configfile", SMOKE_CONFIG], cwd=workdir, env=env, capture_output=True, text=True, timeout=180
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:", 1)[1]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE))
    assert "total" in counts, output[-4000:]
    return {rule: int(count) for rule, count in counts.items() if rule not in ("all", "total")}


@pytest.fixture
def finished(smoke_run: Path, tmp_path: Path) -> Path:
    """A private copy of the finished smoke run (modification times and Snakemake records kept)."""
    return Path(shutil.copytree(smoke_run, tmp_path / "run", symlinks=True))


@pytest.fixture
def source_copy(tmp_path: Path) -> Path:
    """A private copy of the featlearn source tree: ``<copy>/featlearn/...``; put it on PYTHONPATH."""
    root = tmp_path / "src"
    # The package the smoke run imported (the same source, also when PYTHONPATH points elsewhere).
    shutil.copytree(Path(featlearn.__file__).parent, root / "featlearn", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def edit_config(workdir: Path, edit) -> None:
    path = workdir / SMOKE_CONFIG
    config = yaml.safe_load(path.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def test_no_change_means_nothing_to_do(finished, source_copy):
    edit_config(finished, lambda config: None)  # rewritten, same content
    assert dry_run(finished) == {}
    # The code trigger hashes source content, not where the package lives.
    assert dry_run(finished, pythonpath=source_copy) == {}


def test_figure_settings_rerun_only_that_figure(finished):
    edit_config(finished, lambda config: config["figures"]["solver_comparison"].update(seed=1))
    assert dry_run(finished) == {"figure_solver_comparison": 1}
    changes = subprocess.run(
        [sys.executable, "-m", "snakemake", "--list-changes", "params", "--configfile", SMOKE_CONFIG],
        cwd=finished, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "results/figures/solver_comparison.png" in changes.stdout


@pytest.mark.parametrize(
    ("rules", "path", "value"),
    [
        # The nonlinear mechanisms figure labels its runs with the same thresholds.
        (["mechanisms", "figure_nonlinear_mechanisms"], ("mechanisms", "eps_c"), 0.2),
        # The nonlinear planes are classified with the same fit settings.
        (["phases", "plane_phases"], ("phases", "fit", "false_decision_rate"), 0.01),
    ],
)
def test_analysis_thresholds_rerun_only_the_analysis_and_its_dependents(finished, rules, path, value):
    expected = dry_run(finished, "--forcerun", *rules)
    assert expected.get(rules[0], 0) > 0

    def edit(config):
        section = config
        for key in path[:-1]:
            section = section.setdefault(key, {})
        section[path[-1]] = value

    edit_config(finished, edit)
    assert dry_run(finished) == expected
    assert not {"resolve_experiment", "simulate", "merge"} & expected.keys()


def test_one_experiment_grid_reruns_only_that_experiment(finished):
    name = "compare_gd"
    # Its chunks are temporary (gone after the merge): rerunning the merge brings them back.
    expected = dry_run(finished, "--forcerun", f"results/{name}/config.yaml", f"results/{name}/trajectories.nc")
    assert expected["resolve_experiment"] == 1
    assert expected["merge"] == 1
    assert expected["simulate"] == 2

    edit_config(finished, lambda config: config["experiments"][name]["parameters"].update(width=[10, 100, 300]))
    assert dry_run(finished) == expected


def test_one_nonlinear_plane_reruns_only_that_plane(finished):
    name = "relu2_rate"
    expected = dry_run(finished, "--forcerun", f"results/nonlinear/{name}_trajectories.nc")
    assert expected["train_plane"] == 1 and expected["plane_phases"] == 1
    assert expected[f"figure_nonlinear_phase_diagram_{name}"] == 1

    edit_config(finished, lambda config: config["nonlinear"]["planes"][name].update(steps=50))
    assert dry_run(finished) == expected


def edit_source(source_copy: Path, module: str, old: str, new: str) -> None:
    path = source_copy / "featlearn" / module
    text = path.read_text()
    assert old in text, f"{module} no longer holds {old!r}: update the test"
    path.write_text(text.replace(old, new, 1))


#: An edit of code: a new statement at the end of the module.
CODE_EDIT = "\n_EDITED = True\n"


@pytest.mark.parametrize(
    ("module", "rules"),
    [
        ("figures/simulation.py", ["figure_solver_comparison"]),
        ("solvers.py", ["simulate"]),
        ("nonlinear/metrics.py", ["train"]),
        ("nonlinear/planes.py", ["train_plane"]),
    ],
)
def test_module_edit_reruns_exactly_the_rules_running_it(finished, source_copy, module, rules):
    expected = dry_run(finished, "--forcerun", *rules)
    with open(source_copy / "featlearn" / module, "a") as handle:
        handle.write(CODE_EDIT)
    assert dry_run(finished, pythonpath=source_copy) == expected


def test_comment_and_docstring_edits_rerun_nothing(finished, source_copy):
    with open(source_copy / "featlearn" / "solvers.py", "a") as handle:
        handle.write("\n# a comment\n")
    edit_source(source_copy, "theory.py", '"""Exact theory of', '"""The exact theory of')
    assert dry_run(finished, pythonpath=source_copy) == {}


def test_message_edit_in_validation_reruns_only_the_resolved_configurations(finished, source_copy):
    expected = dry_run(finished, "--forcerun", "resolve_experiment")
    assert set(expected) == {"resolve_experiment"}
    edit_source(
        source_copy, "validation.py", "a log time grid needs its first nonzero time", "a log time grid needs a start"
    )
    assert dry_run(finished, pythonpath=source_copy) == expected


def test_edit_of_a_module_every_job_imports_reruns_everything(finished, source_copy):
    # Every stage writes through featlearn.io, also the rules whose own stage module does not
    # import it (resolve_experiment and the figures import it in their command's handler).
    everything = dry_run(finished, "--forceall")
    with open(source_copy / "featlearn" / "io.py", "a") as handle:
        handle.write(CODE_EDIT)
    assert dry_run(finished, pythonpath=source_copy) == everything


def test_edit_of_a_module_no_pipeline_rule_runs_reruns_nothing(finished, source_copy):
    for module in ("archive.py", "api.py"):
        with open(source_copy / "featlearn" / module, "a") as handle:
            handle.write(CODE_EDIT)
    assert dry_run(finished, pythonpath=source_copy) == {}
