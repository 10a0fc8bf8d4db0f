"""The public API for notebooks and scripts: ``import featlearn as fl``.

Each function takes what a configuration would say (an experiment exactly as
written under ``experiments.NAME``, a section's settings as keyword
arguments), validates it with the same schema and messages as the pipeline,
and returns the objects of the project's data contract (``docs/data.md``):

============================  ===============================================
``fl.simulate(spec)``         the ``trajectories.nc`` dataset of an experiment
``fl.mechanisms(ds)``         the ``mechanisms.nc`` dataset of trajectories
``fl.phases(ds)``             the ``phases.nc`` dataset of a width sweep
``fl.predict_phase(...)``     the phase and exponents the width exponents predict
``fl.train(spec)``            the dataset of a nonlinear experiment
``fl.train_plane(spec)``      the runs of a nonlinear phase plane (``fl.phases`` classifies them)
``fl.figure(name, ...)``      a figure of the figure table (matplotlib)
``fl.flag_names(variable)``   the label names of a flag variable (``primary``, ``phase``)
``fl.validate(config)``       a whole configuration, resolved
============================  ===============================================

Defaults are the configuration schema's (one home for every default): the
signatures below show them. Two levels call the same stage functions: these
functions, for notebooks, validate raw specs and settings first; the command
line (:mod:`featlearn.cli`), which the pipeline's jobs run, parses settings
the workflow has already validated. No pipeline job imports this module, so
editing it reruns nothing. A tutorial is in ``docs/tutorial.md``.
"""

from __future__ import annotations

import functools
import operator
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from featlearn import _API, figures, grid, io, mechanism_detection, phase_diagram, simulation, validation
from featlearn.errors import ConfigError
from featlearn.phase_diagram import PhasePrediction as PhasePrediction
from featlearn.phase_diagram import predict_phase as predict_phase

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# The names featlearn exports (featlearn._API); predict_phase is phase_diagram's own function,
# re-exported with its docstring.
__all__ = list(_API)

_MECHANISMS = validation.defaults("mechanisms")
#: The settings fl.phases takes, with the schema's defaults.
_PHASE_FIT = validation.defaults("phases")["fit"]
_PHASE_GD_RISE = validation.defaults("phases")["gd_rise"]

Spec = Mapping[str, Any] | str | os.PathLike[str]


def validate(config: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """A whole configuration, validated and with its defaults filled in.

    Parameters
    ----------
    config : mapping, str or path
        A configuration as a mapping, or a YAML (or JSON) file.

    Returns
    -------
    dict
        The configuration as the pipeline resolves it: every default of the
        schema filled in.

    Raises
    ------
    featlearn.errors.ConfigError
        Listing every problem, each naming its dotted field, exactly as
        ``featlearn validate`` and the pipeline report them.

    Examples
    --------
    >>> config = fl.validate({"experiments": {"tiny": {"solver": "flow", "time": {"stop": 1.0, "num": 3},
    ...                                                 "parameters": {"width": 10}}}})
    >>> config["experiments"]["tiny"]["seeds"]
    4
    """
    if isinstance(config, Mapping):
        return validation.validate(config)
    return validation.load(os.fspath(config))


def _experiment_config(spec: Spec, name: str | None, section: str) -> tuple[dict[str, Any], str]:
    """The resolved configuration holding one entry of ``section`` (a dotted path), and its name."""
    keys = section.split(".")
    if isinstance(spec, Mapping):
        name = name or "experiment"
        nested: dict[str, Any] = {name: dict(spec)}
        for key in reversed(keys):
            nested = {key: nested}
        config = validation.validate(nested)
    else:
        config = validation.load(os.fspath(spec))
    entries = functools.reduce(operator.getitem, keys, config)
    if name is None or name not in entries:
        noun = "plane" if keys[-1] == "planes" else "experiment"
        raise ConfigError([f"{section}: name one {noun} of {os.fspath(spec)} ({', '.join(entries)})"])
    return config, name


def _nonlinear_entry(
    spec: Spec, name: str | None, section: str, cifar10_path: str | os.PathLike[str] | None
) -> tuple[dict[str, Any], str, str | None]:
    """One resolved entry of ``nonlinear.<section>``, its name and its CIFAR-10 folder.

    As the pipeline's training rules: the folder belongs to CIFAR-10 entries only.
    """
    config, name = _experiment_config(spec, name, f"nonlinear.{section}")
    entry = config["nonlinear"][section][name]
    folder = None
    if entry["dataset"]["name"] == "cifar10":
        given = config["nonlinear"]["cifar10_path"] if cifar10_path is None else cifar10_path
        folder = None if given is None else os.fspath(given)
    return entry, name, folder


def _with_provenance(
    ds: xr.Dataset, name: str, description: str, solver: str, entry: Mapping[str, Any], folder: str | None
) -> xr.Dataset:
    """``ds`` with the provenance attributes the pipeline's training rules write (the entry and the folder)."""
    ds.attrs.update(io.provenance_attrs(description, solver, {**entry, "cifar10_path": folder}))
    ds.attrs["experiment"] = name
    return ds


def simulate(
    spec: Spec,
    name: str | None = None,
    *,
    chunk: int = 0,
    chunks: int = 1,
    progress: Callable[[str], None] | None = None,
) -> xr.Dataset:
    """Simulate an experiment of the solvable linear network.

    Parameters
    ----------
    spec : mapping, str or path
        An experiment exactly as written under ``experiments.NAME`` of a
        configuration (a mapping), or a configuration file.
    name : str, optional
        The experiment's name: which experiment of the file, or the name a
        mapping is stored under (default ``"experiment"``; it names the
        dataset's ``experiment`` attribute and the fields of error messages).
    chunk, chunks : int, optional
        Simulate only chunk ``chunk`` of ``chunks`` interleaved shares of
        the grid, as one pipeline job does. The runs do not depend on the
        chunking: random draws are keyed by grid point and seed.
    progress : callable, optional
        Called with a line of progress text now and then (e.g. ``print``).

    Returns
    -------
    xarray.Dataset
        With ``chunks=1``, the ``trajectories.nc`` dataset: every run on the
        grid, dims ``(*grid, seed, time)``. Otherwise the chunk's share, dims
        ``(point, seed, time)`` (``featlearn merge`` puts chunks together).

    Raises
    ------
    featlearn.errors.ConfigError
        When ``spec`` breaks the schema or a rule, naming the field as the
        pipeline does (``experiments.NAME.parameters.width: ...``).
    featlearn.errors.InputError
        When ``chunk`` is not in ``0 .. chunks - 1``.

    Examples
    --------
    >>> ds = fl.simulate({"solver": "flow", "seeds": 2, "time": {"stop": 10.0, "num": 11},
    ...                   "parameters": {"parametrization": "mean_field", "width": [100, 1000]}})
    >>> ds["beta"].dims
    ('width', 'seed', 'time')
    >>> bad = {"solver": "flow", "time": {"stop": 1.0, "num": 3}, "parameters": {"width": 0}}
    >>> fl.simulate(bad)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    featlearn.errors.ConfigError: invalid configuration: experiments.experiment.parameters.width: 0 is less than ...
    """
    config, name = _experiment_config(spec, name, "experiments")
    resolved = validation.experiment_config(config, name)
    experiment = grid.Experiment.from_config(resolved, name)
    part = simulation.simulate_chunk(experiment, chunk, chunks, config=resolved, progress=progress or _quiet)
    return simulation.merge_chunks([part]) if chunks == 1 else part


def _quiet(_message: str) -> None:
    """A progress callback that prints nothing."""


def mechanisms(
    trajectories: xr.Dataset,
    *,
    eps_c: float = _MECHANISMS["eps_c"],
    eps_rho: float = _MECHANISMS["eps_rho"],
    eps_K: float = _MECHANISMS["eps_K"],
) -> xr.Dataset:
    """Alignment, disalignment, rescaling and kernel labels of every run (``docs/mechanisms.md``).

    Parameters
    ----------
    trajectories : xarray.Dataset
        A ``trajectories.nc`` dataset (e.g. from :func:`simulate`).
    eps_c, eps_rho, eps_K : float, optional
        Flag thresholds on ``|delta_c|``, ``max(|rho_u|, |rho_w|)`` and
        ``|kernel_change|`` (the configuration's ``mechanisms`` section).

    Returns
    -------
    xarray.Dataset
        The ``mechanisms.nc`` dataset: per run ``delta_c``, ``rho_u``,
        ``rho_w``, ``kernel_change``, the path split, the flags and the
        ``primary`` label, dims ``(*grid, seed)``; time-resolved versions
        (suffix ``_t``); width fits when the grid sweeps width.

    Raises
    ------
    featlearn.errors.ConfigError
        For a threshold the schema refuses (``mechanisms.eps_c: ...``).

    Examples
    --------
    >>> labels = fl.mechanisms(fl.simulate({"solver": "flow", "time": {"stop": 100.0, "num": 11},
    ...                                     "parameters": {"parametrization": "ntk", "width": 10000}}))
    >>> fl.flag_names(labels["primary"]).values.tolist()
    ['kernel', 'kernel', 'kernel', 'kernel']
    """
    settings = validation.validate_section("mechanisms", {"eps_c": eps_c, "eps_rho": eps_rho, "eps_K": eps_K})
    thresholds = mechanism_detection.Thresholds(settings["eps_c"], settings["eps_rho"], settings["eps_K"])
    detected = mechanism_detection.detect(trajectories, thresholds)
    detected.attrs.update(io.derived_attrs("mechanisms", trajectories))
    return detected


def phases(trajectories: xr.Dataset, **fit_settings: Any) -> xr.Dataset:
    """Classify every cell of a width sweep from measurements, next to the analytical prediction.

    Parameters
    ----------
    trajectories : xarray.Dataset
        A ``trajectories.nc`` dataset; slopes are fitted when its grid has a
        ``width`` dim with at least ``min_widths`` values.
    **fit_settings
        Any key of the configuration's ``phases.fit`` section (``tolerance``,
        ``resolution``, ``bootstrap``, ``min_widths``, ...) and ``gd_rise``;
        the schema's defaults otherwise (``docs/phases.md``). Unknown keys
        and bad values raise :class:`featlearn.errors.ConfigError`.

    Returns
    -------
    xarray.Dataset
        The ``phases.nc`` dataset: per cell (grid dims without ``width``)
        the predicted ``phase_theory`` and exponents, the measured
        ``phase``, the fitted exponents with their errors, ``agrees``, and
        the attributes ``agreement`` and ``cells``; for gradient descent
        the converging / catapult / divergent labels.

    Examples
    --------
    >>> sweep = fl.simulate({"solver": "flow", "seeds": 6,
    ...                      "time": {"stop": 50.0, "num": 30, "spacing": "log", "start": 1.0e-3},
    ...                      "parameters": {"parametrization": ["ntk", "small_init"],
    ...                                     "width": [100, 1000, 10000, 100000, 1000000]}})
    >>> classified = fl.phases(sweep)
    >>> fl.flag_names(classified["phase"]).values.tolist(), fl.flag_names(classified["phase_criterion"]).values.tolist()
    (['boundary', 'feature-learning'], ['e0', 'eM'])
    >>> classified.attrs["agreement"], classified.attrs["decided_cells"]  # NTK sits on e0 = 0: left undecided
    (1.0, 1)
    """
    gd_rise = fit_settings.pop("gd_rise", _PHASE_GD_RISE)
    section = validation.validate_section("phases", {"fit": {**_PHASE_FIT, **fit_settings}, "gd_rise": gd_rise})
    settings = phase_diagram.PhaseSettings.from_config({**section, "strict": False})
    result = phase_diagram.analyse(trajectories, settings)
    result.attrs.update(io.derived_attrs("phases", trajectories))
    return result


def train(
    spec: Spec,
    name: str | None = None,
    *,
    cifar10_path: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> xr.Dataset:
    """Train the nonlinear networks of one experiment (``docs/nonlinear.md``); needs ``featlearn[nonlinear]``.

    Parameters
    ----------
    spec : mapping, str or path
        An experiment exactly as written under ``nonlinear.experiments.NAME``
        (a mapping), or a configuration file.
    name : str, optional
        Which experiment of the file, or the name a mapping is stored under.
    cifar10_path : str or path, optional
        Folder with CIFAR-10's python batches, for CIFAR-10 experiments
        (default: the file's ``nonlinear.cifar10_path``).
    progress : callable, optional
        Called with a line of progress text now and then (e.g. ``print``).

    Returns
    -------
    xarray.Dataset
        The experiment's dataset (``results/nonlinear/NAME.nc``): per run and
        logged step the per-layer alignment and rescaling, the NTK change,
        losses and accuracy.

    Examples
    --------
    >>> ds = fl.train({"dataset": {"name": "teacher", "input_dim": 1, "task": "regression", "target_scale": 1.0,
    ...                            "n_train": 8, "n_test": 8}, "width": [64], "activation": ["relu"],
    ...                "parametrization": ["mean_field"], "init_scale": [1.0], "steps": 5, "lr": 0.1,
    ...                "probe_size": 4})
    >>> ds["zeta"].dims[-1]
    'layer'
    """
    from featlearn.nonlinear.train import run_experiment

    experiment, name, folder = _nonlinear_entry(spec, name, "experiments", cifar10_path)
    ds = run_experiment(experiment, cifar10_path=folder, progress=progress)
    return _with_provenance(ds, name, f"featlearn nonlinear: {name}", "torch-gd", {"experiment": experiment}, folder)


def train_plane(
    spec: Spec,
    name: str | None = None,
    *,
    cifar10_path: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> xr.Dataset:
    """Train the networks of one nonlinear phase plane (``docs/nonlinear.md``); needs ``featlearn[nonlinear]``.

    Parameters
    ----------
    spec : mapping, str or path
        A plane exactly as written under ``nonlinear.planes.NAME`` (a
        mapping), or a configuration file.
    name : str, optional
        Which plane of the file, or the name a mapping is stored under.
    cifar10_path : str or path, optional
        Folder with CIFAR-10's python batches, for CIFAR-10 planes
        (default: the file's ``nonlinear.cifar10_path``).
    progress : callable, optional
        Called with a line of progress text per stack of runs (e.g. ``print``).

    Returns
    -------
    xarray.Dataset
        The plane's runs (``results/nonlinear/NAME_trajectories.nc``, kind
        ``nonlinear_plane``): ``loss``, ``beta``, ``ntk_eta`` on dims
        ``(*grid, seed, time)`` and ``diverged``; :func:`phases` classifies
        them as it classifies a linear experiment's trajectories.

    Examples
    --------
    >>> runs = fl.train_plane({"dataset": {"name": "teacher", "input_dim": 1, "task": "regression",
    ...                                    "target_scale": 1.0, "n_train": 4, "n_test": 4},
    ...                        "activation": "linear", "steps": 50, "seeds": 4,
    ...                        "parameters": {"width": [64, 128, 256, 512], "kappa": {"exponent": [0.75, 1.5]},
    ...                                       "eta_u": {"prefactor": 0.5, "exponent": [-0.5, 0.0]},
    ...                                       "eta_w": {"prefactor": "eta_u0", "exponent": "c_u"}}})
    >>> runs["loss"].dims
    ('a', 'c_u', 'width', 'seed', 'time')
    """
    from featlearn.nonlinear.planes import train_plane as train_networks

    plane, name, folder = _nonlinear_entry(spec, name, "planes", cifar10_path)
    ds = train_networks(plane, cifar10_path=folder, progress=progress)
    return _with_provenance(ds, name, f"featlearn nonlinear plane: {name}", "gd", {"plane": plane}, folder)


def figure(name: str, /, **arguments: Any) -> Figure:
    """Draw figure ``name`` of the figure table (``featlearn.figures.table``) as a matplotlib figure.

    Parameters
    ----------
    name : str
        A figure of the table, e.g. ``"mechanism_map"`` or ``"phases_diagram_rate"``.
    **arguments
        The datasets it reads, by kind (``trajectories=``, ``mechanisms=``,
        ``phases=``, ``nonlinear=``: one dataset, or a list where the figure
        reads several), and its options (e.g. ``x=``, ``y=``).

    Returns
    -------
    matplotlib.figure.Figure
        The figure, not shown and not saved (``.savefig(path)`` writes it).

    Raises
    ------
    featlearn.errors.InputError
        For an unknown figure, a missing dataset or an unknown option, naming it.

    Examples
    --------
    >>> labels = fl.mechanisms(fl.simulate({"solver": "flow", "time": {"stop": 100.0, "num": 11},
    ...                                     "parameters": {"parametrization": "mean_field", "width": 1000,
    ...                                                    "rho": [0.0, 0.5], "beta_star": [0.1, 1.0]}}))
    >>> fl.figure("mechanism_map", mechanisms=labels, x="rho", y="beta_star")  # doctest: +ELLIPSIS
    <Figure size ...>
    """
    reads = figures.table.entry(name).reads if name in figures.table.BY_NAME else {}
    datasets = {key: value for key, value in arguments.items() if key in reads}
    options = {key: value for key, value in arguments.items() if key not in reads}
    return figures.draw(name, datasets, options)


def flag_names(variable: xr.DataArray) -> xr.DataArray:
    """The label names of a CF flag variable: ``primary``, ``phase``, ``phase_theory``, ``gd_phase``, ...

    Parameters
    ----------
    variable : xarray.DataArray
        A variable with the ``flag_values`` and ``flag_meanings`` attributes
        (every label of the data contract has them).

    Returns
    -------
    xarray.DataArray
        The name of each value (strings), with the variable's dims and coordinates.

    Raises
    ------
    ValueError
        When ``variable`` is not a flag variable, or holds a value it has no name for.

    Examples
    --------
    >>> phases = fl.phases(fl.simulate({"solver": "flow", "time": {"stop": 1.0, "num": 3},
    ...                                 "parameters": {"width": 100, "kappa": {"exponent": [0.5, 1.0]}}}))
    >>> fl.flag_names(phases["phase_theory"]).to_series().to_dict()
    {0.5: 'kernel', 1.0: 'frozen'}
    """
    if "flag_values" not in variable.attrs or "flag_meanings" not in variable.attrs:
        raise ValueError(f"{variable.name!r} is not a flag variable (no flag_values and flag_meanings)")
    lookup = dict(zip(np.atleast_1d(variable.attrs["flag_values"]).tolist(), variable.attrs["flag_meanings"].split()))
    codes = np.asarray(variable.values)
    unknown = sorted(set(np.unique(codes).tolist()) - set(lookup))
    if unknown:
        raise ValueError(f"{variable.name!r} holds values without a name: {unknown} (flag_values {list(lookup)})")
    names = np.vectorize(lookup.__getitem__, otypes=[object])(codes) if codes.size else codes.astype(object)
    return xr.DataArray(names.astype(str), dims=variable.dims, coords=variable.coords, name=variable.name)
