"""The public API (``import featlearn as fl``): the same datasets as the pipeline, the same errors, runnable docs."""

from __future__ import annotations

import doctest
import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

import featlearn as fl
from featlearn import io, simulation, validation
from featlearn.errors import ConfigError, InputError

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "config" / "smoke.yaml"
SMOKE_CONFIG = yaml.safe_load(SMOKE.read_text())
#: Global attributes that differ between any two runs of the same computation.
VOLATILE = ("created", "git_commit")

#: What the issue asks ``import featlearn as fl`` to give.
FUNCTIONS = ("simulate", "mechanisms", "phases", "predict_phase", "train", "figure", "flag_names", "validate")


def stable(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` without its volatile global attributes."""
    return ds.drop_attrs(deep=False).assign_attrs({k: v for k, v in ds.attrs.items() if k not in VOLATILE})


def test_the_package_exports_the_api_lazily():
    import featlearn.api

    assert set(FUNCTIONS) <= set(fl.__all__)
    assert set(fl.__all__) == {"__version__", *featlearn.api.__all__}
    assert set(fl.__all__) <= set(dir(fl))
    for name in FUNCTIONS:
        assert getattr(fl, name) is getattr(featlearn.api, name)
    with pytest.raises(AttributeError, match="no attribute 'simulation_chunk'"):
        fl.simulation_chunk  # noqa: B018


def test_importing_featlearn_does_not_load_the_api():
    # The workflow imports featlearn while it builds the DAG; the facade (and through it every
    # stage) loads only when a notebook asks for it.
    loaded = "print('featlearn.api' in sys.modules)"
    code = f"import sys, featlearn; {loaded}; featlearn.simulate; {loaded}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == ["False", "True"]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_every_public_function_has_numpydoc_with_a_runnable_example(name):
    function = getattr(fl, name)
    doc = inspect.getdoc(function) or ""
    for section in ("Parameters", "Returns", "Examples"):
        assert f"\n{section}\n{'-' * len(section)}\n" in doc, f"fl.{name}: no {section} section"
    signature = inspect.signature(function)
    assert signature.return_annotation is not inspect.Signature.empty, f"fl.{name}: no return type"
    for parameter in signature.parameters.values():
        assert parameter.annotation is not inspect.Parameter.empty, f"fl.{name}: {parameter.name} has no type"

    tests = doctest.DocTestFinder().find(function, name, globs={**function.__globals__, "fl": fl})
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0, f"fl.{name} has no example"
    assert result.failed == 0, f"fl.{name}: {result.failed} example(s) failed (see the output above)"


def test_signature_defaults_are_the_schemas():
    defaults = validation.defaults("mechanisms")
    parameters = inspect.signature(fl.mechanisms).parameters
    for key in ("eps_c", "eps_rho", "eps_K"):
        assert parameters[key].default == defaults[key]


# --- the same datasets as the pipeline (the smoke run simulates in 2 chunks, the API in one) ----


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SMOKE_CONFIG["experiments"]))
def test_simulate_and_mechanisms_give_the_pipelines_files(smoke_run, name):
    trajectories = fl.simulate(SMOKE, name)
    xr.testing.assert_identical(
        stable(trajectories), stable(io.read_netcdf(smoke_run / f"results/{name}/trajectories.nc"))
    )
    thresholds = {key: SMOKE_CONFIG["mechanisms"].get(key, 0.1) for key in ("eps_c", "eps_rho", "eps_K")}
    labels = fl.mechanisms(trajectories, **thresholds)
    xr.testing.assert_identical(stable(labels), stable(io.read_netcdf(smoke_run / f"results/{name}/mechanisms.nc")))


@pytest.mark.slow
@pytest.mark.parametrize("name", SMOKE_CONFIG["phases"]["experiments"])
def test_phases_gives_the_pipelines_file(smoke_run, name):
    settings = SMOKE_CONFIG["phases"]
    classified = fl.phases(fl.simulate(SMOKE, name), **settings["fit"], gd_rise=settings["gd_rise"])
    xr.testing.assert_identical(stable(classified), stable(io.read_netcdf(smoke_run / f"results/{name}/phases.nc")))


@pytest.mark.slow
def test_train_gives_the_pipelines_file(smoke_run):
    pytest.importorskip("torch")
    name = "accuracy_digits"
    trained = fl.train(SMOKE, name)
    xr.testing.assert_identical(stable(trained), stable(io.read_netcdf(smoke_run / f"results/nonlinear/{name}.nc")))


@pytest.mark.slow
def test_figure_draws_every_figure_the_smoke_run_draws(smoke_run):
    from matplotlib.figure import Figure

    from featlearn.figures import table

    config = validation.load(str(SMOKE))
    jobs = table.figure_jobs(config)
    assert len({job.figure for job in jobs}) >= 10
    paths = {
        "trajectories": "results/{}/trajectories.nc",
        "mechanisms": "results/{}/mechanisms.nc",
        "phases": "results/{}/phases.nc",
        "nonlinear": "results/nonlinear/{}.nc",
        "plane_phases": "results/nonlinear/{}_phases.nc",
    }
    for job in jobs:
        entry = table.entry(job.figure)
        reads = entry.reads
        # The keyword is the kind a figure reads; the file, the output that holds it.
        kind_of = {entry.sources.get(kind, kind): kind for kind in reads}
        datasets: dict[str, list[xr.Dataset]] = {}
        for output, experiment in job.inputs:
            path = smoke_run / paths[output].format(experiment)
            datasets.setdefault(kind_of[output], []).append(io.read_netcdf(path))
        arguments = {kind: found[0] if reads[kind] == "one" else found for kind, found in datasets.items()}
        drawn = fl.figure(job.figure, **arguments, **job.options)
        assert isinstance(drawn, Figure), job.stem
        assert any(axes.has_data() for axes in drawn.axes), f"{job.stem} draws nothing"


# --- validation: the pipeline's messages ------------------------------------------------------

BAD_SPECS = {
    "rho": (
        {"solver": "flow", "time": {"stop": 1.0, "num": 3}, "parameters": {"width": 10, "rho": 1.5}},
        "parameters.rho",
    ),
    "solver": ({"solver": "euler", "time": {"stop": 1.0, "num": 3}, "parameters": {"width": 10}}, "solver"),
    "gd_without_step": ({"solver": "gd", "time": {"stop": 1.0, "num": 3}, "parameters": {"width": 10}}, "dt"),
    "unknown_key": ({"solver": "flow", "tim": {"stop": 1.0}, "parameters": {"width": 10}}, "'tim' was unexpected"),
}


@pytest.mark.parametrize("case", list(BAD_SPECS))
def test_a_bad_spec_fails_as_featlearn_validate_says(case, tmp_path, run_featlearn):
    spec, field = BAD_SPECS[case]
    name = f"bad_{case}"
    with pytest.raises(ConfigError) as raised:
        fl.simulate(spec, name)
    assert f"experiments.{name}" in str(raised.value) and field in str(raised.value)

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"experiments": {name: spec}}))
    result = run_featlearn("validate", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"featlearn validate: error: {raised.value}"


def test_simulate_from_a_file_names_the_experiments_it_has():
    with pytest.raises(ConfigError, match=r"experiments: name one experiment of .*smoke.yaml \(compare_flow, "):
        fl.simulate(SMOKE, "no_such_experiment")
    with pytest.raises(ConfigError, match=r"nonlinear.experiments: name one experiment"):
        fl.train(SMOKE)


def test_bad_settings_name_their_field():
    trajectories = fl.simulate({"solver": "flow", "time": {"stop": 1.0, "num": 3}, "parameters": {"width": 10}})
    with pytest.raises(ConfigError, match=r"mechanisms.eps_c"):
        fl.mechanisms(trajectories, eps_c=-1.0)
    with pytest.raises(ConfigError, match=r"phases.fit: .*'tolerence'"):
        fl.phases(trajectories, tolerence=0.1)


def test_chunks_of_the_api_merge_into_the_whole_grid():
    spec = {"solver": "gd", "dt": 0.1, "seeds": 3, "time": {"stop": 2.0, "num": 5},
            "parameters": {"parametrization": ["ntk", "mean_field"], "width": [10, 100, 1000]}}  # fmt: skip
    parts = [fl.simulate(spec, chunk=chunk, chunks=4) for chunk in range(4)]
    assert all(part["beta"].dims == ("point", "seed", "time") for part in parts)
    xr.testing.assert_identical(stable(simulation.merge_chunks(parts)), stable(fl.simulate(spec)))
    with pytest.raises(InputError, match=r"chunk 4 is not in 0..3"):
        fl.simulate(spec, chunk=4, chunks=4)


def test_predict_phase_broadcasts_like_scalar_calls():
    a = np.array([[0.0], [0.5], [1.0]])
    c = np.array([-1.0, 0.0, 1.0])
    grid = fl.predict_phase(a, 0.0, 0.0, c, c)
    assert grid.phase.shape == grid.elam.shape == (3, 3)
    for i in range(3):
        for j in range(3):
            one = fl.predict_phase(float(a[i, 0]), 0.0, 0.0, float(c[j]), float(c[j]))
            assert one.phase == grid.phase[i, j]
            assert (one.e0, one.eM, one.eF, one.elam) == tuple(float(x[i, j]) for x in grid[1:])
    assert fl.predict_phase(0.0, 0.0, 0.0, 0.0, 0.0, rho=0.5).phase == "unstable-init"


def test_flag_names_refuses_what_it_cannot_name():
    ds = fl.simulate({"solver": "flow", "time": {"stop": 1.0, "num": 3}, "parameters": {"width": 10}})
    with pytest.raises(ValueError, match="'beta' is not a flag variable"):
        fl.flag_names(ds["beta"])
    labels = fl.mechanisms(ds)["primary"]
    with pytest.raises(ValueError, match=r"values without a name: \[7\]"):
        fl.flag_names(labels.copy(data=np.full(labels.shape, 7, dtype=labels.dtype)))
