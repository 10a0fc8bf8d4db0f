"""featlearn: the three mechanisms of feature learning in a solvable linear network.

Reproduces Xu & Ziyin, "Three Mechanisms of Feature Learning in a Linear
Network" (ICLR 2025) as a rebuildable pipeline, and as a Python API::

    import featlearn as fl
    trajectories = fl.simulate(spec)          # an experiment as written in a configuration
    labels = fl.mechanisms(trajectories)      # alignment, disalignment, rescaling, kernel
    fl.predict_phase(0.5, 0, 0, 0, 0)         # kernel

The public functions (:mod:`featlearn.api`): ``simulate``, ``mechanisms``,
``phases``, ``predict_phase``, ``train``, ``figure``, ``flag_names``,
``validate``; ``docs/tutorial.md`` walks through them. The
mathematics lives in :mod:`featlearn.theory` and :mod:`featlearn.solvers`;
each pipeline stage has one module; :mod:`featlearn.io` does all file
input/output and :mod:`featlearn.cli` is the command line the Snakemake
rules call.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("featlearn")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

#: The public API (``featlearn.api``, whose ``__all__`` this is), loaded on first use so that
#: ``import featlearn`` stays light.
_API = (
    "PhasePrediction",
    "figure",
    "flag_names",
    "mechanisms",
    "phases",
    "predict_phase",
    "simulate",
    "train",
    "train_plane",
    "validate",
)
__all__ = ["__version__", *_API]

if TYPE_CHECKING:
    from featlearn.api import PhasePrediction as PhasePrediction
    from featlearn.api import figure as figure
    from featlearn.api import flag_names as flag_names
    from featlearn.api import mechanisms as mechanisms
    from featlearn.api import phases as phases
    from featlearn.api import predict_phase as predict_phase
    from featlearn.api import simulate as simulate
    from featlearn.api import train as train
    from featlearn.api import train_plane as train_plane
    from featlearn.api import validate as validate


def __getattr__(name: str) -> Any:
    if name in _API:
        # By name, not an import statement: no pipeline job runs the API, and the workflow's
        # code hashes (featlearn.dag) read import statements.
        return getattr(import_module("featlearn.api"), name)
    raise AttributeError(f"module 'featlearn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
