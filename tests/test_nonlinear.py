"""Nonlinear networks (featlearn.nonlinear): the solvable model as a special case, the
empirical NTK, the loaders and splits, the stopping rule, learning-rate selection, the
measures at the stopping point, width scaling of the kernel change, determinism, the
torch-free spec checks."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import featlearn as fl
from featlearn import contract, grid, io, phase_diagram, solvers, theory, validation
from featlearn.errors import ConfigError
from featlearn.nonlinear import data, mechanisms, metrics, models, planes, train
from featlearn.nonlinear.spec import DatasetSpec, ExperimentSpec, PlaneSpec, spec_problems
from featlearn.nonlinear.train import run_experiment

SMOKE_CONFIG = Path(__file__).resolve().parents[1] / "config" / "smoke.yaml"

TEACHER = {
    "name": "teacher",
    "input_dim": 1,
    "task": "regression",
    "target_scale": 1.0,
    "noise_std": 0.3,
    "n_train": 32,
    "n_test": 16,
    "split_seed": 3,
}
LOSS_TARGET, PLATEAU, MAX_STEPS, DIVERGED = range(4)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These networks are tiny: a second thread only contends with other processes (ten times slower under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def experiment(**overrides) -> dict:
    """A small resolved experiment mapping (the schema's defaults filled in)."""
    spec = {
        "dataset": dict(TEACHER),
        "width": [20],
        "activation": ["relu"],
        "parametrization": ["mean_field"],
        "init_scale": [1.0],
        "steps": 30,
        "lr": 0.1,
        "log_points": 8,
        "probe_size": 4,
        "dtype": "float64",
    }
    spec.update(overrides)
    # Checked against the schema and resolved with its defaults; the cross-field rules
    # (spec_problems, which validation also applies) are left to the tests that want them.
    resolved = validation.validate_section("nonlinear", {"experiments": {"x": spec}})
    return resolved["experiments"]["x"]


def typed(**overrides) -> ExperimentSpec:
    return ExperimentSpec.from_mapping(experiment(**overrides))


# ---------------------------------------------------------------------------
# the solvable model as a special case


@pytest.mark.parametrize("parametrization", ["ntk", "mean_field", "standard"])
def test_two_layer_linear_network_is_the_solvable_model(parametrization):
    # the noisy teacher leaves a loss floor far above the target: the guard stops the run
    mapping = experiment(
        activation=["linear"], parametrization=[parametrization], width=[40], steps=60, lr=0.05, seeds=1
    )
    spec = ExperimentSpec.from_mapping(mapping)
    dataset = data.load_dataset(spec.dataset)
    run = train.Run(train.grid(spec)[0], 0.05)
    sizes = [1, 40, 1]
    scaling = models.layer_scaling(parametrization, sizes)
    model = models.init_network(
        sizes, "linear", [scaling], [1.0], [train.run_generator(spec, run)], dtype=torch.float64
    )
    u0, w0 = model.weights[1][0, 0].numpy(), model.weights[0][0, :, 0].numpy()
    x, y = dataset.x_train[:, 0], dataset.y_train[:, 0]
    sigma2 = np.mean(x * x)
    hyper = theory.Hyperparameters(
        kappa=np.prod(scaling.multiplier),
        eta_u=0.05 * scaling.lr_multiplier[1],
        eta_w=0.05 * scaling.lr_multiplier[0],
        beta_star=np.mean(x * y) / sigma2,
        sigma2=sigma2,
    )
    steps = train.log_steps(spec)
    reference = solvers.explicit(u0, w0, hyper, steps.astype(float), dt=1.0).gram

    ds = run_experiment(mapping).squeeze()
    assert int(ds["stop_step"]) == 60 and int(ds["stop_reason"]) == MAX_STEPS and int(ds["converged"]) == 0
    # alignment is |cos(u, w)|, along the whole trajectory
    np.testing.assert_allclose(ds["zeta"].sel(layer=1), np.abs(theory.cosine(reference)), rtol=1e-9, atol=1e-12)
    # training loss is 1/2 sigma2 (beta - beta*)^2 + L_min
    beta = hyper.kappa * reference.uw
    minimum = 0.5 * np.mean(y * y) - 0.5 * sigma2 * hyper.beta_star**2
    np.testing.assert_allclose(
        ds["train_loss"], theory.loss(beta, hyper.beta_star, sigma2) + minimum, rtol=1e-9, atol=1e-12
    )
    # rescaling of each layer is 1/2 log of its squared-norm ratio
    np.testing.assert_allclose(ds["rho"].sel(layer=2), 0.5 * np.log(reference.uu / reference.uu[0]), atol=1e-10)
    np.testing.assert_allclose(ds["rho"].sel(layer=1), 0.5 * np.log(reference.ww / reference.ww[0]), atol=1e-10)


def test_linear_network_ntk_is_the_solvable_model_kernel():
    width = 30
    sizes = [1, width, 1]
    scaling = models.layer_scaling("ntk", sizes)
    model = models.init_network(
        sizes,
        "linear",
        [scaling] * 2,
        [1.0, 0.5],
        [torch.Generator().manual_seed(s) for s in (1, 2)],
        dtype=torch.float64,
    )
    probe = torch.tensor([[0.5], [-1.0], [2.0]], dtype=torch.float64)
    kernel = metrics.empirical_ntk(model, probe)
    for r in range(2):
        gram = theory.gram_from_vectors(model.weights[1][r, 0].numpy(), model.weights[0][r, :, 0].numpy())
        expected = theory.ntk(np.prod(scaling.multiplier), gram) * np.outer(probe[:, 0], probe[:, 0])
        np.testing.assert_allclose(kernel[r].numpy(), expected, rtol=1e-12)


def test_linear_theory_overlay_follows_the_linear_network():
    mapping = experiment(activation=["linear"], width=[200], steps=100, lr=0.02, seeds=1, init_scale=[0.3, 1.0])
    ds = run_experiment(mapping)
    # gradient flow against GD with a small step: close, not equal
    np.testing.assert_allclose(ds["zeta_theory"], ds["zeta"].sel(layer=1), atol=0.02)
    assert float(np.abs(ds["zeta_theory"] - ds["zeta"].sel(layer=1)).max()) > 0


# ---------------------------------------------------------------------------
# empirical NTK against finite differences


def test_empirical_ntk_and_its_layer_parts_match_finite_differences():
    sizes = [3, 5, 4, 2]
    scalings = [models.layer_scaling(p, sizes) for p in ("ntk", "mean_field")]
    model = models.init_network(
        sizes,
        "swish",
        scalings,
        [1.0, 2.0],
        [torch.Generator().manual_seed(s) for s in (5, 6)],
        dtype=torch.float64,
    )
    probe = torch.randn(4, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    layers = metrics.layer_ntks(model, probe)
    kernel = metrics.empirical_ntk(model, probe)
    h = 1e-6
    for r in range(2):
        total = 0.0
        for layer, weight in enumerate(model.weights):
            columns = []
            for index in np.ndindex(*weight.shape[1:]):
                shifted = []
                for sign in (1, -1):
                    perturbed = [w.clone() for w in model.weights]
                    perturbed[layer][(r, *index)] += sign * h
                    shifted.append(models.BatchedFCN(perturbed, model.multipliers, model.activation)(probe)[r])
                columns.append(((shifted[0] - shifted[1]) / (2 * h)).reshape(-1))
            jacobian = torch.stack(columns, dim=1)
            part = (jacobian @ jacobian.T).numpy()
            np.testing.assert_allclose(layers[r, layer].numpy(), part, rtol=1e-7, atol=1e-9)
            total = total + part
        np.testing.assert_allclose(kernel[r].numpy(), total, rtol=1e-7, atol=1e-9)


# ---------------------------------------------------------------------------
# measures on networks whose weights are set by hand


def hand_network(w1, w2) -> list[torch.Tensor]:
    return [torch.tensor([w1], dtype=torch.float64), torch.tensor([w2], dtype=torch.float64)]


def test_alignment_rescaling_and_distance_by_hand():
    # W1 = diag(1, 2): |W1|_F = sqrt(5); W2 = (3, 4): |W2|_F = 5; W2 W1 = (3, 8): |.|_F = sqrt(73)
    start = hand_network([[1.0, 0.0], [0.0, 2.0]], [[3.0, 4.0]])
    # W1 doubled: rho_1 = log 2, distance_1 = 1; W2 = (0, 5): same norm, rho_2 = 0,
    # distance_2 = |(-3, 1)| / 5 = sqrt(10) / 5; W2 W1 = (0, 20): zeta = 20 / (5 * 2 sqrt(5)) = 2 / sqrt(5)
    end = hand_network([[2.0, 0.0], [0.0, 4.0]], [[0.0, 5.0]])
    zeta0 = metrics.alignment(start)[0]
    assert float(zeta0[0]) == pytest.approx(math.sqrt(73) / (5 * math.sqrt(5)), rel=1e-12)
    assert math.isnan(float(zeta0[1]))
    assert float(metrics.alignment(end)[0, 0]) == pytest.approx(2 / math.sqrt(5), rel=1e-12)
    np.testing.assert_allclose(metrics.rescaling(end, start)[0].numpy(), [math.log(2.0), 0.0], atol=1e-15)
    np.testing.assert_allclose(metrics.distance(end, start)[0].numpy(), [1.0, math.sqrt(10) / 5], rtol=1e-12)


def test_measures_are_read_at_each_runs_stop_step():
    # run 0 stops at step 10 (later values differ on purpose), run 1 at step 20
    zeta = np.array([[[0.2, np.nan], [0.5, np.nan], [0.9, np.nan]], [[0.1, np.nan], [0.3, np.nan], [0.4, np.nan]]])
    series = np.array([[[0.0, 0.0], [0.1, 0.2], [0.7, 0.8]], [[0.0, 0.0], [0.3, 0.4], [0.5, 0.6]]])
    ds = xr.Dataset(
        {
            "zeta": (("run", "step", "layer"), zeta),
            "rho": (("run", "step", "layer"), series),
            "distance": (("run", "step", "layer"), 2 * series),
            "ntk_change": (("run", "step"), [[0.0, 0.5, 0.9], [0.0, 0.05, 0.3]]),
            "stop_step": ("run", [10, 20]),
        },
        coords={"step": [0, 10, 20]},
    )
    final = mechanisms.at_stop(ds)
    np.testing.assert_allclose(final["delta_zeta"].sel(layer=0), [0.5 - 0.2, 0.4 - 0.1])
    np.testing.assert_allclose(final["rho_final"], [[0.1, 0.2], [0.5, 0.6]])
    np.testing.assert_allclose(final["distance_final"], [[0.2, 0.4], [1.0, 1.2]])
    np.testing.assert_allclose(final["ntk_change_final"], [0.5, 0.3])


def test_mechanism_flags_follow_the_thresholds_and_say_none():
    zeta = [
        [[0.1, np.nan], [0.6, np.nan]],
        [[0.5, np.nan], [0.1, np.nan]],
        [[0.1, np.nan], [0.9, np.nan]],
        [[0.2, np.nan], [0.25, np.nan]],
    ]
    rho = [[[0, 0], [0.05, 0.5]], [[0, 0], [0.0, 0.0]], [[0, 0], [1.0, 1.0]], [[0, 0], [0.02, -0.03]]]
    ds = xr.Dataset(
        {
            "zeta": (("run", "step", "layer"), zeta),
            "rho": (("run", "step", "layer"), rho),
            "ntk_change": (("run", "step"), [[0, 0.5], [0, 0.3], [0, 0.01], [0, 0.8]]),
            "stop_step": ("run", [5, 5, 5, 5]),
            "stop_reason": ("run", [LOSS_TARGET, PLATEAU, MAX_STEPS, LOSS_TARGET]),
        },
        coords={"step": [0, 5]},
    )
    flags = mechanisms.mechanism_flags(ds, eps_c=0.1, eps_rho=0.1, eps_k=0.1)
    assert flags["alignment"].sel(layer=0).values.tolist() == [True, False, False, False]
    assert flags["disalignment"].sel(layer=0).values.tolist() == [False, True, False, False]
    assert flags["rescaling"].values.tolist() == [[False, True], [False, False], [False, False], [False, False]]
    assert flags["kernel"].values.tolist() == [False, False, True, False]
    # the last run's kernel moved, yet no layer's alignment or norm changed by a threshold
    assert flags["none"].values.tolist() == [False, False, False, True]
    assert not flags["diverged"].any()
    # a diverged run carries no other flag, whatever its numbers
    diverged = mechanisms.mechanism_flags(
        ds.assign(stop_reason=("run", [DIVERGED] * 4)), eps_c=0.1, eps_rho=0.1, eps_k=0.1
    )
    assert diverged["diverged"].all()
    assert not any(bool(diverged[name].any()) for name in ("kernel", "alignment", "disalignment", "rescaling", "none"))


def test_loglog_slope_and_its_error():
    widths = np.array([10.0, 100.0, 1000.0])
    exact = 3.0 * widths**-0.5
    assert mechanisms.loglog_slope(widths, exact) == pytest.approx((-0.5, 0.0), abs=1e-12)
    # two seeds scattered by a factor e^{+-0.1} around the line: OLS by hand on the 6 points
    noisy = np.stack([exact * np.exp(0.1), exact * np.exp(-0.1)])
    slope, error = mechanisms.loglog_slope(np.broadcast_to(widths, noisy.shape), noisy)
    spread = np.log(widths) - np.log(widths).mean()
    assert slope == pytest.approx(-0.5, abs=1e-12)
    assert error == pytest.approx(math.sqrt(6 * 0.01 / 4 / (2 * spread @ spread)), rel=1e-10)


# ---------------------------------------------------------------------------
# loaders and splits


def test_teacher_shapes_labels_and_split_determinism():
    regression = data.load_dataset(DatasetSpec.from_mapping(TEACHER))
    assert regression.x_train.shape == (32, 1) and regression.y_train.shape == (32, 1)
    assert regression.x_test.shape == (16, 1) and regression.evaluation == "test"
    again = data.load_dataset(DatasetSpec.from_mapping(TEACHER))
    np.testing.assert_array_equal(regression.x_train, again.x_train)
    other = data.load_dataset(DatasetSpec.from_mapping({**TEACHER, "split_seed": 4}))
    assert not np.array_equal(regression.x_train, other.x_train)
    labels = data.load_dataset(DatasetSpec.from_mapping({**TEACHER, "task": "classification", "input_dim": 5}))
    assert labels.x_train.shape == (32, 5) and labels.n_out == 2
    assert set(np.unique(labels.y_train)) <= {0, 1}
    np.testing.assert_allclose(np.linalg.norm(labels.init_direction, axis=1), 1.0)
    # the validation split is the end of the training split; the test samples are not among them
    validation = data.load_dataset(DatasetSpec.from_mapping(TEACHER), n_validation=8)
    assert validation.evaluation == "validation"
    np.testing.assert_array_equal(np.concatenate([validation.x_train, validation.x_test]), regression.x_train)


@pytest.mark.parametrize(("name", "pixels", "n_train", "n_test"), [("digits", 64, 1000, 797), ("mnist", 784, 300, 200)])
def test_image_loaders(name, pixels, n_train, n_test):
    spec = DatasetSpec.from_mapping({"name": name, "n_train": n_train, "n_test": n_test, "split_seed": 0})
    ds = data.load_dataset(spec)
    assert ds.x_train.shape == (n_train, pixels) and ds.x_test.shape == (n_test, pixels)
    assert ds.y_train.dtype == np.int64 and set(np.unique(ds.y_train)) == set(range(10))
    assert ds.y_test.min() >= 0 and ds.y_test.max() <= 9
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0.0, atol=1e-10)
    assert ds.x_train.std() == pytest.approx(1.0)
    assert "training-set" in ds.normalisation
    if name == "digits":
        # the digits split is a partition of all 1,797 samples: no sample in both sets
        train_rows = {row.tobytes() for row in ds.x_train}
        assert sum(row.tobytes() in train_rows for row in ds.x_test) < 10  # duplicates exist in the raw data
    again = data.load_dataset(spec)
    np.testing.assert_array_equal(ds.x_test, again.x_test)
    shuffled = data.load_dataset(
        DatasetSpec.from_mapping({"name": name, "n_train": n_train, "n_test": n_test, "split_seed": 1})
    )
    assert not np.array_equal(ds.y_train, shuffled.y_train)


def test_mnist_default_split_uses_all_digits_with_a_validation_split_from_training():
    spec = DatasetSpec.from_mapping({"name": "mnist"})
    assert (spec.n_train, spec.n_test) == (4000, 1000)
    final = data.load_dataset(spec)
    assert final.x_train.shape == (4000, 784) and final.x_test.shape == (1000, 784)
    # raw pixels back from the standardisation: 4,000 + 1,000 distinct digits, all 5,000 used
    rows = {tuple(np.rint(r).astype(int)) for r in np.concatenate([final.x_train, final.x_test]) * 1000}
    assert len(rows) == 5000
    selection = data.load_dataset(spec, n_validation=800)
    assert selection.x_train.shape == (3200, 784) and selection.x_test.shape == (800, 784)
    assert selection.evaluation == "validation"
    # the same digits as the training split, in order, the last 800 held out (labels survive scaling)
    np.testing.assert_array_equal(np.concatenate([selection.y_train, selection.y_test]), final.y_train)
    # the same raw pixels, standardised by other training statistics: equal up to scale once centred
    ours = selection.x_train - selection.x_train.mean(0)
    theirs = final.x_train[:3200] - final.x_train[:3200].mean(0)
    np.testing.assert_allclose(ours, np.linalg.norm(ours) / np.linalg.norm(theirs) * theirs, atol=1e-9)
    again = data.load_dataset(spec, n_validation=800)
    np.testing.assert_array_equal(selection.x_test, again.x_test)


def write_cifar10(folder, rng, batches=(("data_batch_1", 12), ("data_batch_2", 8), ("test_batch", 10))):
    """A small CIFAR-10 folder in the standard python-pickle format; returns the images written."""
    folder.mkdir()
    written = {}
    for name, count in batches:
        images = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=count)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": images, b"filenames": [b"x.png"] * count}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
        written[name] = (images, np.array(labels))
    return written


def test_cifar10_reader(tmp_path):
    written = write_cifar10(tmp_path / "cifar", np.random.default_rng(0))
    images, labels = data.read_cifar10_batch(tmp_path / "cifar" / "data_batch_2")
    np.testing.assert_array_equal(images, written["data_batch_2"][0])
    np.testing.assert_array_equal(labels, written["data_batch_2"][1])

    # all 20 training and 10 test images: the standardisation can be recomputed independently
    spec = DatasetSpec.from_mapping({"name": "cifar10", "n_train": 20, "n_test": 10, "split_seed": 0})
    ds = data.load_dataset(spec, cifar10_path=str(tmp_path / "cifar"))
    assert ds.x_train.shape == (20, 3072) and ds.x_test.shape == (10, 3072)
    pool = np.concatenate([written["data_batch_1"][0], written["data_batch_2"][0]]) / 255.0
    pool_labels = np.concatenate([written["data_batch_1"][1], written["data_batch_2"][1]])
    mean_image = pool.mean(axis=0)
    scale = (pool - mean_image).std()
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        references = (
            (pool, pool_labels) if x is ds.x_train else (written["test_batch"][0] / 255.0, written["test_batch"][1])
        )
        expected = (references[0] - mean_image) / scale
        # every sample is one of the written images, standardised, and carries that image's label
        distances = np.abs(x[:, None, :] - expected[None, :, :]).max(axis=-1)
        match = distances.argmin(axis=1)
        assert np.all(distances.min(axis=1) < 1e-9)
        assert sorted(match.tolist()) == list(range(len(expected)))
        np.testing.assert_array_equal(y, references[1][match])
    # the validation split comes from the training batches only
    (tmp_path / "cifar" / "test_batch").unlink()
    validation = data.load_dataset(spec, cifar10_path=str(tmp_path / "cifar"), n_validation=5)
    assert validation.x_train.shape == (15, 3072) and validation.x_test.shape == (5, 3072)
    assert set(validation.y_test) <= set(pool_labels)
    with pytest.raises(ValueError, match="cifar10_path"):
        data.load_dataset(spec)
    with open(tmp_path / "bad", "wb") as handle:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, handle)
    with pytest.raises(ValueError, match="not a CIFAR-10 batch"):
        data.read_cifar10_batch(tmp_path / "bad")


# ---------------------------------------------------------------------------
# the stopping rule


def test_loss_target_stops_a_run_at_the_first_check_below_it():
    # noise-free teacher: the loss falls to zero; checks every 5 steps
    mapping = experiment(
        dataset={**TEACHER, "noise_std": 0.0},
        activation=["linear"],
        width=[50],
        steps=400,
        lr=0.2,
        stop={"loss_target": 1.0e-3, "check_every": 5},
        seeds=2,
    )
    ds = run_experiment(mapping).squeeze()
    stop_loss = float(ds["stop_loss"])
    assert stop_loss == pytest.approx(
        1.0e-3 * 0.5 * np.mean(data.load_dataset(DatasetSpec.from_mapping(mapping["dataset"])).y_train ** 2)
    )
    for seed in ds["seed"].values:
        run = ds.sel(seed=seed)
        stop = int(run["stop_step"])
        assert int(run["stop_reason"]) == LOSS_TARGET and int(run["converged"]) == 1 and stop < 400
        checks = [s for s in ds["step"].values if s % 5 == 0]
        losses = run["train_loss"].sel(step=checks)
        # below the target at the stop, above it at every earlier check
        assert float(run["train_loss"].sel(step=stop)) <= stop_loss
        assert np.all(losses.sel(step=[s for s in checks if s < stop]).values > stop_loss)
        # frozen after the stop: every later logged value is the stop's
        later = run.sel(step=run["step"] > stop)
        assert later.sizes["step"] > 0
        for name in ("train_loss", "test_loss", "zeta", "rho", "distance", "ntk_change"):
            np.testing.assert_array_equal(
                later[name].values, np.broadcast_to(run[name].sel(step=stop).values, later[name].shape)
            )


def test_guard_stops_and_marks_a_run_that_cannot_meet_the_target():
    # the noisy teacher's loss floor is far above 1e-3 of the zero-output loss
    ds = run_experiment(experiment(steps=40, stop={"loss_target": 1.0e-3, "check_every": 10}, seeds=2)).squeeze()
    assert ds["stop_step"].values.tolist() == [40, 40]
    assert ds["stop_reason"].values.tolist() == [MAX_STEPS, MAX_STEPS]
    assert ds["converged"].values.tolist() == [0, 0]
    assert np.all(ds["train_loss"].isel(step=-1).values > float(ds["stop_loss"]))


def test_plateau_stops_a_run_whose_loss_stopped_falling():
    rule = {"loss_target": None, "plateau": {"window": 20, "tolerance": 0.01}, "check_every": 10}
    ds = run_experiment(experiment(activation=["linear"], steps=2000, lr=0.2, stop=rule, seeds=1)).squeeze()
    stop = int(ds["stop_step"])
    assert int(ds["stop_reason"]) == PLATEAU and int(ds["converged"]) == 1 and stop < 2000
    loss = ds["train_loss"]

    def plateau(step: int) -> bool:
        flat = float(loss.sel(step=step)) > 0.99 * float(loss.sel(step=step - 20))
        return flat and float(loss.sel(step=step)) < 0.5 * float(loss.sel(step=0))

    # the rule holds at the stop and at no earlier check
    assert plateau(stop)
    assert not any(plateau(step) for step in range(20, stop, 10))


def test_a_diverging_run_stops_and_is_not_converged():
    ds = run_experiment(
        experiment(
            dataset={**TEACHER, "noise_std": 0.0}, activation=["linear"], lr=50.0, steps=200, stop={"check_every": 5}
        )
    ).squeeze()
    assert ds["stop_reason"].values.tolist() == [DIVERGED, DIVERGED]
    assert ds["converged"].values.tolist() == [0, 0]
    assert np.all(ds["stop_step"].values < 200)


def test_stopped_runs_freeze_while_their_batch_trains_on():
    # init 0.3 and 3.0 under mean-field stop at different steps in one stack
    mapping = experiment(
        dataset={**TEACHER, "noise_std": 0.0},
        init_scale=[0.3, 3.0],
        steps=300,
        lr=0.2,
        seeds=1,
        stop={"check_every": 2},
    )
    together = run_experiment(mapping).squeeze()
    stops = together["stop_step"].values
    assert stops[0] != stops[1] and np.all(together["converged"].values == 1)
    alone = [run_experiment({**mapping, "init_scale": [scale]}).squeeze() for scale in (0.3, 3.0)]
    for index, single in enumerate(alone):
        xr.testing.assert_allclose(
            together.isel(init_scale=index, drop=True), single.drop_vars("init_scale"), rtol=1e-10, atol=1e-12
        )


def test_training_reports_progress_as_it_goes():
    messages = []
    run_experiment(experiment(steps=200, stop={"check_every": 5}, seeds=1), progress=messages.append)
    steps = [int(m.split("step ")[1].split("/")[0]) for m in messages if "step " in m]
    # every tenth of the budget, then the stack's closing line and the experiment's
    assert len(steps) >= 10 and steps[0] == 0 and steps[-1] == 200 and steps == sorted(steps)
    assert "train loss" in messages[0] and "done" in messages[-2]
    assert messages[-1].startswith("1 runs trained (0 stopped by their rule)") and "CPU" in messages[-1]


# ---------------------------------------------------------------------------
# learning-rate selection


def test_lr_selection_picks_the_best_validation_score_and_never_reads_the_test_split(monkeypatch):
    mapping = experiment(
        dataset={**TEACHER, "task": "classification", "input_dim": 3, "n_train": 48, "n_test": 24},
        loss="cross_entropy",
        init_scale=[0.5, 2.0],
        lr=0.1,
        lr_selection={"factors": [0.1, 1.0, 10.0], "n_validation": 16, "seeds": 2},
        batch_size=8,
        steps=60,
        stop={"loss_target": 0.05, "check_every": 5},
    )
    ds = run_experiment(mapping).squeeze()
    score = ds["validation_score"]
    assert score.dims == ("init_scale", "lr_factor", "selection_seed")
    assert ds.attrs["n_validation"] == 16 and ds.attrs["selection_metric"] == "accuracy"
    # the chosen candidate, recomputed from the stored scores: all seeds converged first, then
    # the best mean validation accuracy, ties to the larger learning rate
    for scale in ds["init_scale"].values:
        mean = score.sel(init_scale=scale).mean("selection_seed").fillna(-1.0).values
        converged = ds["validation_converged"].sel(init_scale=scale).all("selection_seed").values
        best = max(range(3), key=lambda k: (converged[k], mean[k], k))
        assert float(ds["lr_factor_selected"].sel(init_scale=scale)) == ds["lr_factor"].values[best]
        assert float(ds["lr_selected"].sel(init_scale=scale)) == pytest.approx(0.1 * ds["lr_factor"].values[best])

    # with the test inputs replaced by NaN the selection is unchanged; the test accuracy is not
    load = data.load_dataset

    def poisoned(spec, **options):
        dataset = load(spec, **options)
        if options.get("n_validation", 0):
            return dataset
        return data.Dataset(**{**dataset.__dict__, "x_test": np.full_like(dataset.x_test, np.nan)})

    monkeypatch.setattr(data, "load_dataset", poisoned)
    blind = run_experiment(mapping).squeeze()
    for name in ("validation_score", "validation_stop_step", "validation_converged", "lr_selected"):
        xr.testing.assert_identical(ds[name], blind[name])
    assert not np.allclose(ds["test_accuracy"].values, blind["test_accuracy"].values)


# ---------------------------------------------------------------------------
# width scaling of the kernel change


def test_ntk_change_vanishes_with_width_under_ntk_and_not_under_mean_field():
    mapping = experiment(
        dataset={**TEACHER, "input_dim": 3, "noise_std": 0.0, "n_train": 24},
        width=[32, 128, 512],
        parametrization=["ntk", "mean_field"],
        steps=40,
        lr=0.2,
        seeds=2,
        dtype="float32",
    )
    ds = run_experiment(mapping)
    change = ds["ntk_change_final"].mean("seed").squeeze()
    ntk, mean_field = change.sel(parametrization="ntk"), change.sel(parametrization="mean_field")
    assert np.all(np.diff(ntk.values) < 0)
    # ReLU kernels move like width^-1/2: a factor 16 in width is worth about 4
    assert float(ntk.sel(width=32) / ntk.sel(width=512)) > 2.5
    assert np.all(np.isfinite(mean_field.values)) and float(mean_field.min()) > 0.1
    assert float(mean_field.max() / mean_field.min()) < 2


def test_learning_rate_per_parametrization_and_width():
    spec = typed(
        parametrization=["standard", "ntk"],
        width=[10, 40],
        lr={"standard": {"prefactor": 2.0, "exponent": 1.0}, "ntk": 0.3},
    )
    assert spec.learning_rate("standard", 40) == pytest.approx(0.05)
    assert spec.learning_rate("ntk", 40, factor=2.0) == pytest.approx(0.6)
    ds = run_experiment(spec)
    np.testing.assert_allclose(ds["lr_selected"].squeeze().sel(parametrization="standard"), [0.2, 0.05])
    np.testing.assert_allclose(ds["lr_selected"].squeeze().sel(parametrization="ntk"), [0.3, 0.3])


# ---------------------------------------------------------------------------
# determinism and batching


def test_runs_are_deterministic_and_independent_of_their_batch():
    mapping = experiment(
        dataset={**TEACHER, "input_dim": 4, "task": "classification"},
        loss="cross_entropy",
        init_scale=[0.5, 2.0],
        parametrization=["standard", "mean_field"],
        batch_size=8,
        seeds=2,
        steps=15,
        log_points=4,
    )
    first = run_experiment(mapping)
    xr.testing.assert_identical(first, run_experiment(mapping))
    alone = run_experiment(mapping, batch_runs=False)
    xr.testing.assert_allclose(first, alone, rtol=1e-10, atol=1e-12)
    subset = run_experiment({**mapping, "init_scale": [2.0], "parametrization": ["mean_field"]})
    xr.testing.assert_allclose(
        first.sel(init_scale=[2.0], parametrization=["mean_field"]), subset, rtol=1e-10, atol=1e-12
    )
    assert not np.allclose(first["zeta"].isel(seed=0), first["zeta"].isel(seed=1), equal_nan=True)
    accuracy = first["test_accuracy"]
    assert float(accuracy.min()) >= 0 and float(accuracy.max()) <= 1
    assert set(np.unique(first["stop_step"])) <= set(first["step"].values)


def test_disalignment_setting_starts_coherent_and_loses_alignment():
    settings = {
        "alignment": {"init_correlation": 0.0, "target_scale": 1.0},
        "disalignment": {"init_correlation": 0.5, "target_scale": 0.1},
    }
    mapping = experiment(
        activation=["linear"], width=[2000], settings=settings, steps=150, lr=0.2, seeds=1, dtype="float32"
    )
    zeta = run_experiment(mapping)["zeta"].sel(layer=1).squeeze()
    start, end = zeta.isel(step=0), zeta.isel(step=-1)
    assert float(start.sel(setting="disalignment")) == pytest.approx(0.5, abs=0.05)
    assert float(start.sel(setting="alignment")) < 0.1
    assert float(end.sel(setting="alignment")) > 0.5
    assert float(end.sel(setting="disalignment")) < 0.3


# ---------------------------------------------------------------------------
# the spec and its torch-free checks


def test_an_experiment_with_only_steps_gets_the_default_stopping_rule():
    spec = typed(steps=250)
    assert spec.stop.max_steps == 250 and spec.stop.loss_target == 1.0e-3
    assert spec.stop.plateau_window is None and spec.stop.check_every == 3
    assert spec.lr_selection is None and spec.learning_rate("mean_field", 20) == 0.1


def test_spec_problems_name_the_field_and_need_no_torch(tmp_path):
    problems = dict(spec_problems(experiment(loss="cross_entropy", lr_multipliers=[1.0, 1.0, 1.0])))
    assert problems["lr_multipliers"] == "needs one value per layer (2), got 3"
    assert "cross_entropy" in problems["loss"]
    images = {"loss": "cross_entropy", "width": [8], "parametrization": ["standard"]}
    cases = {
        "dataset": experiment(dataset={"name": "mnist", "n_train": 4500, "n_test": 1000}, **images),
        "batch_size": experiment(
            dataset={"name": "digits", "n_train": 100, "n_test": 50},
            batch_size=90,
            lr_selection={"factors": [1.0], "n_validation": 20},
            **images,
        ),
        "lr_selection.n_validation": experiment(
            dataset={"name": "digits", "n_train": 100, "n_test": 50},
            lr_selection={"factors": [1.0], "n_validation": 100},
            **images,
        ),
        "settings.default.init_correlation": experiment(depth=3, settings={"default": {"init_correlation": 0.5}}),
        "lr_selection.metric": experiment(lr_selection={"factors": [1.0], "n_validation": 4, "metric": "accuracy"}),
        "stop": experiment(stop={"loss_target": None}),
    }
    for field, mapping in cases.items():
        assert field in dict(spec_problems(mapping)), field
    assert (
        "1797"
        in dict(spec_problems(experiment(dataset={"name": "digits", "n_train": 1500, "n_test": 400}, **images)))[
            "dataset"
        ]
    )
    # CIFAR-10: the folder must exist and hold the batches; its size comes from the files present
    cifar = experiment(dataset={"name": "cifar10", "n_train": 15000, "n_test": 100}, **images)
    assert spec_problems(cifar) == []  # no folder configured: left to the workflow and the loader
    assert "not a folder" in dict(spec_problems(cifar, cifar10_path=str(tmp_path / "missing")))["dataset"]
    (tmp_path / "cifar").mkdir()
    (tmp_path / "cifar" / "data_batch_1").write_bytes(b"")
    found = dict(spec_problems(cifar, cifar10_path=str(tmp_path / "cifar")))
    assert "test_batch" in found["dataset"] and "10000" in found["dataset.n_train"]
    assert spec_problems(experiment()) == []
    with pytest.raises(ValueError, match="lr_multipliers: needs one value per layer"):
        run_experiment(experiment(lr_multipliers=[1.0, 1.0, 1.0]))
    with pytest.raises(ConfigError, match="activation"):
        experiment(activation=["tanh"])
    with pytest.raises(ConfigError, match="init_scale"):
        experiment(init_scale=[0.0])
    # the check imports no torch
    io.write_json(experiment(loss="cross_entropy"), tmp_path / "spec.json")
    script = (
        "import json, sys; from featlearn.nonlinear.spec import spec_problems; "
        f"print(spec_problems(json.load(open({str(tmp_path / 'spec.json')!r})))); assert 'torch' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "cross_entropy" in result.stdout


def test_dataset_metadata_is_complete():
    ds = run_experiment(experiment(lr_selection={"factors": [0.5, 1.0], "n_validation": 8}, seeds=1))
    for name in ds.variables:
        assert ds[name].attrs.get("long_name") and "units" in ds[name].attrs, name
    assert ds["stop_reason"].attrs["flag_meanings"] == "loss_target plateau max_steps diverged"


def test_figures_draw_what_the_runs_hold():
    settings = {"alignment": {"init_correlation": 0.0}, "disalignment": {"init_correlation": 0.5}}
    ds = run_experiment(
        experiment(
            activation=["linear", "relu"], width=[8, 16], init_scale=[0.5, 1.0], settings=settings, seeds=1, steps=5
        )
    )
    ds.attrs["experiment"] = "small"
    classification = run_experiment(
        experiment(
            dataset={**TEACHER, "task": "classification", "input_dim": 3},
            loss="cross_entropy",
            depth=3,
            init_scale=[0.5, 2.0],
            steps=5,
            lr_selection={"factors": [0.5, 1.0], "n_validation": 8},
        )
    )
    # zeta: one panel per row (setting x width) and column (activation x layer but the last), each with
    # the seed-mean line of every init scale and the linear theory dashed.
    zeta = fl.figure("nonlinear_zeta", nonlinear=ds)
    rows, columns = ds.sizes["setting"] * ds.sizes["width"], ds.sizes["activation"] * (ds.sizes["layer"] - 1)
    panels = [ax for ax in zeta.axes if ax.get_lines()]
    assert len(panels) == rows * columns
    first = ds.isel(setting=0, width=0).sel(activation="linear", init_scale=0.5, layer=1)
    solid = [line for line in panels[0].get_lines() if line.get_linestyle() == "-"]
    np.testing.assert_allclose(solid[0].get_ydata(), first["zeta"].mean("seed").squeeze())
    assert sum(line.get_linestyle() == "--" for line in panels[0].get_lines()) == ds.sizes["init_scale"]
    # NTK change against width: one line per parametrization, its points the seed means at the stop.
    ntk = fl.figure("nonlinear_ntk_width", nonlinear=ds).axes[0]
    lines = [line for line in ntk.get_lines() if line.get_marker() == "o"]
    assert len(lines) == ds.sizes["parametrization"] * ds.sizes["activation"] * ds.sizes["setting"] * 2
    np.testing.assert_array_equal(lines[0].get_xdata(), ds["width"].values)
    # Accuracy: the first panel's error bars are the seed means of the test accuracy at the stop.
    accuracy = fl.figure("nonlinear_accuracy", nonlinear=[classification]).axes[0]
    expected = mechanisms.at_stop(classification)["test_accuracy_final"].squeeze().mean("seed")
    np.testing.assert_allclose(np.asarray(accuracy.get_lines()[0].get_ydata(), dtype=float), expected.values)
    # Mechanisms: the image holds, per configuration, the share of seeds with each flag.
    table = fl.figure("nonlinear_mechanisms", nonlinear=[ds, classification], eps_c=0.1, eps_rho=0.1, eps_K=0.1)
    flags = mechanisms.mechanism_flags(ds, eps_c=0.1, eps_rho=0.1, eps_k=0.1)
    image = table.axes[0].images[0].get_array()
    configurations = int(
        np.prod(
            [
                ds.sizes[d]
                for d in ("setting", "activation", "parametrization", "width", "init_scale")
                if ds.sizes[d] > 1
            ]
        )
    )
    assert image.shape[0] == configurations
    np.testing.assert_allclose(image[:, 0].sum(), float(flags["kernel"].mean("seed").sum()))


# ---------------------------------------------------------------------------
# nonlinear phase planes (featlearn.nonlinear.planes): width exponents, the solvable model, the classifier

WIDTHS = [64, 128, 256, 512, 1024, 2048, 4096, 8192]
SCALAR_TEACHER = {"name": "teacher", "input_dim": 1, "task": "regression", "target_scale": 1.0, "n_train": 8,
                  "n_test": 8, "split_seed": 1}  # fmt: skip


def plane(**overrides) -> dict:
    """A resolved plane mapping: a linear 2-layer a-c plane at b = 0 on the scalar teacher, float64."""
    spec = {
        "dataset": dict(SCALAR_TEACHER),
        "activation": "linear",
        "seeds": 4,
        "steps": 24,
        "log_points": 12,
        "parameters": {
            "width": WIDTHS,
            "kappa": {"exponent": [0.5, 1.0]},
            "eta_u": {"prefactor": 0.5, "exponent": [-1.0, 0.0]},
            "eta_w": {"prefactor": "eta_u0", "exponent": "c_u"},
        },
    }
    spec.update(overrides)
    config = {**io.read_yaml(SMOKE_CONFIG), "nonlinear": {"planes": {"p": spec}}}
    return validation.validate(config)["nonlinear"]["planes"]["p"]


def test_exponent_scaling_gives_the_hand_computed_multipliers_stds_and_rates():
    # width 256, input 4: kappa = 2 * 256^-0.5, sigma_u = 3 * 256^-0.25, sigma_w = 256^0.5 / 4, eta_u = 0.5 * 256,
    # eta_w = 0.1 * 256^-1 (exponents a = 0.5, b_u = 0.25, b_w = -0.5, c_u = -1, c_w = 1)
    parameters = {
        "width": [256],
        "kappa": {"prefactor": 2.0, "exponent": 0.5},
        "sigma_u": {"prefactor": 3.0, "exponent": 0.25},
        "sigma_w": {"prefactor": 0.25, "exponent": -0.5},
        "eta_u": {"prefactor": 0.5, "exponent": -1.0},
        "eta_w": {"prefactor": 0.1, "exponent": 1.0},
    }
    values = grid.hyperparameters_at(parameters, {"width": 256})
    kappa, sigma_u, sigma_w, eta_u, eta_w = 0.125, 0.75, 4.0, 128.0, 0.1 / 256
    assert [values[k] for k in ("kappa", "sigma_u", "sigma_w", "eta_u", "eta_w")] == pytest.approx(
        [kappa, sigma_u, sigma_w, eta_u, eta_w]
    )
    two = models.exponent_scaling(
        [4, 256, 1], **{k: values[k] for k in ("kappa", "sigma_u", "sigma_w", "eta_u", "eta_w")}
    )
    np.testing.assert_allclose(two.multiplier, [0.5, kappa])
    np.testing.assert_allclose(two.init_std, [sigma_w, sigma_u])
    np.testing.assert_allclose(two.lr_multiplier, [eta_w, eta_u])
    # deeper: hidden-to-hidden layers carry 1/sqrt(width) and share sigma_w, eta_w with the first layer
    three = models.exponent_scaling(
        [4, 256, 256, 1], **{k: values[k] for k in ("kappa", "sigma_u", "sigma_w", "eta_u", "eta_w")}
    )
    np.testing.assert_allclose(three.multiplier, [0.5, 1 / 16, kappa])
    np.testing.assert_allclose(three.init_std, [sigma_w, sigma_w, sigma_u])
    np.testing.assert_allclose(three.lr_multiplier, [eta_w, eta_w, eta_u])
    # the networks a plane draws: these multipliers and rates, weights of these standard deviations
    spec = PlaneSpec.from_mapping(plane(depth=3, dataset={**TEACHER, "input_dim": 4}))
    model, lr = planes.init_runs(spec, data.load_dataset(spec.dataset), 256, [values], [0])
    np.testing.assert_allclose(model.multipliers[0].numpy(), three.multiplier)
    np.testing.assert_allclose(lr[0].numpy(), three.lr_multiplier)
    for weights, std in zip(model.weights, three.init_std):
        assert float(weights.std()) == pytest.approx(std, rel=0.1 if weights.numel() < 1000 else 0.02)


def solver_runs(spec: PlaneSpec, ds: xr.Dataset) -> xr.Dataset:
    """The plane's runs through the solvable model's GD (the Gram recursion), from the plane's own initial vectors."""
    dataset = data.load_dataset(spec.dataset)
    x, y = dataset.x_train[:, 0], dataset.y_train[:, 0]
    sigma2 = float(np.mean(x * x))
    out = ds.copy(deep=True)
    for index in range(spec.grid.size):
        point = spec.grid.point(index)
        values = spec.hyperparameters(index)
        model, _ = planes.init_runs(spec, dataset, values["width"], [values] * spec.seeds, list(range(spec.seeds)))
        gram = theory.gram_from_vectors(model.weights[1][:, 0, :].numpy(), model.weights[0][:, :, 0].numpy())
        hyper = theory.Hyperparameters(
            values["kappa"], values["eta_u"], values["eta_w"], float(np.mean(x * y)) / sigma2, sigma2
        )
        trajectory = solvers.gd(gram, hyper, ds["time"].values, dt=1.0)
        beta = theory.output(values["kappa"], trajectory.gram)
        at = {dim: point[dim] for dim in spec.grid.dims}
        # The network's scale variables: rms output |beta| sigma, kernel scale sigma2 K_eta (planes module doc).
        out["loss"].loc[at] = theory.loss(beta, hyper.beta_star, sigma2)
        out["beta"].loc[at] = np.abs(beta) * np.sqrt(sigma2)
        out["ntk_eta"].loc[at] = sigma2 * theory.ntk_eta(
            values["kappa"], values["eta_u"], values["eta_w"], trajectory.gram
        )
        out["diverged"].loc[at] = trajectory.diverged
    return out


def test_two_layer_linear_plane_is_the_solvable_models_gradient_descent():
    # unstable-init (a = 1/4), kernel, feature learning (mean field), frozen and unstable-training cells
    mapping = plane(
        stop_fraction=1.0e-9,
        parameters={
            "width": [64, 128, 256, 1024],
            "kappa": {"exponent": [0.25, 0.75, 1.0]},
            "eta_u": {"prefactor": 0.5, "exponent": [-1.0, -0.5, 0.5]},
            "eta_w": {"prefactor": "eta_u0", "exponent": "c_u"},
        },
    )
    spec = PlaneSpec.from_mapping(mapping)
    ds = planes.train_plane(spec)
    reference = solver_runs(spec, ds)
    assert contract.problems(ds) == []
    assert bool(ds["diverged"].any()) and not bool(ds["diverged"].all())
    # Up to its stop (the first record with loss <= stop_fraction of the start) a run is the solver's;
    # from there on it holds the stop's values.
    learned = (ds["loss"] <= spec.stop_fraction * ds["loss"].isel(time=0)).values
    stopped = learned.any(-1)
    stop = np.where(stopped, learned.argmax(-1), learned.shape[-1])[..., None]
    after_stop = np.arange(learned.shape[-1]) > stop
    assert after_stop.any() and not after_stop.all()
    for name in ("loss", "beta", "ntk_eta"):
        values = ds[name].values
        np.testing.assert_allclose(
            values[~after_stop], reference[name].values[~after_stop], rtol=1e-10, atol=1e-15, err_msg=name
        )
        at_stop = np.take_along_axis(values, np.minimum(stop, learned.shape[-1] - 1), -1)
        np.testing.assert_array_equal(values[after_stop], np.broadcast_to(at_stop, values.shape)[after_stop])
    np.testing.assert_array_equal(ds["diverged"], reference["diverged"])


def test_linear_plane_classifies_as_the_solvable_model_cell_by_cell():
    # The a-c plane at b = 0 through every phase, widths 2^6..2^13, 16 seeds.
    spec = PlaneSpec.from_mapping(
        plane(
            seeds=16,
            parameters={
                "width": WIDTHS,
                "kappa": {"exponent": [0.25, 0.75, 1.0, 1.5]},
                "eta_u": {"prefactor": 0.5, "exponent": [-1.5, -1.0, -0.5, 0.5]},
                "eta_w": {"prefactor": "eta_u0", "exponent": "c_u"},
            },
        )
    )
    settings = phase_diagram.PhaseSettings.from_config(validation.defaults("phases"))
    network = phase_diagram.analyse(planes.train_plane(spec), settings)
    solver = phase_diagram.analyse(solver_runs(spec, planes.train_plane(spec)), settings)
    # the same runs through the network and the Gram recursion: the same labels, cell by cell
    np.testing.assert_array_equal(network["phase"], solver["phase"])
    np.testing.assert_allclose(network["kernel_scale_exponent"], solver["kernel_scale_exponent"], atol=1e-8)
    # and the predictor's on every decided cell: all five phases, one mean-field cell on the eM = 0 boundary
    decided = network["phase"] != phase_diagram.BOUNDARY
    np.testing.assert_array_equal(network["phase"].where(decided), network["phase_theory"].where(decided))
    assert int(decided.sum()) == 15 and network.attrs["agreement"] == 1.0
    assert set(np.unique(network["phase"].values[decided.values])) == set(range(len(contract.PHASES)))
    # an independent draw of the same grid (the linear pipeline's own initial states) labels it the same
    independent = fl.simulate(
        {
            "solver": "gd",
            "dt": 1.0,
            "seeds": 16,
            "time": {"stop": float(spec.steps), "num": spec.steps + 1},
            "parameters": {
                **spec.parameters,
                "sigma2": float(np.mean(data.load_dataset(spec.dataset).x_train ** 2)),
                "beta_star": 1.0,
            },
        }
    )
    np.testing.assert_array_equal(phase_diagram.analyse(independent, settings)["phase"], network["phase"])


def test_manual_backward_and_kernel_scale_match_autograd_and_the_empirical_ntk():
    torch.manual_seed(0)
    for activation in ("relu", "swish", "linear"):
        sizes = [3, 12, 9, 2]
        scalings = [models.exponent_scaling(sizes, kappa=0.3, sigma_u=1.5, sigma_w=0.8, eta_u=0.7, eta_w=0.2)] * 2
        model = models.init_network(
            sizes, activation, scalings, [1.0, 1.0], [torch.Generator().manual_seed(s) for s in (3, 4)],
            dtype=torch.float64,
        )  # fmt: skip
        lr = torch.as_tensor(np.stack([s.lr_multiplier for s in scalings]))
        x = torch.randn(5, 3, dtype=torch.float64)
        y = torch.randn(5, 2, dtype=torch.float64)
        inputs, pre = model.columns(x)
        deltas = planes.backward(model, pre, (pre[-1] - y.mT) / len(x))
        for w in model.weights:
            w.requires_grad_(True)
        expected = torch.autograd.grad(train.per_run_loss(model(x), y, "mse").sum(), model.weights)
        for layer, (h, delta, gradient) in enumerate(zip(inputs, deltas, expected)):
            manual = model.multipliers[:, layer, None, None] * delta @ h.mT.expand(2, -1, -1)
            np.testing.assert_allclose(manual.detach(), gradient, rtol=1e-12, atol=1e-14)
        with torch.no_grad():
            scale = planes.kernel_scale(model, inputs, pre, lr)
            kernels = metrics.layer_ntks(model, x)
        diagonal = torch.diagonal(kernels, dim1=-2, dim2=-1).mean(-1)
        np.testing.assert_allclose(scale, (lr * diagonal).sum(-1), rtol=1e-12)


def test_plane_runs_and_their_classification_are_deterministic_given_the_seed(monkeypatch):
    mapping = plane(
        dataset={**TEACHER, "input_dim": 4, "noise_std": 0.0},
        activation="relu",
        depth=3,
        seeds=3,
        steps=12,
        log_points=6,
        parameters={
            "width": [16, 32, 64, 128],
            "kappa": {"exponent": [0.5, 1.0]},
            "eta_u": {"prefactor": 0.7, "exponent": [-1.0, 0.0]},
            "eta_w": {"prefactor": "eta_u0", "exponent": "c_u"},
        },
    )
    settings = phase_diagram.PhaseSettings.from_config(validation.defaults("phases"))
    first = planes.train_plane(mapping)
    phases = phase_diagram.analyse(first, settings)
    xr.testing.assert_identical(first, planes.train_plane(mapping))
    xr.testing.assert_identical(phases, phase_diagram.analyse(first, settings))
    # one run per stack: the same numbers (a run does not depend on its stack-mates)
    monkeypatch.setattr(planes, "STACK_ELEMENTS", 1)
    xr.testing.assert_allclose(first, planes.train_plane(mapping), rtol=1e-12, atol=0)
    # another seed count keeps the first seeds' runs
    fewer = planes.train_plane({**mapping, "seeds": 2})
    xr.testing.assert_allclose(first.isel(seed=[0, 1]), fewer, rtol=1e-12, atol=0)
    assert contract.problems(phases) == []
