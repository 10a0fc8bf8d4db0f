"""Nonlinear networks on real data: the three mechanisms beyond the solvable model.

:mod:`~featlearn.nonlinear.spec` (the typed experiment settings and their
torch-free checks, :func:`~featlearn.nonlinear.spec.spec_problems`),
:mod:`~featlearn.nonlinear.models` (batched fully connected networks under
standard, NTK and mean-field parametrizations),
:mod:`~featlearn.nonlinear.data` (teacher, MNIST, digits, CIFAR-10; train, test
and validation splits),
:mod:`~featlearn.nonlinear.metrics` (alignment, rescaling, distance, empirical NTK),
:mod:`~featlearn.nonlinear.train` (the experiment stage,
:func:`~featlearn.nonlinear.train.run_experiment`: training to completion and
learning-rate selection),
:mod:`~featlearn.nonlinear.mechanisms` (measures at the stopping point, per-layer
mechanism flags, width slopes; no torch) and
:mod:`~featlearn.nonlinear.variables` (long_name and units of every output variable).
Nothing is imported here, so reading results does not load torch.
"""
