"""Feature-learning metrics of batched networks (definitions in ``docs/nonlinear.md``, "Metrics").

All functions take a :class:`~featlearn.nonlinear.models.BatchedFCN` (or its
weights) and return one value per run (leading dimension ``R``).
"""

from __future__ import annotations

import itertools

import torch
from torch.func import jacrev, vmap

from featlearn.nonlinear.models import ACTIVATIONS, BatchedFCN


def alignment(weights: list[torch.Tensor]) -> torch.Tensor:
    """``zeta_l = |W_{l+1} W_l|_F / (|W_{l+1}|_F |W_l|_F)``, shape ``(R, L)``.

    Layer ``L`` has no successor: its entry is NaN. Multipliers cancel, so raw
    or effective weights give the same value.
    """
    columns = []
    for lower, upper in itertools.pairwise(weights):
        product = torch.linalg.matrix_norm(torch.bmm(upper, lower))
        columns.append(product / (torch.linalg.matrix_norm(upper) * torch.linalg.matrix_norm(lower)))
    columns.append(torch.full_like(columns[0] if columns else weights[0][:, 0, 0], float("nan")))
    return torch.stack(columns, dim=1)


def rescaling(weights: list[torch.Tensor], initial: list[torch.Tensor]) -> torch.Tensor:
    """``rho_l = log(|W_l(t)|_F / |W_l(0)|_F)``, shape ``(R, L)``."""
    return torch.stack(
        [torch.log(torch.linalg.matrix_norm(w) / torch.linalg.matrix_norm(w0)) for w, w0 in zip(weights, initial)],
        dim=1,
    )


def distance(weights: list[torch.Tensor], initial: list[torch.Tensor]) -> torch.Tensor:
    """Relative distance travelled ``|W_l(t) - W_l(0)|_F / |W_l(0)|_F``, shape ``(R, L)``."""
    return torch.stack(
        [torch.linalg.matrix_norm(w - w0) / torch.linalg.matrix_norm(w0) for w, w0 in zip(weights, initial)], dim=1
    )


def _single_forward(
    weights: list[torch.Tensor], perturbations: list[torch.Tensor], x: torch.Tensor, activation: str
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One network on one input, with ``perturbations[l]`` added to pre-activation ``l``.

    Returns the output and the input of every layer (auxiliary).
    """
    phi = ACTIVATIONS[activation]
    h = x
    layer_inputs = []
    for layer, (w, eps) in enumerate(zip(weights, perturbations)):
        layer_inputs.append(h)
        z = w @ h + eps
        h = z if layer == len(weights) - 1 else phi(z)
    return h, layer_inputs


def layer_ntks(model: BatchedFCN, probe: torch.Tensor) -> torch.Tensor:
    """Each layer's part of the empirical NTK w.r.t. ``theta_l`` on ``probe`` (``(P, n_0)``).

    Returns ``K_l`` of shape ``(R, L, P * n_L, P * n_L)`` with entries
    ``K_l[(x, o), (x', o')] = sum_{theta in theta_l} df_o(x)/dtheta df_o'(x')/dtheta``;
    the NTK is their sum over layers (:func:`empirical_ntk`).
    For a dense layer ``df_o/dtheta_l = m_l g_lo h_{l-1}^T`` with
    ``g_lo = df_o/dz_l``, so ``K_l = m_l^2 (g_l . g_l') (h_{l-1} . h_{l-1}')``;
    the backward signals ``g_l`` come from :func:`torch.func.jacrev` with
    respect to zero perturbations of the pre-activations, which avoids
    materialising the ``(P n_L) x n_params`` Jacobian.
    """
    weights = model.effective_weights()
    zeros = [torch.zeros(w.shape[1], dtype=w.dtype) for w in weights]

    def signals(run_weights: list[torch.Tensor], x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return jacrev(_single_forward, argnums=1, has_aux=True)(run_weights, zeros, x, model.activation)

    per_point = vmap(signals, in_dims=(None, 0))
    backward, layer_inputs = vmap(per_point, in_dims=(0, None))(weights, probe)
    runs, points = weights[0].shape[0], probe.shape[0]
    outputs = weights[-1].shape[1]
    kernels = []
    for m, g, h in zip(model.multipliers.T, backward, layer_inputs):
        # g: (R, P, n_L, n_l); h: (R, P, n_{l-1})
        signal_gram = torch.einsum("rpon,rqkn->rpoqk", g, g)
        input_gram = torch.einsum("rpi,rqi->rpq", h, h)
        kernel = (m**2)[:, None, None, None, None] * signal_gram * input_gram[:, :, None, :, None]
        kernels.append(kernel.reshape(runs, points * outputs, points * outputs))
    return torch.stack(kernels, dim=1)


def empirical_ntk(model: BatchedFCN, probe: torch.Tensor) -> torch.Tensor:
    """Empirical NTK ``K = sum_l K_l`` (:func:`layer_ntks`), shape ``(R, P * n_L, P * n_L)``."""
    return layer_ntks(model, probe).sum(dim=1)


def relative_change(current: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    """``|K_t - K_0|_F / |K_0|_F`` per matrix for stacked matrices ``(..., n, n)``."""
    return torch.linalg.matrix_norm(current - initial) / torch.linalg.matrix_norm(initial)
