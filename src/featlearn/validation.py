"""Validation of a configuration: the schema, its defaults and every rule a schema cannot state.

:func:`validate` checks a configuration against the JSON schema shipped with
the package (``featlearn/data/config.schema.yaml``, also at
``workflow/schemas/config.schema.yaml``), fills in the schema's defaults (the
only home of every setting's default) and then applies the project's
semantic rules: derived-value expressions, references between sections,
nonlinear experiment consistency. Every problem is reported at once, each
naming its dotted field. The workflow calls it while building the DAG, so a
bad configuration is refused before any job runs.
"""

from __future__ import annotations

import copy
import functools
import re
import sys
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any, TextIO

import jsonschema
import numpy as np
import yaml

from featlearn import expressions
from featlearn.contract import EXPONENTS, HYPERPARAMETERS
from featlearn.errors import ConfigError
from featlearn.figures import table as figure_table
from featlearn.grid import EXPONENT_OF, grid_of

#: The largest width the explicit (width-d vectors) solver accepts.
EXPLICIT_MAX_WIDTH = 10**6


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
        allowed = ", ".join(map(str, error.validator_value))
        return f"{_field(error)}: {error.instance!r} is not allowed (allowed: {allowed})"
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


@functools.cache
def _defaults() -> dict[str, Any]:
    resolved: dict[str, Any] = {}
    _apply_defaults(resolved, schema(), schema())
    return resolved


def defaults(section: str) -> dict[str, Any]:
    """The schema's defaults of a top-level section (e.g. ``"mechanisms"``), as a fresh dict."""
    return copy.deepcopy(_defaults()[section])


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


def _semantic_problems(config: Mapping[str, Any]) -> list[str]:
    """Rules a JSON schema cannot state."""
    problems = []
    if not config["experiments"] and not config.get("nonlinear", {}).get("experiments"):
        problems.append(
            "experiments: the configuration defines no experiment (add experiments or nonlinear.experiments)"
        )
    for name, experiment in config["experiments"].items():
        field = f"experiments.{name}"
        parameters = experiment["parameters"]
        problems.extend(_expression_problems(field, experiment))
        if "parametrization" in parameters:
            for key, symbol in EXPONENT_OF.items():
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
    return copy.deepcopy(
        {"simulation": config.get("simulation", {}), "experiments": {name: config["experiments"][name]}}
    )
