"""Training stage of the nonlinear experiments: one experiment spec in, one dataset out.

An experiment (:class:`~featlearn.nonlinear.spec.ExperimentSpec`) sweeps
``activation``, ``parametrization``, ``width`` and ``init_scale`` and named
``settings`` (initial correlation and, for the teacher, the target scale),
with ``seeds`` runs per grid point. Each becomes a dimension of the output.

Every run trains until its stopping rule holds or the ``max_steps`` guard is
reached (:class:`~featlearn.nonlinear.spec.StopRule`). Metrics are logged on
one step grid shared by all runs; a run that stops freezes (no further
updates) and its values at later logged steps are held at their
``stop_step`` value, which is always a logged step.

With ``lr_selection`` every grid point first trains selection runs for each
candidate learning rate on the training split minus a validation split; the
chosen rate trains the experiment's runs on the whole training split. The
selection never sees the test split (:func:`~featlearn.nonlinear.data.load_dataset`).

Runs that share an architecture (same setting, activation and width) are
trained together as one :class:`~featlearn.nonlinear.models.BatchedFCN`.
Every run draws its initialization and minibatches from its own generator,
keyed by a hash of its hyperparameters, its role (selection or final) and
its seed index through :class:`numpy.random.SeedSequence`, so a run's result
does not depend on which other runs share its batch or on the order of
execution. The learning rate is not part of the key: the candidates of a
selection start from the same weights and see the same minibatches.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

from featlearn import contract, theory
from featlearn.contract import STOP_REASONS
from featlearn.nonlinear import data, metrics
from featlearn.nonlinear.data import Dataset
from featlearn.nonlinear.mechanisms import at_stop
from featlearn.nonlinear.models import DTYPES, BatchedFCN, as_targets, init_network, keyed_generator, layer_scaling
from featlearn.nonlinear.spec import ExperimentSpec, Setting

#: Swept hyperparameters, in the order of the output dimensions (then seed, step, layer).
SWEEP_DIMS = ("setting", "activation", "parametrization", "width", "init_scale")
#: Largest activation tensor (elements) a stack of training runs builds (512 kB in float32).
#: Stacking pays for small per-run tensors (minibatch SGD, widths of hundreds: see
#: benchmarks/bench_nonlinear.py) and not for large ones (width 10^4), which train alone.
ELEMENT_BUDGET = 2**17
#: Largest activation tensor of the (gradient-free) evaluation passes, a memory cap (16 MB).
EVALUATION_BUDGET = 2**22
#: Progress is reported at least every tenth of the step budget and at most this many seconds apart.
PROGRESS_SECONDS = 30.0
LOSS_TARGET, PLATEAU, MAX_STEPS, DIVERGED = range(len(STOP_REASONS))

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RunPoint:
    """One run: a point of the sweep grid and a seed index."""

    setting: str
    activation: str
    parametrization: str
    width: int
    init_scale: float
    seed: int

    @property
    def grid_point(self) -> tuple[str, str, str, int, float]:
        return (self.setting, self.activation, self.parametrization, self.width, self.init_scale)


@dataclass(frozen=True)
class Run:
    """A run to train: where it sits, its base learning rate and its role (``final`` or ``selection``)."""

    point: RunPoint
    lr: float
    role: str = "final"


@dataclass
class Trained:
    """Results of a batch of runs: ``series`` arrays ``(R, step[, layer])``, stop step and reason ``(R,)``."""

    series: dict[str, np.ndarray]
    stop_step: np.ndarray
    stop_reason: np.ndarray


def grid(spec: ExperimentSpec, seeds: int | None = None) -> list[RunPoint]:
    """Every run of the experiment (``seeds`` per grid point, default ``spec.seeds``), in output order."""
    values = [[s.name for s in spec.settings], spec.activation, spec.parametrization, spec.width, spec.init_scale]
    count = spec.seeds if seeds is None else seeds
    return [RunPoint(*point, seed) for point in itertools.product(*values) for seed in range(count)]


def log_steps(spec: ExperimentSpec) -> np.ndarray:
    """The logged steps: 0, ``log_points - 1`` geometric steps up to ``max_steps``, and every check step.

    Every check of the stopping rule is a logged step, so a run's state at its
    ``stop_step`` is always recorded.
    """
    stop = spec.stop
    spaced = np.rint(np.geomspace(1, stop.max_steps, max(spec.log_points - 1, 1))).astype(np.int64)
    checks = np.arange(0, stop.max_steps + 1, stop.check_every)
    return np.unique(np.concatenate([[0, stop.max_steps], spaced, checks]))


def run_generator(spec: ExperimentSpec, run: Run) -> torch.Generator:
    """The generator of one run, keyed by its hyperparameters, role and seed index (not its learning rate)."""
    point = run.point
    setting = spec.setting(point.setting)
    key = {
        "dataset": spec.dataset.key(),
        "depth": spec.depth,
        "batch_size": spec.batch_size,
        "setting": {"init_correlation": setting.init_correlation, "target_scale": setting.target_scale},
        "activation": point.activation,
        "parametrization": point.parametrization,
        "width": point.width,
        "init_scale": point.init_scale,
        "role": run.role,
    }
    return keyed_generator(key, point.seed)


def per_run_loss(outputs: torch.Tensor, targets: torch.Tensor, loss: str) -> torch.Tensor:
    """Loss of each run, shape ``(R,)``: ``1/2 mean |f - y|^2`` or mean cross-entropy.

    ``targets`` are shared ``(N, ...)`` or per run ``(R, N, ...)``.
    """
    if loss == "mse":
        return 0.5 * (outputs - targets).pow(2).sum(-1).mean(-1)
    runs, samples, classes = outputs.shape
    labels = targets.expand(runs, samples).reshape(-1)
    return F.cross_entropy(outputs.reshape(-1, classes), labels, reduction="none").view(runs, samples).mean(1)


def zero_output_loss(dataset: Dataset, loss: str) -> float:
    """Training loss of the network that outputs 0: ``1/2 mean |y|^2`` (MSE) or ``log(classes)``."""
    if loss == "cross_entropy":
        return float(np.log(dataset.n_out))
    targets = as_targets(dataset, dataset.y_train, loss, torch.float64)
    return float(0.5 * targets.pow(2).sum(-1).mean())


def linear_theory_applies(spec: ExperimentSpec, dataset: Dataset) -> bool:
    """Whether the solvable model predicts the network: scalar regression, two layers, MSE."""
    scalar_regression = dataset.task == "regression" and dataset.n_in == 1 and dataset.n_out == 1
    return scalar_regression and spec.depth == 2 and spec.loss == "mse"


def linear_theory_zeta(model: BatchedFCN, dataset: Dataset, lr: torch.Tensor, steps: np.ndarray) -> np.ndarray:
    """``|cos(u, w)|`` of the solvable model's gradient flow from this network's start, ``(R, step)``.

    ``u = theta_2``, ``w = theta_1``, ``kappa = m_1 m_2``, ``eta_l = lr_l`` and
    time ``t = step`` (``docs/model.md``); exact for linear activations up to
    the GD-versus-flow difference, a prediction otherwise.
    """
    u = model.weights[1][:, 0, :].detach().double().numpy()
    w = model.weights[0][:, :, 0].detach().double().numpy()
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


class _Sampler:
    """Minibatch indices of one run: epochs of permutations from its own generator (remainder dropped)."""

    def __init__(self, n_samples: int, batch_size: int, generator: torch.Generator):
        self.n_samples, self.batch_size, self.generator = n_samples, batch_size, generator
        self.per_epoch = n_samples // batch_size
        self.order = torch.empty(0, dtype=torch.int64)
        self.position = self.per_epoch

    def next(self) -> torch.Tensor:
        if self.position == self.per_epoch:
            self.order = torch.randperm(self.n_samples, generator=self.generator)
            self.position = 0
        start = self.position * self.batch_size
        self.position += 1
        return self.order[start : start + self.batch_size]


def _evaluate(model: BatchedFCN, x: torch.Tensor, y: torch.Tensor, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
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


def _stop_reasons(
    spec: ExperimentSpec, step: int, steps: np.ndarray, column: int, losses: np.ndarray, stop_loss: float
) -> np.ndarray:
    """Why each run of ``losses`` (``(R, logged steps so far)``) stops at ``step``; -1 where it trains on."""
    rule = spec.stop
    current = losses[:, column]
    reasons = np.full(len(current), -1)
    if rule.plateau_window is not None and step >= rule.plateau_window:
        before = np.searchsorted(steps, step - rule.plateau_window, side="right") - 1
        flat = current > (1.0 - rule.plateau_tolerance) * losses[:, before]
        reasons[flat & (current < 0.5 * losses[:, 0])] = PLATEAU
    if rule.loss_target is not None:
        reasons[current <= stop_loss] = LOSS_TARGET
    if step == rule.max_steps:
        reasons[reasons < 0] = MAX_STEPS
    reasons[~np.isfinite(current)] = DIVERGED
    return reasons


def train_runs(
    spec: ExperimentSpec,
    dataset: Dataset,
    runs: Sequence[Run],
    setting: Setting,
    *,
    measure: bool = True,
    progress: Progress | None = None,
    label: str = "",
) -> Trained:
    """Train ``runs`` (same setting, activation and width) together until each one stops.

    Parameters
    ----------
    spec, dataset, setting
        The experiment, the data the runs train and evaluate on, and their setting.
    runs
        The runs, each with its own base learning rate.
    measure
        Log the feature-learning metrics (``zeta``, ``rho``, ``distance``,
        NTK changes); without them only the losses and accuracy are logged
        (selection runs).
    progress, label
        Reports of the step reached and the training losses, prefixed with ``label``.
    """
    dtype = DTYPES[spec.dtype]
    activation, width = runs[0].point.activation, runs[0].point.width
    layer_sizes = [dataset.n_in, *([width] * (spec.depth - 1)), dataset.n_out]
    scalings = [layer_scaling(run.point.parametrization, layer_sizes) for run in runs]
    generators = [run_generator(spec, run) for run in runs]
    model = init_network(
        layer_sizes,
        activation,
        scalings,
        [run.point.init_scale for run in runs],
        generators,
        init_correlation=setting.init_correlation,
        init_direction=dataset.init_direction,
        dtype=dtype,
    )
    layer_lr = np.asarray(spec.lr_multipliers or [1.0] * spec.depth)
    run_lr = np.stack([run.lr * s.lr_multiplier * layer_lr for run, s in zip(runs, scalings)])
    lr = torch.as_tensor(run_lr, dtype=dtype)

    x_train = torch.as_tensor(dataset.x_train, dtype=dtype)
    x_test = torch.as_tensor(dataset.x_test, dtype=dtype)
    y_train = as_targets(dataset, dataset.y_train, spec.loss, dtype)
    y_test = as_targets(dataset, dataset.y_test, spec.loss, dtype)
    probe = x_train[: spec.probe_size]
    steps = log_steps(spec)
    stop_loss = (spec.stop.loss_target or 0.0) * zero_output_loss(dataset, spec.loss)
    classification = dataset.task == "classification"
    full_batch = spec.batch_size is None or spec.batch_size == len(x_train)
    samplers = [] if full_batch else [_Sampler(len(x_train), spec.batch_size, g) for g in generators]

    series: dict[str, np.ndarray] = {}
    initial = model.subset(torch.arange(len(runs)))
    initial_weights = initial.effective_weights()
    initial_ntk = metrics.layer_ntks(model, probe) if measure else None
    # Rows of the stack still training, as indices into ``runs``; stopped runs leave the stack.
    rows = torch.arange(len(runs))
    stop_index = np.zeros(len(runs), dtype=np.int64)
    stop_reason = np.full(len(runs), -1)
    for w in model.weights:
        w.requires_grad_(True)

    def record(column: int) -> None:
        values = {}
        values["train_loss"], _ = _evaluate(model, x_train, y_train, spec.loss)
        values["test_loss"], accuracy = _evaluate(model, x_test, y_test, spec.loss)
        values["test_accuracy"] = accuracy if classification else torch.full_like(accuracy, float("nan"))
        if measure:
            weights = model.effective_weights()
            start = [w[rows] for w in initial_weights]
            kernels = metrics.layer_ntks(model, probe)
            values["zeta"] = metrics.alignment(weights)
            values["rho"] = metrics.rescaling(weights, start)
            values["distance"] = metrics.distance(weights, start)
            values["ntk_change"] = metrics.relative_change(kernels.sum(1), initial_ntk[rows].sum(1))
            values["layer_ntk_change"] = metrics.relative_change(kernels, initial_ntk[rows])
        for name, value in values.items():
            value = value.double().numpy()
            if name not in series:
                series[name] = np.full((len(runs), len(steps), *value.shape[1:]), np.nan)
            series[name][rows.numpy(), column] = value

    started = last_report = time.perf_counter()
    next_report = 0
    column = 0
    for step in range(spec.stop.max_steps + 1):
        if step == steps[column]:
            with torch.no_grad():
                record(column)
            index = rows.numpy()
            reasons = _stop_reasons(spec, step, steps, column, series["train_loss"][index], stop_loss)
            stopping = reasons >= 0
            stop_index[index[stopping]] = column
            stop_reason[index[stopping]] = reasons[stopping]
            if progress is not None and (step >= next_report or time.perf_counter() - last_report > PROGRESS_SECONDS):
                losses = series["train_loss"][index, column]
                progress(
                    f"{label}: step {step}/{spec.stop.max_steps}, {len(index) - stopping.sum()}/{len(runs)} runs "
                    f"training, train loss median {np.median(losses):.3g} (min {losses.min():.3g}, "
                    f"max {losses.max():.3g}), {time.perf_counter() - started:.0f} s"
                )
                last_report = time.perf_counter()
                next_report = step + max(1, spec.stop.max_steps // 10)
            if stopping.any():
                keep = torch.as_tensor(~stopping)
                rows = rows[keep]
                if len(rows) == 0:
                    break
                model = model.subset(keep.nonzero()[:, 0])
                lr = lr[keep]
                samplers = [s for s, k in zip(samplers, keep.tolist()) if k]
            column += 1
        index = None if full_batch else torch.stack([s.next() for s in samplers])
        outputs = model(x_train if index is None else x_train[index])
        targets = y_train if index is None else y_train[index]
        gradients = torch.autograd.grad(per_run_loss(outputs, targets, spec.loss).sum(), model.weights)
        with torch.no_grad():
            for layer, (w, g) in enumerate(zip(model.weights, gradients)):
                w.addcmul_(lr[:, layer, None, None], g, value=-1.0)

    # After its stop a run is frozen: its logged values stay those of its stop step.
    for values in series.values():
        for run, column in enumerate(stop_index):
            values[run, column + 1 :] = values[run, column]
    if measure and linear_theory_applies(spec, dataset):
        theory_zeta = linear_theory_zeta(initial, dataset, torch.as_tensor(run_lr), steps)
        for run, column in enumerate(stop_index):
            theory_zeta[run, column + 1 :] = theory_zeta[run, column]
        series["zeta_theory"] = theory_zeta
    if progress is not None:
        converged = np.isin(stop_reason, (LOSS_TARGET, PLATEAU)).sum()
        progress(
            f"{label}: {len(runs)} runs done in {time.perf_counter() - started:.1f} s, stop steps "
            f"{steps[stop_index].min()}..{steps[stop_index].max()}, {converged} converged by the rule"
        )
    return Trained(series, steps[stop_index], stop_reason)


def runs_per_batch(samples_per_step: int, width: int) -> int:
    """How many runs to stack so one activation tensor stays within :data:`ELEMENT_BUDGET`.

    Larger tensors gain nothing from stacking: the work per run is already
    large, and the stacked tensors fall out of cache.
    """
    return max(1, ELEMENT_BUDGET // (samples_per_step * width))


def _train_all(
    spec: ExperimentSpec,
    datasets: Mapping[str, Dataset],
    runs: Sequence[Run],
    *,
    measure: bool,
    batch_runs: bool,
    progress: Progress | None,
    role: str,
) -> dict[Run, tuple[dict[str, np.ndarray], int, int]]:
    """Train ``runs`` in stacks of one architecture; each run's ``(series, stop step, stop reason)``."""
    results = {}
    for setting, activation, width in itertools.product(spec.settings, spec.activation, spec.width):
        architecture = (setting.name, activation, width)
        group = [r for r in runs if (r.point.setting, r.point.activation, r.point.width) == architecture]
        dataset = datasets[setting.name]
        samples = min(spec.batch_size or len(dataset.x_train), len(dataset.x_train))
        size = runs_per_batch(samples, width) if batch_runs else 1
        for start in range(0, len(group), size):
            batch = group[start : start + size]
            label = (
                f"{role} setting={setting.name} activation={activation} width={width} "
                f"runs {start + 1}-{start + len(batch)}/{len(group)}"
            )
            trained = train_runs(spec, dataset, batch, setting, measure=measure, progress=progress, label=label)
            for row, run in enumerate(batch):
                series = {name: values[row] for name, values in trained.series.items()}
                results[run] = (series, int(trained.stop_step[row]), int(trained.stop_reason[row]))
    return results


def _grid_shape(spec: ExperimentSpec) -> tuple[int, ...]:
    """Sizes of the sweep dimensions :data:`SWEEP_DIMS`."""
    return (len(spec.settings), len(spec.activation), len(spec.parametrization), len(spec.width), len(spec.init_scale))


def _grid_point(spec: ExperimentSpec, index: Sequence[int]) -> tuple[str, str, str, int, float]:
    """The grid point ``(setting, activation, parametrization, width, init_scale)`` at ``index``."""
    s, a, p, w, i = index
    return (spec.settings[s].name, spec.activation[a], spec.parametrization[p], spec.width[w], spec.init_scale[i])


def _grid_index(spec: ExperimentSpec, point: RunPoint) -> tuple[int, ...]:
    """Index of ``point``'s grid point in arrays of shape :func:`_grid_shape`."""
    values = ([s.name for s in spec.settings], spec.activation, spec.parametrization, spec.width, spec.init_scale)
    return tuple(list(v).index(x) for v, x in zip(values, point.grid_point))


def _select_learning_rates(
    spec: ExperimentSpec,
    validation: Mapping[str, Dataset],
    *,
    batch_runs: bool,
    progress: Progress | None,
) -> tuple[dict[tuple, float], dict[str, np.ndarray]]:
    """The chosen base learning rate of every grid point, and the selection runs' results.

    ``validation`` holds datasets whose evaluation split is the validation
    split. A candidate whose selection runs all converged beats one with a run
    that did not; among equals the best mean validation score wins (ties: the
    larger learning rate, which reaches the stop in fewer steps). Returns
    ``({grid point: lr}, results)``: ``score``, ``stop`` and ``converged`` of
    shape ``(grid dims..., lr_factor, selection_seed)`` and ``factor`` (grid
    dims), the chosen candidate.
    """
    selection = spec.lr_selection
    candidates = {
        (point, k): Run(point, spec.learning_rate(point.parametrization, point.width, factor), "selection")
        for point in grid(spec, selection.seeds)
        for k, factor in enumerate(selection.factors)
    }
    trained = _train_all(
        spec,
        validation,
        list(candidates.values()),
        measure=False,
        batch_runs=batch_runs,
        progress=progress,
        role="lr selection",
    )
    shape = (*_grid_shape(spec), len(selection.factors), selection.seeds)
    results = {name: np.full(shape, np.nan) for name in ("score", "stop", "converged")}
    metric = "test_accuracy" if selection.metric == "accuracy" else "test_loss"
    for (point, k), run in candidates.items():
        series, stop_step, reason = trained[run]
        at = (*_grid_index(spec, point), k, point.seed)
        results["score"][at] = series[metric][-1]
        results["stop"][at] = stop_step
        results["converged"][at] = reason in (LOSS_TARGET, PLATEAU)
    sign = 1.0 if selection.metric == "accuracy" else -1.0
    chosen = {}
    results["factor"] = np.full(_grid_shape(spec), np.nan)
    for index in np.ndindex(_grid_shape(spec)):
        scores = np.nan_to_num(sign * results["score"][index].mean(axis=-1), nan=-np.inf)
        converged = results["converged"][index].all(axis=-1)
        best = max(range(len(selection.factors)), key=lambda k: (converged[k], scores[k], selection.factors[k]))
        point = _grid_point(spec, index)
        chosen[point] = spec.learning_rate(point[2], point[3], selection.factors[best])
        results["factor"][index] = selection.factors[best]
    return chosen, results


def run_experiment(
    spec: ExperimentSpec | Mapping[str, Any],
    *,
    cifar10_path: str | None = None,
    progress: Progress | None = None,
    batch_runs: bool = True,
) -> xr.Dataset:
    """Train every run of an experiment and return the metrics as a dataset (``docs/nonlinear.md``).

    Parameters
    ----------
    spec
        The experiment: an :class:`ExperimentSpec` or its resolved mapping.
    cifar10_path
        Folder of the CIFAR-10 python batches (CIFAR-10 experiments only).
    progress
        Called with one line of text as training goes (step, training loss).
    batch_runs
        With ``False`` every run is trained alone (the plain loop the
        benchmark compares against; results agree to rounding).

    Returns
    -------
    xarray.Dataset
        Dimensions ``setting, activation, parametrization, width, init_scale,
        seed, step`` and ``layer``; with a learning-rate selection also
        ``lr_factor, selection_seed``.

    Raises
    ------
    ValueError
        The spec's problems (:func:`~featlearn.nonlinear.spec.spec_problems`), one per line.
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    if not isinstance(spec, ExperimentSpec):
        spec = ExperimentSpec.from_mapping(spec)
    problems = spec.problems(cifar10_path=cifar10_path)
    if problems:
        raise ValueError("invalid nonlinear experiment: " + "; ".join(f"{f}: {m}" for f, m in problems))
    datasets = {
        s.name: data.load_dataset(spec.dataset, cifar10_path=cifar10_path, target_scale=s.target_scale)
        for s in spec.settings
    }
    selection = None
    if spec.lr_selection is not None:
        validation = {
            s.name: data.load_dataset(
                spec.dataset,
                cifar10_path=cifar10_path,
                target_scale=s.target_scale,
                n_validation=spec.lr_selection.n_validation,
            )
            for s in spec.settings
        }
        chosen, selection = _select_learning_rates(spec, validation, batch_runs=batch_runs, progress=progress)
    else:
        chosen = {p.grid_point: spec.learning_rate(p.parametrization, p.width) for p in grid(spec, 1)}
    runs = [Run(point, chosen[point.grid_point]) for point in grid(spec)]
    trained = _train_all(spec, datasets, runs, measure=True, batch_runs=batch_runs, progress=progress, role="train")
    if progress is not None:
        # CPU time beside wall time: with one torch thread it is the job's cost on an idle core.
        converged = sum(reason in (LOSS_TARGET, PLATEAU) for _, _, reason in trained.values())
        progress(
            f"{len(runs)} runs trained ({converged} stopped by their rule) in {time.perf_counter() - started:.0f} s, "
            f"{time.process_time() - cpu_started:.0f} s CPU"
        )
    return _assemble(spec, datasets, runs, trained, chosen, selection)


def _assemble(
    spec: ExperimentSpec,
    datasets: Mapping[str, Dataset],
    runs: Sequence[Run],
    trained: Mapping[Run, tuple[dict[str, np.ndarray], int, int]],
    chosen: Mapping[tuple, float],
    selection: Mapping[str, np.ndarray] | None,
) -> xr.Dataset:
    """The experiment's dataset from its trained runs."""
    coords: dict[str, Any] = {
        "setting": [s.name for s in spec.settings],
        "activation": list(spec.activation),
        "parametrization": list(spec.parametrization),
        "width": list(spec.width),
        "init_scale": list(spec.init_scale),
        "seed": list(range(spec.seeds)),
        "step": log_steps(spec),
        "layer": np.arange(1, spec.depth + 1),
    }
    grid_dims = SWEEP_DIMS
    run_dims = (*SWEEP_DIMS, "seed")
    shape = (*_grid_shape(spec), spec.seeds)

    def place(values: Callable[[Run], np.ndarray | float], dtype: type = float) -> np.ndarray:
        """Per-run values on the grid, shape ``(grid dims..., seed, ...)``."""
        first = np.asarray(values(runs[0]))
        out = np.zeros(shape + first.shape, dtype=dtype)
        for run in runs:
            out[(*_grid_index(spec, run.point), run.point.seed)] = values(run)
        return out

    data_vars: dict[str, tuple] = {}
    for name in trained[runs[0]][0]:
        values = place(lambda run, name=name: trained[run][0][name])
        dims = (*run_dims, "step", "layer")[: values.ndim]
        data_vars[name] = (dims, values)
    data_vars["stop_step"] = (run_dims, place(lambda run: trained[run][1], np.int64))
    reason = place(lambda run: trained[run][2], np.int8)
    data_vars["stop_reason"] = (run_dims, reason)
    data_vars["converged"] = (run_dims, np.isin(reason, (LOSS_TARGET, PLATEAU)).astype(np.int8))
    lr_selected = [chosen[_grid_point(spec, index)] for index in np.ndindex(_grid_shape(spec))]
    data_vars["lr_selected"] = (grid_dims, np.reshape(lr_selected, _grid_shape(spec)))
    null_losses = [zero_output_loss(datasets[s.name], spec.loss) for s in spec.settings]
    data_vars["stop_loss"] = ("setting", np.array(null_losses) * (spec.stop.loss_target or np.nan))
    if selection is not None:
        selection_dims = (*grid_dims, "lr_factor", "selection_seed")
        coords["lr_factor"] = list(spec.lr_selection.factors)
        coords["selection_seed"] = list(range(spec.lr_selection.seeds))
        data_vars["validation_score"] = (selection_dims, selection["score"])
        data_vars["validation_stop_step"] = (selection_dims, selection["stop"].astype(np.int64))
        data_vars["validation_converged"] = (selection_dims, selection["converged"].astype(np.int8))
        data_vars["lr_factor_selected"] = (grid_dims, selection["factor"])
    ds = xr.Dataset(data_vars, coords=coords)
    ds["init_correlation"] = ("setting", [s.init_correlation for s in spec.settings])
    first = next(iter(datasets.values()))
    if first.name == "teacher":
        scales = [spec.dataset.target_scale if s.target_scale is None else s.target_scale for s in spec.settings]
        ds["target_scale"] = ("setting", scales)
    ds = ds.set_coords([name for name in ("init_correlation", "target_scale") if name in ds])
    measures = ["delta_zeta", "rho_final", "distance_final", "ntk_change_final", "layer_ntk_change_final"]
    ds = ds.merge(at_stop(ds)[measures])
    stop = spec.stop
    ds.attrs.update(
        dataset=first.name,
        dataset_source=first.source,
        normalisation=first.normalisation,
        task=first.task,
        n_train=len(first.x_train),
        n_test=len(first.x_test),
        n_validation=spec.lr_selection.n_validation if spec.lr_selection else 0,
        loss=spec.loss,
        depth=spec.depth,
        lr=spec.describe_lr(),
        lr_selection=(
            f"best mean validation {spec.lr_selection.metric} of {spec.lr_selection.seeds} seed(s) per candidate, "
            "candidates whose runs all converged first, ties to the larger lr"
            if spec.lr_selection
            else "none: the configured lr"
        ),
        max_steps=stop.max_steps,
        loss_target=stop.loss_target if stop.loss_target is not None else "none",
        plateau=(
            f"window {stop.plateau_window} steps, tolerance {stop.plateau_tolerance}" if stop.plateau_window else "none"
        ),
        check_every=stop.check_every,
        steps_after_stop="held at the run's stop_step value (the run is frozen)",
        batch_size=spec.batch_size if spec.batch_size is not None else "full",
        probe_size=spec.probe_size,
        dtype=spec.dtype,
    )
    if spec.lr_selection:
        ds.attrs["selection_metric"] = spec.lr_selection.metric
    return contract.annotate(ds, "nonlinear")
