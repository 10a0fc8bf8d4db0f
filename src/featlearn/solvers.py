"""Three solvers of the linear-network dynamics behind one interface.

- ``flow``: the closed-form gradient-flow trajectory (:func:`featlearn.theory.flow_trajectory`);
- ``gd``: exact gradient descent with step ``dt`` through the Gram recursion,
  O(1) per step whatever the width;
- ``explicit``: the width-d vectors themselves, batched over runs; gradient
  descent with step ``dt`` or, for ``dt = 0``, a tight-tolerance ODE solve of
  gradient flow. It shares no code with the other two and is their
  independent check.

Every solver returns a :class:`Trajectory` of Gram entries on the requested
record times. Discrete solvers record at whole steps ``k = round(t / dt)``.
A GD run whose loss leaves the float range (or grows by more than
:data:`featlearn.contract.DIVERGENCE_FACTOR` over its start) is marked ``diverged``; its later
records are NaN, and it stops being updated, so a divergent cell never
crashes a batch or spreads overflow warnings.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.integrate import solve_ivp

from featlearn import theory
from featlearn.contract import DIVERGENCE_FACTOR
from featlearn.theory import Gram, Hyperparameters

SolverName = Literal["flow", "gd", "explicit"]
SOLVERS: tuple[str, ...] = ("flow", "gd", "explicit")


class Trajectory(NamedTuple):
    """Gram entries on the record times (last axis) and a per-run divergence flag."""

    gram: Gram
    diverged: NDArray[np.bool_]


def record_steps(times: ArrayLike, dt: float) -> NDArray[np.int64]:
    """Whole GD steps closest to ``times`` (unique, increasing)."""
    return np.unique(np.rint(np.asarray(times, dtype=float) / dt).astype(np.int64))


def _broadcast(hyper: Hyperparameters, shape: tuple[int, ...]) -> Hyperparameters:
    return Hyperparameters(*(np.broadcast_to(np.asarray(x, dtype=float), shape) for x in hyper))


def _diverging(loss_now: NDArray[np.float64], loss0: NDArray[np.float64]) -> NDArray[np.bool_]:
    return ~np.isfinite(loss_now) | (loss_now > DIVERGENCE_FACTOR * (1.0 + loss0))


def flow(gram0: Gram, hyper: Hyperparameters, times: ArrayLike) -> Trajectory:
    """Closed-form gradient flow; never diverges."""
    gram = theory.flow_trajectory(gram0, hyper, times)
    return Trajectory(gram, np.zeros(gram.uu.shape[:-1], dtype=bool))


def gd(gram0: Gram, hyper: Hyperparameters, times: ArrayLike, dt: float) -> Trajectory:
    """Gradient descent with step ``dt`` on the Gram entries, recorded at whole steps."""
    if dt <= 0:
        raise ValueError(f"gd needs a positive step dt, got {dt}")
    steps = record_steps(times, dt)
    shape = np.broadcast_shapes(*(np.shape(x) for x in (*gram0, *hyper)))
    hyper = _broadcast(hyper, shape)
    gram = Gram(*(np.array(np.broadcast_to(np.asarray(x, dtype=float), shape)) for x in gram0))
    loss0 = theory.loss(theory.output(hyper.kappa, gram), hyper.beta_star, hyper.sigma2)
    records = [np.full((*shape, len(steps)), np.nan) for _ in range(3)]
    diverged = np.zeros(shape, dtype=bool)
    next_record = 0
    for step in range(int(steps[-1]) + 1):
        if step == steps[next_record]:
            for record, value in zip(records, gram):
                record[..., next_record] = np.where(diverged, np.nan, value)
            next_record += 1
            if next_record == len(steps):
                break
        with np.errstate(over="ignore", invalid="ignore"):
            updated = theory.gd_step(gram, hyper, dt)
            loss_now = theory.loss(theory.output(hyper.kappa, updated), hyper.beta_star, hyper.sigma2)
        diverged |= _diverging(loss_now, loss0)
        # Diverged runs keep their last finite state: no overflow spreads through the batch.
        gram = Gram(*(np.where(diverged, old, new) for old, new in zip(gram, updated)))
    return Trajectory(Gram(*records), diverged)


def explicit(
    u0: ArrayLike,
    w0: ArrayLike,
    hyper: Hyperparameters,
    times: ArrayLike,
    dt: float,
    *,
    rtol: float = 1e-12,
    atol: float = 1e-14,
) -> Trajectory:
    """Width-d simulation on the vectors themselves (last axis = width).

    ``u0`` and ``w0`` have shape ``S + (d,)`` with ``hyper`` broadcastable to ``S``.
    ``dt > 0``: gradient descent with that step, recorded at whole steps.
    ``dt = 0``: gradient flow by an explicit Runge-Kutta (DOP853) solve with
    tolerances ``rtol`` and ``atol`` relative to the state.
    """
    u = np.array(u0, dtype=float)
    w = np.array(w0, dtype=float)
    shape = u.shape[:-1]
    hyper = _broadcast(hyper, shape)
    kappa, eta_u, eta_w, beta_star, sigma2 = (x[..., None] for x in hyper)

    def force(u: NDArray[np.float64], w: NDArray[np.float64]) -> NDArray[np.float64]:
        beta = kappa * np.einsum("...i,...i->...", u, w)[..., None]
        return sigma2 * kappa * (beta - beta_star)

    if dt == 0:
        return _explicit_flow(u, w, force, eta_u, eta_w, np.asarray(times, dtype=float), rtol, atol)

    steps = record_steps(times, dt)
    records = [np.full((*shape, len(steps)), np.nan) for _ in range(3)]
    diverged = np.zeros(shape, dtype=bool)
    beta0 = np.einsum("...i,...i->...", u, w) * hyper.kappa
    loss0 = theory.loss(beta0, hyper.beta_star, hyper.sigma2)
    next_record = 0
    for step in range(int(steps[-1]) + 1):
        if step == steps[next_record]:
            for record, value in zip(records, theory.gram_from_vectors(u, w)):
                record[..., next_record] = np.where(diverged, np.nan, value)
            next_record += 1
            if next_record == len(steps):
                break
        with np.errstate(over="ignore", invalid="ignore"):
            r = force(u, w)
            u_next, w_next = u - dt * eta_u * r * w, w - dt * eta_w * r * u
            beta = hyper.kappa * np.einsum("...i,...i->...", u_next, w_next)
            diverged |= _diverging(theory.loss(beta, hyper.beta_star, hyper.sigma2), loss0)
        keep = diverged[..., None]
        u, w = np.where(keep, u, u_next), np.where(keep, w, w_next)
    return Trajectory(Gram(*records), diverged)


def _explicit_flow(u, w, force, eta_u, eta_w, times, rtol, atol) -> Trajectory:
    shape, width = u.shape[:-1], u.shape[-1]
    size = int(np.prod(shape, dtype=int)) * width

    def rhs(_t: float, state: NDArray[np.float64]) -> NDArray[np.float64]:
        u_now = state[:size].reshape(u.shape)
        w_now = state[size:].reshape(w.shape)
        r = force(u_now, w_now)
        return np.concatenate([(-eta_u * r * w_now).ravel(), (-eta_w * r * u_now).ravel()])

    state0 = np.concatenate([u.ravel(), w.ravel()])
    scale = np.maximum(np.abs(state0).max(initial=0.0), 1.0)
    solution = solve_ivp(
        rhs, (0.0, float(times[-1])), state0, method="DOP853", t_eval=times, rtol=rtol, atol=atol * scale
    )
    if not solution.success:
        raise RuntimeError(f"explicit gradient-flow solve failed: {solution.message}")
    u_t = np.moveaxis(solution.y[:size].reshape((*u.shape, len(times))), -1, -2)
    w_t = np.moveaxis(solution.y[size:].reshape((*w.shape, len(times))), -1, -2)
    gram = theory.gram_from_vectors(u_t, w_t)
    return Trajectory(gram, np.zeros(shape, dtype=bool))


def solve(
    solver: SolverName,
    hyper: Hyperparameters,
    times: ArrayLike,
    dt: float,
    *,
    gram0: Gram | None = None,
    vectors: tuple[ArrayLike, ArrayLike] | None = None,
) -> Trajectory:
    """Run ``solver`` from an initial state given as Gram entries or as width-d vectors.

    ``flow`` and ``gd`` accept either (vectors are reduced to their Gram
    entries); ``explicit`` needs the vectors.
    """
    if solver == "explicit":
        if vectors is None:
            raise ValueError("the explicit solver needs the initial vectors (u0, w0)")
        return explicit(*vectors, hyper, times, dt)
    if gram0 is None:
        if vectors is None:
            raise ValueError("give the initial state as gram0 or as vectors")
        gram0 = theory.gram_from_vectors(*vectors)
    if solver == "flow":
        return flow(gram0, hyper, times)
    if solver == "gd":
        return gd(gram0, hyper, times, dt)
    raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
