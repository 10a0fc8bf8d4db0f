"""The hyperparameter grid of a linear-network experiment.

An experiment sweeps hyperparameters given as a value, a list of values (a
grid dimension named after the hyperparameter), or ``{prefactor, exponent}``
meaning ``prefactor * width^-exponent``, where lists of prefactors or
exponents are grid dimensions too (named ``kappa0`` / ``a``, ``sigma_u0`` /
``b_u``, ``sigma_w0`` / ``b_w``, ``eta_u0`` / ``c_u``, ``eta_w0`` / ``c_w``).
A ``parametrization`` (one name or a list, itself a dimension) sets the five
exponents at once. A prefactor or exponent may be a derived value
(:mod:`featlearn.expressions`), and ``axes`` declares extra dimensions that
only such expressions read. The grid is the Cartesian product of all
dimensions: declared axes first, then the sweeps in the order they appear.

:class:`Experiment` is built from a *resolved* configuration (validated,
defaults filled in: :func:`featlearn.validation.validate`). See
``docs/configuration.md``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featlearn import expressions
from featlearn.contract import EXPONENTS, PLAIN_HYPERPARAMETERS, SCALED_HYPERPARAMETERS
from featlearn.errors import InputError

#: Width exponents (a, b_u, b_w, c_u, c_w) of the named parametrizations (docs/model.md).
PARAMETRIZATIONS: dict[str, tuple[float, float, float, float, float]] = {
    "ntk": (0.5, 0.0, 0.0, 0.0, 0.0),
    "mean_field": (1.0, 0.0, 0.0, -1.0, -1.0),
    "standard": (0.0, 0.5, 0.0, 0.0, 0.0),
    "standard_scaled_lr": (0.0, 0.5, 0.0, 1.0, 1.0),
    "small_init": (0.5, 0.5, 0.5, -0.5, -0.5),
}

#: The value a hyperparameter takes when an experiment does not set it (the model's
#: reference scale: unit prefactors, uncorrelated start, unit target and input).
UNSET_VALUES: dict[str, float] = {
    **dict.fromkeys(SCALED_HYPERPARAMETERS, 1.0),
    "rho": 0.0,
    "beta_star": 1.0,
    "sigma2": 1.0,
}
#: The exponent symbol of each scaled hyperparameter (kappa -> a, ...).
EXPONENT_OF = dict(zip(SCALED_HYPERPARAMETERS, EXPONENTS))


@dataclass(frozen=True)
class Grid:
    """Grid dimensions in order, with the values each takes."""

    dims: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.values)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=int))

    def point(self, index: int) -> dict[str, Any]:
        """Values of every dimension at flat (C-order) grid index ``index``."""
        position = np.unravel_index(index, self.shape) if self.dims else ()
        return {dim: values[i] for dim, values, i in zip(self.dims, self.values, position)}

    def to_json(self) -> str:
        return json.dumps({"dims": list(self.dims), "values": [list(v) for v in self.values]})

    @classmethod
    def from_json(cls, text: str) -> Grid:
        data = json.loads(text)
        return cls(tuple(data["dims"]), tuple(tuple(v) for v in data["values"]))


def grid_of(parameters: Mapping[str, Any], axes: Mapping[str, Any] | None = None) -> Grid:
    """The grid an experiment's ``parameters`` and ``axes`` sections span (no other setting needed)."""
    dims: list[tuple[str, tuple[Any, ...]]] = [(name, tuple(values)) for name, values in (axes or {}).items()]
    for key, value in parameters.items():
        if isinstance(value, dict):
            for part, dim in (("prefactor", f"{key}0"), ("exponent", EXPONENT_OF[key])):
                if isinstance(value.get(part), list):
                    dims.append((dim, tuple(value[part])))
        elif isinstance(value, list):
            dims.append((key, tuple(value)))
    return Grid(tuple(d for d, _ in dims), tuple(v for _, v in dims))


def time_grid(time: Mapping[str, Any]) -> np.ndarray:
    """The record times of an experiment's ``time`` section (always starting at 0)."""
    if time.get("spacing", "linear") == "log":
        return np.concatenate([[0.0], np.geomspace(time["start"], time["stop"], time["num"] - 1)])
    return np.linspace(0.0, time["stop"], time["num"])


@dataclass(frozen=True)
class Experiment:
    """A resolved experiment: solver settings, time grid and hyperparameter grid."""

    name: str
    solver: str
    dt: float
    seeds: int
    init: str
    chunks: int
    times: tuple[float, ...]
    parameters: Mapping[str, Any]
    #: Extra grid dimensions read only by derived-value expressions (name -> values).
    axes: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], name: str) -> Experiment:
        """Experiment ``name`` of a resolved configuration (its ``simulation`` section gives the chunks)."""
        spec = config["experiments"][name]
        return cls(
            name=name,
            solver=spec["solver"],
            dt=float(spec["dt"]) if spec["solver"] != "flow" else 0.0,
            seeds=spec["seeds"],
            # The explicit solver evolves the vectors, so it always starts from them.
            init="vectors" if spec["solver"] == "explicit" else spec["init"],
            chunks=spec.get("chunks", config["simulation"]["chunks"]),
            times=tuple(float(t) for t in time_grid(spec["time"])),
            parameters=spec["parameters"],
            axes=spec.get("axes", {}),
        )

    @functools.cached_property
    def grid(self) -> Grid:
        return grid_of(self.parameters, self.axes)

    @property
    def n_chunks(self) -> int:
        """Simulation jobs: as configured, but never more than grid points."""
        return max(1, min(self.chunks, self.grid.size))

    def chunk_files(self, results: str) -> list[str]:
        """Paths of this experiment's simulation chunks under the results folder."""
        n = self.n_chunks
        return [f"{results}/{self.name}/chunks/{i}-of-{n}.nc" for i in range(n)]

    def chunk_points(self, chunk: int, chunks: int) -> list[int]:
        """Flat grid indices of chunk ``chunk`` of ``chunks`` (interleaved, to balance widths)."""
        if not 0 <= chunk < chunks:
            raise InputError(f"chunk {chunk} is not in 0..{chunks - 1}")
        return list(range(chunk, self.grid.size, chunks))

    def hyperparameters(self, index: int) -> dict[str, Any]:
        """Every hyperparameter value at flat grid index ``index`` (exponents included)."""
        return hyperparameters_at(self.parameters, self.grid.point(index))


def hyperparameters_at(parameters: Mapping[str, Any], point: Mapping[str, Any]) -> dict[str, Any]:
    """Every hyperparameter value of ``parameters`` at the grid point ``point`` (exponents included).

    Derived values are evaluated in the order kappa, sigma_u, sigma_w,
    eta_u, eta_w, reading the grid dims, ``width`` and the prefactors and
    exponents before them. Raises ``ArithmeticError`` (e.g. a division by
    zero) or ``OverflowError`` where an expression has no value at this point.
    """

    def pick(dim: str, value: Any) -> Any:
        if isinstance(value, str) and dim != "parametrization":
            return expressions.evaluate(value, known)
        return point[dim] if isinstance(value, list) else value

    width = int(pick("width", parameters["width"]))
    parametrization = pick("parametrization", parameters.get("parametrization"))
    values: dict[str, Any] = {"width": width}
    # What derived-value expressions may read: grid dims, width, and earlier prefactors and exponents.
    known: dict[str, float] = {"width": float(width)}
    known.update({dim: value for dim, value in point.items() if dim != "parametrization"})
    presets = PARAMETRIZATIONS[parametrization] if parametrization else (0.0,) * len(EXPONENTS)
    for key, preset in zip(SCALED_HYPERPARAMETERS, presets):
        symbol, unset = EXPONENT_OF[key], UNSET_VALUES[key]
        value = parameters.get(key, {} if parametrization else unset)
        if isinstance(value, dict):
            prefactor = pick(f"{key}0", value["prefactor"]) if "prefactor" in value else unset
            exponent = pick(symbol, value["exponent"]) if "exponent" in value else preset
            values[key] = float(prefactor) * float(width) ** (-float(exponent))
            values[symbol] = float(exponent)
            known.update({f"{key}0": float(prefactor), symbol: float(exponent)})
        else:
            values[key] = float(pick(key, value))
            values[symbol] = 0.0
            known.update({f"{key}0": values[key], symbol: 0.0})
    for key in PLAIN_HYPERPARAMETERS:
        values[key] = float(pick(key, parameters.get(key, UNSET_VALUES[key])))
    return values
