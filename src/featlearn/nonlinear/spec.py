"""The typed settings of one nonlinear experiment, and its cross-field checks (no torch).

:class:`ExperimentSpec` is built from one resolved ``nonlinear.experiments.<name>``
mapping (defaults filled by the configuration schema) with
:meth:`ExperimentSpec.from_mapping`; training reads only this frozen object.
:func:`spec_problems` checks what the schema cannot (combinations of fields,
split sizes against the data sets' fixed sizes, the CIFAR-10 folder) without
importing torch or loading any data, so the workflow can call it while it
builds the DAG. See ``docs/nonlinear.md`` for every key.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featlearn.grid import Grid, grid_of, hyperparameters_at
from featlearn.nonlinear.data import CIFAR10_BATCH_SAMPLES, CIFAR10_TEST_BATCH, CIFAR10_TRAIN_BATCHES, SAMPLES

#: ``(n_train, n_test)`` of an image data set whose split sizes are not given: all of it.
DEFAULT_SPLITS = {"mnist": (4000, 1000), "digits": (1200, 597), "cifar10": (50000, 10000)}
#: Checks of the stopping rule when ``stop.check_every`` is not given: about this many per run.
DEFAULT_CHECKS = 100


@dataclass(frozen=True)
class DatasetSpec:
    """Which data and which split (``docs/nonlinear.md``, "Data").

    ``input_dim``, ``task``, ``target_scale`` and ``noise_std`` describe the
    synthetic teacher; image data sets are always classification.
    """

    name: str
    n_train: int
    n_test: int
    split_seed: int = 0
    task: str = "classification"
    input_dim: int | None = None
    target_scale: float | None = None
    noise_std: float = 0.0

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> DatasetSpec:
        """The dataset section of an experiment (image split sizes default to :data:`DEFAULT_SPLITS`)."""
        name = mapping["name"]
        n_train, n_test = DEFAULT_SPLITS.get(name, (None, None))
        if name == "teacher":
            return cls(
                name=name,
                n_train=mapping["n_train"],
                n_test=mapping["n_test"],
                split_seed=mapping.get("split_seed", 0),
                task=mapping["task"],
                input_dim=mapping["input_dim"],
                target_scale=float(mapping["target_scale"]),
                noise_std=float(mapping.get("noise_std", 0.0)),
            )
        return cls(
            name=name,
            n_train=mapping.get("n_train", n_train),
            n_test=mapping.get("n_test", n_test),
            split_seed=mapping.get("split_seed", 0),
        )

    @property
    def classification(self) -> bool:
        return self.task == "classification"

    def problems(self, *, cifar10_path: str | None = None) -> list[tuple[str, str]]:
        """Split sizes the data set cannot hold, and a CIFAR-10 folder without its batches: ``(field, message)``.

        From the data sets' fixed sizes and the folder's file names only (no data is read).
        """
        train_pool, test_pool, problems = _capacity(self, cifar10_path)
        if test_pool is None and train_pool is not None and self.n_train + self.n_test > train_pool:
            total = self.n_train + self.n_test
            problems.append(("dataset", f"n_train + n_test = {total} exceeds the {train_pool} {self.name} samples"))
        if test_pool is not None:
            if self.n_train > train_pool:
                found_images = f"the {train_pool} CIFAR-10 training images found"
                problems.append(("dataset.n_train", f"{self.n_train} exceeds {found_images}"))
            if self.n_test > test_pool:
                problems.append(("dataset.n_test", f"{self.n_test} exceeds the {test_pool} CIFAR-10 test images"))
        return problems

    def key(self) -> dict[str, Any]:
        """The fields that define the data, for hashing run generators."""
        key = {"name": self.name, "n_train": self.n_train, "n_test": self.n_test, "split_seed": self.split_seed}
        if self.name == "teacher":
            key.update(
                task=self.task, input_dim=self.input_dim, target_scale=self.target_scale, noise_std=self.noise_std
            )
        return key


@dataclass(frozen=True)
class Setting:
    """A named initialization setting: correlation of readout and features, teacher slope override."""

    name: str
    init_correlation: float = 0.0
    target_scale: float | None = None


@dataclass(frozen=True)
class LearningRate:
    """Base learning rate ``prefactor * width^-exponent`` (before the parametrization's ``e_l``)."""

    prefactor: float
    exponent: float = 0.0

    @classmethod
    def from_value(cls, value: float | Mapping[str, float]) -> LearningRate:
        """From a number or a ``{prefactor, exponent}`` mapping."""
        if isinstance(value, Mapping):
            return cls(float(value["prefactor"]), float(value.get("exponent", 0.0)))
        return cls(float(value))

    def at(self, width: int, factor: float = 1.0) -> float:
        """The learning rate at hidden width ``width``, times a candidate ``factor``."""
        return factor * self.prefactor * float(width) ** -self.exponent

    def __str__(self) -> str:
        return f"{self.prefactor:g}" + (f" width^-{self.exponent:g}" if self.exponent else "")


@dataclass(frozen=True)
class StopRule:
    """When a run has finished training (``docs/nonlinear.md``, "Stopping rule").

    The rule is checked every ``check_every`` steps on the full training loss
    ``L``. A run *converges* when ``L <= loss_target * L_zero`` (``L_zero``: the
    loss of the zero output) or, with a plateau window ``w``, when
    ``L(t) > (1 - plateau_tolerance) L(t - w)`` after ``L`` has fallen below half
    its initial value (a plateau above that is a saddle, not the end). It
    *diverges* when ``L`` is not finite. ``max_steps`` is the guard.
    """

    max_steps: int
    loss_target: float | None
    plateau_window: int | None
    plateau_tolerance: float
    check_every: int

    @classmethod
    def from_mapping(cls, steps: int, mapping: Mapping[str, Any]) -> StopRule:
        """The rule of a resolved ``stop`` section, with guard ``steps``."""
        plateau = mapping["plateau"] or {}
        return cls(
            max_steps=steps,
            loss_target=mapping["loss_target"],
            plateau_window=plateau.get("window"),
            plateau_tolerance=float(plateau.get("tolerance", 0.01)),
            check_every=mapping["check_every"] or max(1, math.ceil(steps / DEFAULT_CHECKS)),
        )


@dataclass(frozen=True)
class LrSelection:
    """Learning-rate selection on a validation split carved from the training split.

    For every grid point, each candidate ``lr * factor`` trains ``seeds`` runs on
    the first ``n_train - n_validation`` training samples; the candidate with
    the best ``metric`` on the last ``n_validation`` training samples at the
    stopping point is used by the experiment's runs.
    """

    factors: tuple[float, ...]
    n_validation: int
    seeds: int
    metric: str


@dataclass(frozen=True)
class ExperimentSpec:
    """One nonlinear experiment (``nonlinear.experiments.<name>``), resolved and typed."""

    dataset: DatasetSpec
    width: tuple[int, ...]
    activation: tuple[str, ...]
    parametrization: tuple[str, ...]
    init_scale: tuple[float, ...]
    settings: tuple[Setting, ...]
    lr: tuple[tuple[str, LearningRate], ...]
    stop: StopRule
    loss: str
    depth: int
    seeds: int
    batch_size: int | None
    lr_multipliers: tuple[float, ...] | None
    lr_selection: LrSelection | None
    log_points: int
    probe_size: int
    dtype: str

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> ExperimentSpec:
        """Build the spec from a resolved experiment mapping (no cross-field checks: :func:`spec_problems`).

        ``mapping`` must carry the schema's defaults (``featlearn.config.validate``
        fills them); the defaults the schema cannot fill (inside alternatives,
        image split sizes) are filled here.
        """
        settings = mapping.get("settings") or {"default": {"init_correlation": 0.0}}
        selection = mapping["lr_selection"]
        dataset = DatasetSpec.from_mapping(mapping["dataset"])
        multipliers = mapping["lr_multipliers"]
        lr = mapping["lr"]
        if isinstance(lr, Mapping) and "prefactor" not in lr:
            rates = {name: LearningRate.from_value(value) for name, value in lr.items()}
        else:
            rates = {name: LearningRate.from_value(lr) for name in mapping["parametrization"]}
        return cls(
            dataset=dataset,
            width=tuple(int(w) for w in mapping["width"]),
            activation=tuple(mapping["activation"]),
            parametrization=tuple(mapping["parametrization"]),
            init_scale=tuple(float(s) for s in mapping["init_scale"]),
            settings=tuple(
                Setting(name, float(s.get("init_correlation", 0.0)), s.get("target_scale"))
                for name, s in settings.items()
            ),
            lr=tuple(rates.items()),
            stop=StopRule.from_mapping(mapping["steps"], mapping["stop"]),
            loss=mapping["loss"],
            depth=mapping["depth"],
            seeds=mapping["seeds"],
            batch_size=mapping["batch_size"],
            lr_multipliers=None if multipliers is None else tuple(float(m) for m in multipliers),
            lr_selection=None
            if selection is None
            else LrSelection(
                factors=tuple(float(f) for f in selection["factors"]),
                n_validation=selection["n_validation"],
                seeds=selection.get("seeds", 1),
                metric=selection.get("metric") or ("accuracy" if dataset.classification else "loss"),
            ),
            log_points=mapping["log_points"],
            probe_size=mapping["probe_size"],
            dtype=mapping["dtype"],
        )

    def setting(self, name: str) -> Setting:
        return next(s for s in self.settings if s.name == name)

    def learning_rate(self, parametrization: str, width: int, factor: float = 1.0) -> float:
        """Base learning rate of ``parametrization`` at ``width``, times a candidate ``factor``."""
        return dict(self.lr)[parametrization].at(width, factor)

    def describe_lr(self) -> str:
        """The configured learning rate(s) in words, for the dataset's attributes."""
        rates = {str(rate) for _, rate in self.lr}
        if len(rates) == 1:
            return rates.pop()
        return "; ".join(f"{name}: {rate}" for name, rate in self.lr)

    @property
    def smallest_training_set(self) -> int:
        """Samples of the smallest training set any run sees (the selection runs', when there are any)."""
        held_out = self.lr_selection.n_validation if self.lr_selection else 0
        return self.dataset.n_train - held_out

    def problems(self, *, cifar10_path: str | None = None) -> list[tuple[str, str]]:
        """The ``(field, message)`` problems of this spec (see :func:`spec_problems`)."""
        dataset = self.dataset
        teacher = dataset.name == "teacher"
        problems: list[tuple[str, str]] = []
        if self.loss == "cross_entropy" and not dataset.classification:
            problems.append(("loss", "cross_entropy needs a classification dataset (this teacher is a regression)"))
        if self.lr_multipliers is not None and len(self.lr_multipliers) != self.depth:
            problems.append(
                ("lr_multipliers", f"needs one value per layer ({self.depth}), got {len(self.lr_multipliers)}")
            )
        missing = [p for p in self.parametrization if p not in dict(self.lr)]
        if missing:
            problems.append(("lr", f"no learning rate for parametrization {', '.join(missing)}"))
        for setting in self.settings:
            if setting.init_correlation != 0.0 and not (teacher and self.depth == 2):
                problems.append((f"settings.{setting.name}.init_correlation", "needs the teacher dataset and depth 2"))
            if setting.target_scale is not None and not teacher:
                field = f"settings.{setting.name}.target_scale"
                problems.append((field, "only the teacher dataset has a target scale"))

        problems.extend(dataset.problems(cifar10_path=cifar10_path))

        selection = self.lr_selection
        if selection is not None:
            if selection.n_validation >= dataset.n_train:
                problems.append(
                    (
                        "lr_selection.n_validation",
                        f"{selection.n_validation} leaves none of the {dataset.n_train} "
                        "training samples (dataset.n_train) to train on",
                    )
                )
            if selection.metric == "accuracy" and not dataset.classification:
                problems.append(("lr_selection.metric", "accuracy needs a classification dataset"))
        smallest = self.smallest_training_set
        if smallest > 0:
            where = "training samples left beside the validation split" if selection else "training samples"
            if self.batch_size is not None and self.batch_size > smallest:
                problems.append(("batch_size", f"{self.batch_size} exceeds the {smallest} {where}"))
            if self.probe_size > smallest:
                problems.append(("probe_size", f"{self.probe_size} exceeds the {smallest} {where}"))

        stop = self.stop
        if stop.check_every > stop.max_steps:
            problems.append(("stop.check_every", f"{stop.check_every} exceeds steps ({stop.max_steps})"))
        if stop.plateau_window is not None and stop.plateau_window > stop.max_steps:
            problems.append(("stop.plateau.window", f"{stop.plateau_window} exceeds steps ({stop.max_steps})"))
        if stop.loss_target is None and stop.plateau_window is None:
            problems.append(("stop", "needs a loss_target or a plateau (else only the step guard stops a run)"))
        return problems


def _capacity(dataset: DatasetSpec, cifar10_path: str | None) -> tuple[int | None, int | None, list[tuple[str, str]]]:
    """``(train pool, test pool, problems)`` of a data set, from constants and file names only.

    ``None`` means unbounded (the teacher) or unknown (CIFAR-10 without a folder).
    """
    if dataset.name in SAMPLES:
        return SAMPLES[dataset.name], None, []
    if dataset.name != "cifar10" or cifar10_path is None:
        return None, None, []
    folder = Path(cifar10_path)
    if not folder.is_dir():
        return None, None, [("dataset", f"cifar10_path {cifar10_path!r} is not a folder")]
    present = [name for name in CIFAR10_TRAIN_BATCHES if (folder / name).is_file()]
    problems = []
    if not present:
        problems.append(("dataset", f"cifar10_path {cifar10_path!r} holds no CIFAR-10 data_batch_* file"))
    if not (folder / CIFAR10_TEST_BATCH).is_file():
        problems.append(("dataset", f"cifar10_path {cifar10_path!r} holds no CIFAR-10 {CIFAR10_TEST_BATCH} file"))
    return CIFAR10_BATCH_SAMPLES * len(present), CIFAR10_BATCH_SAMPLES, problems


def spec_problems(mapping: Mapping[str, Any], *, cifar10_path: str | None = None) -> list[tuple[str, str]]:
    """What is wrong with one resolved experiment mapping that the schema cannot see.

    Parameters
    ----------
    mapping
        The resolved ``nonlinear.experiments.<name>`` mapping (schema defaults filled in).
    cifar10_path
        The configured ``nonlinear.cifar10_path``. With ``None`` the folder of a
        CIFAR-10 experiment is not checked (the workflow leaves such experiments
        out; training refuses them).

    Returns
    -------
    list of (str, str)
        ``(field, message)`` pairs, the field relative to the experiment (for
        example ``("lr_multipliers", "needs one value per layer (4), got 3")``);
        empty when the experiment is consistent. Imports no torch, reads no data.
    """
    return ExperimentSpec.from_mapping(mapping).problems(cifar10_path=cifar10_path)


@dataclass(frozen=True)
class PlaneSpec:
    """One nonlinear phase plane (``nonlinear.planes.<name>``), resolved and typed (``docs/nonlinear.md``).

    A grid of width exponents, as a linear experiment's: ``parameters`` and
    ``axes`` as in ``experiments.<name>`` (:func:`featlearn.grid.grid_of`),
    the hyperparameters giving every layer's multiplier, init std and
    learning rate (:func:`featlearn.nonlinear.models.exponent_scaling`). Each
    run trains one network of ``depth`` weight matrices and activation
    ``activation`` by full-batch gradient descent with step 1 on the MSE
    (one-hot targets for classes) of the training split, for ``steps``
    steps; it stops early once its loss is at most ``stop_fraction`` of its
    start (held there) or when it diverges.
    """

    dataset: DatasetSpec
    depth: int
    activation: str
    seeds: int
    steps: int
    log_points: int
    stop_fraction: float
    dtype: str
    parameters: Mapping[str, Any]
    axes: Mapping[str, Any]

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> PlaneSpec:
        """From a resolved ``nonlinear.planes.<name>`` mapping (the schema's defaults filled in)."""
        return cls(
            dataset=DatasetSpec.from_mapping(mapping["dataset"]),
            depth=mapping["depth"],
            activation=mapping["activation"],
            seeds=mapping["seeds"],
            steps=mapping["steps"],
            log_points=mapping["log_points"],
            stop_fraction=float(mapping["stop_fraction"]),
            dtype=mapping["dtype"],
            parameters=mapping["parameters"],
            axes=mapping.get("axes", {}),
        )

    @functools.cached_property
    def grid(self) -> Grid:
        """The plane's grid (built once: every run's hyperparameters are read from it)."""
        return grid_of(self.parameters, self.axes)

    def hyperparameters(self, index: int) -> dict[str, Any]:
        """Every hyperparameter value and exponent at flat grid index ``index``."""
        return hyperparameters_at(self.parameters, self.grid.point(index))

    def log_steps(self) -> np.ndarray:
        """The recorded steps: 0 and ``log_points - 1`` geometrically spaced steps up to ``steps`` (unique)."""
        spaced = np.rint(np.geomspace(1, self.steps, max(self.log_points - 1, 1))).astype(np.int64)
        return np.unique(np.concatenate([[0], spaced]))
