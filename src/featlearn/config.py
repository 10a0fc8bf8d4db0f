"""Configuration: schema validation, defaults, and the hyperparameter grid of an experiment.

A configuration names experiments; each sweeps hyperparameters given as a
value, a list of values (a grid dimension named after the hyperparameter), or
``{prefactor, exponent}`` meaning ``prefactor * width^-exponent``, where lists
of prefactors or exponents are grid dimensions too (named ``kappa0`` /
``a``, ``sigma_u0`` / ``b_u``, ``sigma_w0`` / ``b_w``, ``eta_u0`` / ``c_u``,
``eta_w0`` / ``c_w``). A ``parametrization`` (one name or a list, itself a
dimension) sets the five exponents at once. The grid is the Cartesian product
of all dimensions, in the order they appear in the configuration.

Derived values: a prefactor or exponent may also be a string, an arithmetic
expression (numbers, ``+ - * / **``, parentheses, ``min``, ``max``, ``abs``)
of the grid dimensions, of ``width`` and of the exponents and prefactors set
before it in the order kappa, sigma_u, sigma_w, eta_u, eta_w. An experiment's
``axes`` declares extra grid dimensions that only such expressions use, so a
plane of the phase diagram can be swept along any direction, for example
``b_w: "b_u"`` (balanced init) or ``c_u: "-a + max(1 - a - 2 * b_u, 0)"`` (the
largest stable learning-rate scaling); see ``docs/phases.md``.
"""

from __future__ import annotations

import ast
import copy
import functools
import operator
import hashlib
import json
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TextIO

import jsonschema
import numpy as np
import yaml

#: Width exponents (a, b_u, b_w, c_u, c_w) of the named parametrizations.
PARAMETRIZATIONS: dict[str, tuple[float, float, float, float, float]] = {
    "ntk": (0.5, 0.0, 0.0, 0.0, 0.0),
    "mean_field": (1.0, 0.0, 0.0, -1.0, -1.0),
    "standard": (0.0, 0.5, 0.0, 0.0, 0.0),
    "standard_scaled_lr": (0.0, 0.5, 0.0, 1.0, 1.0),
    "small_init": (0.5, 0.5, 0.5, -0.5, -0.5),
}

#: Hyperparameters of the form prefactor * width^-exponent: (name, exponent symbol, default).
SCALED = (
    ("kappa", "a", 1.0),
    ("sigma_u", "b_u", 1.0),
    ("sigma_w", "b_w", 1.0),
    ("eta_u", "c_u", 1.0),
    ("eta_w", "c_w", 1.0),
)
#: Plain hyperparameters and their defaults.
PLAIN = (("rho", 0.0), ("beta_star", 1.0), ("sigma2", 1.0))
EXPONENTS = tuple(symbol for _, symbol, _ in SCALED)
#: Every hyperparameter value stored with a run.
HYPERPARAMETERS = ("width", *(name for name, _, _ in SCALED), *(name for name, _ in PLAIN))

#: The largest width the explicit (width-d vectors) solver accepts.
EXPLICIT_MAX_WIDTH = 10**6


class ConfigError(ValueError):
    """A configuration that breaks the schema or the project's rules; lists every problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        if len(problems) == 1:
            super().__init__(f"invalid configuration: {problems[0]}")
        else:
            super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


@functools.cache
def schema() -> dict[str, Any]:
    """The JSON schema of a configuration (shipped with the package)."""
    text = resources.files("featlearn").joinpath("data/config.schema.yaml").read_text()
    return yaml.safe_load(text)


# ---------------------------------------------------------------------------
# validation


_FLOAT_STRING = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _describe(error: jsonschema.ValidationError) -> str:
    """One line naming the field, what is wrong and what is allowed."""
    if error.validator in ("oneOf", "anyOf") and error.context:
        # The alternative that got furthest explains the problem best.
        deepest = max(error.context, key=lambda e: (len(e.absolute_path), -len(e.schema_path)))
        if len(deepest.absolute_path) > len(error.absolute_path):
            return _describe(deepest)
        # A single alternative of the right type names the bound that was broken.
        right_type = [e for e in error.context if e.validator != "type" and e.absolute_path == error.absolute_path]
        if len(right_type) == 1:
            return _describe(right_type[0])
        return f"{_field(error)}: {error.instance!r} is not a valid value (allowed: {_allowed(error.schema)})" + _hint(
            error.instance
        )
    if error.validator == "additionalProperties":
        allowed = ", ".join(sorted(error.schema.get("properties", {}))) or "none"
        return f"{_field(error)}: {error.message} (allowed keys: {allowed})"
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in error.instance]
        prefix = "" if not error.absolute_path else _field(error) + "."
        return "; ".join(f"{prefix}{name}: required but missing" for name in missing)
    if error.validator == "enum":
        return f"{_field(error)}: {error.instance!r} is not allowed (allowed: {', '.join(map(str, error.validator_value))})"
    return f"{_field(error)}: {error.message}" + _hint(error.instance)


def _field(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _hint(instance: Any) -> str:
    if isinstance(instance, str) and _FLOAT_STRING.match(instance):
        # YAML 1.1 floats need a decimal point and a signed exponent: 1e-3 -> 1.0e-3, 2e3 -> 2.0e+3.
        mantissa, exponent = instance.lower().split("e")
        mantissa = mantissa if "." in mantissa else mantissa + ".0"
        exponent = exponent if exponent[0] in "+-" else "+" + exponent
        return f" (YAML reads {instance} as a string: write it as {mantissa}e{exponent})"
    return ""


def _allowed(subschema: Mapping[str, Any]) -> str:
    names = []
    for option in subschema.get("oneOf", subschema.get("anyOf", [])):
        ref = option.get("$ref", "")
        if ref:
            names.append(ref.rsplit("/", 1)[-1].replace("_", " "))
        elif option.get("type") == "array":
            names.append("a non-empty list of unique values")
        else:
            bounds = [f"{k} {option[k]}" for k in ("minimum", "maximum", "exclusiveMinimum") if k in option]
            names.append(option.get("type", "value") + (f" ({', '.join(bounds)})" if bounds else ""))
    return " or ".join(names)


def _apply_defaults(instance: Any, subschema: Mapping[str, Any], root: Mapping[str, Any]) -> None:
    """Fill ``default`` values of object properties, recursively (through $ref)."""
    if "$ref" in subschema:
        subschema = root["definitions"][subschema["$ref"].rsplit("/", 1)[-1]]
    if not isinstance(instance, dict):
        return
    for key, prop in subschema.get("properties", {}).items():
        if key not in instance and "default" in prop:
            instance[key] = copy.deepcopy(prop["default"])
        if key in instance:
            _apply_defaults(instance[key], prop, root)
    extra = subschema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in subschema.get("properties", {}):
                _apply_defaults(value, extra, root)


def validate(config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``config`` and return a copy with defaults filled in.

    Raises :class:`ConfigError` listing every violation, each naming its field.
    """
    root = schema()
    validator = jsonschema.Draft7Validator(root)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    problems = [_describe(e) for e in errors]
    if problems:
        raise ConfigError(problems)
    resolved = copy.deepcopy(dict(config))
    _apply_defaults(resolved, root, root)
    problems = _semantic_problems(resolved)
    if problems:
        raise ConfigError(problems)
    return resolved


def _expression_problems(field: str, experiment: Mapping[str, Any]) -> list[str]:
    """Derived-value expressions must parse and read only names defined before them; axes must be used."""
    problems = []
    parameters = experiment["parameters"]
    axes = experiment.get("axes", {})
    sweeps = {dim for dim in Experiment("", "flow", 0.0, 1, "gram", 1, (), parameters).grid.dims}
    for axis in axes:
        if axis in sweeps or axis in (*HYPERPARAMETERS, *EXPONENTS, "parametrization", "seed", "time", "point"):
            problems.append(f"{field}.axes.{axis}: clashes with a hyperparameter or dimension name")
    known = {"width", *axes, *sweeps}
    used: set[str] = set()
    for key, symbol, _ in SCALED:
        value = parameters.get(key)
        for part, name in (("prefactor", f"{key}0"), ("exponent", symbol)):
            expression = value.get(part) if isinstance(value, dict) else None
            if isinstance(expression, str):
                try:
                    names = expression_names(expression)
                except ValueError as error:
                    problems.append(f"{field}.parameters.{key}.{part}: {error}")
                    continue
                used |= names
                unknown = sorted(names - known)
                if unknown:
                    problems.append(
                        f"{field}.parameters.{key}.{part}: {expression!r} reads {', '.join(unknown)}, not defined "
                        f"before it (known: {', '.join(sorted(known))})"
                    )
        known |= {f"{key}0", symbol}
    for axis in sorted(set(axes) - used):
        problems.append(f"{field}.axes.{axis}: no prefactor or exponent expression reads this axis")
    return problems


#: Phase figures drawn from trajectories only; the others read the experiment's phases.nc.
_PHASE_FIGURES_FROM_TRAJECTORIES = ("phases_kernel_change_map",)


def _experiment_references(config: Mapping[str, Any]) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """Every place that names an experiment: (field, name, the experiments it must be one of)."""
    linear = config["experiments"]
    for index, name in enumerate(config.get("figures", {}).get("solver_comparison", {}).get("experiments", [])):
        yield f"figures.solver_comparison.experiments.{index}", name, linear
    phases = config.get("phases", {})
    for index, name in enumerate(phases.get("experiments", [])):
        yield f"phases.experiments.{index}", name, linear
    for figure, spec in phases.get("figures", {}).items():
        yield f"phases.figures.{figure}.experiment", spec["experiment"], linear
    mechanisms = config.get("mechanisms", {})
    for key, spec in mechanisms.get("maps", {}).items():
        yield f"mechanisms.maps.{key}.experiment", spec["experiment"], linear
    for key, spec in mechanisms.get("trajectories", {}).get("panels", {}).items():
        yield f"mechanisms.trajectories.panels.{key}.experiment", spec["experiment"], linear
    if "width_scaling" in mechanisms:
        yield "mechanisms.width_scaling.experiment", mechanisms["width_scaling"]["experiment"], linear
    nonlinear = config.get("nonlinear", {})
    for figure, names in nonlinear.get("figures", {}).items():
        for index, name in enumerate([names] if isinstance(names, str) else names):
            yield f"nonlinear.figures.{figure}.{index}", name, nonlinear.get("experiments", {})


def _reference_problems(config: Mapping[str, Any]) -> list[str]:
    """Names of experiments in analysis and figure sections must exist."""
    problems = [
        f"{field}: unknown experiment {name!r} (known: {', '.join(known) or 'none'})"
        for field, name, known in _experiment_references(config)
        if name not in known
    ]
    # Phase figures other than the kernel-change map read phases.nc: their experiment is classified.
    phases = config.get("phases", {})
    for figure, spec in phases.get("figures", {}).items():
        name = spec["experiment"]
        if figure not in _PHASE_FIGURES_FROM_TRAJECTORIES and name in config["experiments"]:
            if name not in phases.get("experiments", []):
                problems.append(f"phases.figures.{figure}.experiment: {name!r} must also be listed in phases.experiments")
    return problems


def _semantic_problems(config: Mapping[str, Any]) -> list[str]:
    """Rules a JSON schema cannot state."""
    problems = []
    if not config["experiments"] and not config.get("nonlinear", {}).get("experiments"):
        problems.append("experiments: the configuration defines no experiment (add experiments or nonlinear.experiments)")
    for name, experiment in config["experiments"].items():
        field = f"experiments.{name}"
        parameters = experiment["parameters"]
        problems.extend(_expression_problems(field, experiment))
        if "parametrization" in parameters:
            for key, symbol, _ in SCALED:
                value = parameters.get(key)
                if value is not None and not isinstance(value, dict):
                    problems.append(
                        f"{field}.parameters.{key}: with a parametrization, give only its prefactor "
                        f"as {{prefactor: ...}} (the exponent {symbol} comes from the parametrization)"
                    )
                elif isinstance(value, dict) and "exponent" in value:
                    problems.append(
                        f"{field}.parameters.{key}.exponent: conflicts with parameters.parametrization; "
                        "remove one of them"
                    )
        time = experiment["time"]
        if time.get("spacing") == "log" and "start" not in time:
            problems.append(f"{field}.time.start: a log time grid needs its first nonzero time")
        if "start" in time and time["start"] >= time["stop"]:
            problems.append(f"{field}.time.start: must be smaller than time.stop ({time['stop']})")
        if experiment["solver"] != "flow" and experiment["dt"] > 0 and time["stop"] / experiment["dt"] > 1e7:
            problems.append(f"{field}.dt: time.stop / dt exceeds 10^7 steps; use a larger dt or a shorter horizon")
        if experiment["solver"] == "explicit":
            widths = np.atleast_1d(parameters["width"])
            if widths.max() > EXPLICIT_MAX_WIDTH:
                problems.append(
                    f"{field}.parameters.width: the explicit solver stores width-d vectors; "
                    f"widths above {EXPLICIT_MAX_WIDTH} need solver flow or gd"
                )
    problems.extend(_reference_problems(config))
    return problems


def load(source: str | TextIO) -> dict[str, Any]:
    """Read, validate and resolve a configuration (a path, ``"-"`` for standard input, or a text stream)."""
    if source == "-":
        source = sys.stdin
    if isinstance(source, str):
        with open(source) as handle:
            config = yaml.safe_load(handle)
    else:
        config = yaml.safe_load(source)
    if not isinstance(config, dict):
        raise ConfigError([f"(top level): {getattr(source, 'name', source)} does not hold a mapping"])
    return validate(config)


def experiment_config(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A stand-alone resolved configuration holding only experiment ``name``.

    It keeps the ``simulation`` section and that one experiment, nothing else:
    this is what the experiment's simulations depend on, so editing another
    experiment or an analysis setting leaves it (and its hash) unchanged.
    """
    if name not in config["experiments"]:
        raise ConfigError([f"experiments.{name}: no such experiment (known: {', '.join(config['experiments'])})"])
    return copy.deepcopy({"simulation": config.get("simulation", {}), "experiments": {name: config["experiments"][name]}})


# ---------------------------------------------------------------------------
# derived values: arithmetic expressions of grid dimensions and earlier exponents

_EXPRESSION_FUNCTIONS = {"min": min, "max": max, "abs": abs}
_BINARY_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv, ast.Pow: operator.pow}
_UNARY_OPERATORS = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_EXPRESSION_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Name, ast.Load, ast.Constant, ast.Call, *_BINARY_OPERATORS, *_UNARY_OPERATORS)


@functools.cache
def _parse_expression(expression: str) -> ast.Expression:
    """Parse a derived-value expression; only arithmetic, numbers, names and min/max/abs pass."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as error:
        raise ValueError(f"{expression!r} is not an arithmetic expression ({error.msg})") from None
    for node in ast.walk(tree):
        allowed = isinstance(node, _EXPRESSION_NODES)
        if isinstance(node, ast.Constant):
            allowed = isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
        elif isinstance(node, ast.Call):
            allowed = isinstance(node.func, ast.Name) and node.func.id in _EXPRESSION_FUNCTIONS and not node.keywords
        if not allowed:
            raise ValueError(
                f"{expression!r}: only numbers, names, + - * / **, parentheses and {', '.join(_EXPRESSION_FUNCTIONS)} "
                f"are allowed (found {ast.unparse(node) if isinstance(node, ast.expr) else type(node).__name__})"
            )
    return tree


def expression_names(expression: str) -> set[str]:
    """The names a derived-value expression reads (raises ``ValueError`` if it is not one)."""
    tree = _parse_expression(expression)
    calls = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and id(node) not in calls}


def evaluate_expression(expression: str, names: Mapping[str, float]) -> float:
    """Value of a derived-value expression with ``names`` bound (``KeyError`` names a missing one)."""

    def value(node: ast.expr) -> float:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise KeyError(f"{expression!r} reads {node.id!r}, which is not defined here")
            return names[node.id]
        if isinstance(node, ast.BinOp):
            return _BINARY_OPERATORS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp):
            return _UNARY_OPERATORS[type(node.op)](value(node.operand))
        return _EXPRESSION_FUNCTIONS[node.func.id](*(value(arg) for arg in node.args))

    return float(value(_parse_expression(expression).body))


# ---------------------------------------------------------------------------
# the grid of an experiment


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


def _as_sweep(value: Any) -> tuple[Any, ...] | None:
    return tuple(value) if isinstance(value, list) else None


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
        spec = config["experiments"][name]
        time = spec["time"]
        if time.get("spacing", "linear") == "log":
            times = np.concatenate([[0.0], np.geomspace(time["start"], time["stop"], time["num"] - 1)])
        else:
            times = np.linspace(0.0, time["stop"], time["num"])
        default_chunks = config.get("simulation", {}).get("chunks", 4)
        return cls(
            name=name,
            solver=spec["solver"],
            dt=float(spec["dt"]) if spec["solver"] != "flow" else 0.0,
            seeds=spec["seeds"],
            # The explicit solver evolves the vectors, so it always starts from them.
            init="vectors" if spec["solver"] == "explicit" else spec["init"],
            chunks=spec.get("chunks", default_chunks),
            times=tuple(float(t) for t in times),
            parameters=spec["parameters"],
            axes=spec.get("axes", {}),
        )

    @functools.cached_property
    def grid(self) -> Grid:
        # Declared axes come first, then the sweeps of the parameters.
        dims: list[tuple[str, tuple[Any, ...]]] = [(name, tuple(values)) for name, values in self.axes.items()]
        for key, value in self.parameters.items():
            if isinstance(value, dict):
                for part, dim in (("prefactor", f"{key}0"), ("exponent", dict((n, s) for n, s, _ in SCALED)[key])):
                    sweep = _as_sweep(value.get(part))
                    if sweep is not None:
                        dims.append((dim, sweep))
            else:
                sweep = _as_sweep(value)
                if sweep is not None:
                    dims.append((key, sweep))
        return Grid(tuple(d for d, _ in dims), tuple(v for _, v in dims))

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
            raise ValueError(f"chunk {chunk} is not in 0..{chunks - 1}")
        return list(range(chunk, self.grid.size, chunks))

    def hyperparameters(self, index: int) -> dict[str, Any]:
        """Every hyperparameter value at flat grid index ``index`` (exponents included)."""
        point = self.grid.point(index)
        parameters = self.parameters

        def pick(dim: str, value: Any) -> Any:
            if isinstance(value, str) and dim != "parametrization":
                return evaluate_expression(value, known)
            return point[dim] if isinstance(value, list) else value

        width = int(pick("width", parameters["width"]))
        parametrization = pick("parametrization", parameters.get("parametrization"))
        values: dict[str, Any] = {"width": width}
        # What derived-value expressions may read: grid dims, width, and earlier prefactors and exponents.
        known: dict[str, float] = {"width": float(width)}
        known.update({dim: value for dim, value in point.items() if dim != "parametrization"})
        for (key, symbol, default), preset in zip(
            SCALED, PARAMETRIZATIONS[parametrization] if parametrization else (0.0,) * 5
        ):
            value = parameters.get(key, {} if parametrization else default)
            if isinstance(value, dict):
                prefactor = pick(f"{key}0", value["prefactor"]) if "prefactor" in value else default
                exponent = pick(symbol, value["exponent"]) if "exponent" in value else preset
                values[key] = float(prefactor) * float(width) ** (-float(exponent))
                values[symbol] = float(exponent)
                known.update({f"{key}0": float(prefactor), symbol: float(exponent)})
            else:
                values[key] = float(pick(key, value))
                values[symbol] = 0.0
                known.update({f"{key}0": values[key], symbol: 0.0})
        for key, default in PLAIN:
            values[key] = float(pick(key, parameters.get(key, default)))
        return values


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

