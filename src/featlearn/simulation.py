"""Simulation stage: run one chunk of an experiment's grid, and merge chunks into the grid.

A chunk holds every seed of an interleaved subset of grid points, along a
``point`` dimension (the flat grid index); :func:`merge_chunks` puts the
points back on the grid dimensions. Each run's random initial state is drawn
from a generator keyed by its grid point and seed index
(:func:`rng_for`), so the merged result does not depend on
how the grid was chunked or scheduled.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time as _time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from featlearn import contract, io, solvers, theory
from featlearn.contract import EXPONENTS, HYPERPARAMETERS
from featlearn.errors import InputError
from featlearn.grid import Experiment, Grid
from featlearn.theory import Gram, Hyperparameters

Progress = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def init_seed_key(hyperparameters: Mapping[str, Any], init: str) -> int:
    """Entropy for the random initial state of a grid point.

    It hashes what the initial distribution depends on (width, sigma_u,
    sigma_w, rho and the sampling method), so grid points that differ only in
    learning rates, output scale or target start from the same draws (common
    random numbers), and a point's draws never depend on chunking or order.
    """
    key = {name: hyperparameters[name] for name in ("width", "sigma_u", "sigma_w", "rho")}
    canonical = json.dumps({**{k: repr(v) for k, v in key.items()}, "init": init}, sort_keys=True)
    return int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:16], "little")


def rng_for(hyperparameters: Mapping[str, Any], init: str, seed: int) -> np.random.Generator:
    """The generator of run ``seed`` at a grid point (numpy SeedSequence keyed by point and seed)."""
    return np.random.default_rng(np.random.SeedSequence([init_seed_key(hyperparameters, init), seed]))


def trajectory_observables(gram: Gram, hyper: Hyperparameters) -> dict[str, np.ndarray]:
    """The stored observables of Gram trajectories (time is the last axis)."""
    kappa, eta_u, eta_w, beta_star, sigma2 = (np.asarray(x)[..., None] for x in hyper)
    beta = theory.output(kappa, gram)
    return {
        "beta": beta,
        "loss": theory.loss(beta, beta_star, sigma2),
        "uu": gram.uu,
        "ww": gram.ww,
        "uw": gram.uw,
        "cos_uw": theory.cosine(gram),
        "ntk": theory.ntk(kappa, gram),
        "ntk_eta": theory.ntk_eta(kappa, eta_u, eta_w, gram),
    }


def _initial_states(
    experiment: Experiment, points: Sequence[Mapping[str, Any]]
) -> tuple[Gram | None, list[tuple[np.ndarray, np.ndarray]] | None]:
    """Initial Gram entries (points x seeds), and the vectors when the init draws them."""
    grams, vectors = [], []
    for values in points:
        for seed in range(experiment.seeds):
            rng = rng_for(values, experiment.init, seed)
            draw = (values["width"], values["sigma_u"], values["sigma_w"], values["rho"], 1)
            if experiment.init == "vectors":
                u, w = theory.sample_vectors(rng, *draw)
                vectors.append((u[0], w[0]))
                grams.append(theory.gram_from_vectors(u[0], w[0]))
            else:
                grams.append(Gram(*(float(x[0]) for x in theory.sample_gram(rng, *draw))))
    shape = (len(points), experiment.seeds)
    gram = Gram(*(np.reshape(np.array(x, dtype=float), shape) for x in zip(*grams)))
    return gram, (vectors if experiment.init == "vectors" else None)


def simulate_chunk(
    experiment: Experiment,
    chunk: int = 0,
    chunks: int = 1,
    *,
    config: Mapping[str, Any] | None = None,
    progress: Progress = _stderr,
) -> xr.Dataset:
    """Simulate the grid points of one chunk; dims ``(point, seed, time)``.

    ``config`` is the resolved configuration the experiment came from; its
    hash is stored in the ``config_sha256`` attribute.
    """
    indices = experiment.chunk_points(chunk, chunks)
    points = [experiment.hyperparameters(i) for i in indices]
    label = f"[simulate {experiment.name} chunk {chunk + 1}/{chunks}]"
    started = _time.perf_counter()
    progress(f"{label} {len(points)} grid points x {experiment.seeds} seeds, solver {experiment.solver}")

    gram0, vectors = _initial_states(experiment, points)
    hyper = Hyperparameters(
        *(
            np.array([[p[name]] * experiment.seeds for p in points])
            for name in ("kappa", "eta_u", "eta_w", "beta_star", "sigma2")
        )
    )
    times = np.asarray(experiment.times)
    if experiment.solver == "explicit":
        # Widths differ between points: one batched width-d run (over seeds) per point.
        parts = []
        for k, _ in enumerate(points):
            block = slice(k * experiment.seeds, (k + 1) * experiment.seeds)
            u0 = np.stack([v[0] for v in vectors[block]])
            w0 = np.stack([v[1] for v in vectors[block]])
            parts.append(solvers.explicit(u0, w0, Hyperparameters(*(x[k] for x in hyper)), times, experiment.dt))
            progress(f"{label} {k + 1}/{len(points)} points ({_time.perf_counter() - started:.1f} s)")
        trajectory = solvers.Trajectory(
            Gram(*(np.stack(x) for x in zip(*(p.gram for p in parts)))), np.stack([p.diverged for p in parts])
        )
    else:
        trajectory = solvers.solve(experiment.solver, hyper, times, experiment.dt, gram0=gram0)
    if experiment.dt > 0:
        times = solvers.record_steps(times, experiment.dt) * experiment.dt
    progress(f"{label} done in {_time.perf_counter() - started:.1f} s")

    data_vars = {
        name: (("point", "seed", "time"), value)
        for name, value in trajectory_observables(trajectory.gram, hyper).items()
    }
    data_vars["diverged"] = (("point", "seed"), trajectory.diverged)
    coords: dict[str, Any] = {
        "point": ("point", np.array(indices, dtype=np.int64)),
        "seed": ("seed", np.arange(experiment.seeds, dtype=np.int64)),
        "time": ("time", times),
        "dt": experiment.dt,
    }
    for dim in experiment.grid.dims:
        coords[f"grid_{dim}"] = ("point", np.array([experiment.grid.point(i)[dim] for i in indices]))
    for name in (*HYPERPARAMETERS, *EXPONENTS):
        coords[name] = ("point", np.array([p[name] for p in points]))
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update(io.provenance_attrs(f"featlearn trajectories: {experiment.name}", experiment.solver, config))
    ds.attrs.update(
        experiment=experiment.name,
        featlearn_grid=experiment.grid.to_json(),
        featlearn_chunk=f"{chunk}/{chunks}",
    )
    return contract.annotate(ds, "trajectories_chunk")


def merge_chunks(parts: Sequence[xr.Dataset]) -> xr.Dataset:
    """Put the chunks of one experiment back on its grid: dims ``(*grid, seed, time)``.

    Checks that the parts belong to the same experiment and configuration and
    together cover every grid point exactly once. Dask-backed parts (a lazy
    read) give a dask-backed result: nothing but coordinates is loaded.
    """
    if not parts:
        raise InputError("merge needs at least one chunk")
    first = parts[0].attrs
    for part in parts[1:]:
        for key in ("experiment", "config_sha256", "featlearn_grid", "solver"):
            if part.attrs.get(key) != first.get(key):
                raise InputError(f"chunks disagree on {key}: {first.get(key)!r} vs {part.attrs.get(key)!r}")
    grid = Grid.from_json(first["featlearn_grid"])
    combined = xr.concat(parts, dim="point", data_vars="all", coords="different", compat="equals").sortby("point")
    found = combined["point"].values
    if len(found) != grid.size or not np.array_equal(found, np.arange(grid.size)):
        missing = sorted(set(range(grid.size)) - set(found.tolist()))
        points, counts = np.unique(found, return_counts=True)
        repeated = points[counts > 1].tolist()
        raise InputError(
            f"chunks do not cover the grid once: {grid.size} points expected, "
            f"missing {missing[:10]}, repeated {repeated[:10]}"
        )

    def on_grid(variable: xr.Variable) -> xr.Variable:
        if "point" not in variable.dims:
            return variable
        rest = [d for d in variable.dims if d != "point"]
        values = variable.transpose("point", *rest).data
        return xr.Variable((*grid.dims, *rest), values.reshape(grid.shape + values.shape[1:]), variable.attrs)

    grid_coords = grid.dims
    data_vars = {name: on_grid(var.variable) for name, var in combined.data_vars.items()}
    coords: dict[str, Any] = {
        dim: (dim, np.array(values), combined[f"grid_{dim}"].attrs) for dim, values in zip(grid.dims, grid.values)
    }
    for name, coord in combined.coords.items():
        if name in ("point",) or str(name).startswith("grid_") or name in grid_coords:
            continue
        coords[str(name)] = on_grid(coord.variable)
    merged = xr.Dataset(data_vars, coords=coords)
    merged.attrs = {k: v for k, v in first.items() if k != "featlearn_chunk"}
    merged.attrs["created"] = io.utc_now()
    return contract.annotate(merged, "trajectories")
