"""Configuration schema: malformed configurations are rejected naming the field; valid ones resolve."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from featlearn import grid, io, validation
from featlearn.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def minimal() -> dict[str, Any]:
    """A small valid configuration the malformed cases start from."""
    return {
        "experiments": {
            "x": {
                "solver": "gd",
                "dt": 0.1,
                "seeds": 2,
                "time": {"stop": 1.0, "num": 5},
                "parameters": {"width": 10, "rho": 0.5},
            }
        }
    }


def modified(**changes: Any) -> dict[str, Any]:
    """``minimal()`` with dotted paths set (``None`` deletes the key)."""
    config = minimal()
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = config
        for parent in parents:
            node = node[parent]
        if value is None:
            del node[key]
        else:
            node[key] = value
    return config


def rejection(config: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        validation.validate(config)
    return str(caught.value)


# (malformed configuration, the field the message must name, other words it must contain)
MALFORMED = {
    "seeds_not_integer": (modified(experiments__x__seeds="two"), "experiments.x.seeds", ["integer"]),
    "width_not_integer": (
        modified(experiments__x__parameters__width=10.5),
        "experiments.x.parameters.width",
        ["integer (minimum 1)"],
    ),
    "width_in_list_not_integer": (
        modified(experiments__x__parameters__width=[10, 2.5]),
        "experiments.x.parameters.width.1",
        ["integer"],
    ),
    "width_zero": (modified(experiments__x__parameters__width=0), "experiments.x.parameters.width", ["minimum of 1"]),
    "negative_learning_rate": (
        modified(experiments__x__parameters__eta_w=-0.1),
        "experiments.x.parameters.eta_w",
        ["minimum of 0"],
    ),
    "negative_learning_rate_prefactor": (
        modified(experiments__x__parameters__eta_u={"prefactor": -1.0, "exponent": 0.5}),
        "experiments.x.parameters.eta_u.prefactor",
        ["minimum of 0"],
    ),
    "negative_learning_rate_in_sweep": (
        modified(experiments__x__parameters__eta_u=[0.1, -0.1]),
        "experiments.x.parameters.eta_u.1",
        ["minimum of 0"],
    ),
    "rho_above_one": (modified(experiments__x__parameters__rho=1.5), "experiments.x.parameters.rho", ["maximum of 1"]),
    "rho_below_minus_one_in_sweep": (
        modified(experiments__x__parameters__rho=[0.0, -1.5]),
        "experiments.x.parameters.rho.1",
        ["minimum of -1"],
    ),
    "empty_sweep": (modified(experiments__x__parameters__kappa=[]), "experiments.x.parameters.kappa", ["non-empty"]),
    "empty_width_sweep": (
        modified(experiments__x__parameters__width=[]),
        "experiments.x.parameters.width",
        ["non-empty"],
    ),
    "unknown_top_level_key": (modified(experiment={}), "(top level)", ["'experiment'", "experiments, figures"]),
    "unknown_experiment_key": (modified(experiments__x__step=0.1), "experiments.x", ["'step'", "dt"]),
    "unknown_parameter": (
        modified(experiments__x__parameters__lr=0.1),
        "experiments.x.parameters",
        ["'lr'", "eta_u", "eta_w"],
    ),
    "unknown_solver": (modified(experiments__x__solver="euler"), "experiments.x.solver", ["flow, gd, explicit"]),
    "unknown_parametrization": (
        modified(experiments__x__parameters__parametrization="muP"),
        "experiments.x.parameters.parametrization",
        ["ntk", "mean_field", "small_init"],
    ),
    "unknown_init": (modified(experiments__x__init="zeros"), "experiments.x.init", ["gram, vectors"]),
    "gd_without_dt": (modified(experiments__x__dt=None), "experiments.x.dt", ["required"]),
    "gd_with_zero_dt": (modified(experiments__x__dt=0.0), "experiments.x.dt", ["minimum of 0"]),
    "one_time_point": (modified(experiments__x__time__num=1), "experiments.x.time.num", ["minimum of 2"]),
    "zero_stop": (modified(experiments__x__time__stop=0.0), "experiments.x.time.stop", ["minimum of 0"]),
    "log_time_without_start": (
        modified(experiments__x__time__spacing="log"),
        "experiments.x.time.start",
        ["log time grid"],
    ),
    "log_time_start_after_stop": (
        modified(experiments__x__time={"stop": 1.0, "num": 5, "spacing": "log", "start": 2.0}),
        "experiments.x.time.start",
        ["smaller than time.stop"],
    ),
    "parametrization_with_exponent": (
        modified(
            experiments__x__parameters__parametrization="ntk",
            experiments__x__parameters__kappa={"prefactor": 1.0, "exponent": 0.5},
        ),
        "experiments.x.parameters.kappa.exponent",
        ["parametrization"],
    ),
    "parametrization_with_plain_value": (
        modified(experiments__x__parameters__parametrization="ntk", experiments__x__parameters__kappa=2.0),
        "experiments.x.parameters.kappa",
        ["prefactor"],
    ),
    "figure_of_unknown_experiment": (
        modified(figures={"solver_comparison": {"experiments": ["x", "y"]}}),
        "figures.solver_comparison.experiments.1",
        ["'y'", "known: x"],
    ),
    "explicit_too_wide": (
        modified(experiments__x__solver="explicit", experiments__x__parameters__width=[10, 2_000_000]),
        "experiments.x.parameters.width",
        ["explicit", "1000000"],
    ),
    "no_experiments": ({"experiments": {}}, "experiments", ["defines no experiment"]),
    "bad_experiment_name": ({"experiments": {"1x": minimal()["experiments"]["x"]}}, "experiments", ["'1x'"]),
    "too_many_steps": (
        modified(experiments__x__dt=1.0e-7, experiments__x__time__stop=10.0),
        "experiments.x.dt",
        ["10^7"],
    ),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_config_is_rejected_naming_the_field(case):
    config, field, words = MALFORMED[case]
    message = rejection(config)
    assert f"{field}:" in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    ("text", "field", "hint"),
    [
        ("eta_u: 1e-3", "experiments.x.parameters.eta_u", "1.0e-3"),
        ("sigma2: 5e-1", "experiments.x.parameters.sigma2", "5.0e-1"),
        ("kappa: [1.0, 2e3]", "experiments.x.parameters.kappa.1", "2.0e+3"),
    ],
)
def test_float_written_without_decimal_point_gets_a_hint(text, field, hint):
    """YAML 1.1 reads 1e-3 as a string; the message says how to write it."""
    config = yaml.safe_load(
        "experiments:\n  x:\n    solver: flow\n    time: {stop: 1.0, num: 5}\n"
        f"    parameters:\n      width: 10\n      {text}\n"
    )
    message = rejection(config)
    assert f"{field}:" in message
    assert f"write it as {hint}" in message
    # The hint itself is a float to YAML.
    assert isinstance(yaml.safe_load(hint), float)


def test_dt_written_as_string_gets_a_hint():
    config = yaml.safe_load(
        "experiments: {x: {solver: gd, dt: 1e-3, time: {stop: 1.0, num: 5}, parameters: {width: 10}}}"
    )
    message = rejection(config)
    assert "experiments.x.dt:" in message and "1.0e-3" in message


def test_every_problem_is_listed():
    config = modified(experiments__x__seeds=0, experiments__x__parameters__rho=2.0)
    with pytest.raises(ConfigError) as caught:
        validation.validate(config)
    assert len(caught.value.problems) == 2
    assert any(p.startswith("experiments.x.seeds:") for p in caught.value.problems)
    assert any(p.startswith("experiments.x.parameters.rho:") for p in caught.value.problems)


def test_single_problem_is_one_line():
    assert "\n" not in rejection(modified(experiments__x__solver="euler"))


def test_valid_config_round_trip_fills_defaults(tmp_path):
    config = minimal()
    config["experiments"]["y"] = {
        "solver": "flow",
        "time": {"stop": 2.0, "num": 3},
        "parameters": {"width": [10, 100], "parametrization": "ntk", "eta_u": {"prefactor": [0.5, 1.0]}},
    }
    original = copy.deepcopy(config)
    resolved = validation.validate(config)
    assert config == original, "validate must not modify its argument"
    assert resolved["simulation"] == {"chunks": 4}
    assert resolved["figures"] == {}
    flow = resolved["experiments"]["y"]
    assert (flow["seeds"], flow["init"], flow["dt"], flow["time"]["spacing"]) == (4, "gram", 0.0, "linear")
    assert resolved["experiments"]["x"]["seeds"] == 2, "given values are kept"
    # Resolving is idempotent, and survives a YAML round trip through featlearn.io.
    assert validation.validate(resolved) == resolved
    io.write_yaml(resolved, tmp_path / "resolved.yaml")
    assert validation.load(str(tmp_path / "resolved.yaml")) == resolved
    assert validation.experiment_config(resolved, "y")["experiments"] == {"y": flow}


def test_grid_of_a_resolved_experiment():
    config = validation.validate(
        {
            "experiments": {
                "y": {
                    "solver": "flow",
                    "time": {"stop": 2.0, "num": 3},
                    "parameters": {
                        "parametrization": "mean_field",
                        "width": [10, 100],
                        "eta_u": {"prefactor": [0.5, 1.0]},
                    },
                }
            }
        }
    )
    experiment = grid.Experiment.from_config(config, "y")
    assert experiment.grid.dims == ("width", "eta_u0")
    assert experiment.grid.shape == (2, 2)
    values = experiment.hyperparameters(3)  # width 100, eta_u0 1.0
    # mean field: kappa = d^-1, eta = eta0 d^+1
    assert values["width"] == 100
    assert values["kappa"] == pytest.approx(1.0e-2, rel=1e-15)
    assert values["eta_u"] == pytest.approx(100.0, rel=1e-15)
    assert values["eta_w"] == pytest.approx(100.0, rel=1e-15)
    # C order: index 2 is width 100 with eta_u0 0.5; eta_w keeps its default prefactor 1.
    assert experiment.hyperparameters(2)["eta_u"] == pytest.approx(50.0, rel=1e-15)
    assert experiment.hyperparameters(2)["eta_w"] == pytest.approx(100.0, rel=1e-15)


@pytest.mark.parametrize("name", ["config.yaml", "smoke.yaml"])
def test_shipped_configs_are_valid(name):
    resolved = validation.load(str(REPO / "config" / name))
    assert resolved["experiments"]


def test_non_mapping_file_is_rejected(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="does not hold a mapping"):
        validation.load(str(path))


def test_unknown_experiment_is_named():
    with pytest.raises(ConfigError, match=r"experiments\.nope: no such experiment \(known: x\)"):
        validation.experiment_config(validation.validate(minimal()), "nope")
