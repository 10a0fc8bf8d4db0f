"""Metadata of the nonlinear datasets: one table of every variable's and coordinate's long_name and units.

No torch: the training stage and the torch-free analyses both annotate
through :func:`annotate`, which fails on a name missing from the table.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

#: Why a run stopped: ``stop_reason`` holds the index (CF flag values 0..3).
STOP_REASONS = ("loss_target", "plateau", "max_steps", "diverged")

_AT_STOP = "at the run's stop_step"

#: long_name and units of every variable and coordinate (all dimensionless: units "1").
ATTRS: dict[str, tuple[str, str]] = {
    # series over the logged steps (held at their stop_step value after a run stops)
    "zeta": ("alignment zeta_l = |W_{l+1} W_l|_F / (|W_{l+1}|_F |W_l|_F) (NaN for the last layer)", "1"),
    "rho": ("rescaling rho_l = log(|W_l(t)|_F / |W_l(0)|_F)", "1"),
    "distance": ("relative distance travelled |W_l(t) - W_l(0)|_F / |W_l(0)|_F", "1"),
    "ntk_change": ("relative change of the empirical NTK on the probe batch, |K_t - K_0|_F / |K_0|_F", "1"),
    "layer_ntk_change": (
        "relative change of layer l's part of the empirical NTK, |K_l,t - K_l,0|_F / |K_l,0|_F", "1"
    ),
    "train_loss": ("training loss (full training set)", "1"),
    "test_loss": ("test loss", "1"),
    "test_accuracy": ("test accuracy (NaN for regression)", "1"),
    "zeta_theory": ("|cos(u, w)| predicted by the solvable linear model's gradient flow (docs/model.md)", "1"),
    # one value per run
    "stop_step": ("training step at which the run stopped (its stopping rule or the max_steps guard)", "1"),
    "converged": (
        "1 when the stopping rule (loss target or plateau) stopped the run, 0 when the guard did or it diverged", "1"
    ),
    "stop_reason": ("why the run stopped", "1"),
    # measures at the stopping point (per run, per layer)
    "delta_zeta": (f"alignment change zeta_l(T) - zeta_l(0), T {_AT_STOP}", "1"),
    "rho_final": (f"rescaling rho_l(T), T {_AT_STOP}", "1"),
    "distance_final": (f"relative distance |W_l(T) - W_l(0)|_F / |W_l(0)|_F, T {_AT_STOP}", "1"),
    "ntk_change_final": (f"relative empirical-NTK change |K_T - K_0|_F / |K_0|_F, T {_AT_STOP}", "1"),
    "layer_ntk_change_final": (f"relative change of layer l's NTK part, T {_AT_STOP}", "1"),
    "test_accuracy_final": (f"test accuracy {_AT_STOP} (NaN for regression)", "1"),
    "train_loss_final": (f"training loss {_AT_STOP}", "1"),
    # per grid point
    "lr_selected": (
        "base learning rate the runs trained with (chosen on the validation split when lr_selection is set)", "1"
    ),
    "stop_loss": (
        "training loss at or below which the loss-target rule stops a run (loss_target x zero-output loss)", "1"
    ),
    # learning-rate selection runs (validation split, never the test split)
    "validation_score": (
        "validation accuracy (or loss, see attribute selection_metric) of a selection run at its stop_step", "1"
    ),
    "validation_stop_step": ("training step at which a learning-rate selection run stopped", "1"),
    "validation_converged": ("1 when the stopping rule stopped a learning-rate selection run", "1"),
    "lr_factor_selected": ("lr_factor of the chosen candidate learning rate", "1"),
    # coordinates
    "setting": ("named initialization/target setting", "1"),
    "activation": ("activation function", "1"),
    "parametrization": ("parametrization (standard, ntk, mean_field)", "1"),
    "width": ("hidden-layer width", "1"),
    "init_scale": ("initialization-scale multiplier", "1"),
    "seed": ("seed index", "1"),
    "step": ("training step", "1"),
    "layer": ("layer index l (W_l maps layer l-1 to layer l)", "1"),
    "lr_factor": ("candidate learning rate as a multiple of the configured lr", "1"),
    "selection_seed": ("seed index of a learning-rate selection run", "1"),
    "init_correlation": ("correlation of readout and features at init", "1"),
    "target_scale": ("teacher slope beta* along the teacher direction", "1"),
}

#: CF flag variables: their values and what each means.
FLAGS: dict[str, tuple[np.ndarray, str]] = {
    "converged": (np.array([0, 1], dtype=np.int8), "not_converged converged"),
    "validation_converged": (np.array([0, 1], dtype=np.int8), "not_converged converged"),
    "stop_reason": (np.arange(len(STOP_REASONS), dtype=np.int8), " ".join(STOP_REASONS)),
}


def annotate(ds: xr.Dataset) -> xr.Dataset:
    """Set long_name, units (and CF flag attributes) of every variable and coordinate of ``ds``, in place.

    Raises
    ------
    KeyError
        A variable or coordinate missing from :data:`ATTRS`.
    """
    for name in ds.variables:
        long_name, units = ATTRS[name]
        ds[name].attrs.update(long_name=long_name, units=units)
        if name in FLAGS:
            values, meanings = FLAGS[name]
            ds[name].attrs.update(flag_values=values, flag_meanings=meanings)
    return ds
