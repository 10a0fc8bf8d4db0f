"""Large grids: the merge and analysis stages stream a grid larger than their memory cap.

``featlearn merge``, ``featlearn mechanisms`` and ``featlearn phases`` read
their netCDF inputs lazily (``io.read_netcdf(path, lazy=True)``) and compute
blocks of whole runs (one block per netCDF chunk, at most
``io.CHUNK_BYTES``). Each stage runs here in a subprocess whose address space
is capped, after a warm-up run on a tiny grid, at :data:`HEADROOM_MB` above
what it then holds: less than the variables it reads (and, for the
mechanisms, less than the time-resolved variables it writes). Reading the
same file eagerly under the same cap fails, so the cap is real. The streamed
results are identical to the in-memory computation.

The fast tests check the same identity for any blocking (including files
whose chunks split the time axis) and the chunk layout :func:`io.write_netcdf`
gives the files the stages stream.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr
import yaml

import featlearn as fl
from featlearn import contract, grid, io, mechanism_detection, simulation, validation

#: Address space a stage may take beyond what it holds once warmed up.
HEADROOM_MB = 128

#: A width sweep of two parametrizations: 2 x 20 x 100 runs of 2000 records, 64 MB per variable.
LARGE_EXPERIMENT = {
    "solver": "flow",
    "seeds": 100,
    "time": {"stop": 100.0, "num": 2000, "spacing": "log", "start": 1.0e-3},
    "parameters": {
        "parametrization": ["mean_field", "ntk"],
        "width": [100 * 2**k for k in range(20)],
    },
}
#: The same layout, tiny: each capped stage first runs on it (warm-up).
SMALL_EXPERIMENT = {
    **LARGE_EXPERIMENT,
    "seeds": 3,
    "time": {"stop": 100.0, "num": 50, "spacing": "log", "start": 1.0e-3},
    "parameters": {"parametrization": ["mean_field", "ntk"], "width": [100, 1000, 10000, 100000]},
}
CHUNKS = 2
#: The --settings of the analysis stages: the schema's defaults of their sections.
STAGE_SETTINGS = {
    "mechanisms": json.dumps({key: validation.defaults("mechanisms")[key] for key in ("eps_c", "eps_rho", "eps_K")}),
    # Not strict: the warm-up grid (four widths) is too narrow to classify its cells correctly.
    "phases": json.dumps(
        {**{key: validation.defaults("phases")[key] for key in ("fit", "gd_rise", "min_agreement")}, "strict": False}
    ),
}

STAGE = textwrap.dedent(
    """
    import json, resource, sys
    from featlearn import cli, io

    warm_up, command = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    mode, headroom_mb = sys.argv[3], int(sys.argv[4])
    # Warm up before the cap with the same command on tiny files: imports, the netCDF library,
    # dask's worker threads and their malloc arenas. The cap then bounds what the data take.
    assert cli.main(warm_up) == 0
    with open("/proc/self/status") as status:
        vm_kb = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    limit = vm_kb * 1024 + headroom_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    try:
        if mode == "stage":
            status = cli.main(command)
        else:
            io.read_netcdf(command[1])
            status = 0
    except MemoryError:
        print(json.dumps({"memory_error": True}))
    else:
        print(json.dumps({"memory_error": False, "status": status}))
    """
)


def featlearn(*args: str | Path) -> None:
    command = [sys.executable, "-m", "featlearn", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def grids(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folders ``large/`` and ``small/``, each with the simulation chunks and the merged ``trajectories.nc``."""
    root = tmp_path_factory.mktemp("grids")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({"experiments": {"large": LARGE_EXPERIMENT, "small": SMALL_EXPERIMENT}}))
    for name in ("large", "small"):
        (root / name).mkdir()
        parts = [root / name / f"chunk{index}.nc" for index in range(CHUNKS)]
        resolved = root / name / "config.yaml"
        featlearn("validate", config, "--experiment", name, "--output", resolved)
        for index, part in enumerate(parts):
            featlearn("simulate", "--settings", f"@{resolved}", "--chunk", index, "--chunks", CHUNKS, "--output", part)
        featlearn("merge", *parts, "--output", root / name / "trajectories.nc")
    return root


def run_capped(grids: Path, stage: str, output: Path, mode: str = "stage") -> dict:
    """Run ``featlearn <stage>`` on the large grid under the cap, after a warm-up run on the small one."""

    def command(name: str, target: Path) -> list[str]:
        if stage == "merge":
            inputs = [str(grids / name / f"chunk{index}.nc") for index in range(CHUNKS)]
        else:
            inputs = [str(grids / name / "trajectories.nc"), "--settings", STAGE_SETTINGS[stage]]
        return [stage, *inputs, "--output", str(target)]

    warm_up = command("small", output.with_suffix(".warm.nc"))
    arguments = [json.dumps(warm_up), json.dumps(command("large", output)), mode, str(HEADROOM_MB)]
    result = subprocess.run([sys.executable, "-c", STAGE, *arguments], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def size_mb(path: Path, names: tuple[str, ...] | None = None) -> float:
    """Size in memory of the named variables of a netCDF file (all data variables by default)."""
    ds = io.read_netcdf(path, lazy=True)
    return sum(ds[name].nbytes for name in (names or ds.data_vars)) / 2**20


def assert_same_data(path: Path, expected: xr.Dataset, tmp_path: Path) -> None:
    """The file at ``path`` equals ``expected`` written and read back, up to dataset attributes
    (provenance and time stamps differ between runs)."""
    reference = io.read_netcdf(io.write_netcdf(expected, tmp_path / "reference.nc"))
    xr.testing.assert_identical(io.read_netcdf(path).drop_attrs(deep=False), reference.drop_attrs(deep=False))


@pytest.mark.slow
def test_eager_read_of_the_grid_exceeds_the_cap(grids, tmp_path):
    assert run_capped(grids, "mechanisms", tmp_path / "unused.nc", mode="eager-read")["memory_error"] is True


@pytest.mark.slow
def test_merge_stage_streams_chunks_larger_than_the_cap(grids, tmp_path):
    output = tmp_path / "trajectories.nc"
    parts = [grids / "large" / f"chunk{index}.nc" for index in range(CHUNKS)]
    assert sum(size_mb(part) for part in parts) > 3 * HEADROOM_MB
    assert run_capped(grids, "merge", output) == {"memory_error": False, "status": 0}
    assert_same_data(output, simulation.merge_chunks([io.read_netcdf(part) for part in parts]), tmp_path)


@pytest.mark.slow
def test_mechanisms_stage_streams_a_grid_larger_than_the_cap(grids, tmp_path):
    trajectories, output = grids / "large" / "trajectories.nc", tmp_path / "mechanisms.nc"
    assert run_capped(grids, "mechanisms", output) == {"memory_error": False, "status": 0}
    # What it read and the time-resolved variables it wrote are both larger than the cap.
    assert size_mb(trajectories, mechanism_detection.INPUTS) > HEADROOM_MB
    assert size_mb(output, tuple(f"{name}_t" for name in (*contract.MAGNITUDES, "a_part", "r_part"))) > HEADROOM_MB
    assert_same_data(output, fl.mechanisms(io.read_netcdf(trajectories)), tmp_path)


@pytest.mark.slow
def test_phases_stage_streams_a_grid_larger_than_the_cap(grids, tmp_path):
    trajectories, output = grids / "large" / "trajectories.nc", tmp_path / "phases.nc"
    assert size_mb(trajectories, ("beta", "loss", "ntk_eta")) > HEADROOM_MB
    assert run_capped(grids, "phases", output) == {"memory_error": False, "status": 0}
    # Both sit exactly on a boundary (NTK on e0 = 0, mean field on eM = 0): neither is decided.
    result = io.read_netcdf(output)
    assert result.attrs["decided_cells"] == 0 and result.attrs["boundary_fraction"] == 1.0
    criteria = [
        contract.PHASE_CRITERIA[int(c)] for c in result["phase_criterion"].sel(parametrization=["ntk", "mean_field"])
    ]
    assert criteria == ["e0", "eM"]
    assert_same_data(output, fl.phases(io.read_netcdf(trajectories)), tmp_path)


# ---------------------------------------------------------------------------
# blocks never change results; the layout of the files the stages stream


def small_trajectories(solver: str) -> xr.Dataset:
    spec = {
        "solver": solver,
        "seeds": 5,
        "time": {"stop": 20.0, "num": 41},
        "parameters": {"parametrization": ["ntk", "mean_field"], "width": [64, 256, 1024, 4096], "rho": [0.0, 0.5]},
    }
    if solver == "gd":
        spec.update(dt=0.5)
    config = validation.validate({"experiments": {"small": spec}})
    experiment = grid.Experiment.from_config(config, "small")
    return simulation.merge_chunks(
        [simulation.simulate_chunk(experiment, config=config, progress=lambda message: None)]
    )


@pytest.fixture(scope="module", params=["flow", "gd"])
def small_file(request, tmp_path_factory: pytest.TempPathFactory) -> tuple[xr.Dataset, Path]:
    """In-memory trajectories and the same written with chunks that split the time axis and the seeds."""
    trajectories = small_trajectories(request.param)
    path = tmp_path_factory.mktemp("small") / "trajectories.nc"
    split = (1, 2, 1, 3, 17)  # parametrization, width, rho, seed, time
    encoding = {name: {"chunksizes": split} for name, var in trajectories.data_vars.items() if "time" in var.dims}
    trajectories.to_netcdf(path, engine="netcdf4", encoding=encoding)
    return trajectories, path


@pytest.mark.parametrize("blocks", [None, {"width": 1, "seed": 2}, {"parametrization": 1, "rho": 1}])
def test_mechanisms_do_not_depend_on_the_blocks(small_file, blocks):
    trajectories, path = small_file
    lazy = io.read_netcdf(path, lazy=True)
    assert lazy["uu"].chunks is not None
    streamed = fl.mechanisms(lazy if blocks is None else lazy.chunk(blocks))
    assert streamed["a_part_t"].chunks is not None  # time-resolved variables stay lazy until written
    xr.testing.assert_identical(
        streamed.compute().drop_attrs(deep=False), fl.mechanisms(trajectories).drop_attrs(deep=False)
    )


@pytest.mark.parametrize("blocks", [None, {"width": 1, "seed": 2}])
def test_phases_do_not_depend_on_the_blocks(small_file, blocks):
    trajectories, path = small_file
    lazy = io.read_netcdf(path, lazy=True)
    result = fl.phases(lazy if blocks is None else lazy.chunk(blocks))
    xr.testing.assert_identical(result.drop_attrs(deep=False), fl.phases(trajectories).drop_attrs(deep=False))
    if trajectories.attrs["solver"] == "gd":
        assert "gd_phase_run" in result


@pytest.mark.parametrize(
    "shape",
    [(2, 20, 80, 2000), (2, 20, 160, 2000), (3, 7, 1_000_000), (5, 3, 1000), (10_000_000,), (4, 0, 9)],
)
def test_chunk_shape_keeps_trailing_dims_whole_within_the_target(shape):
    chunk = io.chunk_shape(shape, 8)
    assert len(chunk) == len(shape)
    assert all(1 <= c <= max(s, 1) for c, s in zip(chunk, shape))
    assert np.prod(chunk) * 8 <= io.CHUNK_BYTES
    # Filled from the last dim: before the last dim that is not whole, every dim is 1.
    split = [i for i, (c, s) in enumerate(zip(chunk, shape)) if c < s]
    if split:
        assert all(c == 1 for c in chunk[: split[-1]])


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((2, 20, 80, 2000), (1, 1, 80, 2000)),
        # 131 of 160 seeds would fit; two equal pieces instead of 131 + 29.
        ((2, 20, 160, 2000), (1, 1, 80, 2000)),
        ((5, 3, 1000), (5, 3, 1000)),
    ],
)
def test_chunk_shape_splits_into_equal_pieces(shape, expected):
    assert io.chunk_shape(shape, 8) == expected


def test_written_trajectories_keep_whole_runs_in_chunks_of_bounded_size(tmp_path):
    path = io.write_netcdf(small_trajectories("flow"), tmp_path / "trajectories.nc")
    with netCDF4.Dataset(path) as nc:
        for name in ("uu", "loss", "ntk_eta"):
            variable = nc.variables[name]
            assert variable.chunking()[-1] == variable.shape[-1]  # the whole time axis
            assert np.prod(variable.chunking()) * 8 <= io.CHUNK_BYTES
    lazy = io.read_netcdf(path, lazy=True)
    assert lazy["uu"].data.chunksize[-1] == lazy.sizes["time"]
    # Coordinates are loaded, not lazy: the stages index and broadcast them freely.
    assert all(coord.chunks is None for coord in lazy.coords.values())
