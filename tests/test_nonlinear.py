"""Nonlinear networks (featlearn.nonlinear): the solvable model as a special case, the
empirical NTK, the loaders, width scaling of the kernel change, determinism."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import featlearn as fl
from featlearn import io, solvers, theory, validation
from featlearn.errors import ConfigError
from featlearn.nonlinear import data, mechanisms, metrics, models, train
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


def experiment(**overrides) -> dict:
    """A small experiment spec with the schema's defaults filled in."""
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
    # validated as part of a whole configuration: the schema's defaults and checks apply
    config = {**io.read_yaml(SMOKE_CONFIG), "nonlinear": {"experiments": {"x": spec}}}
    resolved = validation.validate(config)
    return resolved["nonlinear"]["experiments"]["x"]


# ---------------------------------------------------------------------------
# the solvable model as a special case


@pytest.mark.parametrize("parametrization", ["ntk", "mean_field", "standard"])
def test_two_layer_linear_network_is_the_solvable_model(parametrization):
    spec = experiment(activation=["linear"], parametrization=[parametrization], width=[40], steps=60, lr=0.05, seeds=1)
    dataset = data.load_dataset(spec["dataset"])
    run = train.grid(spec)[0]
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
        eta_u=spec["lr"] * scaling.lr_multiplier[1],
        eta_w=spec["lr"] * scaling.lr_multiplier[0],
        beta_star=np.mean(x * y) / sigma2,
        sigma2=sigma2,
    )
    steps = train.log_steps(spec["steps"], spec["log_points"])
    reference = solvers.explicit(u0, w0, hyper, steps.astype(float), dt=1.0).gram

    ds = run_experiment(spec).squeeze()
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


def test_linear_network_ntk_is_the_spec_kernel():
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
    spec = experiment(activation=["linear"], width=[200], steps=100, lr=0.02, seeds=1, init_scale=[0.3, 1.0])
    ds = run_experiment(spec)
    # gradient flow against GD with a small step: close, not equal
    np.testing.assert_allclose(ds["zeta_theory"], ds["zeta"].sel(layer=1), atol=0.02)
    assert float(np.abs(ds["zeta_theory"] - ds["zeta"].sel(layer=1)).max()) > 0


# ---------------------------------------------------------------------------
# empirical NTK against finite differences


def test_empirical_ntk_matches_finite_differences():
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
    kernel = metrics.empirical_ntk(model, probe)
    h = 1e-6
    for r in range(2):
        columns = []
        for layer, weight in enumerate(model.weights):
            for index in np.ndindex(*weight.shape[1:]):
                shifted = []
                for sign in (1, -1):
                    perturbed = [w.clone() for w in model.weights]
                    perturbed[layer][(r, *index)] += sign * h
                    shifted.append(models.BatchedFCN(perturbed, model.multipliers, model.activation)(probe)[r])
                columns.append(((shifted[0] - shifted[1]) / (2 * h)).reshape(-1))
        jacobian = torch.stack(columns, dim=1)
        np.testing.assert_allclose(kernel[r].numpy(), (jacobian @ jacobian.T).numpy(), rtol=1e-7, atol=1e-9)


# ---------------------------------------------------------------------------
# loaders


def test_teacher_shapes_labels_and_split_determinism():
    regression = data.load_dataset(TEACHER)
    assert regression.x_train.shape == (32, 1) and regression.y_train.shape == (32, 1)
    assert regression.x_test.shape == (16, 1)
    again = data.load_dataset(TEACHER)
    np.testing.assert_array_equal(regression.x_train, again.x_train)
    other = data.load_dataset({**TEACHER, "split_seed": 4})
    assert not np.array_equal(regression.x_train, other.x_train)
    labels = data.load_dataset({**TEACHER, "task": "classification", "input_dim": 5})
    assert labels.x_train.shape == (32, 5) and labels.n_out == 2
    assert set(np.unique(labels.y_train)) <= {0, 1}
    np.testing.assert_allclose(np.linalg.norm(labels.init_direction, axis=1), 1.0)


@pytest.mark.parametrize(("name", "pixels", "n_train", "n_test"), [("digits", 64, 1000, 797), ("mnist", 784, 300, 200)])
def test_image_loaders(name, pixels, n_train, n_test):
    spec = {"name": name, "n_train": n_train, "n_test": n_test, "split_seed": 0}
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
    shuffled = data.load_dataset({**spec, "split_seed": 1})
    assert not np.array_equal(ds.y_train, shuffled.y_train)


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
    spec = {"name": "cifar10", "n_train": 20, "n_test": 10, "split_seed": 0}
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
    with pytest.raises(ValueError, match="cifar10_path"):
        data.load_dataset(spec)
    with open(tmp_path / "bad", "wb") as handle:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, handle)
    with pytest.raises(ValueError, match="not a CIFAR-10 batch"):
        data.read_cifar10_batch(tmp_path / "bad")


# ---------------------------------------------------------------------------
# width scaling of the kernel change


def test_ntk_change_vanishes_with_width_under_ntk_and_not_under_mean_field():
    spec = experiment(
        dataset={**TEACHER, "input_dim": 3, "noise_std": 0.0, "n_train": 24},
        width=[32, 128, 512],
        parametrization=["ntk", "mean_field"],
        steps=40,
        lr=0.2,
        seeds=2,
        dtype="float32",
    )
    ds = run_experiment(spec)
    change = ds["ntk_change"].isel(step=-1).mean("seed").squeeze()
    ntk, mean_field = change.sel(parametrization="ntk"), change.sel(parametrization="mean_field")
    assert np.all(np.diff(ntk.values) < 0)
    # ReLU kernels move like width^-1/2: a factor 16 in width is worth about 4
    assert float(ntk.sel(width=32) / ntk.sel(width=512)) > 2.5
    assert np.all(np.isfinite(mean_field.values)) and float(mean_field.min()) > 0.1
    assert float(mean_field.max() / mean_field.min()) < 2


# ---------------------------------------------------------------------------
# determinism and batching


def test_runs_are_deterministic_and_independent_of_their_batch():
    spec = experiment(
        dataset={**TEACHER, "input_dim": 4, "task": "classification"},
        loss="cross_entropy",
        init_scale=[0.5, 2.0],
        parametrization=["standard", "mean_field"],
        batch_size=8,
        seeds=2,
        steps=15,
        log_points=4,
    )
    first = run_experiment(spec)
    xr.testing.assert_identical(first, run_experiment(spec))
    alone = run_experiment(spec, batch_runs=False)
    xr.testing.assert_allclose(first, alone, rtol=1e-10, atol=1e-12)
    subset = run_experiment({**spec, "init_scale": [2.0], "parametrization": ["mean_field"]})
    xr.testing.assert_allclose(
        first.sel(init_scale=[2.0], parametrization=["mean_field"]), subset, rtol=1e-10, atol=1e-12
    )
    assert not np.allclose(first["zeta"].isel(seed=0), first["zeta"].isel(seed=1), equal_nan=True)
    accuracy = first["test_accuracy"]
    assert float(accuracy.min()) >= 0 and float(accuracy.max()) <= 1


def test_disalignment_setting_starts_coherent_and_loses_alignment():
    settings = {
        "alignment": {"init_correlation": 0.0, "target_scale": 1.0},
        "disalignment": {"init_correlation": 0.5, "target_scale": 0.1},
    }
    spec = experiment(
        activation=["linear"], width=[2000], settings=settings, steps=150, lr=0.2, seeds=1, dtype="float32"
    )
    zeta = run_experiment(spec)["zeta"].sel(layer=1).squeeze()
    start, end = zeta.isel(step=0), zeta.isel(step=-1)
    assert float(start.sel(setting="disalignment")) == pytest.approx(0.5, abs=0.05)
    assert float(start.sel(setting="alignment")) < 0.1
    assert float(end.sel(setting="alignment")) > 0.5
    assert float(end.sel(setting="disalignment")) < 0.3


def test_mechanism_flags_follow_the_thresholds():
    ds = xr.Dataset(
        {
            "zeta": (
                ("run", "step", "layer"),
                [[[0.1, np.nan], [0.6, np.nan]], [[0.5, np.nan], [0.1, np.nan]], [[0.1, np.nan], [0.9, np.nan]]],
            ),
            "rho": (("run", "step", "layer"), [[[0, 0], [0.05, 0.5]], [[0, 0], [0.0, 0.0]], [[0, 0], [1.0, 1.0]]]),
            "ntk_change": (("run", "step"), [[0, 0.5], [0, 0.3], [0, 0.01]]),
        }
    )
    flags = mechanisms.mechanism_flags(ds, eps_c=0.1, eps_rho=0.1, eps_k=0.1)
    assert flags["alignment"].sel(layer=0).values.tolist() == [True, False, False]
    assert flags["disalignment"].sel(layer=0).values.tolist() == [False, True, False]
    assert flags["rescaling"].values.tolist() == [[False, True], [False, False], [False, False]]
    assert flags["kernel"].values.tolist() == [False, False, True]


def test_bad_combinations_are_rejected():
    with pytest.raises(ValueError, match="cross_entropy needs a classification dataset"):
        run_experiment(experiment(loss="cross_entropy"))
    with pytest.raises(ValueError, match="lr_multipliers"):
        run_experiment(experiment(lr_multipliers=[1.0, 1.0, 1.0]))
    with pytest.raises(ConfigError, match="activation"):
        experiment(activation=["tanh"])
    with pytest.raises(ConfigError, match="init_scale"):
        experiment(init_scale=[0.0])


def test_figures_draw_from_a_small_run():

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
        )
    )
    drawn = [
        fl.figure("nonlinear_zeta", nonlinear=ds),
        fl.figure("nonlinear_zeta", nonlinear=classification),
        fl.figure("nonlinear_ntk_width", nonlinear=ds),
        fl.figure("nonlinear_accuracy", nonlinear=[classification, classification]),
        fl.figure("nonlinear_mechanisms", nonlinear=[ds, classification], eps_c=0.1, eps_rho=0.1, eps_K=0.1),
    ]
    assert all(len(figure.axes) > 0 for figure in drawn)
