"""The data contract: every kind of file featlearn writes, its variables and their metadata.

One place for each variable's ``long_name``, ``units``, CF flag values and
trailing dimensions, and for the label tuples that flag variables take
(phases, mechanisms, gradient-descent behaviour). Writers annotate their
datasets with :func:`annotate`; :func:`problems` checks a dataset against its
kind (the test suite runs it on every file the smoke run writes). Every file
records its kind in the global attribute ``featlearn_kind``, so a stage or a
figure can tell what it was given. The kinds are described for users in
``docs/data.md``.

Each variable lists the dimensions it has besides those of its file (a
trajectories file's grid dimensions, a phases file's cells), in order:
``beta`` is ``(*grid, seed, time)``, the width fits of a mechanisms file are
``(magnitude, *grid without width)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

#: Global attribute naming the kind of a featlearn file.
KIND_ATTRIBUTE = "featlearn_kind"

# ---------------------------------------------------------------------------
# names shared by several stages

#: Hyperparameters of the form prefactor * width^-exponent, their exponent and prefactor names.
SCALED_HYPERPARAMETERS = ("kappa", "sigma_u", "sigma_w", "eta_u", "eta_w")
EXPONENTS = ("a", "b_u", "b_w", "c_u", "c_w")
PREFACTORS = tuple(f"{name}0" for name in SCALED_HYPERPARAMETERS)
#: Hyperparameters that are plain values.
PLAIN_HYPERPARAMETERS = ("rho", "beta_star", "sigma2")
#: Loss growth over ``1 + L(0)`` beyond which a GD run is declared divergent (``diverged``;
#: the linear GD solver and the nonlinear phase planes).
#: Far above any transient (catapult peaks are a few orders of magnitude),
#: far below the float64 overflow.
DIVERGENCE_FACTOR = 1e30
#: Every hyperparameter value stored with a run (coordinates of trajectories.nc).
HYPERPARAMETERS = ("width", *SCALED_HYPERPARAMETERS, *PLAIN_HYPERPARAMETERS)
#: Hyperparameter values stored with every run of a nonlinear phase plane (its coordinates).
PLANE_HYPERPARAMETERS = ("width", *SCALED_HYPERPARAMETERS, "rho", "sigma2", *EXPONENTS)
#: Time-resolved observables of a linear-network run.
TRAJECTORY_VARIABLES = ("beta", "loss", "uu", "ww", "uw", "cos_uw", "ntk", "ntk_eta")

#: Phases as d -> infinity, in the order they are decided (first match wins); flag values 0..4.
PHASES = ("unstable-init", "frozen", "unstable-training", "kernel", "feature-learning")
#: Values of a classified phase: the phases, then ``boundary`` (5: the decisive exponent cannot be told from zero).
CLASSIFIED_PHASES = (*PHASES, "boundary")
#: The classifier's criteria in the order it applies them (flag values 0..3 of ``phase_criterion``).
PHASE_CRITERIA = ("e0", "divergence", "elam", "eM")
#: Gradient-descent behaviour of one run; flag values 0..2.
GD_PHASES = ("converging", "catapult", "divergent")
#: Meanings of the values 0, 1, ... of a mechanisms file's ``primary`` flag variable.
PRIMARY_LABELS = ("kernel", "alignment", "disalignment", "rescaling", "diverged")
#: The flags of a mechanisms file; the kernel flag is decided first and excludes the other three.
MECHANISM_FLAGS = ("kernel", "alignment", "disalignment", "rescaling")
#: Per-run mechanism magnitudes, in the order the width fits store them.
MAGNITUDES = ("delta_c", "rho_u", "rho_w", "kernel_change")
#: Quantities the phase classifier fits against width, with what each measures.
PHASE_QUANTITIES = {
    "beta0": "|initial output beta(0)|",
    "kernel_scale": "largest learning-rate weighted kernel up to the learning time max K_eta(t), t <= t_c",
    "kernel_change": "relative kernel change at the learning time |K_eta(t_c)/K_eta(0) - 1|",
    "learning_time": "learning time t_c (the loss first falls to learning_fraction of its start)",
}
#: Predicted width exponents of the phase table, with what grows like d^exponent.
PHASE_EXPONENTS = {
    "e0": "initial output",
    "eM": "laziness scale M",
    "eF": "force kappa sqrt(eta_u eta_w)",
    "elam": "convergence rate",
}
#: Swept dimensions of a nonlinear experiment, in the order of its dataset's dimensions.
NONLINEAR_SWEEP_DIMS = ("setting", "activation", "parametrization", "width", "init_scale")


@dataclass(frozen=True)
class Variable:
    """Metadata of one variable or coordinate.

    ``units`` is ``None`` for text-valued variables (CF gives them no
    units). ``dims`` are the dimensions it has besides its file's grid or
    cell dimensions, in order (``None``: not checked, for coordinates that
    live on whichever grid dimensions a file has).
    ``flags`` names the values 0, 1, ... of a CF flag variable.
    """

    long_name: str
    units: str | None = "1"
    dims: tuple[str, ...] | None = None
    flags: tuple[str, ...] = ()

    def attrs(self) -> dict[str, Any]:
        """The netCDF attributes this entry gives a variable."""
        attrs: dict[str, Any] = {"long_name": self.long_name}
        if self.units is not None:
            attrs["units"] = self.units
        if self.flags:
            attrs["flag_values"] = np.arange(len(self.flags), dtype=np.int8)
            attrs["flag_meanings"] = " ".join(self.flags)
        return attrs


@dataclass(frozen=True)
class Kind:
    """A kind of file: what it holds and every variable it may hold.

    ``required`` are the variables every file of the kind holds. A name the
    kind does not list is allowed only as one of an experiment's own grid
    axes (declared under ``axes:`` in its configuration), whose long name is
    the axis name: a dimension coordinate of the file when ``axes`` is
    ``"dims"``, a coordinate ``grid_<axis>`` along ``point`` in a simulation
    chunk (``axes="grid_"``); ``None``: no such names.
    """

    name: str
    description: str
    variables: Mapping[str, Variable]
    required: tuple[str, ...] = ()
    axes: str | None = "dims"

    def entry(self, name: str, ds: xr.Dataset) -> Variable | None:
        """The contract entry of variable ``name`` of ``ds`` (``None``: not in the contract)."""
        if name in self.variables:
            return self.variables[name]
        if self.axes == "dims" and name in ds.dims:
            return Variable(name)
        if self.axes == "grid_" and name.startswith("grid_") and ds[name].dims == ("point",):
            axis = name.removeprefix("grid_")
            return self.variables.get(axis, Variable(axis))
        return None


def _flag(long_name: str, names: tuple[str, ...], dims: tuple[str, ...] | None = None) -> Variable:
    return Variable(long_name, "1", dims, names)


#: Hyperparameter and grid coordinates, shared by every file about linear-network runs.
_HYPERPARAMETER_COORDS: dict[str, Variable] = {
    "width": Variable("hidden width d"),
    "kappa": Variable("output scale kappa"),
    "sigma_u": Variable("initial standard deviation of u"),
    "sigma_w": Variable("initial standard deviation of w"),
    "eta_u": Variable("learning rate of u"),
    "eta_w": Variable("learning rate of w"),
    "rho": Variable("initial per-coordinate correlation of u and w"),
    "beta_star": Variable("target slope beta_star"),
    "sigma2": Variable("input second moment sigma2"),
    "dt": Variable("gradient descent step (0 for gradient flow)", dims=()),
    "a": Variable("width exponent of kappa"),
    "b_u": Variable("width exponent of sigma_u"),
    "b_w": Variable("width exponent of sigma_w"),
    "c_u": Variable("width exponent of eta_u"),
    "c_w": Variable("width exponent of eta_w"),
    "kappa0": Variable("prefactor of kappa"),
    "sigma_u0": Variable("prefactor of sigma_u"),
    "sigma_w0": Variable("prefactor of sigma_w"),
    "eta_u0": Variable("prefactor of eta_u"),
    "eta_w0": Variable("prefactor of eta_w"),
    "parametrization": Variable("named width parametrization", units=None),
    "seed": Variable("seed index of the random initial state", dims=("seed",)),
    "time": Variable("training time t = k dt (gradient-flow time units)", dims=("time",)),
}

_TRAJECTORY_DATA: dict[str, Variable] = {
    "beta": Variable("network output slope beta = kappa u.w", dims=("seed", "time")),
    "loss": Variable("excess training loss sigma2 (beta - beta_star)^2 / 2", dims=("seed", "time")),
    "uu": Variable("squared norm of the readout layer |u|^2", dims=("seed", "time")),
    "ww": Variable("squared norm of the hidden layer |w|^2", dims=("seed", "time")),
    "uw": Variable("overlap of the two layers u.w", dims=("seed", "time")),
    "cos_uw": Variable("cosine of the angle between u and w", dims=("seed", "time")),
    "ntk": Variable("neural tangent kernel kappa^2 (|u|^2 + |w|^2)", dims=("seed", "time")),
    "ntk_eta": Variable("learning-rate weighted kernel kappa^2 (eta_u |w|^2 + eta_w |u|^2)", dims=("seed", "time")),
    "diverged": _flag(
        "gradient descent left the float range (later values are NaN)", ("finite", "diverged"), ("seed",)
    ),
}

_MECHANISM_DATA: dict[str, Variable] = {
    "c_initial": Variable("sign(beta_star) cos(u, w) at t = 0", dims=("seed",)),
    "c_final": Variable("sign(beta_star) cos(u, w) at the last stored time T", dims=("seed",)),
    "delta_c": Variable("change of the target-signed cosine c(T) - c(0)", dims=("seed",)),
    "rho_u": Variable("log norm ratio of the readout layer log(|u(T)| / |u(0)|)", dims=("seed",)),
    "rho_w": Variable("log norm ratio of the hidden layer log(|w(T)| / |w(0)|)", dims=("seed",)),
    "kernel_change": Variable(
        "relative change of the learning-rate weighted kernel K_eta(T) / K_eta(0) - 1", dims=("seed",)
    ),
    "a_part": Variable("output change by turning: integral of kappa |u||w| dcos over [0, T]", dims=("seed",)),
    "r_part": Variable("output change by norm growth: integral of kappa cos d(|u||w|) over [0, T]", dims=("seed",)),
    "delta_c_t": Variable("change of the target-signed cosine c(t) - c(0)", dims=("seed", "time")),
    "rho_u_t": Variable("log norm ratio of the readout layer log(|u(t)| / |u(0)|)", dims=("seed", "time")),
    "rho_w_t": Variable("log norm ratio of the hidden layer log(|w(t)| / |w(0)|)", dims=("seed", "time")),
    "kernel_change_t": Variable(
        "relative change of the learning-rate weighted kernel K_eta(t) / K_eta(0) - 1", dims=("seed", "time")
    ),
    "a_part_t": Variable("output change by turning up to time t: integral of kappa |u||w| dcos", dims=("seed", "time")),
    "r_part_t": Variable(
        "output change by norm growth up to time t: integral of kappa cos d(|u||w|)", dims=("seed", "time")
    ),
    "kernel": Variable("kernel regime: |kernel_change| < eps_K (excludes the mechanism flags)", dims=("seed",)),
    "alignment": Variable("alignment: not kernel and delta_c >= eps_c", dims=("seed",)),
    "disalignment": Variable("disalignment: not kernel and delta_c <= -eps_c", dims=("seed",)),
    "rescaling": Variable("rescaling: not kernel and max(|rho_u|, |rho_w|) >= eps_rho", dims=("seed",)),
    "primary": _flag("mechanism that produced the output change", PRIMARY_LABELS, ("seed",)),
    "diverged": Variable("gradient descent left the float range (magnitudes are NaN)", dims=("seed",)),
    "magnitude": Variable("mechanism magnitude fitted against width", dims=("magnitude",)),
    "width_exponent": Variable("exponent p of the fit rms-over-seeds(|magnitude|) ~ width^p", dims=("magnitude",)),
    "width_exponent_stderr": Variable("standard error of the width exponent (least squares)", dims=("magnitude",)),
    "width_prefactor": Variable("prefactor C of the fit rms-over-seeds(|magnitude|) ~ C width^p", dims=("magnitude",)),
}


#: What a nonlinear phase plane records of every run (featlearn.nonlinear.planes): the names the
#: phase classifier reads in a trajectories file, measured on a network.
_PLANE_DATA: dict[str, Variable] = {
    "loss": Variable(
        "training loss 1/2 mean over training samples of |f(x) - y|^2 (one-hot targets for classes)",
        dims=("seed", "time"),
    ),
    "beta": Variable("network output scale: rms of f_o(x) over training inputs x and outputs o", dims=("seed", "time")),
    "ntk_eta": Variable(
        "learning-rate weighted empirical NTK scale: mean over training inputs x and outputs o of "
        "sum_l eta_l |df_o(x)/dtheta_l|^2",
        dims=("seed", "time"),
    ),
    "diverged": _TRAJECTORY_DATA["diverged"],
}
#: Hyperparameter coordinates of a plane: the layers' scales instead of the two vectors'.
_PLANE_COORDS: dict[str, Variable] = {
    **{name: variable for name, variable in _HYPERPARAMETER_COORDS.items() if name != "beta_star"},
    "kappa": Variable("output multiplier kappa of the readout layer"),
    "sigma_u": Variable("initial standard deviation of the readout weights"),
    "sigma_w": Variable("initial standard deviation of the weights of every other layer"),
    "eta_u": Variable("learning rate of the readout weights"),
    "eta_w": Variable("learning rate of the weights of every other layer"),
    "rho": Variable("initial correlation of the layers (0: independent draws)"),
    "sigma2": Variable("input scale of the GD step: 1, the inputs' second moment is inside ntk_eta"),
    "dt": Variable("gradient descent step (the learning rates carry the step size)", dims=()),
    "time": Variable("gradient descent step k", dims=("time",)),
}


def _phase_variables() -> dict[str, Variable]:
    cell = ()
    variables = {
        "phase_theory": _flag("phase predicted from the width exponents (docs/phases.md, the predictor)", PHASES, cell),
        "phase": _flag("phase classified from the width scaling of measurements", CLASSIFIED_PHASES, cell),
        "phase_criterion": _flag(
            "criterion that decided the phase, or that a boundary cell sits on", PHASE_CRITERIA, cell
        ),
        "agrees": Variable("empirical phase equals the predicted phase", dims=cell),
        "kernel_change_at_resolution": Variable(
            "relative kernel change below the float64 resolution at the largest fitted width", dims=cell
        ),
        "learning_widths": Variable("widths at which every seed reached its learning time", dims=cell),
        "at_learning_time": Variable(
            "kernel scale and change fitted at the learning time (else at the horizon)", dims=cell
        ),
        "diverged_fraction": Variable(
            "fraction of seeds whose gradient descent diverged at the largest width", dims=cell
        ),
        "gd_phase_run": _flag("gradient-descent behaviour of each run", GD_PHASES, ("seed",)),
        "gd_phase": _flag("gradient-descent behaviour, most frequent over seeds", GD_PHASES, cell),
        "step_kernel": Variable("step times initial kernel dt sigma2 K_eta(0), median over seeds", dims=cell),
    }
    for key, what in PHASE_EXPONENTS.items():
        variables[f"theory_{key}"] = Variable(f"predicted width exponent of the {what}", dims=cell)
    for name, what in PHASE_QUANTITIES.items():
        exponent = f"{name}_exponent"
        for suffix, long_name in {
            "": f"log-log slope against width of the {what}",
            "_std": f"seed-noise standard deviation of {exponent} (bootstrap)",
            "_dof": f"effective degrees of freedom of {exponent}_std",
            "_curvature": (
                f"curvature of the log-log curve of the {name}: half the change of its slope per unit log width"
            ),
            "_curvature_std": f"seed-noise standard deviation of {exponent}_curvature (bootstrap)",
            "_allowance": f"systematic allowance of {exponent} (how far its asymptote may lie)",
            "_low": f"low end of the decision interval of {exponent}",
            "_high": f"high end of the decision interval of {exponent}",
            "_predicted": f"predicted width exponent of the {what}",
            "_difference": f"{exponent} minus {exponent}_predicted",
        }.items():
            variables[f"{exponent}{suffix}"] = Variable(long_name, dims=cell)
    return variables


#: Why a nonlinear run stopped: the values of ``stop_reason``.
STOP_REASONS = ("loss_target", "plateau", "max_steps", "diverged")
_CONVERGED = ("not_converged", "converged")
_AT_STOP = "at the run's stop_step"
_RUN = ("seed",)
_SERIES = ("seed", "step")
_LAYERS = ("seed", "step", "layer")
_NONLINEAR_VARIABLES: dict[str, Variable] = {
    # series over the logged steps (held at their stop_step value after a run stops)
    "zeta": Variable(
        "alignment zeta_l = |W_{l+1} W_l|_F / (|W_{l+1}|_F |W_l|_F) (NaN for the last layer)", dims=_LAYERS
    ),
    "rho": Variable("rescaling rho_l = log(|W_l(t)|_F / |W_l(0)|_F)", dims=_LAYERS),
    "distance": Variable("relative distance travelled |W_l(t) - W_l(0)|_F / |W_l(0)|_F", dims=_LAYERS),
    "ntk_change": Variable(
        "relative change of the empirical NTK on the probe batch, |K_t - K_0|_F / |K_0|_F", dims=_SERIES
    ),
    "layer_ntk_change": Variable(
        "relative change of layer l's part of the empirical NTK, |K_l,t - K_l,0|_F / |K_l,0|_F", dims=_LAYERS
    ),
    "train_loss": Variable("training loss (full training set)", dims=_SERIES),
    "test_loss": Variable("test loss", dims=_SERIES),
    "test_accuracy": Variable("test accuracy (NaN for regression)", dims=_SERIES),
    "zeta_theory": Variable(
        "|cos(u, w)| predicted by the solvable linear model's gradient flow (docs/model.md)", dims=_SERIES
    ),
    # one value per run
    "stop_step": Variable(
        "training step at which the run stopped (its stopping rule or the max_steps guard)", dims=_RUN
    ),
    "converged": _flag(
        "1 when the stopping rule (loss target or plateau) stopped the run, 0 when the guard did or it diverged",
        _CONVERGED,
        _RUN,
    ),
    "stop_reason": _flag("why the run stopped", STOP_REASONS, _RUN),
    # measures at the stopping point (per run, per layer)
    "delta_zeta": Variable(f"alignment change zeta_l(T) - zeta_l(0), T {_AT_STOP}", dims=("seed", "layer")),
    "rho_final": Variable(f"rescaling rho_l(T), T {_AT_STOP}", dims=("seed", "layer")),
    "distance_final": Variable(
        f"relative distance |W_l(T) - W_l(0)|_F / |W_l(0)|_F, T {_AT_STOP}", dims=("seed", "layer")
    ),
    "ntk_change_final": Variable(f"relative empirical-NTK change |K_T - K_0|_F / |K_0|_F, T {_AT_STOP}", dims=_RUN),
    "layer_ntk_change_final": Variable(f"relative change of layer l's NTK part, T {_AT_STOP}", dims=("seed", "layer")),
    "test_accuracy_final": Variable(f"test accuracy {_AT_STOP} (NaN for regression)", dims=_RUN),
    "train_loss_final": Variable(f"training loss {_AT_STOP}", dims=_RUN),
    # per grid point
    "lr_selected": Variable(
        "base learning rate the runs trained with (chosen on the validation split when lr_selection is set)"
    ),
    "stop_loss": Variable(
        "training loss at or below which the loss-target rule stops a run (loss_target x zero-output loss)"
    ),
    # learning-rate selection runs (validation split, never the test split)
    "validation_score": Variable(
        "validation accuracy (or loss, see attribute selection_metric) of a selection run at its stop_step",
        dims=("lr_factor", "selection_seed"),
    ),
    "validation_stop_step": Variable(
        "training step at which a learning-rate selection run stopped", dims=("lr_factor", "selection_seed")
    ),
    "validation_converged": _flag(
        "1 when the stopping rule stopped a learning-rate selection run", _CONVERGED, ("lr_factor", "selection_seed")
    ),
    "lr_factor_selected": Variable("lr_factor of the chosen candidate learning rate"),
    # coordinates
    "setting": Variable("named initialization/target setting", dims=("setting",)),
    "activation": Variable("activation function", dims=("activation",)),
    "parametrization": Variable("parametrization (standard, ntk, mean_field)", dims=("parametrization",)),
    "width": Variable("hidden-layer width", dims=("width",)),
    "init_scale": Variable("initialization-scale multiplier", dims=("init_scale",)),
    "seed": Variable("seed index", dims=("seed",)),
    "step": Variable("training step", dims=("step",)),
    "layer": Variable("layer index l (W_l maps layer l-1 to layer l)", dims=("layer",)),
    "lr_factor": Variable("candidate learning rate as a multiple of the configured lr", dims=("lr_factor",)),
    "selection_seed": Variable("seed index of a learning-rate selection run", dims=("selection_seed",)),
    "init_correlation": Variable("correlation of readout and features at init", dims=("setting",)),
    "target_scale": Variable("teacher slope beta* along the teacher direction", dims=("setting",)),
}

KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "trajectories_chunk",
            "one simulation job's share of an experiment's grid: dims (point, seed, time)",
            {
                **_TRAJECTORY_DATA,
                **_HYPERPARAMETER_COORDS,
                "point": Variable("flat index of the grid point", dims=("point",)),
            },
            required=(*TRAJECTORY_VARIABLES, "diverged", *HYPERPARAMETERS, *EXPONENTS, "point", "seed", "time", "dt"),
            axes="grid_",
        ),
        Kind(
            "trajectories",
            "every run of an experiment: dims (*grid, seed, time)",
            {**_TRAJECTORY_DATA, **_HYPERPARAMETER_COORDS},
            required=(*TRAJECTORY_VARIABLES, "diverged", *HYPERPARAMETERS, *EXPONENTS, "seed", "time", "dt"),
        ),
        Kind(
            "nonlinear_plane",
            "every run of a nonlinear phase plane, what the phase classifier reads: dims (*grid, seed, time)",
            {**_PLANE_DATA, **_PLANE_COORDS},
            required=(*_PLANE_DATA, *PLANE_HYPERPARAMETERS, "seed", "time", "dt"),
        ),
        Kind(
            "mechanisms",
            "mechanism magnitudes, flags and labels of every run: dims (*grid, seed[, time])",
            {**_MECHANISM_DATA, **_HYPERPARAMETER_COORDS},
            required=(*MAGNITUDES, "primary", "kernel", "alignment", "disalignment", "rescaling", "diverged"),
        ),
        Kind(
            "phases",
            "predicted and classified phase of every cell (grid dims without width)",
            {**_phase_variables(), **_HYPERPARAMETER_COORDS},
            required=("phase_theory", *(f"theory_{key}" for key in PHASE_EXPONENTS)),
        ),
        Kind(
            "nonlinear",
            "metrics of every training run of a nonlinear experiment",
            _NONLINEAR_VARIABLES,
            required=("zeta", "rho", "ntk_change", "train_loss", "test_loss", "test_accuracy"),
            axes=None,
        ),
    )
}


def kind_of(ds: xr.Dataset) -> str:
    """The kind recorded in a featlearn file (``""`` when it records none)."""
    return str(ds.attrs.get(KIND_ATTRIBUTE, ""))


def annotate(ds: xr.Dataset, kind: str) -> xr.Dataset:
    """Give every variable of ``ds`` its contract metadata and record ``kind``; returns ``ds``.

    Attributes other than the contract's (e.g. a chunk's own) are kept.
    Raises ``KeyError`` for a variable the kind does not define (a writer
    out of step with the contract is a bug, not a user error).
    """
    entry = KINDS[kind]
    for name, variable in ds.variables.items():
        spec = entry.entry(str(name), ds)
        if spec is None:
            raise KeyError(f"{kind} files have no variable {name!r}; add it to featlearn.contract")
        variable.attrs.update(spec.attrs())
    ds.attrs[KIND_ATTRIBUTE] = kind
    return ds


def problems(ds: xr.Dataset, kind: str | None = None) -> list[str]:
    """Every way ``ds`` departs from the contract of its kind (empty: it conforms).

    Checks the recorded kind, that the required variables are there, that
    every variable is in the contract with its attributes, and that each
    variable has the contract's dims, in order.
    """
    kind = kind or kind_of(ds)
    if kind not in KINDS:
        return [f"unknown kind {kind!r} (known: {', '.join(KINDS)})"]
    entry = KINDS[kind]
    found = []
    if kind_of(ds) != kind:
        found.append(f"global attribute {KIND_ATTRIBUTE} is {kind_of(ds)!r}, expected {kind!r}")
    found.extend(f"missing variable {name!r}" for name in entry.required if name not in ds.variables)
    for name, variable in ds.variables.items():
        spec = entry.entry(str(name), ds)
        if spec is None:
            found.append(f"variable {name!r} is not in the contract of {kind} files")
            continue
        for key, value in spec.attrs().items():
            if not np.array_equal(np.asarray(variable.attrs.get(key)), np.asarray(value)):
                found.append(f"{name}: attribute {key} is {variable.attrs.get(key)!r}, expected {value!r}")
        if spec.dims is not None and [d for d in variable.dims if d in spec.dims] != list(spec.dims):
            found.append(f"{name}: dims {variable.dims} do not include {spec.dims} in this order")
    return found


def markdown() -> str:
    """The contract as Markdown tables, one per kind (the generated part of ``docs/data.md``)."""
    lines = []
    for kind in KINDS.values():
        lines += [f"### `{kind.name}`", "", f"{kind.description[0].upper()}{kind.description[1:]}.", ""]
        lines += ["| variable | its own dims | long_name | units | flag meanings |", "|---|---|---|---|---|"]
        for name, variable in kind.variables.items():
            dims = "" if variable.dims is None else ", ".join(variable.dims)
            long_name = variable.long_name.replace("|", "\\|")
            required = " (always)" if name in kind.required else ""
            lines.append(
                f"| `{name}`{required} | {dims} | {long_name} | {variable.units or ''} | {' '.join(variable.flags)} |"
            )
        lines.append("")
    return "\n".join(lines)


#: The line of ``docs/data.md`` after which the tables are generated.
DOCS_MARKER = "<!-- generated by `python -m featlearn.contract docs/data.md`: do not edit below this line -->"


if __name__ == "__main__":  # python -m featlearn.contract docs/data.md: regenerate the tables of that page
    import sys
    from pathlib import Path

    page = Path(sys.argv[1])
    text = page.read_text()
    if DOCS_MARKER not in text:
        sys.exit(f"{page} has no line {DOCS_MARKER!r}")
    page.write_text(text.split(DOCS_MARKER, 1)[0] + DOCS_MARKER + "\n" + markdown())
