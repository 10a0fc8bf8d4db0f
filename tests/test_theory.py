"""The closed form and the identities of featlearn.theory against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.integrate import solve_ivp

from featlearn import theory
from featlearn.grid import PARAMETRIZATIONS
from featlearn.theory import Gram, Hyperparameters


def ode_gram(u0, w0, hyper: Hyperparameters, times) -> Gram:
    """Gram entries of the width-d gradient flow, by a tight-tolerance ODE solve (independent of the code)."""
    kappa, eta_u, eta_w, beta_star, sigma2 = (float(x) for x in hyper)
    d = len(u0)

    def rhs(_t, state):
        u, w = state[:d], state[d:]
        force = sigma2 * kappa * (kappa * (u @ w) - beta_star)
        return np.concatenate([-eta_u * force * w, -eta_w * force * u])

    scale = max(np.abs(np.concatenate([u0, w0])).max(), 1.0)
    sol = solve_ivp(
        rhs, (0, times[-1]), np.concatenate([u0, w0]), method="DOP853", t_eval=times, rtol=1e-13, atol=1e-15 * scale
    )
    assert sol.success
    u, w = sol.y[:d], sol.y[d:]
    return Gram((u * u).sum(0), (w * w).sum(0), (u * w).sum(0))


def relative_error(gram: Gram, reference: Gram) -> float:
    """Largest error, each entry relative to its natural scale (uw relative to |u||w|)."""
    scale_uw = np.sqrt(reference.uu * reference.ww)
    return max(
        np.max(np.abs(gram.uu - reference.uu) / reference.uu),
        np.max(np.abs(gram.ww - reference.ww) / reference.ww),
        np.max(np.abs(gram.uw - reference.uw) / scale_uw),
    )


def random_hyper(rng) -> Hyperparameters:
    return Hyperparameters(
        kappa=rng.uniform(0.05, 0.3),
        eta_u=rng.uniform(0.2, 2.0),
        eta_w=rng.uniform(0.2, 2.0),
        beta_star=rng.uniform(-2.0, 2.0),
        sigma2=rng.uniform(0.5, 2.0),
    )


@pytest.mark.parametrize("case", range(8))
def test_closed_form_matches_ode_of_width_d_system(case):
    rng = np.random.default_rng(1000 + case)
    d = 100
    rho = [0.0, 0.5, -0.8, 0.95][case % 4]
    u, w = theory.sample_vectors(rng, d, rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3), rho, 1)
    hyper = random_hyper(rng)
    times = np.linspace(0, 15, 31)
    exact = theory.flow_trajectory(theory.gram_from_vectors(u[0], w[0]), hyper, times)
    reference = ode_gram(u[0], w[0], hyper, times)
    assert relative_error(exact, reference) <= 1e-8


def test_flow_broadcasts_over_batches_of_states_and_hyperparameters():
    rng = np.random.default_rng(3)
    gram0 = theory.sample_gram(rng, 50, 0.2, 0.2, 0.0, 6)
    hyper = Hyperparameters(np.array([[0.1], [0.2]]), 1.0, 0.5, np.array([1.0, -1.0, 0.0, 2.0, 0.5, 1.0]), 1.0)
    times = np.linspace(0, 3, 7)
    batch = theory.flow_trajectory(gram0, hyper, times)
    assert batch.uu.shape == (2, 6, 7)
    one = theory.flow_trajectory(
        Gram(gram0.uu[4], gram0.ww[4], gram0.uw[4]), Hyperparameters(0.2, 1.0, 0.5, 0.5, 1.0), times
    )
    np.testing.assert_allclose(batch.uw[1, 4], one.uw, rtol=1e-14)


def test_conserved_quantity_is_constant_along_the_flow():
    rng = np.random.default_rng(4)
    gram0 = theory.sample_gram(rng, 1000, 0.05, 0.08, 0.3, 20)
    eta_u, eta_w = rng.uniform(0.1, 3, 20), rng.uniform(0.1, 3, 20)
    hyper = Hyperparameters(rng.uniform(0.1, 1, 20), eta_u, eta_w, rng.uniform(-2, 2, 20), 1.0)
    traj = theory.flow_trajectory(gram0, hyper, np.geomspace(1e-3, 1e3, 50))
    conserved = theory.conserved_quantity(eta_u[:, None], eta_w[:, None], traj)
    initial = theory.conserved_quantity(eta_u, eta_w, gram0)[:, None]
    scale = (eta_w * gram0.uu + eta_u * gram0.ww)[:, None]
    assert np.max(np.abs(conserved - initial) / scale) < 1e-13


# --- edge cases of docs/model.md#eq-closed-form: no NaN, and the right answer -------------------------------


def vectors_for(kind: str, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    u = rng.normal(0, 0.4, d)
    if kind == "P=0":  # u/sqrt(eta_u) = -w/sqrt(eta_w) with eta_u = 1, eta_w = 2
        return u, -np.sqrt(2.0) * u
    if kind == "Q=0":
        return u, np.sqrt(2.0) * u
    return u, rng.normal(0, 0.4, d)


EDGE_CASES = {
    "beta*=0": ("generic", Hyperparameters(0.7, 1.0, 2.0, 0.0, 1.0)),
    "beta*<0": ("generic", Hyperparameters(0.7, 1.0, 2.0, -1.5, 1.0)),
    "P=0, beta*>0": ("P=0", Hyperparameters(0.7, 1.0, 2.0, 1.0, 1.0)),
    "P=0, beta*<0": ("P=0", Hyperparameters(0.7, 1.0, 2.0, -1.0, 1.0)),
    "P=0, beta*=0": ("P=0", Hyperparameters(0.7, 1.0, 2.0, 0.0, 1.0)),
    "Q=0, beta*>0": ("Q=0", Hyperparameters(0.7, 1.0, 2.0, 1.0, 1.0)),
    "Q=0, beta*<0": ("Q=0", Hyperparameters(0.7, 1.0, 2.0, -1.0, 1.0)),
    "Q=0, beta*=0": ("Q=0", Hyperparameters(0.7, 1.0, 2.0, 0.0, 1.0)),
    "eta_u=0": ("generic", Hyperparameters(0.7, 0.0, 2.0, 1.0, 1.0)),
    "eta_w=0": ("generic", Hyperparameters(0.7, 1.5, 0.0, -1.0, 1.0)),
    "both rates 0": ("generic", Hyperparameters(0.7, 0.0, 0.0, -1.0, 1.0)),
    "kappa=0": ("generic", Hyperparameters(0.0, 1.0, 2.0, 1.0, 1.0)),
}


@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_edge_cases_are_finite_and_match_the_ode(name):
    kind, hyper = EDGE_CASES[name]
    u, w = vectors_for(kind)
    times = np.linspace(0, 6, 25)
    exact = theory.flow_trajectory(theory.gram_from_vectors(u, w), hyper, times)
    assert all(np.all(np.isfinite(x)) for x in exact)
    reference = ode_gram(u, w, hyper, times)
    # Relative to the initial scale: at P = 0 the run sits on the stable manifold of a saddle,
    # where any rounding (in either computation) grows like exp(B t) and point-wise relative
    # errors of the vanishing entries say nothing about the solution.
    scale = reference.uu[0] + reference.ww[0]
    for entry, ref in zip(exact, reference):
        assert np.max(np.abs(entry - ref)) / scale < 1e-9, name


@pytest.mark.parametrize("beta_star", [1.0, 0.0, -2.0])
def test_large_lambda_t_converges_to_the_fixed_point_without_nan(beta_star):
    rng = np.random.default_rng(11)
    gram0 = theory.sample_gram(rng, 100, 0.1, 0.1, 0.0, 5)
    hyper = Hyperparameters(1.0, 1.0, 1.0, beta_star, 1.0)
    traj = theory.flow_trajectory(gram0, hyper, np.array([0.0, 1e3, 1e8, 1e300]))
    assert all(np.all(np.isfinite(x)) for x in traj)
    np.testing.assert_allclose(traj.uw[:, -1], beta_star, atol=1e-12)
    ratio = theory.ntk_eta(1.0, 1.0, 1.0, Gram(*(x[:, -1] for x in traj))) / theory.ntk_eta(1.0, 1.0, 1.0, gram0)
    np.testing.assert_allclose(ratio, theory.final_kernel_ratio(gram0, hyper), rtol=1e-12)


@pytest.mark.parametrize("width", [2**30, 10**12])
def test_extreme_widths_stay_in_float_range(width):
    rng = np.random.default_rng(12)
    a, b_u, b_w, c_u, c_w = PARAMETRIZATIONS["ntk"]
    gram0 = theory.sample_gram(rng, width, width**-b_u, width**-b_w, 0.0, 4)
    hyper = Hyperparameters(width**-a, width**-c_u, width**-c_w, 1.0, 1.0)
    traj = theory.flow_trajectory(gram0, hyper, np.array([0.0, 1.0, 100.0]))
    assert all(np.all(np.isfinite(x)) for x in traj)
    kernel_change = theory.ntk_eta(*hyper[:3], Gram(*(x[:, -1] for x in traj))) / theory.ntk_eta(*hyper[:3], gram0) - 1
    expected = theory.final_kernel_ratio(gram0, hyper) - 1  # ~ 1/width, far below 1
    # Stored Gram entries carry float64 precision, so the change is known to ~1e-16 / change.
    np.testing.assert_allclose(
        kernel_change, expected, rtol=max(1e-6, 100 * np.finfo(float).eps / np.abs(expected).min())
    )


# --- identities of docs/model.md#kernel-laziness-and-rate ----------------------------------------------


def test_laziness_rate_and_final_kernel_identities():
    rng = np.random.default_rng(13)
    n = 200
    gram0 = theory.sample_gram(rng, 30, 0.3, 0.2, 0.4, n)
    hyper = Hyperparameters(
        rng.uniform(0.1, 1, n),
        rng.uniform(0.1, 2, n),
        rng.uniform(0.1, 2, n),
        rng.uniform(-2, 2, n),
        rng.uniform(0.5, 2, n),
    )
    beta0 = theory.output(hyper.kappa, gram0)
    m = theory.laziness_scale(gram0, hyper)
    assert np.all(m >= 2 * np.abs(beta0) - 1e-12)
    s = np.sqrt(hyper.eta_u * hyper.eta_w)
    lam = theory.convergence_rate(gram0, hyper)
    np.testing.assert_allclose(
        lam, s * hyper.sigma2 * hyper.kappa * np.sqrt(m**2 + 4 * (hyper.beta_star**2 - beta0**2)), rtol=1e-10
    )


def test_residual_decays_at_rate_lambda():
    rng = np.random.default_rng(14)
    gram0 = theory.sample_gram(rng, 30, 0.3, 0.2, 0.4, 1)
    hyper = Hyperparameters(0.5, 0.7, 1.3, 1.2, 1.0)
    lam = float(theory.convergence_rate(gram0, hyper)[0])
    # Late enough for the exp(-2 lambda t) correction to be ~1e-9, early enough to keep digits.
    times = np.array([10.0, 13.0]) / lam
    traj = theory.flow_trajectory(gram0, hyper, times)
    residual = np.abs(theory.output(hyper.kappa, traj)[0] - hyper.beta_star)
    measured = -np.log(residual[1] / residual[0]) / (times[1] - times[0])
    assert measured == pytest.approx(lam, rel=1e-4)


@pytest.mark.parametrize("eps", [0.5, 1e-2, 1e-6])
def test_learning_time_inverts_the_loss(eps):
    rng = np.random.default_rng(15)
    n = 50
    gram0 = theory.sample_gram(rng, 40, 0.2, 0.3, 0.2, n)
    hyper = Hyperparameters(
        rng.uniform(0.2, 1, n), rng.uniform(0.2, 2, n), rng.uniform(0.2, 2, n), rng.uniform(-2, 2, n), 1.0
    )
    t_c = theory.learning_time(gram0, hyper, eps)
    assert np.all(np.isfinite(t_c)) and np.all(t_c > 0)
    loss0 = theory.loss(theory.output(hyper.kappa, gram0), hyper.beta_star, 1.0)
    at_t_c = [
        theory.loss(
            theory.output(
                hyper.kappa[i],
                theory.flow_trajectory(
                    Gram(*(x[i] for x in gram0)),
                    Hyperparameters(*(np.asarray(x)[i] if np.ndim(x) else x for x in hyper)),
                    np.array([t_c[i]]),
                ),
            ),
            hyper.beta_star[i],
            1.0,
        )[0]
        for i in range(n)
    ]
    np.testing.assert_allclose(np.array(at_t_c) / loss0, eps, rtol=1e-6)


def test_learning_time_with_a_frozen_layer_and_at_the_target():
    gram0 = Gram(np.array([2.0, 2.0]), np.array([3.0, 3.0]), np.array([0.5, 1.0]))
    hyper = Hyperparameters(1.0, np.array([0.0, 1.0]), np.array([1.0, 1.0]), np.array([2.0, 1.0]), 1.0)
    t_c = theory.learning_time(gram0, hyper, 1e-2)
    # u frozen: beta - beta* decays at rate eta_w sigma2 kappa^2 uu0 = 2, the loss at twice that.
    assert t_c[0] == pytest.approx(np.log(100) / 4)
    assert t_c[1] == 0.0


# --- exact Gram sampling ---------------------------------------------------------------------


def wishart_moments(d, sigma_u, sigma_w, rho):
    """Means and variances of (uu, ww, uw) for i.i.d. correlated Gaussian coordinates."""
    su2, sw2 = sigma_u**2, sigma_w**2
    means = np.array([d * su2, d * sw2, d * rho * sigma_u * sigma_w])
    variances = np.array([2 * d * su2**2, 2 * d * sw2**2, d * su2 * sw2 * (1 + rho**2)])
    return means, variances


CASES = [(d, rho) for d in (1, 3, 40, 10**6) for rho in (0.0, 0.6, -0.9)]
FALSE_ALARM = 1e-4  # probability that any of the checks below fails for a correct sampler


def test_gram_sampling_matches_wishart_moments():
    checks_per_case = 6  # mean and variance of three entries
    z_limit = stats.norm.isf(FALSE_ALARM / (2 * checks_per_case * len(CASES)))  # Bonferroni
    n = 40_000
    rng = np.random.default_rng(20240101)
    for d, rho in CASES:
        sample = np.stack(theory.sample_gram(rng, d, 0.7, 1.3, rho, n))
        means, variances = wishart_moments(d, 0.7, 1.3, rho)
        z_mean = (sample.mean(1) - means) / np.sqrt(variances / n)
        centred = sample - sample.mean(1, keepdims=True)
        fourth = (centred**4).mean(1)
        z_var = (sample.var(1) - variances) / np.sqrt((fourth - sample.var(1) ** 2) / n)
        assert np.all(np.abs(z_mean) < z_limit), (d, rho, z_mean)
        assert np.all(np.abs(z_var) < z_limit), (d, rho, z_var)


def test_gram_sampling_agrees_with_the_gram_of_sampled_vectors():
    # Two-sample check of the joint law, including the covariance of uu and ww (2 d rho^2 su^2 sw^2).
    rng = np.random.default_rng(5)
    d, rho, n = 8, 0.7, 30_000
    exact = np.stack(theory.sample_gram(rng, d, 1.0, 1.0, rho, n))
    from_vectors = np.stack(theory.gram_from_vectors(*theory.sample_vectors(rng, d, 1.0, 1.0, rho, n)))
    cov_exact = np.cov(exact)[0, 1]
    cov_vectors = np.cov(from_vectors)[0, 1]
    expected = 2 * d * rho**2
    assert cov_exact == pytest.approx(expected, rel=0.08)
    assert cov_vectors == pytest.approx(expected, rel=0.08)
    for row in range(3):
        assert stats.ks_2samp(exact[row], from_vectors[row]).pvalue > 1e-4
