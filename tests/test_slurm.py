"""Scale out: one experiment's whole smoke chain on a real SLURM cluster gives the local results.

The test starts a single-node SLURM on localhost with ``.ci/slurm.sh`` (root,
Debian's slurm-wlm and munge), runs Snakemake with ``--profile
workflow/profiles/slurm`` (every job goes through sbatch) and compares every
netCDF file with the local smoke run. It skips, saying why, where SLURM cannot
be started; with ``FEATLEARN_REQUIRE_SLURM=1`` (set by ``.ci/run``) that is a
failure instead. The daemons it starts are stopped by PID.

Only one experiment's chain (simulation chunks, merge and the analysis stages
of that experiment) goes through SLURM: each SLURM job starts its own
Snakemake, so the whole smoke DAG would take several minutes there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr

from featlearn import io

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".ci" / "slurm.sh"
#: The first line of the slurm.conf that SCRIPT writes.
MARKER = "# written by featlearn .ci/slurm.sh"
EXPERIMENT = "compare_flow"
#: Wall-clock limit of the SLURM run; `timeout -k` kills Snakemake even if it hangs on a status query.
LIMIT_S = 360


def unavailable() -> str | None:
    """Why a local SLURM cluster cannot be started here (None: it can)."""
    if os.geteuid() != 0:
        return "starting slurmctld and slurmd needs root"
    search = f"{os.environ.get('PATH', '')}:/usr/sbin"
    missing = [
        tool for tool in ("munged", "slurmctld", "slurmd", "sbatch", "squeue") if not shutil.which(tool, path=search)
    ]
    if missing:
        return f"SLURM is not installed ({', '.join(missing)} not found; .ci/run installs slurm-wlm and munge)"
    if shutil.which("timeout") is None:
        return "coreutils `timeout` not found"
    return None


def started_by_ci() -> bool:
    """Whether a cluster started by .ci/slurm.sh (as .ci/run does) is up and idle."""
    conf = Path("/etc/slurm/slurm.conf")
    if not conf.is_file() or MARKER not in conf.read_text().splitlines() or shutil.which("sinfo") is None:
        return False
    states = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, timeout=30)
    return states.returncode == 0 and "idle" in states.stdout.split()


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A running single-node SLURM cluster: the one .ci/run started, or one started here and
    stopped, by PID, after the module's tests."""
    if started_by_ci():
        yield None
        return
    reason = unavailable()
    if reason is not None:
        if os.environ.get("FEATLEARN_REQUIRE_SLURM") == "1":
            pytest.fail(f"FEATLEARN_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm")
    try:
        started = subprocess.run(
            ["bash", str(SCRIPT), "start", str(state)], capture_output=True, text=True, timeout=120
        )
        assert started.returncode == 0, started.stdout + started.stderr
        yield state
    finally:
        stopped = subprocess.run(["bash", str(SCRIPT), "stop", str(state)], capture_output=True, text=True, timeout=120)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def without_created(path: Path) -> xr.Dataset:
    ds = io.read_netcdf(path)
    del ds.attrs["created"]
    return ds


def test_experiment_chain_on_slurm_matches_the_local_run(slurm_cluster, smoke_run, tmp_path):
    from conftest import copy_workflow

    local = sorted((smoke_run / "results" / EXPERIMENT).rglob("*.nc"))
    targets = [path.relative_to(smoke_run).as_posix() for path in local if "chunks" not in path.parts]
    assert f"results/{EXPERIMENT}/trajectories.nc" in targets

    workdir = copy_workflow(tmp_path / "workflow")
    command = [
        "timeout", "-k", "10", str(LIMIT_S),
        sys.executable, "-m", "snakemake", *targets,  # before --configfile, which takes several values
        "--profile", "workflow/profiles/slurm", "--configfile", "config/smoke.yaml",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=LIMIT_S + 30)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"exit {result.returncode} (124: timed out)\n" + output[-6000:]
    assert "submitted with SLURM jobid" in output  # really went through sbatch

    produced = sorted((workdir / "results" / EXPERIMENT).rglob("*.nc"))
    assert [p.relative_to(workdir) for p in produced] == [p.relative_to(smoke_run) for p in local]
    for slurm_file, local_file in zip(produced, local, strict=True):
        xr.testing.assert_identical(without_created(slurm_file), without_created(local_file))
