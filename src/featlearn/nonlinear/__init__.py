"""Nonlinear networks on real data: the three mechanisms beyond the solvable model.

:mod:`~featlearn.nonlinear.models` (batched fully connected networks under
standard, NTK and mean-field parametrizations),
:mod:`~featlearn.nonlinear.data` (teacher, MNIST, digits, CIFAR-10),
:mod:`~featlearn.nonlinear.metrics` (alignment, rescaling, empirical NTK),
:mod:`~featlearn.nonlinear.train` (the experiment stage,
:func:`~featlearn.nonlinear.train.run_experiment`) and
:mod:`~featlearn.nonlinear.mechanisms` (per-layer mechanism flags, no torch).
Nothing is imported here, so reading results does not load torch.
"""
