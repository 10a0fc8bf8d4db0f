"""Speed of the featlearn solvers against the per-configuration ODE solve a user would write first.

Run: ``make bench`` (or ``.venv/bin/python benchmarks/bench_solvers.py``); about a minute on 2 cores.

Every method computes the same trajectories: the same configurations (two
parametrizations x four correlations rho x two targets x two seeds at width
d = 10^4), the same initial states (width-d vectors drawn once, so the Gram
methods start from exactly their Gram entries) and the same record times.

- ``ode_per_config`` (the baseline): one ``scipy.integrate.solve_ivp`` (RK45,
  rtol 1e-8) per configuration, of the gradient-flow ODE of the three Gram
  entries ``(|u|^2, |w|^2, u.w)``;
- ``gd_gram``: :func:`featlearn.solvers.gd`, gradient descent through the O(1)
  Gram recursion, all configurations in one batch;
- ``gd_explicit``: :func:`featlearn.solvers.explicit`, gradient descent on the
  width-d vectors themselves, all configurations in one batch;
- ``flow_closed_form``: :func:`featlearn.solvers.flow`, for reference.

Throughput is counted in trajectory-steps: configurations x (horizon / dt),
the GD steps it takes to cover the horizon, for every method alike (the
ODE and closed-form methods cover the same horizon). Each method is timed
``REPEATS`` times (each timing loops until it lasts at least ``MIN_SECONDS``);
the median is reported with the spread (max - min) / median, which is the
machine noise of that measurement. The repeats go round the methods in turn;
a ratio is the speedup over the baseline timed in the same round, reported
as the median over rounds with its range.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
from scipy.integrate import solve_ivp

from featlearn import grid, simulation, solvers, theory, validation
from featlearn.theory import Gram, Hyperparameters

WIDTH = 10_000
DT = 0.01
HORIZON = 4.0
RECORDS = 41
SEEDS = 2
REPEATS = 5
MIN_SECONDS = 0.2
ODE_RTOL = 1e-8

BENCH_CONFIG = {
    "experiments": {
        "bench": {
            "solver": "gd",
            "dt": DT,
            "seeds": SEEDS,
            "init": "vectors",
            "time": {"stop": HORIZON, "num": RECORDS},
            "parameters": {
                "width": WIDTH,
                "parametrization": ["ntk", "mean_field"],
                "rho": [-0.5, 0.0, 0.5, 0.9],
                "beta_star": [0.5, 2.0],
            },
        }
    }
}


def setup() -> tuple[Gram, tuple[np.ndarray, np.ndarray], Hyperparameters, np.ndarray]:
    """Initial Gram entries and vectors, hyperparameters (one entry per configuration) and record times."""
    experiment = grid.Experiment.from_config(validation.validate(BENCH_CONFIG), "bench")
    us, ws, hypers = [], [], []
    for index in range(experiment.grid.size):
        values = experiment.hyperparameters(index)
        for seed in range(experiment.seeds):
            rng = simulation.rng_for(values, experiment.init, seed)
            u, w = theory.sample_vectors(rng, WIDTH, values["sigma_u"], values["sigma_w"], values["rho"], 1)
            us.append(u[0])
            ws.append(w[0])
            hypers.append([values[name] for name in Hyperparameters._fields])
    u0, w0 = np.array(us), np.array(ws)
    hyper = Hyperparameters(*np.array(hypers).T)
    return theory.gram_from_vectors(u0, w0), (u0, w0), hyper, np.asarray(experiment.times)


def gram_flow_rhs(_t: float, state: np.ndarray, kappa, eta_u, eta_w, beta_star, sigma2) -> list[float]:
    """d/dt (|u|^2, |w|^2, u.w) under gradient flow of the squared loss."""
    uu, ww, uw = state
    force = sigma2 * kappa * (kappa * uw - beta_star)
    return [-2 * eta_u * force * uw, -2 * eta_w * force * uw, -force * (eta_u * ww + eta_w * uu)]


def ode_per_config(gram0: Gram, hyper: Hyperparameters, times: np.ndarray) -> Gram:
    """The naive baseline: one adaptive Runge-Kutta solve per configuration."""
    trajectories = []
    for k in range(len(gram0.uu)):
        state0 = [gram0.uu[k], gram0.ww[k], gram0.uw[k]]
        solution = solve_ivp(
            gram_flow_rhs,
            (0.0, float(times[-1])),
            state0,
            t_eval=times,
            rtol=ODE_RTOL,
            atol=ODE_RTOL * 1e-3 * max(abs(x) for x in state0),
            args=tuple(float(x[k]) for x in hyper),
        )
        trajectories.append(solution.y)
    return Gram(*np.moveaxis(np.array(trajectories), 1, 0))


def timings(methods: dict[str, Callable[[], Gram]]) -> tuple[dict[str, Gram], dict[str, list[float]]]:
    """The result of every method and its seconds per call, ``REPEATS`` times.

    A first (warm-up) call gives the result and sets how many calls each
    timing loops over, so that it lasts at least ``MIN_SECONDS``. The
    repeats go round all methods in turn, so the k-th timings of two methods
    were taken under the same load, and their ratio is the k-th ratio.
    """
    results, loops = {}, {}
    for name, run in methods.items():
        started = time.perf_counter()
        results[name] = run()
        loops[name] = max(1, int(np.ceil(MIN_SECONDS / (time.perf_counter() - started))))
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(REPEATS):
        for name, run in methods.items():
            started = time.perf_counter()
            for _ in range(loops[name]):
                run()
            seconds[name].append((time.perf_counter() - started) / loops[name])
    return results, seconds


def relative_gap(a: Gram, b: Gram) -> float:
    """Largest relative difference over the three Gram entries (scaled by each trajectory's size)."""
    return max(float(np.max(np.abs(x - y) / np.max(np.abs(y), axis=-1, keepdims=True))) for x, y in zip(a, b))


def main() -> None:
    gram0, vectors, hyper, times = setup()
    configs = len(gram0.uu)
    steps = round(HORIZON / DT)
    methods: dict[str, Callable[[], Gram]] = {
        "ode_per_config": lambda: ode_per_config(gram0, hyper, times),
        "gd_gram": lambda: solvers.gd(gram0, hyper, times, DT).gram,
        "gd_explicit": lambda: solvers.explicit(*vectors, hyper, times, DT).gram,
        "flow_closed_form": lambda: solvers.flow(gram0, hyper, times).gram,
    }
    print(
        f"featlearn solver benchmark on {platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}; "
        f"load average {os.getloadavg()[0]:.1f} at start (other work on the machine widens the spread)"
    )
    print(
        f"{configs} configurations at width d = {WIDTH}, horizon {HORIZON} = {steps} steps of dt = {DT}, "
        f"{RECORDS} record times; {configs * steps} trajectory-steps per call; "
        f"median of {REPEATS} timings (spread = (max - min) / median)\n"
    )

    results, seconds = timings(methods)
    # The methods computed the same trajectories.
    print("agreement (largest relative gap of the Gram entries):")
    for left, right, note in (
        ("gd_gram", "gd_explicit", "same map: rounding"),
        ("ode_per_config", "flow_closed_form", "ODE tolerance"),
        ("gd_gram", "flow_closed_form", "GD is O(dt) from the flow"),
    ):
        print(f"  {left} vs {right}".ljust(36) + f"{relative_gap(results[left], results[right]):.1e}  ({note})")
    print()

    baseline = seconds["ode_per_config"]
    header = f"{'method':<18} {'s / call':>10} {'spread':>7} {'traj-steps/s':>13} {'speedup vs ode_per_config':>27}"
    print(header)
    print("-" * len(header))
    for name, values in seconds.items():
        median = statistics.median(values)
        spread = (max(values) - min(values)) / median
        ratios = [b / v for b, v in zip(baseline, values)]
        print(
            f"{name:<18} {median:>10.3g} {spread:>6.0%} {configs * steps / median:>13.3g} "
            f"{statistics.median(ratios):>10.3g}x (range {min(ratios):.3g}-{max(ratios):.3g})"
        )


if __name__ == "__main__":
    main()
