"""The pipeline around the solvers: chunking, atomic writes, the CLI and the Snakemake DAG."""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import xarray as xr

from featlearn import grid, io, simulation, validation
from featlearn.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SMOKE = validation.load(str(REPO / "config" / "smoke.yaml"))

#: The first smoke experiment of each solver.
SMOKE_BY_SOLVER = {
    solver: next(name for name, spec in SMOKE["experiments"].items() if spec["solver"] == solver)
    for solver in ("flow", "gd", "explicit")
}

#: The data contract of results/<experiment>/trajectories.nc.
CONTRACT_VARIABLES = ("beta", "loss", "uu", "ww", "uw", "cos_uw", "ntk", "ntk_eta", "diverged")
CONTRACT_COORDS = (
    "width", "kappa", "sigma_u", "sigma_w", "eta_u", "eta_w", "rho", "beta_star", "sigma2",
    "a", "b_u", "b_w", "c_u", "c_w", "dt",
)  # fmt: skip
CONTRACT_ATTRS = (
    "title",
    "Conventions",
    "featlearn_version",
    "git_commit",
    "config_sha256",
    "created",
    "solver",
    "experiment",
)


def without_created(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` without its creation time, the one attribute two identical runs differ in."""
    ds = ds.copy()
    del ds.attrs["created"]
    return ds


def quiet(_message: str) -> None:
    """A progress callback that prints nothing."""


# ---------------------------------------------------------------------------
# chunking invariance


@functools.cache
def smoke_chunks(name: str, chunks: int) -> tuple[xr.Dataset, ...]:
    """The chunks of smoke experiment ``name`` (cached: the tests below only read them)."""
    config = validation.experiment_config(SMOKE, name)
    experiment = grid.Experiment.from_config(config, name)
    return tuple(simulation.simulate_chunk(experiment, i, chunks, config=config, progress=quiet) for i in range(chunks))


@pytest.mark.parametrize("solver", SMOKE_BY_SOLVER)
def test_three_chunks_merge_like_one(solver, tmp_path):
    name = SMOKE_BY_SOLVER[solver]
    one = simulation.merge_chunks(smoke_chunks(name, 1))
    three = simulation.merge_chunks(smoke_chunks(name, 3))
    assert one.attrs["solver"] == solver
    xr.testing.assert_identical(without_created(one), without_created(three))

    io.write_netcdf(one, tmp_path / "one.nc")
    io.write_netcdf(three, tmp_path / "three.nc")
    one_read, three_read = io.read_netcdf(tmp_path / "one.nc"), io.read_netcdf(tmp_path / "three.nc")
    xr.testing.assert_identical(without_created(one_read), without_created(three_read))
    xr.testing.assert_identical(one_read, one)


@pytest.mark.parametrize("solver", SMOKE_BY_SOLVER)
def test_chunks_out_of_order_merge_the_same(solver):
    parts = smoke_chunks(SMOKE_BY_SOLVER[solver], 3)
    in_order = simulation.merge_chunks(parts)
    shuffled = simulation.merge_chunks([parts[2], parts[0], parts[1]])
    xr.testing.assert_identical(without_created(in_order), without_created(shuffled))


def test_missing_chunk_is_refused():
    parts = smoke_chunks(SMOKE_BY_SOLVER["gd"], 3)
    size = grid.Experiment.from_config(SMOKE, SMOKE_BY_SOLVER["gd"]).grid.size
    missing = list(range(1, size, 3))
    with pytest.raises(InputError, match=re.escape(f"{size} points expected, missing {missing}")):
        simulation.merge_chunks([parts[0], parts[2]])


def test_repeated_chunk_is_refused():
    parts = smoke_chunks(SMOKE_BY_SOLVER["gd"], 3)
    with pytest.raises(InputError, match=r"missing \[\], repeated \[1, 4"):
        simulation.merge_chunks([*parts, parts[1]])


def test_chunk_of_another_configuration_is_refused():
    name = SMOKE_BY_SOLVER["gd"]
    parts = smoke_chunks(name, 3)
    other = validation.experiment_config(SMOKE, name)
    other["experiments"][name]["dt"] /= 2
    stranger = simulation.simulate_chunk(grid.Experiment.from_config(other, name), 1, 3, config=other, progress=quiet)
    with pytest.raises(InputError, match="chunks disagree on config_sha256"):
        simulation.merge_chunks([parts[0], stranger, parts[2]])


def test_chunk_of_another_experiment_is_refused():
    gd, flow = smoke_chunks(SMOKE_BY_SOLVER["gd"], 3), smoke_chunks(SMOKE_BY_SOLVER["flow"], 3)
    with pytest.raises(InputError, match="chunks disagree on experiment"):
        simulation.merge_chunks([gd[0], flow[1], gd[2]])


# ---------------------------------------------------------------------------
# interrupted runs leave no file under a final name


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    ds = simulation.merge_chunks(smoke_chunks(SMOKE_BY_SOLVER["flow"], 1))
    written = []

    def write_half_then_fail(self, path, *args, **kwargs):
        Path(path).write_bytes(b"CDF\x01 half a file")
        written.append(Path(path))
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", write_half_then_fail)
    target = tmp_path / "out" / "trajectories.nc"
    with pytest.raises(OSError, match="disk full"):
        io.write_netcdf(ds, target)
    assert written and written[0].parent == target.parent, "the partial file was written next to the target"
    assert list(target.parent.iterdir()) == []


def test_killed_simulation_leaves_no_output_and_reruns_identically(tmp_path, run_featlearn):
    # Explicit width-d runs: a few seconds after the first progress line.
    config = {
        "experiments": {
            "slow": {
                "solver": "explicit",
                "dt": 0.01,
                "seeds": 4,
                "time": {"stop": 6.0, "num": 7},
                "parameters": {"parametrization": "ntk", "width": [20000, 20001, 20002, 20003]},
            }
        }
    }
    resolved = validation.experiment_config(validation.validate(config), "slow")
    settings_path = tmp_path / "slow.yaml"
    io.write_yaml(resolved, settings_path)
    output = tmp_path / "results" / "trajectories.nc"
    simulate = ["simulate", "--settings", f"@{settings_path}", "--chunk", "0", "--chunks", "1", "--output", str(output)]
    command = [sys.executable, "-m", "featlearn", *simulate]

    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        first_line = process.stderr.readline()
        assert "[simulate slow" in first_line
        assert process.poll() is None, "the run ended before it could be killed; make the experiment larger"
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        process.kill()
        process.stderr.close()
    assert not output.exists()
    leftovers = list(output.parent.iterdir()) if output.parent.exists() else []
    assert all(p.name.startswith(".trajectories.nc.") and p.name.endswith(".tmp") for p in leftovers), leftovers

    rerun = run_featlearn(*simulate)
    assert rerun.returncode == 0, rerun.stderr
    fresh = simulation.simulate_chunk(grid.Experiment.from_config(resolved, "slow"), config=resolved, progress=quiet)
    io.write_netcdf(fresh, tmp_path / "fresh.nc")
    result = io.read_netcdf(output)
    assert result.sizes == {"point": 4, "seed": 4, "time": 7}
    assert np.isfinite(result["beta"]).all()
    xr.testing.assert_identical(without_created(result), without_created(io.read_netcdf(tmp_path / "fresh.nc")))


def test_write_removes_stale_temporaries_of_its_target(tmp_path):
    """A killed writer leaves its hidden temporary: the next write of that target removes it (issue 11, item 12)."""
    figures = tmp_path / "figures"
    figures.mkdir()
    stale = [figures / ".map.png.k2x9_abc.tmp", figures / ".map.png.zz.tmp"]
    others = [figures / ".map.pdf.k2x9_abc.tmp", figures / ".map.png.x.png.k2x9_abc.tmp", figures / "map.png.tmp"]
    for path in stale + others:
        path.write_bytes(b"half a figure")
    with io.atomic_path(figures / "map.png") as tmp:
        tmp.write_bytes(b"a figure")
    assert (figures / "map.png").read_bytes() == b"a figure"
    assert sorted(figures.iterdir()) == sorted([figures / "map.png", *others])


#: A process that takes the run lock, says whether it got it, and holds it until its input ends.
HOLD_LOCK = (
    "import sys; from featlearn import io; lock = io.hold_lock(sys.argv[1]); "
    "print(lock is not None, flush=True); sys.stdin.read()"
)


def test_run_lock_is_held_while_its_holder_lives_and_freed_when_it_is_killed(tmp_path):
    """The lock the workflow takes to tell a live run from a dead one (issue 11, item 2)."""
    path = tmp_path / ".snakemake" / "featlearn-run.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "True"
        assert io.hold_lock(path) is None
        assert f"pid {holder.pid} on " in io.lock_holder(path)
        holder.kill()
        holder.wait(timeout=30)
        lock = io.hold_lock(path)
        assert lock is not None, "a killed holder keeps no lock"
        assert f"pid {os.getpid()} on " in io.lock_holder(path)
        lock.close()
    finally:
        holder.kill()
        holder.stdin.close()
        holder.stdout.close()


# ---------------------------------------------------------------------------
# the command line


BAD_CONFIG = """\
experiments:
  x:
    solver: gd
    dt: 0.1
    time: {stop: 1.0, num: 5}
    parameters: {width: 10, rho: 1.5}
"""


def test_cli_help(run_featlearn):
    result = run_featlearn("--help")
    assert result.returncode == 0
    for command in ("validate", "simulate", "merge", "figure"):
        assert command in result.stdout


def test_cli_unknown_experiment_is_one_line_exit_2(run_featlearn, tmp_path):
    result = run_featlearn(
        "validate", str(REPO / "config" / "smoke.yaml"), "--experiment", "nope", "--output", "x.yaml"
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "experiments.nope: no such experiment" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.yaml").exists()


def test_cli_validate_bad_file_exits_2_naming_the_field(run_featlearn, tmp_path):
    (tmp_path / "bad.yaml").write_text(BAD_CONFIG)
    result = run_featlearn("validate", "bad.yaml")
    assert result.returncode == 2
    assert "experiments.x.parameters.rho:" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("write", "words"),
    [
        (lambda path: path.write_text("experiments:\n  x: [1\n"), ["line 3 column 1", "not valid YAML"]),
        (lambda path: path.mkdir(), ["cannot read the configuration", "Is a directory"]),
        (lambda path: None, ["cannot read the configuration", "No such file"]),
        (lambda path: path.write_text(BAD_CONFIG + "    solver: flow\n"), ["experiments.x.solver: given twice"]),
    ],
    ids=["yaml-syntax", "folder", "missing", "duplicate-key"],
)
def test_cli_validate_unusable_file_is_one_line_exit_2(run_featlearn, tmp_path, write, words):
    write(tmp_path / "config.yaml")
    result = run_featlearn("validate", "config.yaml")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


def test_cli_validate_writes_the_resolved_experiment(run_featlearn, tmp_path):
    name = SMOKE_BY_SOLVER["gd"]
    result = run_featlearn(
        "validate", str(REPO / "config" / "smoke.yaml"), "--experiment", name, "--output", "resolved.yaml"
    )
    assert result.returncode == 0, result.stderr
    assert io.read_yaml(tmp_path / "resolved.yaml") == validation.experiment_config(SMOKE, name)


# ---------------------------------------------------------------------------
# the Snakemake workflow


def test_workflow_rejects_a_bad_config_before_any_job(workflow_copy, run_snakemake):
    (workflow_copy / "bad.yaml").write_text(BAD_CONFIG)
    result = run_snakemake(workflow_copy, "-n", "--configfile", "bad.yaml", "--cores", "1", timeout=120)
    assert result.returncode != 0
    assert "experiments.x.parameters.rho:" in result.stdout + result.stderr
    assert not (workflow_copy / "results").exists()


TINY_CONFIG = """\
experiments:
  tiny:
    solver: flow
    seeds: 2
    chunks: 1
    time: {stop: 1.0, num: 5}
    parameters: {width: [10, 100], rho: 0.5}
"""

#: Configurations the workflow must refuse at DAG build with one message and no stack frames.
WORKFLOW_REFUSALS = {
    "duplicate-key": (TINY_CONFIG + "  tiny:\n    solver: gd\n", "experiments.tiny: given twice"),
    "nan": (TINY_CONFIG.replace("rho: 0.5", "rho: .nan"), "experiments.tiny.parameters.rho: nan is not a finite"),
    "path-name": (
        TINY_CONFIG + "nonlinear:\n  experiments:\n    ../../escaped: {}\n",
        "nonlinear.experiments: '../../escaped' is not a valid name",
    ),
    "select-off-grid": (
        TINY_CONFIG + "mechanisms:\n  maps:\n    m: {experiment: tiny, x: width, y: rho}\n",
        "mechanisms.maps.m.y: 'rho' is not a grid dimension of tiny",
    ),
    "expression": (
        TINY_CONFIG.replace("rho: 0.5", "kappa: {exponent: [0.0, 0.5]}, eta_w: {exponent: '1 / (a - 0.5)'}"),
        "experiments.tiny.parameters.eta_w: no value at",
    ),
    # Snakemake parses --configfile itself, before the workflow: its own message, also without frames.
    "yaml-syntax": (TINY_CONFIG + "  broken: [\n", "Config file is not valid JSON or YAML"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", WORKFLOW_REFUSALS)
def test_workflow_refuses_bad_configs_in_one_message(workflow_copy, run_snakemake, case):
    text, message = WORKFLOW_REFUSALS[case]
    (workflow_copy / "bad.yaml").write_text(text)
    result = run_snakemake(workflow_copy, "--configfile", "bad.yaml", "--cores", "1", timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert message in output
    assert "Traceback" not in output and 'File "' not in output, output
    assert not (workflow_copy / "results").exists() and not (workflow_copy / "logs").exists()


@pytest.mark.slow
def test_workflow_removes_the_locks_of_a_dead_run_but_not_of_a_live_one(workflow_copy, run_snakemake):
    """After kill -9 the same command resumes; while a run lives a second one is refused (issue 11, item 2)."""
    (workflow_copy / "tiny.yaml").write_text(TINY_CONFIG)
    locks = workflow_copy / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    # What a killed run leaves: Snakemake's locks on its outputs (and no live holder of the run lock).
    (locks / "0.output.lock").write_text("results/tiny/trajectories.nc\nresults/tiny/mechanisms.nc\n")
    (locks / "0.input.lock").write_text("results/tiny/trajectories.nc\n")
    command = ("--configfile", "tiny.yaml", "--cores", "1")

    live = io.hold_lock(workflow_copy / ".snakemake" / "featlearn-run.lock")
    try:
        refused = run_snakemake(workflow_copy, *command, timeout=120)
    finally:
        live.close()
    assert refused.returncode == 1
    assert "another Snakemake run is active in this folder (pid" in refused.stderr
    assert "LockException" in refused.stdout + refused.stderr
    assert (locks / "0.output.lock").exists(), "the locks of a live run were removed"

    resumed = run_snakemake(workflow_copy, *command, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "removed its stale locks" in resumed.stderr
    assert (workflow_copy / "results" / "tiny" / "mechanisms.nc").is_file()
    assert not list(locks.glob("*.lock")), "the run left locks behind"


def check_trajectories(ds: xr.Dataset, experiment: grid.Experiment) -> None:
    """The data contract of trajectories.nc, and values that make sense."""
    assert ds.attrs["experiment"] == experiment.name
    assert ds.attrs["solver"] == experiment.solver
    for attr in CONTRACT_ATTRS:
        assert ds.attrs.get(attr), attr
    grid = experiment.grid
    assert tuple(ds["beta"].dims) == (*grid.dims, "seed", "time")
    assert tuple(ds["diverged"].dims) == (*grid.dims, "seed")
    for dim, values in zip(grid.dims, grid.values):
        assert ds[dim].values.tolist() == list(values)
    assert ds.sizes["seed"] == experiment.seeds
    assert ds["time"].values[0] == 0.0 and ds["time"].values[-1] == pytest.approx(experiment.times[-1])
    for name in CONTRACT_VARIABLES:
        assert name in ds.data_vars, name
    for name in CONTRACT_COORDS:
        assert name in ds.coords, name
    for name, variable in ds.variables.items():
        assert variable.attrs.get("long_name"), name
        assert "units" in variable.attrs or variable.dtype.kind == "U", name
    assert set(ds["diverged"].attrs["flag_meanings"].split()) == {"finite", "diverged"}


def check_learning_run(ds: xr.Dataset) -> None:
    """Observables of a converging run are the functions of the Gram entries they claim to be."""
    assert not ds["diverged"].any()
    assert np.isfinite(ds["beta"]).all()
    np.testing.assert_allclose(ds["beta"], ds["kappa"] * ds["uw"], rtol=1e-12)
    np.testing.assert_allclose(ds["ntk"], ds["kappa"] ** 2 * (ds["uu"] + ds["ww"]), rtol=1e-12)
    np.testing.assert_allclose(ds["cos_uw"], ds["uw"] / np.sqrt(ds["uu"] * ds["ww"]), rtol=1e-12)
    # These runs learn: the loss at the end is far below the loss at the start.
    assert (ds["loss"].isel(time=-1) < 1e-2 * ds["loss"].isel(time=0)).all()


@pytest.mark.slow
def test_smoke_dag_end_to_end(smoke_run, run_snakemake):
    # smoke_run (tests/conftest.py) ran `snakemake --configfile config/smoke.yaml --cores 2`
    # in a copy of the workflow and checked it succeeded; this test only reads it.
    results = smoke_run / "results"
    datasets = {}
    for name in SMOKE["experiments"]:
        experiment = grid.Experiment.from_config(SMOKE, name)
        path = results / name / "trajectories.nc"
        assert path.is_file(), path
        datasets[name] = io.read_netcdf(path)
        check_trajectories(datasets[name], experiment)

    # Solvers that share initial vectors give the same trajectories.
    by_solver = {
        datasets[name].attrs["solver"]: datasets[name] for name in SMOKE["figures"]["solver_comparison"]["experiments"]
    }
    gd, explicit, flow = by_solver["gd"], by_solver["explicit"], by_solver["flow"]
    for ds in by_solver.values():
        check_learning_run(ds)
    assert gd.attrs["config_sha256"] != explicit.attrs["config_sha256"]
    for name in ("uu", "ww", "uw", "beta", "ntk_eta"):
        np.testing.assert_allclose(gd[name], explicit[name], rtol=1e-9, err_msg=name)
    # Gradient flow is the dt -> 0 limit of GD: close, not equal, at dt = 0.02.
    flow_at_gd_times = flow.sel(time=gd["time"], method="nearest")
    np.testing.assert_allclose(flow_at_gd_times["beta"], gd["beta"], atol=0.05)
    assert not np.allclose(flow_at_gd_times["beta"], gd["beta"], rtol=1e-6)
    # The flow conserves eta_w |u|^2 - eta_u |w|^2.
    conserved = flow["eta_w"] * flow["uu"] - flow["eta_u"] * flow["ww"]
    drift = np.abs(conserved - conserved.isel(time=0)) / (flow["eta_w"] * flow["uu"] + flow["eta_u"] * flow["ww"])
    assert float(drift.max()) < 1e-12

    figure = results / "figures" / "solver_comparison"
    image = matplotlib.image.imread(figure.with_suffix(".png"))
    assert image.shape[0] > 300 and image.shape[1] > 300
    assert image[..., :3].std() > 0.05, "blank figure"
    assert (image[..., :3] < 0.5).mean() > 0.005, "figure has almost nothing drawn"
    pdf = figure.with_suffix(".pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(pdf) > 10_000

    again = run_snakemake(smoke_run, "-n", "--configfile", "config/smoke.yaml", "--cores", "2", timeout=120)
    assert again.returncode == 0, again.stderr
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-2000:]


def test_cli_options_carry_no_defaults_of_their_own():
    # Settings defaults live in the configuration schema only; an option left out is None (or False for a flag).
    from featlearn import cli

    parser = cli.build_parser()
    commands = next(action for action in parser._actions if action.dest == "command").choices
    for name, sub in commands.items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.default in (None, False), f"featlearn {name} {action.option_strings[0]}"
