"""Crash recovery: a run killed at any moment is completed by the same command, with identical results.

The runs are killed as power loss or a lost node would kill them: SIGKILL to the whole process
group (Snakemake and its jobs), leaving Snakemake's locks, its incomplete-job markers and the
temporary files of writes in progress (issue 11, items 2 and 12).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr
import yaml
from conftest import REPO, copy_workflow

from featlearn import io, validation

#: What each killed moment needs of the smoke configuration: a chunked explicit simulation, a
#: flow experiment with its mechanism map, and one nonlinear training with its figure. The specs
#: are the smoke run's, so their results must be identical to it.
EXPERIMENTS = ("compare_explicit", "mech_examples")
NONLINEAR = "ntk_vs_width"
COMMAND = [sys.executable, "-m", "snakemake", "--configfile", "config/resume.yaml", "--cores", "2"]
#: Attributes that differ between two runs of the same thing.
VOLATILE = ("created", "git_commit")


def resume_config() -> dict:
    smoke = validation.read_file(str(REPO / "config" / "smoke.yaml"))
    return {
        "simulation": smoke["simulation"],
        "experiments": {name: smoke["experiments"][name] for name in EXPERIMENTS},
        "mechanisms": {"maps": {"rho_target": smoke["mechanisms"]["maps"]["rho_target"]}},
        "nonlinear": {
            "experiments": {NONLINEAR: smoke["nonlinear"]["experiments"][NONLINEAR]},
            "figures": {"ntk_width": NONLINEAR},
        },
    }


def stage_running(group: int, stage: str) -> bool:
    """Whether a `featlearn STAGE` job of the process group is running."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != group:
                continue
            words = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
        except (OSError, ProcessLookupError):
            continue
        if any(word.endswith("featlearn") for word in words) and stage in words:
            return True
    return False


def temporaries(root: Path) -> list[Path]:
    return sorted(path for path in (root / "results").rglob(".*.tmp"))


def run_killed_during(root: Path, stage: str, log: Path) -> list[Path]:
    """Start the workflow, SIGKILL its process group while a `stage` job runs; return the temporaries left.

    For figures, the kill waits (a little) for the figure's temporary file: a write in progress.
    """
    with open(log, "w") as output:
        process = subprocess.Popen(COMMAND, cwd=root, stdout=output, stderr=output, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not stage_running(process.pid, stage):
            assert process.poll() is None, f"the run ended before a {stage} job ran:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {stage} job started"
            time.sleep(0.01)
        if stage == "figure":
            wait = time.monotonic() + 30
            while not temporaries(root) and stage_running(process.pid, stage) and time.monotonic() < wait:
                time.sleep(0.005)
        os.killpg(process.pid, signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert list((root / ".snakemake" / "locks").glob("*.lock")), "the killed run left no lock: nothing was tested"
    return temporaries(root)


def without_volatile(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.copy()
    for name in VOLATILE:
        ds.attrs.pop(name, None)
    return ds


@pytest.mark.slow
def test_a_killed_run_is_completed_by_the_same_command(smoke_run, tmp_path):
    root = copy_workflow(tmp_path / "workflow")
    (root / "config" / "resume.yaml").write_text(yaml.safe_dump(resume_config(), sort_keys=False))

    stale = []
    for index, stage in enumerate(("simulate", "train", "figure")):
        stale = run_killed_during(root, stage, tmp_path / f"killed-{index}.log")
    assert stale, "the figure was killed before it began writing"
    resumed = subprocess.run(COMMAND, cwd=root, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "removed its stale locks" in resumed.stderr
    for index in (1, 2):
        assert "removed its stale locks" in (tmp_path / f"killed-{index}.log").read_text()

    results, reference = root / "results", smoke_run / "results"
    datasets = sorted(path.relative_to(results) for path in results.rglob("*.nc"))
    expected = [Path(name, kind) for name in EXPERIMENTS for kind in ("mechanisms.nc", "trajectories.nc")]
    assert datasets == sorted([*expected, Path("nonlinear", f"{NONLINEAR}.nc")])
    for name in datasets:
        xr.testing.assert_identical(
            without_volatile(io.read_netcdf(results / name)), without_volatile(io.read_netcdf(reference / name))
        )
    for figure in ("mechanism_map_rho_target.png", "nonlinear_ntk_width.png"):
        assert (results / "figures" / figure).read_bytes() == (reference / "figures" / figure).read_bytes(), figure
    # The figure write killed half-way left its temporary; rewriting that figure removed it.
    assert not temporaries(root), f"left behind: {temporaries(root)} (stale at the last kill: {stale})"
