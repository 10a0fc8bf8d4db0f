"""Shared fixtures: a private copy of the workflow, and runners for Snakemake and the featlearn CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: What a workflow run needs besides the installed featlearn package (the rules' conda
#: environments are under workflow/envs).
WORKFLOW_FILES = ("workflow", "config")

Runner = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def workflow_copy(tmp_path: Path) -> Path:
    """A folder holding a copy of the workflow files (:data:`WORKFLOW_FILES`, symlinks resolved).

    Runs in it write results/, logs/ and .snakemake/ there, never into the repository.
    """
    return copy_workflow(tmp_path / "workflow_copy")


def copy_workflow(root: Path) -> Path:
    """Copy :data:`WORKFLOW_FILES` of the repository into the new folder ``root``; return it."""
    root.mkdir()
    for name in WORKFLOW_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name)
        else:
            shutil.copy2(source, root / name)
    return root


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workflow copy in which the whole smoke pipeline has run (once per test session).

    Shared by several tests: read it, or copy it (``shutil.copytree`` keeps the
    modification times Snakemake compares) before changing anything in it.
    """
    root = copy_workflow(tmp_path_factory.mktemp("smoke_run") / "workflow")
    command = [sys.executable, "-m", "snakemake", "--configfile", "config/smoke.yaml", "--cores", "2"]
    result = _run(command, root, timeout=900)
    assert result.returncode == 0, result.stderr[-5000:]
    return root


def _run(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def run_snakemake() -> Runner:
    """``run_snakemake(workdir, *args, timeout=...)``: Snakemake with this interpreter, output captured."""

    def run(workdir: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        return _run([sys.executable, "-m", "snakemake", *args], workdir, timeout)

    return run


@pytest.fixture
def run_featlearn(tmp_path: Path) -> Runner:
    """``run_featlearn(*args, timeout=...)``: the featlearn CLI in a subprocess, in ``tmp_path``."""

    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return _run([sys.executable, "-m", "featlearn", *args], tmp_path, timeout)

    return run
