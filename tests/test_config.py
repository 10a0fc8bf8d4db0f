"""Configuration schema: malformed configurations are rejected naming the field; valid ones resolve."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from featlearn import grid, io, validation
from featlearn.errors import ConfigError, InputError

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


def swept() -> dict[str, Any]:
    """A valid configuration with swept experiments, a figure of each kind and a nonlinear experiment."""
    flow = {"solver": "flow", "seeds": 2, "time": {"stop": 1.0, "num": 5}}
    steps = {"solver": "gd", "dt": 0.1, "seeds": 2, "time": {"stop": 1.0, "num": 5}}
    net = {
        "width": [16],
        "activation": ["relu"],
        "parametrization": ["ntk"],
        "init_scale": [1.0],
        "steps": 2,
        "lr": 0.1,
        "probe_size": 4,
    }
    teacher = {"input_dim": 1, "task": "regression", "target_scale": 1.0, "n_train": 8, "n_test": 8}
    panel = {"experiment": "grid", "select": {"parametrization": "ntk", "width": 10, "rho": 0.0}}
    scaled = {"width": [10, 100], "kappa": {"exponent": [0.5, 1.0]}, "eta_u": {"prefactor": [0.5, 1.0]}}
    parametrizations = {"parametrization": ["ntk", "mean_field"]}
    return {
        "experiments": {
            "grid": {**flow, "parameters": {**parametrizations, "width": [10, 100, 1000], "rho": [0.0, 0.5]}},
            "pair": {**flow, "parameters": {**parametrizations, "width": [10, 100]}},
            "steps": {**steps, "parameters": scaled},
        },
        "figures": {"solver_comparison": {"experiments": ["pair"]}},
        "mechanisms": {
            "maps": {"m": {"experiment": "grid", "x": "rho", "y": "width", "select": {"parametrization": "ntk"}}},
            "trajectories": {"panels": {"kernel": panel}},
            "width_scaling": {"experiment": "grid", "select": {"rho": 0.5}},
        },
        "phases": {
            "experiments": ["steps"],
            "fit": {"min_widths": 2},
            "figures": {"phases_gd_step": {"experiment": "steps", "x": "eta_u0", "y": "a"}},
        },
        "nonlinear": {
            "experiments": {"net": {"dataset": {"name": "teacher", **teacher}, **net}},
            "figures": {"zeta": ["net"]},
        },
    }


def swept_with(change) -> dict[str, Any]:
    """``swept()`` after ``change(config)``."""
    config = swept()
    change(config)
    return config


def net_with(**changes: Any) -> dict[str, Any]:
    """``swept()`` with its nonlinear experiment ``net`` changed."""
    return swept_with(lambda config: config["nonlinear"]["experiments"]["net"].update(changes))


def renamed_nonlinear(name: str) -> dict[str, Any]:
    config = swept()
    config["nonlinear"]["experiments"] = {name: config["nonlinear"]["experiments"]["net"]}
    config["nonlinear"]["figures"] = {"zeta": [name]}
    return config


def expression_experiment(**parameters: Any) -> dict[str, Any]:
    return modified(experiments__x__parameters={"width": [10, 100], **parameters})


# The holes a hostile test found (issue 11): every one refused by validation, naming the field.
MALFORMED |= {
    # 1. names that are paths
    "nonlinear_name_escapes": (
        renamed_nonlinear("../../../escaped"),
        "nonlinear.experiments",
        ["'../../../escaped'", "not a valid name"],
    ),
    "nonlinear_name_with_slash": (renamed_nonlinear("a/b"), "nonlinear.experiments", ["'a/b'"]),
    "nonlinear_name_regex": (renamed_nonlinear("x|.*"), "nonlinear.experiments", ["'x|.*'"]),
    "map_name_is_a_path": (
        swept_with(lambda c: c["mechanisms"]["maps"].update({"../m": c["mechanisms"]["maps"]["m"]})),
        "mechanisms.maps",
        ["'../m'"],
    ),
    "name_too_long": ({"experiments": {"x" * 65: minimal()["experiments"]["x"]}}, "experiments", ["64 characters"]),
    "reserved_experiment_name": (
        {"experiments": {"nonlinear": minimal()["experiments"]["x"]}},
        "experiments.nonlinear",
        ["reserved"],
    ),
    # 4. settings that name grid dims or values
    "map_select_value_not_on_grid": (
        swept_with(lambda c: c["mechanisms"]["maps"]["m"]["select"].update(parametrization="muP")),
        "mechanisms.maps.m.select.parametrization",
        ["'muP'", "ntk", "mean_field"],
    ),
    "map_select_key_not_a_dim": (
        swept_with(lambda c: c["mechanisms"]["maps"]["m"]["select"].update(beta_star=1.0)),
        "mechanisms.maps.m.select.beta_star",
        ["not a grid dimension", "parametrization, width, rho"],
    ),
    "map_axis_not_swept": (
        swept_with(lambda c: c["mechanisms"]["maps"]["m"].update(x="sigma_u")),
        "mechanisms.maps.m.x",
        ["'sigma_u'", "parametrization, width, rho"],
    ),
    "map_dim_left_unfixed": (
        swept_with(lambda c: c["mechanisms"]["maps"]["m"].update(select={})),
        "mechanisms.maps.m.select",
        ["parametrization = ['ntk', 'mean_field']"],
    ),
    "panel_select_value_not_on_grid": (
        swept_with(lambda c: c["mechanisms"]["trajectories"]["panels"]["kernel"]["select"].update(width=20)),
        "mechanisms.trajectories.panels.kernel.select.width",
        ["20", "[10, 100, 1000]"],
    ),
    "width_scaling_with_two_widths": (
        swept_with(lambda c: c["experiments"]["grid"]["parameters"].update(width=[10, 100])),
        "mechanisms.width_scaling.experiment",
        ["2 width(s)", "at least 3"],
    ),
    "width_scaling_two_series": (
        swept_with(lambda c: c["mechanisms"]["width_scaling"].update(select={})),
        "mechanisms.width_scaling.select",
        ["rho = [0.0, 0.5]"],
    ),
    "comparison_seed_beyond_seeds": (
        swept_with(lambda c: c["figures"]["solver_comparison"].update(seed=2)),
        "figures.solver_comparison.seed",
        ["seeds 0..1"],
    ),
    "phase_figure_axis_not_swept": (
        swept_with(lambda c: c["phases"]["figures"]["phases_gd_step"].update(x="c_u")),
        "phases.figures.phases_gd_step.x",
        ["'c_u'", "a, eta_u0"],
    ),
    "phase_figure_default_axis_not_swept": (
        swept_with(lambda c: c["phases"]["figures"].update(phases_kernel_change_map={"experiment": "grid"})),
        "phases.figures.phases_kernel_change_map.x",
        ["'sigma_u0'", "allowed: parametrization, width, rho"],
    ),
    "phase_gd_figure_of_flow": (
        swept_with(
            lambda c: c["phases"].update(
                experiments=["grid"],
                figures={"phases_gd_step": {"experiment": "grid", "x": "rho", "y": "parametrization"}},
            )
        ),
        "phases.figures.phases_gd_step.experiment",
        ["solver flow", "needs gd"],
    ),
    # 8. values that exist nowhere but in a job
    "expression_divides_by_zero": (
        expression_experiment(kappa={"exponent": [0.25, 0.5]}, eta_w={"exponent": "1 / (a - 0.5)"}),
        "experiments.x.parameters.eta_w",
        ["a = 0.5", "'1 / (a - 0.5)'", "division by zero"],
    ),
    "expression_gives_negative_learning_rate": (
        expression_experiment(kappa={"exponent": [0.25, 0.5]}, eta_u={"prefactor": "a - 0.3"}),
        "experiments.x.parameters.eta_u",
        ["-0.05", "a = 0.25", ">= 0"],
    ),
    "expression_overflows": (
        expression_experiment(kappa={"exponent": [-0.5]}, eta_u={"exponent": "-1000.0"}),
        "experiments.x.parameters.eta_u",
        ["overflows"],
    ),
    "vector_init_too_wide": (
        modified(experiments__x__init="vectors", experiments__x__parameters__width=2**40),
        "experiments.x.parameters.width",
        ["init: vectors", "init: gram"],
    ),
    # 10. numbers that are not numbers
    "nan_in_bounded_value": (
        modified(experiments__x__parameters__rho=float("nan")),
        "experiments.x.parameters.rho",
        ["nan is not a finite number"],
    ),
    "inf_step": (modified(experiments__x__dt=float("inf")), "experiments.x.dt", ["inf is not a finite number"]),
    "nan_in_sweep": (
        modified(experiments__x__parameters__beta_star=[1.0, float("nan")]),
        "experiments.x.parameters.beta_star.1",
        ["not a finite number"],
    ),
    "nan_in_nonlinear": (
        swept_with(lambda c: c["nonlinear"]["experiments"]["net"].update(lr=float("-inf"))),
        "nonlinear.experiments.net.lr",
        ["-inf is not a finite number"],
    ),
    # 11. messages that name what is allowed
    "unknown_image_data_set": (
        swept_with(lambda c: c["nonlinear"]["experiments"]["net"].update(dataset={"name": "imagenet", "n_train": 8,
                                                                                  "n_test": 8})),
        "nonlinear.experiments.net.dataset.name",
        ["'imagenet'", "teacher, mnist, digits, cifar10"],
    ),
    # 7. nonlinear consistency and data, checked at DAG build (featlearn.nonlinear.spec.spec_problems)
    "cross_entropy_on_regression": (
        net_with(loss="cross_entropy"), "nonlinear.experiments.net.loss", ["needs a classification dataset"]
    ),
    "lr_multipliers_of_the_wrong_length": (
        net_with(lr_multipliers=[1.0, 1.0, 1.0]),
        "nonlinear.experiments.net.lr_multipliers",
        ["one value per layer (2), got 3"],
    ),
    "init_correlation_with_depth_3": (
        net_with(depth=3, settings={"tilted": {"init_correlation": 0.5}}),
        "nonlinear.experiments.net.settings.tilted.init_correlation",
        ["depth 2"],
    ),
    "more_digits_than_mnist_has": (
        net_with(dataset={"name": "mnist", "n_train": 4500, "n_test": 1000}, loss="cross_entropy"),
        "nonlinear.experiments.net.dataset",
        ["n_train + n_test = 5500 exceeds the 5000 mnist samples"],
    ),
    "cifar10_folder_that_does_not_exist": (
        swept_with(
            lambda c: c["nonlinear"].update(
                cifar10_path="/nonexistent/cifar-10-batches-py",
                experiments={"net": {**c["nonlinear"]["experiments"]["net"], "loss": "cross_entropy",
                                     "dataset": {"name": "cifar10", "n_train": 8, "n_test": 8}}},
            )
        ),
        "nonlinear.experiments.net.dataset",
        ["is not a folder"],
    ),
    "batch_larger_than_the_training_set": (
        net_with(batch_size=64), "nonlinear.experiments.net.batch_size", ["64 exceeds the 8 training samples"]
    ),
}  # fmt: skip


def plane_config(name: str = "p", **changes: Any) -> dict[str, Any]:
    """``minimal()`` with one valid nonlinear phase plane ``name``, changed by ``changes``."""
    plane = {
        "dataset": {
            "name": "teacher",
            "input_dim": 1,
            "task": "regression",
            "target_scale": 1.0,
            "n_train": 4,
            "n_test": 4,
        },
        "activation": "linear",
        "steps": 10,
        "parameters": {
            "width": [64, 128, 256, 512],
            "kappa": {"exponent": [0.5, 1.0]},
            "eta_u": {"exponent": [0.0, 0.5]},
            "eta_w": {"exponent": "c_u"},
        },
    }
    plane.update(changes)
    return {**minimal(), "nonlinear": {"planes": {name: plane}}}


# Nonlinear phase planes: refused at validation, naming the field.
MALFORMED |= {
    "plane_name_is_a_path": (plane_config("../p"), "nonlinear.planes", ["'../p'"]),
    "plane_one_cell_dim": (
        plane_config(parameters={"width": [64, 128, 256, 512], "kappa": {"exponent": [0.5, 1.0]}}),
        "nonlinear.planes.p.parameters", ["two grid dimensions besides width, not 1 (a)"],
    ),
    "plane_too_few_widths": (
        plane_config(parameters={"width": [64, 128], "kappa": {"exponent": [0.5, 1.0]},
                                 "eta_u": {"exponent": [0.0, 0.5]}}),
        "nonlinear.planes.p.parameters.width", ["phases.fit.min_widths = 4"],
    ),
    "plane_stops_before_learning": (
        plane_config(stop_fraction=0.5), "nonlinear.planes.p.stop_fraction", ["phases.fit.learning_fraction"]
    ),
    "plane_axis_not_swept": (plane_config(x="b_u"), "nonlinear.planes.p.x", ["b_u"]),
    "plane_bad_expression": (
        plane_config(parameters={"width": [64, 128, 256, 512], "kappa": {"exponent": [0.5, 1.0]},
                                 "eta_u": {"exponent": [0.0, 0.5]}, "eta_w": {"exponent": "c_u +"}}),
        "nonlinear.planes.p.parameters.eta_w.exponent", [],
    ),
    "plane_unknown_activation": (plane_config(activation="tanh"), "nonlinear.planes.p.activation", ["tanh"]),
    "plane_too_many_samples": (
        plane_config(dataset={"name": "digits", "n_train": 1500, "n_test": 500}),
        "nonlinear.planes.p.dataset", ["exceeds"],
    ),
}  # fmt: skip


def test_plane_base_configuration_is_valid_and_files_may_not_clash():
    assert validation.validate(plane_config())["nonlinear"]["planes"]["p"]["seeds"] == 4
    clash = plane_config()
    clash["nonlinear"]["experiments"] = {"p_phases": swept()["nonlinear"]["experiments"]["net"]}
    assert "nonlinear.planes.p: 'p_phases' is also a nonlinear experiment" in rejection(clash)


def test_hostile_base_configuration_is_valid():
    """The corpus above breaks one thing each of a valid configuration."""
    resolved = validation.validate(swept())
    assert resolved["nonlinear"]["experiments"]["net"]


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


EXPERIMENT_X = "  x:\n    solver: flow\n    time: {stop: 1.0, num: 3}\n    parameters: {width: 10}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "experiments:\n" + EXPERIMENT_X + EXPERIMENT_X.replace("10", "20"),
            "experiments.x: given twice in {path} (lines 2 and 6)",
        ),
        (
            "experiments:\n  x:\n    solver: flow\n    solver: gd\n    time: {stop: 1.0, num: 3}\n"
            "    parameters: {width: 10}\n",
            "experiments.x.solver: given twice in {path} (lines 3 and 4)",
        ),
        ("experiments:\n  x: {solver: flow\n", "(top level): {path} line 3 column 1 is not valid YAML"),
        ("experiments:\n" + EXPERIMENT_X.replace("width: 10", "width: 10, rho: .nan"), "parameters.rho: nan is not"),
    ],
    ids=["duplicate-experiment", "duplicate-setting", "yaml-syntax", "nan"],
)
def test_bad_file_is_refused_naming_the_line(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        validation.load(str(path))
    assert message.format(path=path) in str(caught.value)


def test_merge_keys_are_not_duplicates(tmp_path):
    """YAML's `<<: *anchor` exists to override keys: only keys written twice in one mapping are refused."""
    path = tmp_path / "anchors.yaml"
    path.write_text(
        "experiments:\n  x: &base\n    solver: flow\n    time: {stop: 1.0, num: 3}\n    parameters: {width: 10}\n"
        "  y:\n    <<: *base\n    seeds: 2\n    solver: gd\n    dt: 0.1\n"
    )
    resolved = validation.load(str(path))
    assert resolved["experiments"]["y"]["solver"] == "gd"
    assert resolved["experiments"]["y"]["parameters"] == {"width": 10}


@pytest.mark.parametrize("kind", ["folder", "missing", "binary"])
def test_unreadable_file_is_an_input_error(tmp_path, kind):
    path = {"folder": tmp_path, "missing": tmp_path / "nope.yaml", "binary": tmp_path / "binary.yaml"}[kind]
    if kind == "binary":
        path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(InputError, match=f"cannot read the configuration {re.escape(str(path))}"):
        validation.load(str(path))
