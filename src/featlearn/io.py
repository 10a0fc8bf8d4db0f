"""All file input/output of featlearn: netCDF datasets, figures, JSON and YAML.

Every writer goes through :func:`atomic_path`: the file is written under a
temporary name in the destination folder and renamed into place, so a killed
run never leaves a half-written file under a final name (``os.replace`` is
atomic on POSIX file systems).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

import netCDF4
import xarray as xr
import yaml

from featlearn import __version__

CONVENTIONS = "CF-1.10"

#: Largest netCDF chunk we write. A lazy read streams one chunk per variable at a time, so
#: this bounds a streaming stage's memory. The library's default chunks grow with the
#: variable (doubling the seeds doubled them) and split the time axis, which every
#: per-run analysis needs whole.
CHUNK_BYTES = 2 * 2**20
#: HDF5 chunk cache per open netCDF variable: room for two of our chunks. The library
#: default (64 MiB per variable in netCDF-C 4.10) keeps the chunks last read or written of
#: every variable: a stage streaming eight input and a dozen output variables held ~1 GB
#: that way.
CHUNK_CACHE_BYTES = 2 * CHUNK_BYTES
netCDF4.set_chunk_cache(CHUNK_CACHE_BYTES)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    Temporary files of earlier writes of ``path`` (left by a killed process,
    which cannot clean up) are removed first.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    # mkstemp creates the file private (0600); results are shared data: use the usual umask mode.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files of earlier writes of ``path`` (``.NAME.XXXX.tmp``); return them.

    Only a write of the same target makes them; the workflow never runs two
    jobs writing one file, so one found before a write belongs to a write
    that was killed.
    """
    final = Path(path)
    pattern = re.compile(rf"\.{re.escape(final.name)}\.[^.]+\.tmp")
    stale = [tmp for tmp in final.parent.glob(f".{final.name}.*.tmp") if pattern.fullmatch(tmp.name)]
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def hold_lock(path: str | os.PathLike[str]) -> TextIO | None:
    """Take an exclusive lock on ``path`` (created if missing) without waiting.

    Returns the open file, which holds the lock until it is closed or the
    process ends (``flock``: the kernel releases it however the process
    ends, also on ``kill -9``), with a line describing the holder (process,
    host, start, command) written into it; ``None`` when another process
    holds the lock (:func:`lock_holder` says which).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Not a with-block: the open file is the lock, it must outlive this call.
    handle = open(target, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.truncate(0)
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {utc_now()}: {' '.join(sys.argv)}\n")
    handle.flush()
    return handle


def lock_holder(path: str | os.PathLike[str]) -> str:
    """The holder :func:`hold_lock` wrote into ``path`` (``"unknown"`` if there is none)."""
    try:
        return Path(path).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def git_commit() -> str:
    """Commit of the featlearn source tree, with ``-dirty`` when it has local changes.

    ``"unknown"`` outside a git checkout (for example an installed wheel).
    """
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def config_sha256(config: Mapping[str, Any]) -> str:
    """SHA-256 of a configuration in canonical JSON form (sorted keys)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def utc_now() -> str:
    """The current UTC time in ISO 8601 (seconds)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def provenance_attrs(title: str, solver: str, config: Mapping[str, Any] | None) -> dict[str, str]:
    """The global attributes every featlearn netCDF file carries (data contract)."""
    return {
        "title": title,
        "Conventions": CONVENTIONS,
        "featlearn_version": __version__,
        "git_commit": git_commit(),
        "config_sha256": config_sha256(config) if config is not None else "none",
        "created": utc_now(),
        "solver": solver,
    }


def derived_attrs(stage: str, source: xr.Dataset) -> dict[str, str]:
    """Global attributes of the output of analysis ``stage`` (e.g. ``"mechanisms"``) of ``source``.

    Fresh version, commit and time; the experiment, solver and configuration
    hash of the runs it analyses.
    """
    title = f"featlearn {stage}: {source.attrs.get('experiment', '')}"
    attrs = provenance_attrs(title, source.attrs.get("solver", "none"), None)
    attrs["config_sha256"] = source.attrs.get("config_sha256", "none")
    attrs["experiment"] = source.attrs.get("experiment", "")
    return attrs


def chunk_shape(shape: tuple[int, ...], itemsize: int, target: int = CHUNK_BYTES) -> tuple[int, ...]:
    """Chunk of at most ``target`` bytes (but one element at least) that keeps trailing dims whole.

    Dims are filled from the last: the time axis of a run first, then its
    seeds, then as many grid points as fit; a dim that does not fit whole is
    split into equal pieces.
    """
    chunk: list[int] = []
    inner = itemsize
    for size in reversed(shape):
        pieces = max(1, -(-size // max(1, target // inner)))
        take = max(1, -(-size // pieces))
        chunk.append(take)
        inner *= take
    return tuple(reversed(chunk))


def _encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """zlib-compress float and int data variables; keep booleans and strings as they are.

    Multi-dimensional numbers are stored in chunks of :func:`chunk_shape`, or
    of their largest dask block when dask-backed, so that a streamed write
    puts whole chunks, each once. Coordinate variables (named like their
    dimension) get no ``_FillValue``: CF forbids missing values there, and
    xarray would add one to floats.
    """
    encoding: dict[str, dict[str, Any]] = {}
    for name, var in ds.variables.items():
        if var.dtype.kind in "fiu" and var.ndim > 0:
            encoding[name] = {"zlib": True, "complevel": 4}
            if var.chunks is not None:
                encoding[name]["chunksizes"] = tuple(max(sizes) for sizes in var.chunks)
            elif var.ndim > 1:
                encoding[name]["chunksizes"] = chunk_shape(var.shape, var.dtype.itemsize)
        if var.dims == (name,) and var.dtype.kind == "f":
            encoding.setdefault(name, {})["_FillValue"] = None
    return encoding


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write ``ds`` to ``path`` (netCDF4) atomically; return the final path."""
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=_encoding(ds))
    return Path(path)


def read_netcdf(path: str | os.PathLike[str], *, lazy: bool = False) -> xr.Dataset:
    """Open a featlearn netCDF file.

    With ``lazy=True`` the variables are dask arrays with one block per chunk
    of the file (a few MB each), so analyses stream grids larger than memory
    (coordinates are loaded); otherwise the data are loaded and the file is
    closed.
    """
    if lazy:
        ds = xr.open_dataset(path, engine="netcdf4", chunks={})
        # Coordinates are grid-sized (no seed or time axis): in memory they stay plain arrays.
        return ds.assign_coords({name: coord.load() for name, coord in ds.coords.items()})
    with xr.open_dataset(path, engine="netcdf4") as ds:
        return ds.load()


def write_json(data: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``data`` as indented JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return Path(path)


def write_yaml(data: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``data`` as YAML atomically (keys in insertion order)."""
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    return Path(path)


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """Read a YAML (or JSON) file."""
    with open(path) as handle:
        return yaml.safe_load(handle)


def save_figure(figure: Any, path: str | os.PathLike[str]) -> list[Path]:
    """Save a matplotlib figure as ``path`` (PNG) and the sibling ``.pdf``, atomically.

    Returns the written paths. The PDF's creation date is fixed so reruns of
    an unchanged figure differ only where the drawing differs.
    """
    png = Path(path).with_suffix(".png")
    written = []
    for target, kwargs in (
        (png, {"dpi": 150}),
        (png.with_suffix(".pdf"), {"metadata": {"CreationDate": None}}),
    ):
        with atomic_path(target) as tmp:
            # Constrained layout already fits everything in (outside legends included): no
            # "tight" bounding box, which costs a second rendering of every file.
            figure.savefig(tmp, format=target.suffix[1:], **kwargs)
        written.append(target)
    return written
