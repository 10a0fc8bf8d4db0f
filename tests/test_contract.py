"""The data contract (featlearn.contract): every file the pipeline writes conforms to its kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import featlearn as fl
from featlearn import contract, io

REPO = Path(__file__).resolve().parents[1]


def test_problems_finds_what_departs_from_the_contract():
    ds = fl.simulate({"solver": "flow", "time": {"stop": 1.0, "num": 3}, "parameters": {"width": [10, 20]}})
    assert contract.problems(ds) == []
    broken = ds.copy()
    broken["beta"].attrs["long_name"] = "something else"
    broken["loss"].attrs.pop("units")
    broken["extra"] = broken["beta"] * 2
    broken = broken.drop_vars("ntk")
    found = contract.problems(broken)
    assert any(p.startswith("beta: attribute long_name") for p in found)
    assert any(p.startswith("loss: attribute units") for p in found)
    assert "variable 'extra' is not in the contract of trajectories files" in found
    assert "missing variable 'ntk'" in found
    assert contract.problems(broken.assign_attrs(featlearn_kind="mechanisms"), "trajectories")[0].startswith(
        "global attribute featlearn_kind is 'mechanisms'"
    )


def test_annotate_refuses_a_variable_the_contract_does_not_define():
    with pytest.raises(KeyError, match=r"add it to featlearn\.contract"):
        contract.annotate(xr.Dataset({"mystery": ("x", np.zeros(2))}), "mechanisms")


def test_flag_variables_name_their_values():
    primary = contract.KINDS["mechanisms"].variables["primary"].attrs()
    assert primary["flag_values"].tolist() == list(range(len(contract.PRIMARY_LABELS)))
    assert primary["flag_meanings"].split() == list(contract.PRIMARY_LABELS)


def test_a_simulation_chunk_conforms(tmp_path):
    chunk = fl.simulate(
        {"solver": "gd", "dt": 0.1, "time": {"stop": 1.0, "num": 3}, "axes": {"tilt": [0.0, 0.5]},
         "parameters": {"width": [10, 20], "kappa": {"exponent": "tilt"}}},
        chunk=1,
        chunks=2,
    )  # fmt: skip
    assert contract.kind_of(chunk) == "trajectories_chunk"
    # A user-named axis is stored as grid_<axis>, its long name the axis name.
    assert chunk["grid_tilt"].attrs["long_name"] == "tilt"
    assert contract.problems(io.read_netcdf(io.write_netcdf(chunk, tmp_path / "chunk.nc"))) == []


@pytest.mark.slow
def test_every_file_the_smoke_run_writes_conforms_to_its_kind(smoke_run):
    files = sorted((smoke_run / "results").rglob("*.nc"))
    kinds = set()
    for path in files:
        ds = io.read_netcdf(path)
        kinds.add(contract.kind_of(ds))
        assert contract.problems(ds) == [], path
    # Each stage's output kind is there (chunks are temporary: the test above checks them).
    assert kinds == {"trajectories", "mechanisms", "phases", "nonlinear", "nonlinear_plane"}
    # Every stage's files: one per experiment and stage.
    assert len(files) == len({path.relative_to(smoke_run) for path in files})


def test_docs_hold_the_current_contract_tables():
    docs = (REPO / "docs" / "data.md").read_text()
    generated = docs.split(contract.DOCS_MARKER + "\n", 1)[1]
    assert generated == contract.markdown(), "run: python -m featlearn.contract docs/data.md"
