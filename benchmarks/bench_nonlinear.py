"""Batched training of a sweep against a plain loop over its runs (featlearn.nonlinear).

    python benchmarks/bench_nonlinear.py [--threads 1] [--repeats 3]

Trains the same sweeps twice in this process: every run alone (the plain
loop) and the runs stacked into batched matrix products
(``run_experiment(..., batch_runs=True)``, the pipeline's way). Prints the
best-of-``repeats`` wall time of each, their ratio, and the largest
difference of the training losses (float32 rounding, amplified by SGD).
Width-10^4 full-batch runs are not stacked by the pipeline (no gain), so they
are not benchmarked here.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from featlearn import config as cfg
from featlearn.nonlinear.train import run_experiment


def resolved(experiment: dict) -> dict:
    """The experiment with the schema's defaults, as the pipeline passes it."""
    return cfg.validate({"nonlinear": {"experiments": {"bench": experiment}}})["nonlinear"]["experiments"]["bench"]


# A loss target no run reaches: every run trains to the guard, so both ways do the same work.
TO_THE_GUARD = {"loss_target": 1.0e-9, "check_every": 50}
SWEEPS = {
    "digits, 2-layer width 256, 8 init scales x 2 seeds, SGD batch 32": resolved(
        {
            "dataset": {"name": "digits", "n_train": 1000, "n_test": 500, "split_seed": 0},
            "loss": "cross_entropy",
            "width": [256],
            "activation": ["relu"],
            "parametrization": ["standard"],
            "init_scale": [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0],
            "seeds": 2,
            "steps": 200,
            "stop": TO_THE_GUARD,
            "lr": 0.05,
            "batch_size": 32,
            "log_points": 3,
            "probe_size": 4,
        }
    ),
    "MNIST, 2-layer width 512, 4 init scales x 2 seeds, SGD batch 64": resolved(
        {
            "dataset": {"name": "mnist"},
            "loss": "cross_entropy",
            "width": [512],
            "activation": ["relu"],
            "parametrization": ["standard"],
            "init_scale": [0.25, 1.0, 4.0, 16.0],
            "seeds": 2,
            "steps": 100,
            "stop": TO_THE_GUARD,
            "lr": 0.1,
            "batch_size": 64,
            "log_points": 3,
            "probe_size": 4,
        }
    ),
    "MNIST, 4-layer width 256, 4 init scales x 2 seeds, SGD batch 100": resolved(
        {
            "dataset": {"name": "mnist", "n_train": 2000, "n_test": 1000},
            "loss": "cross_entropy",
            "depth": 4,
            "width": [256],
            "activation": ["relu"],
            "parametrization": ["standard"],
            "init_scale": [0.25, 0.5, 1.0, 2.0],
            "seeds": 2,
            "steps": 100,
            "stop": TO_THE_GUARD,
            "lr": 0.1,
            "batch_size": 100,
            "log_points": 3,
            "probe_size": 4,
        }
    ),
}


def best_time(spec: dict, batch_runs: bool, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run_experiment(spec, batch_runs=batch_runs)
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: what a pipeline job uses)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name, spec in SWEEPS.items():
        runs = len(spec["init_scale"]) * len(spec["parametrization"]) * spec["seeds"]
        loop, plain = best_time(spec, False, args.repeats)
        batched, stacked = best_time(spec, True, args.repeats)
        difference = float(np.nanmax(np.abs(plain["train_loss"] - stacked["train_loss"])))
        print(f"{name}: {runs} runs")
        print(f"  plain loop  {loop:7.2f} s")
        print(f"  batched     {batched:7.2f} s")
        print(f"  speed-up    {loop / batched:7.2f} x   (max train-loss difference {difference:.1e})")


if __name__ == "__main__":
    main()
