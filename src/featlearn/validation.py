"""Validation of a configuration: the schema, its defaults and every rule a schema cannot state.

:func:`validate` checks a configuration against the JSON schema shipped with
the package (``featlearn/data/config.schema.yaml``, also at
``workflow/schemas/config.schema.yaml``), fills in the schema's defaults (the
only home of every setting's default) and then applies the project's
semantic rules: derived-value expressions (evaluated at every grid point),
references between sections, figure settings against the grids they draw,
the width of runs that hold width-d vectors. NaN and infinite numbers are
refused (they pass the schema's bounds). Every problem is reported at once,
each naming its dotted field. The workflow calls it while building the DAG,
so a bad configuration is refused before any job runs.

:func:`read_file` reads a configuration file, refusing invalid YAML and keys
given twice with their lines; :func:`load` reads and validates.
"""

from __future__ import annotations

import ast
import copy
import functools
import math
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from importlib import resources
from typing import Any, TextIO

import jsonschema
import numpy as np
import yaml

from featlearn import expressions
from featlearn.contract import EXPONENTS, HYPERPARAMETERS, SCALED_HYPERPARAMETERS
from featlearn.errors import ConfigError, InputError
from featlearn.figures import table as figure_table
from featlearn.grid import EXPONENT_OF, Grid, grid_of, hyperparameters_at
from featlearn.nonlinear.spec import DatasetSpec, spec_problems

#: The largest width whose width-d vectors a run may hold (the explicit solver, ``init: vectors``):
#: two float64 vectors of 10^6 entries per run are 16 MB; at 2^40 they would be 16 TiB.
VECTORS_MAX_WIDTH = 10**6
#: Hyperparameters that must not be negative (the schema checks plain values; derived ones are checked here).
NONNEGATIVE_HYPERPARAMETERS = ("sigma_u", "sigma_w", "eta_u", "eta_w")
#: The files of plane NAME, results/nonlinear/NAME<suffix>.nc, by workflow output (workflow/rules/common.smk):
#: its runs and its phases, beside the nonlinear experiments' results/nonlinear/NAME.nc.
PLANE_FILES = {"plane": "_trajectories", "plane_phases": "_phases"}
#: Folders of results/ that hold other outputs than one experiment's: not experiment names.
RESERVED_NAMES = frozenset({"figures", "nonlinear"})


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
        chosen = _discriminated(error)
        if chosen is not None:
            return chosen
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
    if "propertyNames" in error.schema_path:
        return (
            f"{_field(error)}: {error.instance!r} is not a valid name (a letter, then letters, digits or _, "
            "at most 64 characters: names become file names)"
        )
    if error.validator == "enum":
        allowed = ", ".join(map(str, error.validator_value))
        return f"{_field(error)}: {error.instance!r} is not allowed (allowed: {allowed})"
    return f"{_field(error)}: {error.message}" + _hint(error.instance)


def _discriminated(error: jsonschema.ValidationError) -> str | None:
    """The problems of a mapping against alternatives told apart by one key (a dataset's ``name``).

    When every alternative fixes the value of a key (``const`` or ``enum``),
    the instance's value picks the alternative whose problems are reported;
    a value no alternative takes is reported with all the allowed values.
    ``None`` when the alternatives have no such key.
    """
    if not isinstance(error.instance, dict):
        return None
    definitions = schema()["definitions"]
    alternatives = [
        definitions[option["$ref"].rsplit("/", 1)[-1]] if "$ref" in option else option
        for option in error.validator_value
    ]

    def fixed(alternative: Mapping[str, Any], key: str) -> list[Any] | None:
        spec = alternative.get("properties", {}).get(key, {})
        return [spec["const"]] if "const" in spec else spec.get("enum")

    for key in error.instance:
        allowed = [fixed(alternative, key) for alternative in alternatives]
        if any(values is None for values in allowed):
            continue
        matching = [index for index, values in enumerate(allowed) if error.instance[key] in values]
        if not matching:
            names = ", ".join(str(value) for values in allowed for value in values)
            return f"{_field(error)}.{key}: {error.instance[key]!r} is not allowed (allowed: {names})"
        # One "required" error per missing key, each describing all of them: keep distinct lines.
        problems = dict.fromkeys(_describe(e) for e in error.context if e.relative_schema_path[0] in matching)
        return "; ".join(problems) if problems else None
    return None


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


@functools.cache
def _defaults() -> dict[str, Any]:
    resolved: dict[str, Any] = {}
    _apply_defaults(resolved, schema(), schema())
    return resolved


def defaults(section: str) -> dict[str, Any]:
    """The schema's defaults of a top-level section (e.g. ``"mechanisms"``), as a fresh dict."""
    return copy.deepcopy(_defaults()[section])


def _non_finite(value: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], float]]:
    """Every NaN or infinite number in a configuration (YAML ``.nan``, ``.inf``), with its path."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _non_finite(item, (*path, str(key)))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _non_finite(item, (*path, str(index)))


def validate(config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``config`` and return a copy with defaults filled in.

    Raises :class:`ConfigError` listing every violation, each naming its field.
    """
    root = schema()
    validator = jsonschema.Draft7Validator(root)
    # NaN passes every bound of the schema (comparisons with it are false); infinity passes one side.
    non_finite = dict(_non_finite(config, ()))
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    problems = [
        f"{'.'.join(path) or '(top level)'}: {value} is not a finite number" for path, value in non_finite.items()
    ]
    problems += [_describe(e) for e in errors if tuple(map(str, e.absolute_path)) not in non_finite]
    if problems:
        raise ConfigError(problems)
    resolved = copy.deepcopy(dict(config))
    _apply_defaults(resolved, root, root)
    problems = _semantic_problems(resolved)
    if problems:
        raise ConfigError(problems)
    return resolved


def validate_section(name: str, value: Mapping[str, Any]) -> dict[str, Any]:
    """Validate one top-level section on its own (e.g. ``{"eps_c": 0.2}`` as ``"mechanisms"``).

    Returns it with the schema's defaults filled in; raises :class:`ConfigError`
    naming each bad field as in a whole configuration (``mechanisms.eps_c``).
    Rules that relate sections to each other are not checked.
    """
    root = schema()
    section_schema = {
        "type": "object",
        "properties": {name: root["properties"][name]},
        "definitions": root["definitions"],
    }
    errors = sorted(
        jsonschema.Draft7Validator(section_schema).iter_errors({name: dict(value)}),
        key=lambda e: [str(p) for p in e.absolute_path],
    )
    if errors:
        raise ConfigError([_describe(e) for e in errors])
    resolved = {name: copy.deepcopy(dict(value))}
    _apply_defaults(resolved, section_schema, root)
    return resolved[name]


def _expression_problems(field: str, experiment: Mapping[str, Any]) -> list[str]:
    """Derived-value expressions must parse and read only names defined before them; axes must be used."""
    problems = []
    parameters = experiment["parameters"]
    axes = experiment.get("axes", {})
    sweeps = set(grid_of(parameters).dims)
    for axis in axes:
        if axis in sweeps or axis in (*HYPERPARAMETERS, *EXPONENTS, "parametrization", "seed", "time", "point"):
            problems.append(f"{field}.axes.{axis}: clashes with a hyperparameter or dimension name")
    known = {"width", *axes, *sweeps}
    used: set[str] = set()
    for key, symbol in EXPONENT_OF.items():
        value = parameters.get(key)
        for part in ("prefactor", "exponent"):
            expression = value.get(part) if isinstance(value, dict) else None
            if isinstance(expression, str):
                try:
                    names = expressions.names(expression)
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


def _experiment_references(config: Mapping[str, Any]) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """Every place that names an experiment: (field, name, the experiments it must be one of)."""
    linear = config["experiments"]
    for index, name in enumerate(config["figures"].get("solver_comparison", {}).get("experiments", [])):
        yield f"figures.solver_comparison.experiments.{index}", name, linear
    phases = config["phases"]
    for index, name in enumerate(phases["experiments"]):
        yield f"phases.experiments.{index}", name, linear
    for figure, spec in phases["figures"].items():
        yield f"phases.figures.{figure}.experiment", spec["experiment"], linear
    mechanisms = config["mechanisms"]
    for key, spec in mechanisms["maps"].items():
        yield f"mechanisms.maps.{key}.experiment", spec["experiment"], linear
    for key, spec in mechanisms.get("trajectories", {}).get("panels", {}).items():
        yield f"mechanisms.trajectories.panels.{key}.experiment", spec["experiment"], linear
    if "width_scaling" in mechanisms:
        yield "mechanisms.width_scaling.experiment", mechanisms["width_scaling"]["experiment"], linear
    nonlinear = config["nonlinear"]
    for figure, names in nonlinear["figures"].items():
        for index, name in enumerate([names] if isinstance(names, str) else names):
            yield f"nonlinear.figures.{figure}.{index}", name, nonlinear["experiments"]


def _reference_problems(config: Mapping[str, Any]) -> list[str]:
    """Names of experiments in analysis and figure sections must exist, and be analysed as figures need."""
    problems = [
        f"{field}: unknown experiment {name!r} (known: {', '.join(known) or 'none'})"
        for field, name, known in _experiment_references(config)
        if name not in known
    ]
    # What the figure table says each figure reads: a phases file exists only for classified
    # experiments (the phase figures, configured under phases.figures, read them).
    for job in figure_table.figure_jobs(config):
        for kind, name in job.inputs:
            if kind == "phases" and name in config["experiments"] and name not in config["phases"]["experiments"]:
                problems.append(
                    f"phases.figures.{job.stem}.experiment: {name!r} must also be listed in phases.experiments"
                )
    return problems


# --- figure settings against the grids they draw ----------------------------------------------

#: Phase figures that draw the empirical phase or the fitted slopes: their experiment needs
#: phases.fit.min_widths widths (with fewer, the phases file holds only the prediction).
_FITTED_PHASE_FIGURES = frozenset(
    {"phases_diagram_scale", "phases_diagram_imbalance", "phases_diagram_rate", "phases_kernel_change_width"}
)


@functools.cache
def _figure_defaults(name: str) -> dict[str, Any]:
    """The keyword defaults of figure function ``name``, read from its source.

    Parsed, not imported: the workflow validates while it builds the DAG, and
    the figure modules import the plotting libraries.
    """
    source = resources.files("featlearn.figures").joinpath(f"{figure_table.entry(name).module}.py").read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return {
                arg.arg: ast.literal_eval(default)
                for arg, default in zip(node.args.kwonlyargs, node.args.kw_defaults)
                if default is not None
            }
    return {}


def _values_text(grid: Grid, dims: Sequence[str]) -> str:
    return "; ".join(f"{dim} = {list(grid.values[grid.dims.index(dim)])}" for dim in dims)


def _axis_problems(field: str, name: str, axes: Mapping[str, str], allowed: Sequence[str]) -> list[str]:
    """The dims a figure draws (``x``, ``y``) must be different dims among ``allowed``."""
    problems = [
        f"{field}.{key}: {dim!r} is not a grid dimension of {name} this figure can draw "
        f"(allowed: {', '.join(allowed) or 'none'})"
        for key, dim in axes.items()
        if dim not in allowed
    ]
    if len(axes) == 2 and len(set(axes.values())) == 1:
        problems.append(f"{field}.y: {axes['y']!r} is also x; a map draws two different dimensions")
    return problems


def _select_problems(
    field: str, name: str, grid: Grid, select: Mapping[str, Any] | None, keep: Sequence[str], free: int = 0
) -> list[str]:
    """``select`` must fix grid dims (not those in ``keep``) to values on the grid, and leave at most
    ``free`` dims besides ``keep`` unfixed."""
    select = select or {}
    problems = []
    for dim, value in select.items():
        if dim not in grid.dims:
            problems.append(
                f"{field}.select.{dim}: not a grid dimension of {name} (dimensions: {', '.join(grid.dims) or 'none'})"
            )
        elif dim in keep:
            problems.append(f"{field}.select.{dim}: the figure draws this dimension, so it cannot be fixed")
        elif value not in grid.values[grid.dims.index(dim)]:
            problems.append(
                f"{field}.select.{dim}: {value!r} is not on the grid of {name} ({_values_text(grid, [dim])})"
            )
    unfixed = [dim for dim in grid.dims if dim not in keep and dim not in select]
    if len(unfixed) > free:
        left = unfixed[free:]
        problems.append(
            f"{field}.select: fix the grid dimensions {', '.join(left)} of {name} ({_values_text(grid, left)})"
        )
    return problems


def _comparison_problems(config: Mapping[str, Any], grids: Mapping[str, Grid]) -> list[str]:
    """The solver comparison draws one seed of every run, a column per parametrization of the first experiment."""
    spec = config["figures"].get("solver_comparison")
    if spec is None:
        return []
    field, experiments = "figures.solver_comparison", config["experiments"]
    drawn = [(index, name) for index, name in enumerate(spec["experiments"]) if name in grids]
    problems = [
        f"{field}.seed: {spec['seed']} is not a seed of {name} (seeds 0..{experiments[name]['seeds'] - 1})"
        for _, name in drawn
        if spec["seed"] >= experiments[name]["seeds"]
    ]

    def parametrizations(name: str) -> tuple[Any, ...] | None:
        grid = grids[name]
        return grid.values[grid.dims.index("parametrization")] if "parametrization" in grid.dims else None

    for index, name in drawn:
        extra = [dim for dim in grids[name].dims if dim not in ("parametrization", "width")]
        if extra:
            problems.append(
                f"{field}.experiments.{index}: {name} also sweeps {', '.join(extra)}; the comparison draws "
                "one run per parametrization and width"
            )
        first = drawn[0][1]
        if parametrizations(name) != parametrizations(first):
            problems.append(
                f"{field}.experiments.{index}: {name} sweeps parametrization {parametrizations(name)}, "
                f"{first} {parametrizations(first)}; the columns need the same"
            )
    return problems


def _figure_problems(config: Mapping[str, Any]) -> list[str]:
    """Figure settings that name grid dims or values must name those of the experiment drawn.

    Checked here, while the DAG is built, so that a figure job never meets
    a dimension or value its experiment does not have after the whole chain ran.
    """
    experiments = config["experiments"]
    grids = {name: grid_of(spec["parameters"], spec.get("axes", {})) for name, spec in experiments.items()}
    problems = _comparison_problems(config, grids)
    mechanisms = config["mechanisms"]
    for key, spec in mechanisms["maps"].items():
        name, field = spec["experiment"], f"mechanisms.maps.{key}"
        if name in grids:
            axes = {"x": spec["x"], "y": spec["y"]}
            wrong_axes = _axis_problems(field, name, axes, grids[name].dims)
            problems += wrong_axes or _select_problems(
                field, name, grids[name], spec.get("select"), list(axes.values())
            )
    for key, spec in mechanisms.get("trajectories", {}).get("panels", {}).items():
        name, field = spec["experiment"], f"mechanisms.trajectories.panels.{key}"
        if name in grids:
            problems += _select_problems(field, name, grids[name], spec.get("select"), ())
    scaling = mechanisms.get("width_scaling")
    if scaling is not None and scaling["experiment"] in grids:
        name, field, grid = scaling["experiment"], "mechanisms.width_scaling", grids[scaling["experiment"]]
        widths = len(grid.values[grid.dims.index("width")]) if "width" in grid.dims else 1
        if widths < 3:
            problems.append(
                f"{field}.experiment: {name} sweeps {widths} width(s); the width fits need at least 3 "
                "(a list in parameters.width)"
            )
        else:
            # One line per value of at most one other dim.
            problems += _select_problems(field, name, grid, scaling.get("select"), ("width",), free=1)
    phases = config["phases"]
    for figure, spec in phases["figures"].items():
        name, field = spec["experiment"], f"phases.figures.{figure}"
        if name not in grids:
            continue
        grid, entry = grids[name], figure_table.entry(figure)
        widths = len(grid.values[grid.dims.index("width")]) if "width" in grid.dims else 1
        # The phases file is per cell (the grid without width); a map of the runs has the grid's dims.
        dims = [dim for dim in grid.dims if dim != "width"] if "phases" in entry.reads else list(grid.dims)
        if "x" in entry.options:
            defaults = _figure_defaults(figure)
            axes = {key: spec.get(key, defaults.get(key)) for key in ("x", "y")}
            wrong_axes = _axis_problems(field, name, axes, dims)
            problems += wrong_axes
            left = [dim for dim in dims if dim not in axes.values()]
            if left and not wrong_axes:
                problems.append(
                    f"{field}.experiment: {name} also sweeps {', '.join(left)}; the figure draws the plane "
                    f"of x = {axes['x']} and y = {axes['y']} only"
                )
        if figure == "phases_kernel_change_width":
            extra = [dim for dim in grid.dims if dim not in ("parametrization", "width")]
            if extra or "parametrization" not in grid.dims:
                problems.append(
                    f"{field}.experiment: {name} must sweep exactly parametrization and width "
                    f"(dimensions: {', '.join(grid.dims) or 'none'})"
                )
        if figure == "phases_gd_step" and experiments[name]["solver"] != "gd":
            problems.append(
                f"{field}.experiment: {name} uses solver {experiments[name]['solver']}; this figure needs gd"
            )
        if figure in _FITTED_PHASE_FIGURES and widths < phases["fit"]["min_widths"]:
            problems.append(
                f"{field}.experiment: {name} sweeps {widths} width(s); the figure draws fitted slopes, which "
                f"need phases.fit.min_widths = {phases['fit']['min_widths']}"
            )
    return problems


def _width_problems(field: str, experiment: Mapping[str, Any]) -> list[str]:
    """Runs that hold width-d vectors (solver explicit, init vectors) have a width cap."""
    widths = np.atleast_1d(experiment["parameters"]["width"])
    if widths.max() <= VECTORS_MAX_WIDTH:
        return []
    if experiment["solver"] == "explicit":
        holder, instead = "the explicit solver stores", "need solver flow or gd"
    elif experiment["init"] == "vectors":
        holder, instead = "init: vectors draws", "need init: gram"
    else:
        return []
    return [
        f"{field}.parameters.width: {holder} width-d vectors (16 bytes per unit of width and run); "
        f"widths above {VECTORS_MAX_WIDTH} {instead}"
    ]


def _point_text(point: Mapping[str, Any]) -> str:
    return ", ".join(f"{dim} = {value}" for dim, value in point.items()) or "the only grid point"


def _failing_key(parameters: Mapping[str, Any], point: Mapping[str, Any]) -> str:
    """The scaled hyperparameter whose value fails at ``point`` (expressions read only earlier ones)."""
    for index, key in enumerate(SCALED_HYPERPARAMETERS):
        later = SCALED_HYPERPARAMETERS[index + 1 :]
        try:
            hyperparameters_at({k: v for k, v in parameters.items() if k not in later}, point)
        except (ArithmeticError, TypeError, ValueError):
            return key
    return ""


def _value_problems(field: str, experiment: Mapping[str, Any]) -> list[str]:
    """Every grid point's hyperparameters must have a finite value, within their bounds.

    A derived value can have none (``1 / (a - 0.5)`` at a = 0.5) or leave the
    bounds the schema checks only for plain numbers (a negative learning-rate
    prefactor, an overflow): found here, not in a simulation job. The first
    failing point of each experiment is reported.
    """
    parameters = experiment["parameters"]
    grid = grid_of(parameters, experiment.get("axes", {}))
    for index in range(grid.size):
        point = grid.point(index)
        try:
            values = hyperparameters_at(parameters, point)
        except (ArithmeticError, TypeError, ValueError) as error:
            # TypeError: a complex power, e.g. (-1) ** 0.5.
            key = _failing_key(parameters, point)
            given = parameters.get(key)
            written = [
                f"{part} {given[part]!r}"
                for part in ("prefactor", "exponent")
                if isinstance(given, dict) and part in given
            ]
            reason = "overflows float64" if isinstance(error, OverflowError) else f"{type(error).__name__}: {error}"
            return [
                f"{field}.parameters.{key or '(hyperparameters)'}: no value at {_point_text(point)}"
                + (f" ({', '.join(written)})" if written else "")
                + f": {reason}"
            ]
        for name, value in values.items():
            key = next((k for k, symbol in EXPONENT_OF.items() if symbol == name), name)
            if not math.isfinite(value):
                return [f"{field}.parameters.{key}: {name} is {value} at {_point_text(point)}"]
            if name in NONNEGATIVE_HYPERPARAMETERS and value < 0:
                return [f"{field}.parameters.{key}: {name} = {value:g} at {_point_text(point)} (must be >= 0)"]
    return []


def _parametrization_problems(field: str, parameters: Mapping[str, Any]) -> list[str]:
    """With a named parametrization, the scaled hyperparameters may give only their prefactors."""
    if "parametrization" not in parameters:
        return []
    problems = []
    for key, symbol in EXPONENT_OF.items():
        value = parameters.get(key)
        if value is not None and not isinstance(value, dict):
            problems.append(
                f"{field}.parameters.{key}: with a parametrization, give only its prefactor "
                f"as {{prefactor: ...}} (the exponent {symbol} comes from the parametrization)"
            )
        elif isinstance(value, dict) and "exponent" in value:
            problems.append(
                f"{field}.parameters.{key}.exponent: conflicts with parameters.parametrization; remove one of them"
            )
    return problems


def plane_axes(plane: Mapping[str, Any]) -> dict[str, str]:
    """The grid dims a plane's figure draws, ``{"x": ..., "y": ...}``: as configured, else its second and first.

    A plane's grid has exactly two dims besides width (:func:`_plane_problems`).
    """
    cells = [dim for dim in grid_of(plane["parameters"], plane.get("axes", {})).dims if dim != "width"]
    defaults = {"x": cells[1] if len(cells) > 1 else None, "y": cells[0] if cells else None}
    return {key: plane.get(key, default) for key, default in defaults.items()}


def _plane_problems(config: Mapping[str, Any]) -> list[str]:
    """Every nonlinear phase plane: a grid like an experiment's, two cell dims, widths to fit, its files.

    The grid's expressions, values and parametrization are checked as an
    experiment's; a plane is classified, so it sweeps at least
    ``phases.fit.min_widths`` widths and two other dims (the figure's), and
    it stops its runs only after the learning time (``stop_fraction`` below
    ``phases.fit.learning_fraction``).
    """
    nonlinear, fit = config["nonlinear"], config["phases"]["fit"]
    problems = []
    for name, plane in nonlinear["planes"].items():
        field = f"nonlinear.planes.{name}"
        for clash in (f"{name}{suffix}" for suffix in ("", *PLANE_FILES.values())):
            if clash in nonlinear["experiments"]:
                problems.append(
                    f"{field}: {clash!r} is also a nonlinear experiment, whose results/nonlinear/{clash}.nc "
                    "sits beside this plane's files; rename one of them"
                )
        expression_problems = _expression_problems(field, plane)
        problems += expression_problems + _parametrization_problems(field, plane["parameters"])
        if not expression_problems:
            problems.extend(_value_problems(field, plane))
        grid = grid_of(plane["parameters"], plane.get("axes", {}))
        widths = len(grid.values[grid.dims.index("width")]) if "width" in grid.dims else 1
        if widths < fit["min_widths"]:
            problems.append(
                f"{field}.parameters.width: {widths} width(s); the classifier fits slopes over "
                f"phases.fit.min_widths = {fit['min_widths']} or more"
            )
        cells = [dim for dim in grid.dims if dim != "width"]
        if len(cells) != 2:
            problems.append(
                f"{field}.parameters: a plane sweeps two grid dimensions besides width, not "
                f"{len(cells)} ({', '.join(cells) or 'none'})"
            )
        else:
            problems.extend(_axis_problems(field, name, plane_axes(plane), cells))
        if plane["stop_fraction"] >= fit["learning_fraction"]:
            problems.append(
                f"{field}.stop_fraction: {plane['stop_fraction']} stops runs before the learning time "
                f"(must be below phases.fit.learning_fraction = {fit['learning_fraction']})"
            )
        folder = nonlinear["cifar10_path"] if plane["dataset"]["name"] == "cifar10" else None
        for where, message in DatasetSpec.from_mapping(plane["dataset"]).problems(cifar10_path=folder):
            problems.append(f"{field}.{where}: {message}")
    return problems


def _semantic_problems(config: Mapping[str, Any]) -> list[str]:
    """Rules a JSON schema cannot state."""
    problems = []
    nonlinear = config["nonlinear"]
    if not config["experiments"] and not nonlinear["experiments"] and not nonlinear["planes"]:
        problems.append(
            "experiments: the configuration defines no experiment "
            "(add experiments, nonlinear.experiments or nonlinear.planes)"
        )
    for name in sorted(RESERVED_NAMES & set(config["experiments"])):
        problems.append(f"experiments.{name}: reserved name (results/{name}/ holds other outputs); rename it")
    for name, experiment in config["experiments"].items():
        field = f"experiments.{name}"
        parameters = experiment["parameters"]
        expression_problems = _expression_problems(field, experiment)
        problems.extend(expression_problems)
        problems.extend(_parametrization_problems(field, parameters))
        time = experiment["time"]
        if time.get("spacing") == "log" and "start" not in time:
            problems.append(f"{field}.time.start: a log time grid needs its first nonzero time")
        if "start" in time and time["start"] >= time["stop"]:
            problems.append(f"{field}.time.start: must be smaller than time.stop ({time['stop']})")
        if experiment["solver"] != "flow" and experiment["dt"] > 0 and time["stop"] / experiment["dt"] > 1e7:
            problems.append(f"{field}.dt: time.stop / dt exceeds 10^7 steps; use a larger dt or a shorter horizon")
        problems.extend(_width_problems(field, experiment))
        if not expression_problems:
            # Expressions that do not parse or read unknown names cannot be evaluated.
            problems.extend(_value_problems(field, experiment))
    for name, experiment in nonlinear["experiments"].items():
        folder = nonlinear["cifar10_path"] if experiment["dataset"]["name"] == "cifar10" else None
        for field, message in spec_problems(experiment, cifar10_path=folder):
            problems.append(f"nonlinear.experiments.{name}.{field}: {message}")
    problems.extend(_plane_problems(config))
    problems.extend(_reference_problems(config))
    problems.extend(_figure_problems(config))
    return problems


def _duplicate_keys(node: yaml.Node, name: str, path: tuple[str, ...], seen: set[int]) -> Iterator[str]:
    """Every key given twice in one mapping of a composed YAML document, with its dotted field and lines."""
    if id(node) in seen:  # an alias of a node already walked
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[tuple[str, Any], int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                # `<<: *anchor` merges another mapping: its keys may be overridden, that is its purpose.
                continue
            line = key_node.start_mark.line + 1
            key = (key_node.tag, key_node.value) if isinstance(key_node, yaml.ScalarNode) else (key_node.tag, line)
            field = ".".join((*path, str(key[1])))
            if key in lines:
                yield (
                    f"{field}: given twice in {name} (lines {lines[key]} and {line}); "
                    "YAML would silently keep only the last: remove or rename one"
                )
            else:
                lines[key] = line
            yield from _duplicate_keys(value_node, name, (*path, str(key[1])), seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicate_keys(item, name, (*path, str(index)), seen)


def read_file(source: str | TextIO) -> Any:
    """The YAML (or JSON) content of a configuration file, refusing keys given twice in one mapping.

    ``source`` is a path, ``"-"`` for standard input, or a text stream.
    Raises :class:`ConfigError` for invalid YAML (with its line) or a
    repeated key (with its dotted field and both lines; a plain YAML reader
    keeps the last silently, so two experiments of one name would lose one),
    and :class:`InputError` for a file that cannot be read.
    """
    name = "standard input" if source == "-" else str(getattr(source, "name", source))
    try:
        if source == "-":
            text = sys.stdin.read()
        elif isinstance(source, str):
            with open(source, encoding="utf-8") as handle:
                text = handle.read()
        else:
            text = source.read()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise InputError(f"cannot read the configuration {name}: {reason}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        duplicates = list(_duplicate_keys(node, name, (), set()))
        if duplicates:
            raise ConfigError(duplicates)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        what = "; ".join(str(part) for part in (error.context, error.problem) if part)
        raise ConfigError([f"(top level): {name}{where} is not valid YAML: {what}"]) from None
    except yaml.YAMLError as error:
        raise ConfigError([f"(top level): {name} is not valid YAML: {error}"]) from None
    finally:
        loader.dispose()


def load(source: str | TextIO) -> dict[str, Any]:
    """Read, validate and resolve a configuration (a path, ``"-"`` for standard input, or a text stream)."""
    config = read_file(source)
    if not isinstance(config, dict):
        name = "standard input" if source == "-" else getattr(source, "name", source)
        raise ConfigError([f"(top level): {name} does not hold a mapping"])
    return validate(config)


def experiment_config(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A stand-alone resolved configuration holding only experiment ``name``.

    It keeps the ``simulation`` section and that one experiment, nothing else:
    this is what the experiment's simulations depend on, so editing another
    experiment or an analysis setting leaves it (and its hash) unchanged.
    """
    if name not in config["experiments"]:
        raise ConfigError([f"experiments.{name}: no such experiment (known: {', '.join(config['experiments'])})"])
    return copy.deepcopy(
        {"simulation": config.get("simulation", {}), "experiments": {name: config["experiments"][name]}}
    )
