"""Training stage of the nonlinear experiments: one experiment spec in, one dataset out.

An experiment spec (the config's ``nonlinear.experiments.<name>`` section,
defaults filled by the schema) sweeps ``activation``, ``parametrization``,
``width`` and ``init_scale`` (lists) and ``settings`` (named overrides of the
initial correlation and, for the teacher, the target scale), with ``seeds``
runs per grid point. Each becomes a dimension of the output.

Runs that share an architecture (same setting, activation and width) are
trained together as one :class:`~featlearn.nonlinear.models.BatchedFCN`.
Every run draws its initialization and minibatches from its own generator,
keyed by a hash of its hyperparameters and its seed index through
:class:`numpy.random.SeedSequence`, so a run's result does not depend on
which other runs share its batch or on the order of execution.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

from featlearn import theory
from featlearn.nonlinear import metrics
from featlearn.nonlinear.data import Dataset, load_dataset
from featlearn.nonlinear.models import BatchedFCN, init_network, layer_scaling

#: Swept hyperparameters, in the order of the output dimensions (then seed, step, layer).
SWEEP_DIMS = ("setting", "activation", "parametrization", "width", "init_scale")
DEFAULT_SETTINGS = {"default": {"init_correlation": 0.0}}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: Largest activation tensor (elements) a stack of training runs builds (1 MB in float32).
#: Stacking pays for small per-run tensors (minibatch SGD, widths of hundreds: 3-7x in
#: benchmarks/bench_nonlinear.py) and not for large ones (width 10^4), which train alone.
ELEMENT_BUDGET = 2**18
#: Largest activation tensor of the (gradient-free) evaluation passes, a memory cap (16 MB).
EVALUATION_BUDGET = 2**22


@dataclass(frozen=True)
class RunPoint:
    """One run: a point of the sweep grid and a seed index."""

    setting: str
    activation: str
    parametrization: str
    width: int
    init_scale: float
    seed: int


@dataclass
class History:
    """Metrics of a batch of runs at the logged steps; arrays ``(R, step[, layer])``."""

    zeta: np.ndarray
    rho: np.ndarray
    ntk_change: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    test_accuracy: np.ndarray
    zeta_theory: np.ndarray | None


def settings_of(spec: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The named settings of an experiment (one ``default`` setting when none is given)."""
    return spec.get("settings") or DEFAULT_SETTINGS


def spec_problems(spec: dict[str, Any]) -> list[str]:
    """Combinations of an experiment spec that the schema cannot rule out, one line each."""
    problems = []
    dataset = spec["dataset"]
    teacher = dataset["name"] == "teacher"
    classification = not teacher or dataset["task"] == "classification"
    if spec["loss"] == "cross_entropy" and not classification:
        problems.append("loss: cross_entropy needs a classification dataset")
    multipliers = spec.get("lr_multipliers")
    if multipliers is not None and len(multipliers) != spec["depth"]:
        problems.append(f"lr_multipliers: needs one value per layer ({spec['depth']}), got {len(multipliers)}")
    for name, setting in settings_of(spec).items():
        if setting.get("init_correlation", 0.0) != 0.0 and not (teacher and spec["depth"] == 2):
            problems.append(f"settings.{name}.init_correlation: needs the teacher dataset and depth 2")
        if "target_scale" in setting and not teacher:
            problems.append(f"settings.{name}.target_scale: only the teacher dataset has a target scale")
    return problems


def grid(spec: dict[str, Any]) -> list[RunPoint]:
    """Every run of the experiment, in output order."""
    values = [list(settings_of(spec)), spec["activation"], spec["parametrization"], spec["width"], spec["init_scale"]]
    return [RunPoint(*point, seed) for point in itertools.product(*values) for seed in range(spec["seeds"])]


def log_steps(steps: int, log_points: int) -> np.ndarray:
    """Step 0 and ``log_points - 1`` geometrically spaced steps up to ``steps`` (unique)."""
    spaced = np.rint(np.geomspace(1, steps, max(log_points - 1, 1))).astype(np.int64)
    return np.unique(np.concatenate([[0], spaced]))


def run_generator(spec: dict[str, Any], run: RunPoint) -> torch.Generator:
    """The generator of one run, keyed by its hyperparameters and seed index."""
    key = {
        "dataset": spec["dataset"],
        "depth": spec["depth"],
        "batch_size": spec["batch_size"],
        "setting": settings_of(spec)[run.setting],
        "activation": run.activation,
        "parametrization": run.parametrization,
        "width": run.width,
        "init_scale": float(run.init_scale),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).digest()
    words = np.frombuffer(digest[:16], dtype=np.uint32).tolist()
    state = np.random.SeedSequence([*words, run.seed]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator()
    generator.manual_seed((int(state[0]) << 31) ^ int(state[1]))
    return generator


def _dataset_for(spec: dict[str, Any], setting: dict[str, float], cifar10_path: str | None) -> Dataset:
    dataset_spec = dict(spec["dataset"])
    if "target_scale" in setting:
        dataset_spec["target_scale"] = setting["target_scale"]
    return load_dataset(dataset_spec, cifar10_path=cifar10_path)


def _targets(dataset: Dataset, y: np.ndarray, loss: str, dtype: torch.dtype) -> torch.Tensor:
    """Training targets as tensors: one-hot for MSE on classes, labels for cross-entropy."""
    if dataset.task == "classification" and loss == "mse":
        return F.one_hot(torch.as_tensor(y), dataset.n_out).to(dtype)
    if loss == "cross_entropy":
        return torch.as_tensor(y)
    return torch.as_tensor(y, dtype=dtype)


def per_run_loss(outputs: torch.Tensor, targets: torch.Tensor, loss: str) -> torch.Tensor:
    """Loss of each run, shape ``(R,)``: ``1/2 mean |f - y|^2`` or mean cross-entropy.

    ``targets`` are shared ``(N, ...)`` or per run ``(R, N, ...)``.
    """
    if loss == "mse":
        return 0.5 * (outputs - targets).pow(2).sum(-1).mean(-1)
    runs, samples, classes = outputs.shape
    labels = targets.expand(runs, samples).reshape(-1)
    return F.cross_entropy(outputs.reshape(-1, classes), labels, reduction="none").view(runs, samples).mean(1)


def linear_theory_applies(spec: dict[str, Any], dataset: Dataset) -> bool:
    """Whether the solvable model predicts the network: scalar regression, two layers, MSE."""
    scalar_regression = dataset.task == "regression" and dataset.n_in == 1 and dataset.n_out == 1
    return scalar_regression and spec["depth"] == 2 and spec["loss"] == "mse"


def linear_theory_zeta(model: BatchedFCN, dataset: Dataset, lr: torch.Tensor, steps: np.ndarray) -> np.ndarray:
    """``|cos(u, w)|`` of the solvable model's gradient flow from this network's start, ``(R, step)``.

    ``u = theta_2``, ``w = theta_1``, ``kappa = m_1 m_2``, ``eta_l = lr_l`` and
    time ``t = step`` (SPEC sections 3 and 6); exact for linear activations
    up to the GD-versus-flow difference, a prediction otherwise.
    """
    u = model.weights[1][:, 0, :].double().numpy()
    w = model.weights[0][:, :, 0].double().numpy()
    x = dataset.x_train[:, 0]
    y = dataset.y_train[:, 0]
    sigma2 = float(np.mean(x * x))
    hyper = theory.Hyperparameters(
        kappa=model.multipliers.prod(dim=1).double().numpy(),
        eta_u=lr[:, 1].double().numpy(),
        eta_w=lr[:, 0].double().numpy(),
        beta_star=float(np.mean(x * y)) / sigma2,
        sigma2=sigma2,
    )
    gram = theory.flow_trajectory(theory.gram_from_vectors(u, w), hyper, steps.astype(float))
    return np.abs(theory.cosine(gram))


def train_runs(
    spec: dict[str, Any], dataset: Dataset, runs: Sequence[RunPoint], setting: dict[str, float]
) -> History:
    """Train ``runs`` (same setting, activation and width) together; return their metrics."""
    dtype = DTYPES[spec["dtype"]]
    depth, loss = spec["depth"], spec["loss"]
    activation, width = runs[0].activation, runs[0].width
    layer_sizes = [dataset.n_in, *([width] * (depth - 1)), dataset.n_out]
    scalings = [layer_scaling(run.parametrization, layer_sizes) for run in runs]
    generators = [run_generator(spec, run) for run in runs]
    model = init_network(
        layer_sizes,
        activation,
        scalings,
        [run.init_scale for run in runs],
        generators,
        init_correlation=setting.get("init_correlation", 0.0),
        init_direction=dataset.init_direction,
        dtype=dtype,
    )
    lr_multipliers = np.asarray(spec.get("lr_multipliers") or [1.0] * depth)
    lr = torch.as_tensor(np.stack([spec["lr"] * s.lr_multiplier * lr_multipliers for s in scalings]), dtype=dtype)

    x_train = torch.as_tensor(dataset.x_train, dtype=dtype)
    x_test = torch.as_tensor(dataset.x_test, dtype=dtype)
    y_train = _targets(dataset, dataset.y_train, loss, dtype)
    y_test = _targets(dataset, dataset.y_test, loss, dtype)
    probe = x_train[: spec["probe_size"]]
    steps = log_steps(spec["steps"], spec["log_points"])
    classification = dataset.task == "classification"

    initial_model = BatchedFCN([w.clone() for w in model.weights], model.multipliers, activation)
    initial_weights = initial_model.effective_weights()
    initial_ntk = metrics.empirical_ntk(model, probe)
    records: dict[str, list[torch.Tensor]] = {name: [] for name in ("zeta", "rho", "ntk", "train", "test", "acc")}

    def record() -> None:
        weights = model.effective_weights()
        records["zeta"].append(metrics.alignment(weights))
        records["rho"].append(metrics.rescaling(weights, initial_weights))
        records["ntk"].append(metrics.relative_change(metrics.empirical_ntk(model, probe), initial_ntk))
        records["train"].append(_evaluate(model, x_train, y_train, loss)[0])
        test_loss, test_correct = _evaluate(model, x_test, y_test, loss)
        records["test"].append(test_loss)
        records["acc"].append(test_correct if classification else torch.full_like(test_loss, float("nan")))

    batches = _minibatches(len(x_train), spec["batch_size"], generators)
    for step in range(spec["steps"] + 1):
        if step in steps:
            with torch.no_grad():
                record()
        if step == spec["steps"]:
            break
        for w in model.weights:
            w.requires_grad_(True)
        index = next(batches)
        if index is None:
            outputs, targets = model(x_train), y_train
        else:
            outputs, targets = model(x_train[index]), y_train[index]
        gradients = torch.autograd.grad(per_run_loss(outputs, targets, loss).sum(), model.weights)
        with torch.no_grad():
            model.weights = [
                (w - lr[:, layer, None, None] * g).detach() for layer, (w, g) in enumerate(zip(model.weights, gradients))
            ]

    def stacked(name: str) -> np.ndarray:
        return torch.stack(records[name], dim=1).double().numpy()

    zeta_theory = None
    if linear_theory_applies(spec, dataset):
        zeta_theory = linear_theory_zeta(initial_model, dataset, lr, steps)
    return History(
        zeta=stacked("zeta"),
        rho=stacked("rho"),
        ntk_change=stacked("ntk"),
        train_loss=stacked("train"),
        test_loss=stacked("test"),
        test_accuracy=stacked("acc"),
        zeta_theory=zeta_theory,
    )


def _evaluate(
    model: BatchedFCN, x: torch.Tensor, y: torch.Tensor, loss: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-run mean loss and accuracy (argmax) on ``(x, y)``, in sample chunks within :data:`EVALUATION_BUDGET`."""
    width = max(w.shape[1] for w in model.weights)
    chunk = max(1, EVALUATION_BUDGET // (len(model.multipliers) * width))
    loss_sum = correct = 0.0
    for start in range(0, len(x), chunk):
        outputs = model(x[start : start + chunk])
        targets = y[start : start + chunk]
        loss_sum = loss_sum + per_run_loss(outputs, targets, loss) * len(targets)
        if targets.dtype == torch.int64:
            correct = correct + (outputs.argmax(-1) == targets).sum(-1)
        elif targets.ndim == 2 and targets.shape[1] > 1:
            correct = correct + (outputs.argmax(-1) == targets.argmax(-1)).sum(-1)
    return loss_sum / len(x), torch.as_tensor(correct, dtype=loss_sum.dtype) / len(x)


def runs_per_batch(samples_per_step: int, width: int) -> int:
    """How many runs to stack so one activation tensor stays within :data:`ELEMENT_BUDGET`.

    Larger tensors gain nothing from stacking: the work per run is already
    large, and the stacked tensors fall out of cache.
    """
    return max(1, ELEMENT_BUDGET // (samples_per_step * width))


def _minibatches(n_samples: int, batch_size: int | None, generators: Sequence[torch.Generator]):
    """Yield per-run sample indices ``(R, B)`` (epochs of per-run permutations), or ``None`` for full batch."""
    if batch_size is None or batch_size >= n_samples:
        while True:
            yield None
    per_epoch = n_samples // batch_size
    while True:
        orders = torch.stack([torch.randperm(n_samples, generator=g) for g in generators])
        for start in range(0, per_epoch * batch_size, batch_size):
            yield orders[:, start : start + batch_size]


VARIABLES = {
    "zeta": ("alignment zeta_l = |W_{l+1} W_l|_F / (|W_{l+1}|_F |W_l|_F) (NaN for the last layer)", "1"),
    "rho": ("rescaling rho_l = log(|W_l(t)|_F / |W_l(0)|_F)", "1"),
    "ntk_change": ("relative change of the empirical NTK on the probe batch, |K_t - K_0|_F / |K_0|_F", "1"),
    "train_loss": ("training loss (full training set)", "1"),
    "test_loss": ("test loss", "1"),
    "test_accuracy": ("test accuracy (NaN for regression)", "1"),
    "zeta_theory": ("|cos(u, w)| predicted by the solvable linear model's gradient flow (SPEC sections 3 and 6)", "1"),
}


def run_experiment(
    spec: dict[str, Any],
    *,
    cifar10_path: str | None = None,
    progress: Callable[[str], None] | None = None,
    batch_runs: bool = True,
) -> xr.Dataset:
    """Train every run of an experiment and return the metrics as a dataset (SPEC section 8).

    Dimensions: ``setting, activation, parametrization, width, init_scale,
    seed, step`` and ``layer`` (for ``zeta`` and ``rho``). With
    ``batch_runs=False`` every run is trained alone (the plain loop the
    benchmark compares against; results agree to rounding).
    """
    problems = spec_problems(spec)
    if problems:
        raise ValueError("invalid nonlinear experiment: " + "; ".join(problems))
    settings = settings_of(spec)
    runs = grid(spec)
    steps = log_steps(spec["steps"], spec["log_points"])
    coords: dict[str, Any] = {
        "setting": list(settings),
        "activation": list(spec["activation"]),
        "parametrization": list(spec["parametrization"]),
        "width": list(spec["width"]),
        "init_scale": [float(s) for s in spec["init_scale"]],
        "seed": list(range(spec["seeds"])),
        "step": steps,
        "layer": np.arange(1, spec["depth"] + 1),
    }
    shape = tuple(len(coords[d]) for d in (*SWEEP_DIMS, "seed"))
    results: dict[str, np.ndarray] = {}
    datasets: dict[str, Dataset] = {}
    for setting_name, setting in settings.items():
        dataset = datasets[setting_name] = _dataset_for(spec, setting, cifar10_path)
        for activation, width in itertools.product(spec["activation"], spec["width"]):
            group = [r for r in runs if (r.setting, r.activation, r.width) == (setting_name, activation, width)]
            samples = min(spec["batch_size"] or len(dataset.x_train), len(dataset.x_train))
            size = runs_per_batch(samples, width) if batch_runs else 1
            batches = [group[start : start + size] for start in range(0, len(group), size)]
            for batch in batches:
                history = train_runs(spec, dataset, batch, setting)
                _store(results, coords, shape, batch, history)
            if progress is not None:
                progress(f"setting={setting_name} activation={activation} width={width}: {len(group)} runs done")

    dims = (*SWEEP_DIMS, "seed", "step")
    data_vars = {}
    for name, values in results.items():
        var_dims = (*dims, "layer") if values.ndim == len(dims) + 1 else dims
        long_name, units = VARIABLES[name]
        data_vars[name] = xr.Variable(var_dims, values, {"long_name": long_name, "units": units})
    ds = xr.Dataset(data_vars, coords=coords)
    first = next(iter(datasets.values()))
    ds["init_correlation"] = ("setting", [settings[s].get("init_correlation", 0.0) for s in settings])
    ds["init_correlation"].attrs = {"long_name": "correlation of readout and features at init", "units": "1"}
    if first.name == "teacher":
        ds["target_scale"] = ("setting", [settings[s].get("target_scale", spec["dataset"]["target_scale"]) for s in settings])
        ds["target_scale"].attrs = {"long_name": "teacher slope beta* along the teacher direction", "units": "1"}
    ds = ds.set_coords([name for name in ("init_correlation", "target_scale") if name in ds])
    for name, (long_name, units) in {
        "setting": ("named initialization/target setting", "1"),
        "activation": ("activation function", "1"),
        "parametrization": ("parametrization (standard, ntk, mean_field)", "1"),
        "width": ("hidden-layer width", "1"),
        "init_scale": ("initialization-scale multiplier", "1"),
        "seed": ("seed index", "1"),
        "step": ("training step", "1"),
        "layer": ("layer index l (W_l maps layer l-1 to layer l)", "1"),
    }.items():
        ds[name].attrs.update(long_name=long_name, units=units)
    ds.attrs.update(
        dataset=first.name,
        dataset_source=first.source,
        normalisation=first.normalisation,
        task=first.task,
        n_train=len(first.x_train),
        n_test=len(first.x_test),
        loss=spec["loss"],
        depth=spec["depth"],
        lr=spec["lr"],
        steps=spec["steps"],
        batch_size=spec["batch_size"] if spec["batch_size"] is not None else "full",
        probe_size=spec["probe_size"],
        dtype=spec["dtype"],
    )
    return ds


def _store(
    results: dict[str, np.ndarray],
    coords: dict[str, Any],
    shape: tuple[int, ...],
    batch: Sequence[RunPoint],
    history: History,
) -> None:
    """Place a batch's metrics into the full result arrays."""
    for name in VARIABLES:
        values = getattr(history, name)
        if values is None:
            continue
        if name not in results:
            results[name] = np.full(shape + values.shape[1:], np.nan)
        for row, run in enumerate(batch):
            index = tuple(coords[d].index(getattr(run, d)) for d in (*SWEEP_DIMS, "seed"))
            results[name][index] = values[row]
