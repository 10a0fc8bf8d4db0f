"""Large grids: a merged dataset read with ``io.read_netcdf(path, lazy=True)`` streams through
a reduction over its ``seed`` and ``time`` dims within an address-space cap smaller than
the data, while reading it eagerly under the same cap fails (so the cap is real).

The dataset has the layout of ``trajectories.nc`` (grid dims, then ``seed``,
``time``) and is written by ``io.write_netcdf``, as the merge stage writes it:
what streams is the on-disk chunking it gets there plus the lazy read. An
analysis stage stays streaming as long as it reads with ``lazy=True`` and
reduces with xarray/dask operations (no ``.values``/``np.asarray`` on a full
variable before reducing ``time``/``seed``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from featlearn import io

pytestmark = pytest.mark.slow

#: Address space the reduction may use beyond what the process holds once warmed up.
HEADROOM_MB = 128
#: The dataset's size in memory: well above the headroom.
SHAPE = {"width": 200, "seed": 100, "time": 2000}  # 200 * 100 * 2000 * 8 bytes = 320 MB

STAGE = textwrap.dedent(
    """
    import json, resource, sys
    from featlearn import io

    path, mode, headroom_mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # Warm up before the cap: imports, the netCDF library, dask's worker threads and their
    # malloc arenas; the cap then bounds what the data itself may take.
    io.read_netcdf(path, lazy=True)["loss"].isel(width=0).mean(("seed", "time")).compute()
    with open("/proc/self/status") as status:
        vm_kb = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    limit = vm_kb * 1024 + headroom_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    try:
        ds = io.read_netcdf(path, lazy=(mode == "lazy"))
        reduced = ds["loss"].mean(("seed", "time")).compute()
    except MemoryError:
        print(json.dumps({"memory_error": True}))
    else:
        print(json.dumps({"memory_error": False, "mean": reduced.values.tolist()}))
    """
)


@pytest.fixture(scope="module")
def large_grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trajectories-like file whose ``loss`` is larger than the headroom (written chunk by chunk)."""
    widths = np.arange(SHAPE["width"], dtype=float)
    # loss[w, s, t] = w + (s - mean seed) / 1000: the (seed, time) mean is w, exactly representable.
    seeds = (np.arange(SHAPE["seed"]) - (SHAPE["seed"] - 1) / 2) / 1000
    loss = da.from_array(widths, chunks=10)[:, None, None] + da.from_array(seeds)[None, :, None] + da.zeros(
        (1, 1, SHAPE["time"]), chunks=(1, 1, SHAPE["time"])
    )
    ds = xr.Dataset(
        {"loss": (tuple(SHAPE), loss, {"long_name": "excess training loss", "units": "1"})},
        coords={
            "width": ("width", np.arange(1, SHAPE["width"] + 1), {"long_name": "hidden width d", "units": "1"}),
            "time": ("time", np.linspace(0.0, 1.0, SHAPE["time"]), {"long_name": "training time", "units": "1"}),
        },
    )
    assert ds["loss"].nbytes > 2 * HEADROOM_MB * 2**20
    return io.write_netcdf(ds, tmp_path_factory.mktemp("large") / "trajectories.nc")


def run_stage(path: Path, mode: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", STAGE, str(path), mode, str(HEADROOM_MB)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_lazy_read_streams_a_grid_larger_than_the_memory_cap(large_grid):
    result = run_stage(large_grid, "lazy")
    assert result["memory_error"] is False
    np.testing.assert_allclose(result["mean"], np.arange(SHAPE["width"], dtype=float), rtol=0, atol=1e-12)


def test_eager_read_of_the_same_grid_exceeds_the_cap(large_grid):
    assert run_stage(large_grid, "eager")["memory_error"] is True


def test_lazy_read_is_chunked_below_the_cap(large_grid):
    ds = io.read_netcdf(large_grid, lazy=True)
    assert isinstance(ds["loss"].data, da.Array)
    largest_chunk = np.prod([max(sizes) for sizes in ds["loss"].data.chunks]) * ds["loss"].dtype.itemsize
    assert largest_chunk < HEADROOM_MB * 2**20 / 8

