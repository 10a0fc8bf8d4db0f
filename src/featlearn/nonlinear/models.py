"""Fully connected networks whose runs of a sweep are trained together.

A network with layer sizes ``n_0, ..., n_L`` has trainable matrices
``theta_l`` of shape ``(n_l, n_{l-1})`` and effective weights
``W_l = m_l * theta_l``; it computes ``h_l = phi(W_l h_{l-1})`` for hidden
layers and ``f = W_L h_{L-1}`` (no biases, so a linear 2-layer network with
scalar input and output *is* the solvable model of ``docs/model.md`` with
``kappa = m_1 m_2``, ``u = theta_2``, ``w = theta_1``). Gradient descent acts on
``theta_l`` with the learning rate ``lr * e_l``.

The parametrization fixes the multiplier ``m_l``, the initial standard
deviation ``s_l`` of ``theta_l`` (times the init-scale multiplier) and the
learning-rate multiplier ``e_l`` (``fan_in`` is ``n_{l-1}``, ``n`` the width):

============  ===========================  ===============  ======
name          m_l                          s_l              e_l
============  ===========================  ===============  ======
standard      1                            1/sqrt(fan_in)   1
ntk           1/sqrt(fan_in)               1                1
mean_field    1/sqrt(fan_in); 1/n at L     1                n
============  ===========================  ===============  ======

``mean_field`` is muP written in its NTK-like form (Yang & Hu 2021, the
output multiplier is 1/n instead of 1/sqrt(n) and the learning rate grows
like the width); for two layers it is the mean-field network
``f = (1/n) sum_i a_i phi(w_i . x / sqrt(d))`` and matches the mean-field
row ``(a, c) = (1, -1)`` of the solvable model's parametrizations (``docs/model.md``).

*Width exponents* (:func:`exponent_scaling`, the nonlinear phase planes of
``docs/nonlinear.md``) give every layer its own scale instead, as the solvable
model's hyperparameters ``prefactor * width^-exponent`` (``docs/phases.md``):
the readout ``theta_L`` carries the output multiplier ``m_L = kappa ~ d^-a``,
init std ``sigma_u ~ d^-b_u`` and learning rate ``eta_u ~ d^-c_u``; every
other layer the init std ``sigma_w ~ d^-b_w`` and learning rate
``eta_w ~ d^-c_w``, with the fan-in multiplier ``1/sqrt(n_0)`` for the first
layer (a constant: the input size does not grow with the width) and
``1/sqrt(n)`` for the hidden-to-hidden layers (so that at ``b_w = 0`` each
keeps its input's scale). For two layers and scalar input this is exactly
the solvable model with the same exponents.

Every tensor carries a leading *run* dimension ``R``: the runs of a sweep that
share the architecture (same depth, widths and activation) are stacked and
trained with batched matrix products; runs never interact, so each run's
gradient is the gradient of the summed loss.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from featlearn.nonlinear.data import Dataset

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": lambda z: z,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "swish": F.silu,
    "leaky_relu": partial(F.leaky_relu, negative_slope=0.01),
}

#: Derivatives of the activations, for the hand-written backward pass of :mod:`featlearn.nonlinear.planes`
#: (``linear``, whose derivative is 1, has none: the pass skips it).
DERIVATIVES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    # sign and clamp: twice as fast as (z > 0).to(dtype) on CPU, and the same values (0 at z = 0).
    "relu": lambda z: torch.sign(z).clamp_(min=0),
    "sigmoid": lambda z: torch.sigmoid(z) * (1 - torch.sigmoid(z)),
    "swish": lambda z: torch.sigmoid(z) * (1 + z * (1 - torch.sigmoid(z))),
    "leaky_relu": lambda z: torch.where(z > 0, 1.0, 0.01).to(z.dtype),
}

PARAMETRIZATIONS = ("standard", "ntk", "mean_field")

#: Torch dtypes of the ``dtype`` settings.
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def keyed_generator(key: Mapping[str, Any], seed: int) -> torch.Generator:
    """A torch generator keyed by a SHA-256 of ``key`` (JSON) and the seed index, through a SeedSequence."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).digest()
    words = np.frombuffer(digest[:16], dtype=np.uint32).tolist()
    state = np.random.SeedSequence([*words, seed]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator()
    generator.manual_seed((int(state[0]) << 31) ^ int(state[1]))
    return generator


def as_targets(dataset: Dataset, y: np.ndarray, loss: str, dtype: torch.dtype) -> torch.Tensor:
    """Training targets as tensors: one-hot for MSE on classes, labels for cross-entropy."""
    if dataset.task == "classification" and loss == "mse":
        return F.one_hot(torch.as_tensor(y), dataset.n_out).to(dtype)
    if loss == "cross_entropy":
        return torch.as_tensor(y)
    return torch.as_tensor(y, dtype=dtype)


@dataclass(frozen=True)
class LayerScaling:
    """Per-layer multiplier ``m``, initial std ``s`` and learning-rate multiplier ``e``."""

    multiplier: np.ndarray
    init_std: np.ndarray
    lr_multiplier: np.ndarray


def layer_scaling(parametrization: str, layer_sizes: Sequence[int]) -> LayerScaling:
    """The :class:`LayerScaling` of ``parametrization`` for ``layer_sizes = (n_0, ..., n_L)``."""
    fan_in = np.asarray(layer_sizes[:-1], dtype=float)
    width = float(max(layer_sizes[1:-1], default=layer_sizes[0]))
    ones = np.ones_like(fan_in)
    if parametrization == "standard":
        return LayerScaling(ones, 1.0 / np.sqrt(fan_in), ones)
    if parametrization == "ntk":
        return LayerScaling(1.0 / np.sqrt(fan_in), ones, ones)
    if parametrization == "mean_field":
        multiplier = 1.0 / np.sqrt(fan_in)
        multiplier[-1] = 1.0 / fan_in[-1]
        return LayerScaling(multiplier, ones, width * ones)
    raise ValueError(f"unknown parametrization {parametrization!r}; expected one of {PARAMETRIZATIONS}")


def exponent_scaling(
    layer_sizes: Sequence[int], *, kappa: float, sigma_u: float, sigma_w: float, eta_u: float, eta_w: float
) -> LayerScaling:
    """The :class:`LayerScaling` of the width-exponent parametrization (see the module docstring).

    Parameters
    ----------
    layer_sizes
        ``(n_0, ..., n_L)``: input size, hidden widths, outputs.
    kappa, sigma_u, sigma_w, eta_u, eta_w
        The values at this width (``prefactor * width^-exponent``, from
        :func:`featlearn.grid.hyperparameters_at`).

    Returns
    -------
    LayerScaling
        Multipliers ``(1/sqrt(n_0), 1/sqrt(n_1), ..., 1/sqrt(n_{L-2}), kappa)``,
        init stds ``(sigma_w, ..., sigma_w, sigma_u)`` and, as
        ``lr_multiplier``, the learning rates ``(eta_w, ..., eta_w, eta_u)``
        themselves (the base rate is 1).
    """
    fan_in = np.asarray(layer_sizes[:-1], dtype=float)
    multiplier = 1.0 / np.sqrt(fan_in)
    multiplier[-1] = kappa
    init_std = np.full(len(fan_in), float(sigma_w))
    init_std[-1] = sigma_u
    lr = np.full(len(fan_in), float(eta_w))
    lr[-1] = eta_u
    return LayerScaling(multiplier, init_std, lr)


@dataclass
class BatchedFCN:
    """``R`` independent fully connected networks of identical shape.

    ``weights[l]`` is ``theta_{l+1}`` with shape ``(R, n_{l+1}, n_l)``;
    ``multipliers`` has shape ``(R, L)``.
    """

    weights: list[torch.Tensor]
    multipliers: torch.Tensor
    activation: str

    @property
    def depth(self) -> int:
        return len(self.weights)

    def effective_weights(self) -> list[torch.Tensor]:
        """``W_l = m_l theta_l`` for every layer, each ``(R, n_l, n_{l-1})``."""
        return [m[:, None, None] * w for m, w in zip(self.multipliers.T, self.weights)]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``(R, N, n_L)`` for inputs ``x`` of shape ``(N, n_0)`` or ``(R, N, n_0)``.

        Activations are held as columns, ``(R, n_l, N)``: then ``z = theta h``
        makes the gradient of ``theta`` a contiguous ``(R, n_l, n_{l-1})``
        product (the row layout ``h theta^T`` gives a transposed gradient, and
        the SGD update on it ran four times slower). The multiplier scales
        the smaller of ``theta`` and ``z`` (:meth:`columns`).
        """
        return self.columns(x)[1][-1].mT

    def columns(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every layer's input ``h_{l-1}`` and pre-activation ``z_l = m_l theta_l h_{l-1}``, as columns.

        ``h_0`` is ``x.mT`` (``(n_0, N)``, or ``(R, n_0, N)``), the others
        ``(R, n_l, N)``; ``z_L`` is the output. What a hand-written backward
        pass needs (:mod:`featlearn.nonlinear.planes`).
        """
        phi = ACTIVATIONS[self.activation]
        h = x.mT
        inputs, pre_activations = [], []
        for layer, (m, w) in enumerate(zip(self.multipliers.T, self.weights)):
            inputs.append(h)
            # The multiplier scales the smaller tensor: z for wide inputs, theta for wide layers of few inputs.
            if w.shape[-1] < h.shape[-1]:
                z = torch.matmul(w * m[:, None, None], h)
            else:
                z = torch.matmul(w, h) * m[:, None, None]
            pre_activations.append(z)
            h = z if layer == self.depth - 1 else phi(z)
        return inputs, pre_activations

    def subset(self, rows: torch.Tensor) -> BatchedFCN:
        """The networks ``rows`` of the stack (copies, gradients enabled as in ``self``)."""
        weights = [w.detach()[rows].requires_grad_(w.requires_grad) for w in self.weights]
        return BatchedFCN(weights, self.multipliers[rows], self.activation)


def init_network(
    layer_sizes: Sequence[int],
    activation: str,
    scalings: Sequence[LayerScaling],
    init_scales: Sequence[float],
    generators: Sequence[torch.Generator],
    *,
    init_correlation: float = 0.0,
    init_direction: np.ndarray | None = None,
    dtype: torch.dtype = torch.float32,
) -> BatchedFCN:
    """Draw ``R = len(generators)`` networks, run ``r`` from ``generators[r]`` only.

    ``theta_l ~ N(0, (init_scale * s_l)^2)`` entrywise. With
    ``init_correlation = rho != 0`` (two-layer networks only) the readout is
    correlated with the features along ``init_direction`` (an
    ``(n_L, n_0)`` matrix with unit rows): ``theta_2 = s_2 (rho g +
    sqrt(1 - rho^2) xi)`` with ``g = init_direction theta_1^T / s_1``, the
    per-unit analogue of the solvable model's correlated start (``docs/model.md``);
    for scalar input and output it is exactly that start, and it makes the
    initial output coherent.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
    depth = len(layer_sizes) - 1
    if init_correlation != 0.0 and (depth != 2 or init_direction is None):
        raise ValueError("init_correlation needs a two-layer network and a dataset with an init_direction")
    shapes = [(layer_sizes[k + 1], layer_sizes[k]) for k in range(depth)]
    runs = []
    for scaling, scale, generator in zip(scalings, init_scales, generators):
        std = scale * scaling.init_std
        normals = [torch.randn(shape, generator=generator, dtype=torch.float64) for shape in shapes]
        if init_correlation != 0.0:
            direction = torch.as_tensor(init_direction, dtype=torch.float64)
            projection = direction @ normals[0].T
            normals[1] = init_correlation * projection + np.sqrt(1.0 - init_correlation**2) * normals[1]
        runs.append([s * z for s, z in zip(std, normals)])
    weights = [torch.stack([run[k] for run in runs]).to(dtype) for k in range(depth)]
    multipliers = torch.as_tensor(np.stack([s.multiplier for s in scalings]), dtype=dtype)
    return BatchedFCN(weights, multipliers, activation)
