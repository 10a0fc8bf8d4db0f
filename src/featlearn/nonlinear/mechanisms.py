"""Mechanism flags of nonlinear runs (SPEC section 6 thresholds, per layer).

Kept free of torch so that figures and analyses of stored results load fast.
"""

from __future__ import annotations

import numpy as np
import xarray as xr


def mechanism_flags(ds: xr.Dataset, *, eps_c: float, eps_rho: float, eps_k: float) -> xr.Dataset:
    """Per-layer mechanism flags of a nonlinear run (SPEC section 6 thresholds).

    With ``delta_zeta = zeta(T) - zeta(0)`` and ``rho(T)`` per layer and the
    final ``ntk_change``: a run is ``kernel`` when ``ntk_change < eps_k`` and
    then carries no other flag; otherwise a layer shows ``alignment`` when
    ``delta_zeta >= eps_c``, ``disalignment`` when ``delta_zeta <= -eps_c``,
    ``rescaling`` when ``|rho(T)| >= eps_rho``. ``zeta`` is unsigned, so for the
    linear model it is ``|cos|`` and ``delta_zeta`` equals the SPEC's
    ``delta_c`` whenever ``cos`` keeps the target's sign.
    """
    final = ds.isel(step=-1)
    delta_zeta = final["zeta"] - ds["zeta"].isel(step=0)
    kernel = final["ntk_change"] < eps_k
    feature = ~kernel
    flags = xr.Dataset(
        {
            "kernel": kernel,
            "alignment": feature & (delta_zeta >= eps_c),
            "disalignment": feature & (delta_zeta <= -eps_c),
            "rescaling": feature & (np.abs(final["rho"]) >= eps_rho),
            "delta_zeta": delta_zeta,
            "rho_final": final["rho"],
            "ntk_change_final": final["ntk_change"],
        }
    )
    flags.attrs.update(eps_c=eps_c, eps_rho=eps_rho, eps_K=eps_k)
    return flags
