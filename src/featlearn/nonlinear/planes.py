"""Training stage of the nonlinear phase planes: one plane spec in, one trajectories-like dataset out.

A plane (:class:`~featlearn.nonlinear.spec.PlaneSpec`) is a grid of width
exponents, as a linear experiment's; every grid point and seed is one
network whose layers are scaled by :func:`~featlearn.nonlinear.models.exponent_scaling`,
trained by full-batch gradient descent with step 1 on the MSE of the
training split. What is recorded is what the phase classifier of the linear
pipeline reads (:func:`featlearn.phase_diagram.analyse`), with the same
names: the training ``loss``, the output scale ``beta`` (rms output over the
training inputs and output units), the learning-rate weighted kernel scale
``ntk_eta`` and ``diverged``, on dims ``(*grid, seed, time)`` with ``time``
the GD step, and the hyperparameter and exponent coordinates. The kind is
``nonlinear_plane`` (:mod:`featlearn.contract`).

``ntk_eta`` is the mean over training inputs ``x`` and output units ``o``
of ``sum_l eta_l |df_o(x)/dtheta_l|^2``: the trace of the learning-rate
weighted empirical NTK over the number of samples, the scale a GD step of
the MSE multiplies the residual by. For the 2-layer linear network with
scalar input it is ``sigma2 K_eta`` (``K_eta = kappa^2 (eta_u |w|^2 + eta_w
|u|^2)`` of the solvable model, ``sigma2`` the inputs' second moment), so the
plane records ``sigma2 = 1``: the data's scale is inside the kernel.
For a dense layer ``df_o/dtheta_l = m_l g_lo h_{l-1}^T``, so only the
backward signals ``g_lo`` and the layer inputs are needed (no kernel matrix):
one backward pass per output unit, at the recorded steps only.

Gradients come from a hand-written backward pass through
:meth:`~featlearn.nonlinear.models.BatchedFCN.columns`, and each layer's
update is one fused ``theta -= eta m delta h^T`` (``baddbmm``): the
hidden-to-hidden matrix of a deep network is the costly tensor, and autograd
would write its gradient out and read it back (a width-2^13 step took 0.33 s
with autograd, 0.20 s fused). Runs of one width are stacked (one
:class:`~featlearn.nonlinear.models.BatchedFCN`), within :data:`STACK_ELEMENTS`.

A run stops once its loss is at most ``stop_fraction`` of its start at a
recorded step (its later records hold those values: nothing the classifier
reads changes after the learning time) or when it diverges (its later
records are NaN, as in the linear GD solver). Every run's initial weights
come from a generator keyed by the layer sizes, the two init scales and the
seed index: grid points that differ only in output scale or learning rates
start from the same draws (common random numbers, as in the linear
simulations), and a run does not depend on which runs share its stack.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from featlearn import contract
from featlearn.contract import DIVERGENCE_FACTOR, PLANE_HYPERPARAMETERS, SCALED_HYPERPARAMETERS
from featlearn.nonlinear import data
from featlearn.nonlinear.data import Dataset
from featlearn.nonlinear.models import (
    DERIVATIVES,
    DTYPES,
    BatchedFCN,
    as_targets,
    exponent_scaling,
    init_network,
    keyed_generator,
)
from featlearn.nonlinear.spec import PlaneSpec

#: Elements (weights and activations, over all runs) one stack of runs may hold: 2^23 (64 MB in float64).
STACK_ELEMENTS = 2**23

Progress = Callable[[str], None]


def layer_sizes(spec: PlaneSpec, dataset: Dataset, width: int) -> list[int]:
    """``(n_0, width, ..., width, n_out)`` of the plane's networks."""
    return [dataset.n_in, *([width] * (spec.depth - 1)), dataset.n_out]


def init_runs(
    spec: PlaneSpec, dataset: Dataset, width: int, points: Sequence[Mapping[str, Any]], seeds: Sequence[int]
) -> tuple[BatchedFCN, torch.Tensor]:
    """The stacked networks of grid points ``points`` (hyperparameters) at seeds ``seeds``, and their rates.

    Returns the :class:`BatchedFCN` and the learning rates ``(R, L)``.
    """
    sizes = layer_sizes(spec, dataset, width)
    scalings = [exponent_scaling(sizes, **{name: p[name] for name in SCALED_HYPERPARAMETERS}) for p in points]
    generators = [
        keyed_generator({"layer_sizes": sizes, "sigma_u": p["sigma_u"], "sigma_w": p["sigma_w"]}, seed)
        for p, seed in zip(points, seeds)
    ]
    dtype = DTYPES[spec.dtype]
    model = init_network(sizes, spec.activation, scalings, [1.0] * len(points), generators, dtype=dtype)
    return model, torch.as_tensor(np.stack([s.lr_multiplier for s in scalings]), dtype=dtype)


def slopes(model: BatchedFCN, pre_activations: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
    """``phi'(z_l)`` of every hidden layer (``None`` for the linear network, whose slope is 1)."""
    derivative = DERIVATIVES.get(model.activation)
    return [None if derivative is None else derivative(z) for z in pre_activations[:-1]]


def backward(
    model: BatchedFCN,
    pre_activations: Sequence[torch.Tensor],
    signal: torch.Tensor,
    hidden_slopes: Sequence[torch.Tensor | None] | None = None,
) -> list[torch.Tensor]:
    """``delta_l = d(sum signal . z_L) / dz_l`` for every layer, columns ``(R, n_l, N)``.

    ``signal`` is ``(R, n_L, N)``, one column per training sample of the
    forward pass; ``hidden_slopes`` (:func:`slopes`) when several signals
    go back through the same pass. The multiplier scales ``delta``, never
    larger than the weights it meets.
    """
    hidden_slopes = slopes(model, pre_activations) if hidden_slopes is None else hidden_slopes
    deltas = [signal]
    for layer in range(model.depth - 1, 0, -1):
        scaled = deltas[0] * model.multipliers[:, layer, None, None]
        back = torch.matmul(model.weights[layer].mT, scaled)
        if hidden_slopes[layer - 1] is not None:
            back.mul_(hidden_slopes[layer - 1])
        deltas.insert(0, back)
    return deltas


def descend(
    model: BatchedFCN, inputs: Sequence[torch.Tensor], deltas: Sequence[torch.Tensor], lr: torch.Tensor
) -> None:
    """One GD step in place: ``theta_l -= eta_l m_l delta_l h_{l-1}^T``, each one fused product.

    The rate scales the smaller of ``delta_l`` and ``h_{l-1}``.
    """
    for layer, (weight, h, delta) in enumerate(zip(model.weights, inputs, deltas)):
        rate = -(lr[:, layer] * model.multipliers[:, layer])[:, None, None]
        rows = h.mT.expand(len(lr), -1, -1)
        if h.shape[-2] < delta.shape[-2]:
            weight.baddbmm_(delta, rows * rate)
        else:
            weight.baddbmm_(delta * rate, rows)


def kernel_scale(
    model: BatchedFCN, inputs: Sequence[torch.Tensor], pre_activations: Sequence[torch.Tensor], lr: torch.Tensor
) -> torch.Tensor:
    """``ntk_eta`` per run: mean over inputs x and outputs o of ``sum_l eta_l |df_o(x)/dtheta_l|^2`` (module doc).

    One backward pass per output unit, so that it holds no more than a training step.
    """
    runs, outputs, samples = pre_activations[-1].shape
    input_norms = [torch.linalg.vector_norm(h, dim=-2).square().expand(runs, samples) for h in inputs]
    scales = [lr[:, layer] * model.multipliers[:, layer] ** 2 for layer in range(model.depth)]
    hidden_slopes = slopes(model, pre_activations)
    total = torch.zeros(runs, dtype=lr.dtype)
    for output in range(outputs):
        signal = torch.zeros(runs, outputs, samples, dtype=lr.dtype)
        signal[:, output] = 1.0
        for g, norms, scale in zip(backward(model, pre_activations, signal, hidden_slopes), input_norms, scales):
            total += scale * (torch.linalg.vector_norm(g, dim=-2).square() * norms).mean(-1)
    return total / outputs


def train_stack(
    spec: PlaneSpec, dataset: Dataset, model: BatchedFCN, lr: torch.Tensor, steps: np.ndarray
) -> dict[str, np.ndarray]:
    """Gradient descent (step 1, full batch, MSE) of a stack of runs; records ``(R, len(steps))`` and ``diverged``.

    Records at each step of ``steps`` (before that step's update): ``loss``,
    ``beta`` and ``ntk_eta``. See the module docstring for stopping.
    """
    dtype = DTYPES[spec.dtype]
    x = torch.as_tensor(dataset.x_train, dtype=dtype)
    y = as_targets(dataset, dataset.y_train, "mse", dtype).reshape(len(x), -1).mT  # columns (n_out, N)
    runs = len(lr)
    records = {name: np.full((runs, len(steps)), np.nan) for name in ("loss", "beta", "ntk_eta")}
    diverged = np.zeros(runs, dtype=bool)
    rows = np.arange(runs)  # the stack's runs, as indices into the records
    loss0 = None
    column = 0
    with torch.no_grad():
        for step in range(int(steps[-1]) + 1):
            inputs, pre = model.columns(x)
            residual = pre[-1] - y
            loss = 0.5 * residual.pow(2).sum(-2).mean(-1)
            loss0 = loss if loss0 is None else loss0
            diverging = (~torch.isfinite(loss) | (loss > DIVERGENCE_FACTOR * (1.0 + loss0))).numpy()
            diverged[rows[diverging]] = True
            stopping = diverging.copy()
            if step == steps[column]:
                values = {
                    "loss": loss,
                    "beta": pre[-1].pow(2).mean((-2, -1)).sqrt(),
                    "ntk_eta": kernel_scale(model, inputs, pre, lr),
                }
                for name, value in values.items():
                    records[name][rows, column] = np.where(diverging, np.nan, value.double().numpy())
                learned = (loss <= spec.stop_fraction * loss0).numpy() & ~diverging
                # Held from here on: every later record is this one.
                for values_of in records.values():
                    values_of[rows[learned], column + 1 :] = values_of[rows[learned], column][:, None]
                stopping |= learned
                column += 1
                if column == len(steps):
                    break
            descend(model, inputs, backward(model, pre, residual / x.shape[0]), lr)
            if stopping.any():
                keep = torch.as_tensor(np.flatnonzero(~stopping))
                rows, lr, loss0 = rows[~stopping], lr[keep], loss0[keep]
                if len(rows) == 0:
                    break
                model = model.subset(keep)
    return {**records, "diverged": diverged}


def stack_size(spec: PlaneSpec, dataset: Dataset, width: int) -> int:
    """Runs of width ``width`` per stack, so that a stack holds at most :data:`STACK_ELEMENTS` elements.

    Counted per run: the weights, and the inputs, pre-activations and
    backward signals of a step (one column per training sample; the
    kernel-scale pass takes one output unit at a time, no more).
    """
    sizes = layer_sizes(spec, dataset, width)
    weights = sum(a * b for a, b in itertools.pairwise(sizes))
    activations = 3 * sum(sizes[1:]) * len(dataset.x_train)
    return max(1, STACK_ELEMENTS // (weights + activations))


def train_plane(
    spec: PlaneSpec | Mapping[str, Any],
    *,
    cifar10_path: str | None = None,
    progress: Progress | None = None,
) -> xr.Dataset:
    """Train every run of a phase plane and return its ``nonlinear_plane`` dataset (``docs/nonlinear.md``).

    Parameters
    ----------
    spec
        The plane: a :class:`PlaneSpec` or its resolved mapping.
    cifar10_path
        Folder of the CIFAR-10 python batches (CIFAR-10 planes only).
    progress
        Called with one line of text per stack of runs.

    Returns
    -------
    xarray.Dataset
        ``loss``, ``beta``, ``ntk_eta`` on dims ``(*grid, seed, time)``,
        ``diverged`` on ``(*grid, seed)``, the hyperparameter and exponent
        coordinates, ``dt = 1``; what :func:`featlearn.phase_diagram.analyse`
        reads.
    """
    started = time.perf_counter()
    if not isinstance(spec, PlaneSpec):
        spec = PlaneSpec.from_mapping(spec)
    dataset = data.load_dataset(spec.dataset, cifar10_path=cifar10_path)
    grid = spec.grid
    points = [spec.hyperparameters(index) for index in range(grid.size)]
    steps = spec.log_steps()
    shape = (*grid.shape, spec.seeds)
    series = {name: np.full((*shape, len(steps)), np.nan) for name in ("loss", "beta", "ntk_eta")}
    diverged = np.zeros(shape, dtype=bool)
    for width in sorted({p["width"] for p in points}):
        runs = [(index, seed) for index, p in enumerate(points) if p["width"] == width for seed in range(spec.seeds)]
        size = stack_size(spec, dataset, width)
        for start in range(0, len(runs), size):
            stack = runs[start : start + size]
            model, lr = init_runs(spec, dataset, width, [points[i] for i, _ in stack], [s for _, s in stack])
            trained = train_stack(spec, dataset, model, lr, steps)
            at = tuple(np.array([(*np.unravel_index(i, grid.shape), s) for i, s in stack]).T)
            for name in series:
                series[name][at] = trained[name]
            diverged[at] = trained["diverged"]
            if progress is not None:
                progress(
                    f"width {width}: runs {start + 1}-{start + len(stack)}/{len(runs)} trained "
                    f"({int(trained['diverged'].sum())} diverged), {time.perf_counter() - started:.1f} s"
                )
    run_dims = (*grid.dims, "seed")
    data_vars: dict[str, Any] = {name: ((*run_dims, "time"), values) for name, values in series.items()}
    data_vars["diverged"] = (run_dims, diverged)
    coords: dict[str, Any] = {dim: (dim, np.array(values)) for dim, values in zip(grid.dims, grid.values)}
    for name in PLANE_HYPERPARAMETERS:
        if name not in grid.dims:
            coords[name] = (grid.dims, np.reshape([float(p[name]) for p in points], grid.shape))
    coords.update(seed=np.arange(spec.seeds), time=steps.astype(float), dt=1.0)
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update(
        featlearn_grid=grid.to_json(),
        network=f"{spec.depth} layers, {spec.activation}, no biases, width-exponent scaling",
        depth=spec.depth,
        activation=spec.activation,
        dataset=dataset.name,
        dataset_source=dataset.source,
        normalisation=dataset.normalisation,
        n_train=len(dataset.x_train),
        loss="mse: 1/2 mean over training samples of |f(x) - y|^2 (one-hot targets for classes)",
        training=f"full-batch gradient descent, step 1, {spec.steps} steps",
        stop_fraction=spec.stop_fraction,
        steps_after_stop="held at the stop (loss at most stop_fraction of its start); NaN after divergence",
        dtype=spec.dtype,
    )
    if progress is not None:
        progress(f"{len(points) * spec.seeds} runs trained in {time.perf_counter() - started:.1f} s")
    return contract.annotate(ds, "nonlinear_plane")
