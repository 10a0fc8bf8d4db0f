"""Exact theory of the one-hidden-layer linear network with 1-D data.

Pure numpy: arrays in, arrays out. Every function broadcasts over any batch
of initial states and hyperparameters; functions of time take a 1-D array of
times and append it as the last axis.

The model is ``f(x) = kappa (u . w) x = beta x`` with u, w in R^d, trained on
the squared loss ``L = sigma2 (beta - beta_star)^2 / 2`` with layer-wise
learning rates ``eta_u`` and ``eta_w``. The dynamics depend on (u, w) only
through the Gram entries ``uu = |u|^2``, ``ww = |w|^2`` and ``uw = u . w``
(see ``docs/model.md`` for the derivation).

Numerical notes
---------------
The closed-form trajectory is written as *increments* from the initial Gram
entries, ``uu(t) = uu0 + eta_u (z - 1)(P - Q/z) / 4`` and likewise for
``ww`` and ``uw``, with ``z - 1`` computed directly (not as ``z`` minus one).
This keeps small kernel changes (down to ~1e-12 relative at width 10^6)
accurate, and keeps the conserved quantity exact to rounding. The numerator
and denominator of the Riccati solution are assembled from non-negative
terms only, so neither cancels when ``lambda t`` is large.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


class Gram(NamedTuple):
    """Gram entries ``uu = |u|^2``, ``ww = |w|^2``, ``uw = u . w`` (broadcastable arrays)."""

    uu: FloatArray
    ww: FloatArray
    uw: FloatArray


class Hyperparameters(NamedTuple):
    """Training hyperparameters, each broadcastable against the batch of initial states."""

    kappa: ArrayLike
    eta_u: ArrayLike
    eta_w: ArrayLike
    beta_star: ArrayLike
    sigma2: ArrayLike


# ---------------------------------------------------------------------------
# initial states


def gram_from_vectors(u: ArrayLike, w: ArrayLike) -> Gram:
    """Gram entries of width-d vectors (the last axis is the width)."""
    u = np.asarray(u, dtype=float)
    w = np.asarray(w, dtype=float)
    return Gram(np.einsum("...i,...i->...", u, u), np.einsum("...i,...i->...", w, w), np.einsum("...i,...i->...", u, w))


def _correlate(x1: FloatArray, x2: FloatArray, rho: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Apply the Cholesky factor of [[1, rho], [rho, 1]] to two independent standard draws."""
    rho = np.asarray(rho, dtype=float)
    return x1, rho * x1 + np.sqrt(1.0 - rho**2) * x2


def sample_vectors(
    rng: np.random.Generator, width: int, sigma_u: float, sigma_w: float, rho: float, size: int
) -> tuple[FloatArray, FloatArray]:
    """Draw ``size`` pairs of width-d vectors with i.i.d. coordinates.

    ``u_i ~ N(0, sigma_u^2)``, ``w_i ~ N(0, sigma_w^2)``, ``corr(u_i, w_i) = rho``.
    Returns arrays of shape ``(size, width)``.
    """
    x = rng.standard_normal((2, size, width))
    x1, x2 = _correlate(x[0], x[1], rho)
    return sigma_u * x1, sigma_w * x2


def sample_gram(rng: np.random.Generator, width: int, sigma_u: float, sigma_w: float, rho: float, size: int) -> Gram:
    """Exact draw of the Gram entries of :func:`sample_vectors`, in O(1) per draw.

    The Gram matrix of two independent standard width-d vectors is a 2x2
    Wishart matrix with d degrees of freedom; its Bartlett decomposition
    ``[[c1, 0], [n, c2]]`` has ``c1^2 ~ chi2(d)``, ``c2^2 ~ chi2(d - 1)`` and
    ``n ~ N(0, 1)``. The correlation is applied with the Cholesky factor of
    ``[[1, rho], [rho, 1]]`` and the scales last.
    """
    c1_sq = rng.chisquare(width, size)
    c2_sq = rng.chisquare(width - 1, size) if width > 1 else np.zeros(size)
    n = rng.standard_normal(size)
    c1 = np.sqrt(c1_sq)
    # Gram of the independent pair: [[c1^2, c1 n], [c1 n, n^2 + c2^2]].
    xx, xy, yy = c1_sq, c1 * n, n**2 + c2_sq
    cross = np.sqrt(1.0 - rho**2)
    uu = sigma_u**2 * xx
    uw = sigma_u * sigma_w * (rho * xx + cross * xy)
    ww = sigma_w**2 * (rho**2 * xx + 2 * rho * cross * xy + cross**2 * yy)
    return Gram(uu, ww, uw)


# ---------------------------------------------------------------------------
# observables


def output(kappa: ArrayLike, gram: Gram) -> FloatArray:
    """Network slope ``beta = kappa u.w``."""
    return np.asarray(kappa) * gram.uw


def loss(beta: ArrayLike, beta_star: ArrayLike, sigma2: ArrayLike) -> FloatArray:
    """Excess squared loss ``sigma2 (beta - beta_star)^2 / 2``."""
    return 0.5 * np.asarray(sigma2) * (np.asarray(beta) - np.asarray(beta_star)) ** 2


def cosine(gram: Gram) -> FloatArray:
    """Cosine of the angle between u and w (0 where either vector vanishes)."""
    norm = np.sqrt(gram.uu * gram.ww)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norm > 0, gram.uw / np.where(norm > 0, norm, 1.0), 0.0)


def ntk(kappa: ArrayLike, gram: Gram) -> FloatArray:
    """Plain neural tangent kernel ``kappa^2 (uu + ww)`` (per unit x x')."""
    return np.asarray(kappa) ** 2 * (gram.uu + gram.ww)


def ntk_eta(kappa: ArrayLike, eta_u: ArrayLike, eta_w: ArrayLike, gram: Gram) -> FloatArray:
    """Learning-rate weighted kernel ``kappa^2 (eta_u ww + eta_w uu)`` that drives beta."""
    return np.asarray(kappa) ** 2 * (np.asarray(eta_u) * gram.ww + np.asarray(eta_w) * gram.uu)


def conserved_quantity(eta_u: ArrayLike, eta_w: ArrayLike, gram: Gram) -> FloatArray:
    """``C = eta_w uu - eta_u ww``, constant along gradient flow."""
    return np.asarray(eta_w) * gram.uu - np.asarray(eta_u) * gram.ww


def laziness_scale(gram0: Gram, hyper: Hyperparameters) -> FloatArray:
    """``M = kappa (sqrt(eta_w/eta_u) uu0 + sqrt(eta_u/eta_w) ww0)``; ``M >= 2 |beta0|``."""
    eta_u, eta_w = np.asarray(hyper.eta_u, float), np.asarray(hyper.eta_w, float)
    return np.asarray(hyper.kappa) * (np.sqrt(eta_w / eta_u) * gram0.uu + np.sqrt(eta_u / eta_w) * gram0.ww)


def convergence_rate(gram0: Gram, hyper: Hyperparameters) -> FloatArray:
    """``lambda = s sigma2 kappa sqrt(M^2 + 4 (beta*^2 - beta0^2))``, with ``s = sqrt(eta_u eta_w)``."""
    return _coefficients(gram0, hyper).lam


def final_kernel_ratio(gram0: Gram, hyper: Hyperparameters) -> FloatArray:
    """``K_eta(inf) / K_eta(0) = sqrt(1 + 4 (beta*^2 - beta0^2) / M^2)`` for gradient flow."""
    beta0 = output(hyper.kappa, gram0)
    m = laziness_scale(gram0, hyper)
    return np.sqrt(1.0 + 4.0 * (np.asarray(hyper.beta_star) ** 2 - beta0**2) / m**2)


# ---------------------------------------------------------------------------
# exact gradient flow


class _Coefficients(NamedTuple):
    s: FloatArray
    a0: FloatArray
    b0: FloatArray
    p: FloatArray
    q: FloatArray
    a: FloatArray
    b: FloatArray
    d: FloatArray
    lam: FloatArray


def _coefficients(gram0: Gram, hyper: Hyperparameters) -> _Coefficients:
    """Rescaled Gram entries and Riccati coefficients (both learning rates > 0)."""
    kappa, eta_u, eta_w, beta_star, sigma2 = (np.asarray(x, dtype=float) for x in hyper)
    s = np.sqrt(eta_u * eta_w)
    a0, b0, c0 = gram0.uu / eta_u, gram0.ww / eta_w, gram0.uw / s
    # P = |u/sqrt(eta_u) + w/sqrt(eta_w)|^2 >= 0, Q likewise with a minus: clip rounding.
    p = np.maximum(a0 + b0 + 2 * c0, 0.0)
    q = np.maximum(a0 + b0 - 2 * c0, 0.0)
    a = s**2 * sigma2 * kappa**2 * q / 2
    b = 2 * s * sigma2 * kappa * beta_star
    d = s**2 * sigma2 * kappa**2 * p / 2
    lam = np.sqrt(b**2 + 4 * a * d)
    return _Coefficients(s, a0, b0, p, q, a, b, d, lam)


def _riccati(c: _Coefficients, t: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Solution z(t) of dz/dt = A + B z - D z^2, z(0) = 1, and z(t) - 1, without cancellation.

    Dividing the textbook solution by lambda gives, with g = (1 - E)/lambda and
    E = exp(-lambda t),  z = [(A + B/2) g + (1 + E)/2] / [(D - B/2) g + (1 + E)/2]
    which is finite as lambda -> 0 (g -> t). The terms that could cancel,
    (1 + E)/2 -/+ (B/2) g, are rewritten with lambda^2 - B^2 = 4 A D.
    """
    a, b, d, lam = (x[..., None] for x in (c.a, c.b, c.d, c.lam))
    lam_t = lam * t
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        g = np.where(lam > 0, -np.expm1(-lam_t) / np.where(lam > 0, lam, 1.0), t)
        e = np.exp(-lam_t)
        two_lam = np.where(lam > 0, 2 * lam, 1.0)
        # (1 + E)/2 + (B/2) g  and  (1 + E)/2 - (B/2) g, each as a sum of non-negative terms.
        plus_half = np.where(
            b >= 0,
            (1 + e) / 2 + (b / 2) * g,
            np.where(lam > 0, (4 * a * d / np.where(lam - b > 0, lam - b, 1.0) + (lam - b) * e) / two_lam, 1.0),
        )
        minus_half = np.where(
            b <= 0,
            (1 + e) / 2 - (b / 2) * g,
            (4 * a * d / np.where(lam + b > 0, lam + b, 1.0) + (lam + b) * e) / two_lam,
        )
        numerator = a * g + plus_half
        denominator = d * g + minus_half
        z = numerator / denominator
        z_minus_one = (a + b - d) * g / denominator
    return z, z_minus_one


def _frozen_layer_trajectory(gram0: Gram, hyper: Hyperparameters, t: FloatArray) -> Gram:
    """Trajectory when eta_u = 0 (u frozen) or eta_w = 0 (w frozen): beta relaxes exponentially.

    With u frozen, ``w(t) = w0 + delta(t) u`` and ``beta - beta*`` decays at rate
    ``k = eta_w sigma2 kappa^2 uu0``; symmetrically when w is frozen.
    """
    kappa, eta_u, eta_w, beta_star, sigma2 = (np.asarray(x, dtype=float)[..., None] for x in hyper)
    uu0, ww0, uw0 = (x[..., None] for x in gram0)
    u_frozen = eta_u == 0
    # The moving layer's rate and the frozen layer's squared norm.
    eta_moving = np.where(u_frozen, eta_w, eta_u)
    frozen_sq = np.where(u_frozen, uu0, ww0)
    k = eta_moving * sigma2 * kappa**2 * frozen_sq
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(k > 0, -np.expm1(-k * t) / np.where(k > 0, k, 1.0), t)
    residual0 = kappa * uw0 - beta_star
    delta = -eta_moving * sigma2 * kappa * residual0 * g
    moving_sq = np.where(u_frozen, ww0, uu0) + 2 * delta * uw0 + delta**2 * frozen_sq
    uw = uw0 + delta * frozen_sq
    uu = np.where(u_frozen, uu0 + 0 * t, moving_sq)
    ww = np.where(u_frozen, moving_sq, ww0 + 0 * t)
    return Gram(uu, ww, uw)


def flow_trajectory(gram0: Gram, hyper: Hyperparameters, t: ArrayLike) -> Gram:
    """Exact gradient-flow Gram entries at times ``t`` (appended as the last axis).

    ``gram0`` and ``hyper`` broadcast to a batch shape ``S``; the result has
    shape ``S + (len(t),)``. Handles beta* = 0 or < 0, P = 0 or Q = 0, kappa = 0,
    one learning rate 0 and large ``lambda t`` without producing NaN; squared
    norms are never negative (:func:`_nonnegative_norms`).
    """
    t = np.asarray(t, dtype=float)
    shape = np.broadcast_shapes(*(np.shape(x) for x in (*gram0, *hyper)))
    gram0 = Gram(*(np.broadcast_to(np.asarray(x, dtype=float), shape) for x in gram0))
    hyper = Hyperparameters(*(np.broadcast_to(np.asarray(x, dtype=float), shape) for x in hyper))
    frozen = (hyper.eta_u == 0) | (hyper.eta_w == 0)
    # Evaluate the general solution with harmless learning rates where a layer is frozen.
    safe = Hyperparameters(
        hyper.kappa,
        np.where(frozen, 1.0, hyper.eta_u),
        np.where(frozen, 1.0, hyper.eta_w),
        hyper.beta_star,
        hyper.sigma2,
    )
    c = _coefficients(gram0, safe)
    z, z_minus_one = _riccati(c, t)
    p, q = c.p[..., None], c.q[..., None]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        p_dz = np.where(p > 0, p * z_minus_one, 0.0)
        q_dz = np.where(q > 0, q * z_minus_one / np.where(z > 0, z, 1.0), 0.0)
    eta_u, eta_w, s = (np.asarray(x)[..., None] for x in (safe.eta_u, safe.eta_w, c.s))
    # Increments from t = 0 (see the module notes): d(uu) = eta_u (z-1)(P - Q/z)/4, etc.
    general = Gram(
        gram0.uu[..., None] + eta_u * (p_dz - q_dz) / 4,
        gram0.ww[..., None] + eta_w * (p_dz - q_dz) / 4,
        gram0.uw[..., None] + s * (p_dz + q_dz) / 4,
    )
    if frozen.any():
        special = _frozen_layer_trajectory(gram0, hyper, t)
        mask = frozen[..., None]
        general = Gram(*(np.where(mask, sp, ge) for sp, ge in zip(special, general)))
    return _nonnegative_norms(general)


def _nonnegative_norms(gram: Gram) -> Gram:
    """``gram`` with ``uu`` and ``ww`` clipped at 0.

    A squared norm that vanishes (u -> 0 when ``rho = -1`` pulls u and w to
    the origin) is known only to about 1e-16 of its start: the increments
    and the GD update can round it to -1e-13, whose square root and log are
    NaN. Its true value is below that resolution, and 0 is the nearest
    possible one.
    """
    return Gram(np.maximum(gram.uu, 0.0), np.maximum(gram.ww, 0.0), gram.uw)


def learning_time(gram0: Gram, hyper: Hyperparameters, eps: float = 1e-2) -> FloatArray:
    """Time for the gradient-flow loss to fall to ``eps`` times its initial value.

    Obtained by inverting the closed form: beta is monotone along the flow, so
    the loss reaches ``eps L(0)`` when ``beta = beta* + sqrt(eps) (beta0 - beta*)``;
    solve ``kappa s (P z - Q/z)/4 = beta`` for z, then z(t) for t. Returns 0
    where the loss is already zero and ``inf`` where the target is never reached
    (for example a run that starts at the saddle).
    """
    shape = np.broadcast_shapes(*(np.shape(x) for x in (*gram0, *hyper)))
    gram0 = Gram(*(np.broadcast_to(np.asarray(x, dtype=float), shape) for x in gram0))
    hyper = Hyperparameters(*(np.broadcast_to(np.asarray(x, dtype=float), shape) for x in hyper))
    kappa, eta_u, eta_w, beta_star, sigma2 = hyper
    beta0 = kappa * gram0.uw
    target = beta_star + np.sqrt(eps) * (beta0 - beta_star)
    frozen = (eta_u == 0) | (eta_w == 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # One layer frozen: beta - beta* decays like exp(-k t).
        k = np.where(eta_u == 0, eta_w * sigma2 * kappa**2 * gram0.uu, eta_u * sigma2 * kappa**2 * gram0.ww)
        t_frozen = np.where(k > 0, -np.log(eps) / (2 * np.where(k > 0, k, 1.0)), np.inf)

        safe = Hyperparameters(kappa, np.where(frozen, 1.0, eta_u), np.where(frozen, 1.0, eta_w), beta_star, sigma2)
        c = _coefficients(gram0, safe)
        # kappa s P z^2 - 4 beta z - kappa s Q = 0, positive root in its cancellation-free form.
        ks = kappa * c.s
        root = np.sqrt(16 * target**2 + 4 * ks**2 * c.p * c.q)
        z = np.where(target > 0, (4 * target + root) / (2 * ks * c.p), 2 * ks * c.q / (root - 4 * target))
        # Invert z = (n0 + n1 E)/(d0 + d1 E) for E = exp(-lambda t).
        a, b, d, lam = c.a, c.b, c.d, c.lam
        n0, n1 = (b + lam) / 2 + a, -((b - lam) / 2 + a)
        d0, d1 = d - (b - lam) / 2, -(d - (b + lam) / 2)
        e = (n0 - z * d0) / (z * d1 - n1)
        t_general = np.where(
            lam > 0, -np.log(e) / np.where(lam > 0, lam, 1.0), (z - 1) / ((b / 2 + a) - z * (d - b / 2))
        )
        t_general = np.where(np.isfinite(t_general) & (t_general >= 0), t_general, np.inf)
    result = np.where(frozen, t_frozen, t_general)
    return np.where(beta0 == beta_star, 0.0, result)


# ---------------------------------------------------------------------------
# gradient descent on the Gram entries


def gd_step(gram: Gram, hyper: Hyperparameters, dt: float) -> Gram:
    """One exact GD step of the width-d network, on the Gram entries (O(1) in width).

    With ``a = dt eta_u r`` and ``b = dt eta_w r`` (r = sigma2 kappa (beta - beta*)),
    the simultaneous update ``u' = u - a w, w' = w - b u`` gives the Gram update below.
    """
    kappa, eta_u, eta_w, beta_star, sigma2 = hyper
    residual_force = sigma2 * kappa * (kappa * gram.uw - beta_star)
    a = dt * eta_u * residual_force
    b = dt * eta_w * residual_force
    return _nonnegative_norms(
        Gram(
            gram.uu - 2 * a * gram.uw + a**2 * gram.ww,
            gram.ww - 2 * b * gram.uw + b**2 * gram.uu,
            gram.uw - a * gram.ww - b * gram.uu + a * b * gram.uw,
        )
    )
