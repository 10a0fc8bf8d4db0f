"""featlearn: the three mechanisms of feature learning in a solvable linear network.

Reproduces Xu & Ziyin, "Three Mechanisms of Feature Learning in a Linear
Network" (ICLR 2025) as a rebuildable pipeline. The pure mathematics lives in
:mod:`featlearn.theory` and :mod:`featlearn.solvers`; stages of the pipeline
have one module each; :mod:`featlearn.io` does all file input/output and
:mod:`featlearn.cli` is the command line that the Snakemake rules call.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("featlearn")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
