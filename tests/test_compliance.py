"""Data quality: every netCDF file the pipeline writes passes the IOOS compliance checker's
CF-1.10 test without high-priority failures, and every variable has long_name and units.

One finding is accepted, by its exact message: the checker takes any dimension
named ``time`` for calendar time and asks for ``standard_name = "time"``,
which CF then requires to carry units "<unit> since <epoch>". featlearn's
``time`` is training time (t = k dt, dimensionless), not a date, so no honest
attribute satisfies both; the data contract keeps the name ``time``.
"""

from __future__ import annotations

from pathlib import Path

import netCDF4
import pytest
from compliance_checker.base import BaseCheck
from compliance_checker.runner import CheckSuite

from featlearn import grid, io, simulation, validation

REPO = Path(__file__).resolve().parents[1]
CF = "cf:1.10"
ACCEPTED = {"Coordinate variable 'time' should have standard_name='time', found: 'None'"}


@pytest.fixture(scope="module")
def suite() -> CheckSuite:
    checks = CheckSuite()
    checks.load_all_available_checkers()
    return checks


def high_priority_failures(suite: CheckSuite, path: Path) -> list[str]:
    """Messages of the failed high-priority CF checks of ``path`` (accepted ones left out)."""
    dataset = suite.load_dataset(str(path))
    try:
        results, _checker_errors = suite.run_all(dataset, [CF], skip_checks=[])[CF]
    finally:
        dataset.close()
    failures = []
    for result in results:
        score, out_of = result.value if isinstance(result.value, tuple) else (int(bool(result.value)), 1)
        if result.weight == BaseCheck.HIGH and score < out_of:
            failures.extend(f"{result.name}: {msg}" for msg in result.msgs if msg not in ACCEPTED)
    return failures


def missing_attributes(path: Path) -> list[str]:
    """Variables of ``path`` without a long_name, or (numeric ones) without units."""
    missing = []
    with netCDF4.Dataset(path) as ds:
        for name, var in ds.variables.items():
            if not getattr(var, "long_name", ""):
                missing.append(f"{name}: long_name")
            if var.dtype != str and not hasattr(var, "units"):
                missing.append(f"{name}: units")
    return missing


def test_checker_finds_a_missing_units_attribute(suite, tmp_path):
    # The check itself can fail: a variable stripped of its units is reported.
    smoke = validation.load(str(REPO / "config" / "smoke.yaml"))
    name = next(iter(smoke["experiments"]))
    experiment = grid.Experiment.from_config(validation.experiment_config(smoke, name), name)
    ds = simulation.merge_chunks(
        [simulation.simulate_chunk(experiment, 0, 1, config=validation.experiment_config(smoke, name))]
    )
    io.write_netcdf(ds, tmp_path / "good.nc")
    assert high_priority_failures(suite, tmp_path / "good.nc") == []
    assert missing_attributes(tmp_path / "good.nc") == []

    del ds["loss"].attrs["units"]
    ds["time"].encoding["_FillValue"] = -1.0
    bad = tmp_path / "bad.nc"
    ds.to_netcdf(bad, engine="netcdf4")
    assert missing_attributes(bad) == ["loss: units"]
    assert any("_FillValue" in failure for failure in high_priority_failures(suite, bad))


@pytest.mark.slow
def test_every_pipeline_netcdf_passes_cf(suite, smoke_run):
    files = sorted((smoke_run / "results").rglob("*.nc"))
    assert any(path.name == "trajectories.nc" for path in files)
    problems = {}
    for path in files:
        found = high_priority_failures(suite, path) + missing_attributes(path)
        if found:
            problems[str(path.relative_to(smoke_run))] = found
    assert problems == {}
