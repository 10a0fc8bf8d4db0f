"""Nonlinear networks on real data: the three mechanisms beyond the solvable model.

:mod:`~featlearn.nonlinear.models` (batched fully connected networks under
standard, NTK and mean-field parametrizations),
:mod:`~featlearn.nonlinear.data` (teacher, MNIST, digits, CIFAR-10),
:mod:`~featlearn.nonlinear.metrics` (alignment, rescaling, empirical NTK) and
:mod:`~featlearn.nonlinear.train` (the experiment stage, :func:`run_experiment`).
"""

from featlearn.nonlinear.train import run_experiment

__all__ = ["run_experiment"]
