"""The report's front page (featlearn.summary): read generically from whatever the outputs hold."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import xarray as xr

from featlearn import contract, io, summary
from featlearn.errors import InputError

FLAGS = ("unstable-init", "frozen", "unstable-training", "kernel", "feature-learning", "boundary")


def flags(values, dims, names, coords=None) -> xr.DataArray:
    return xr.DataArray(
        np.asarray(values, dtype=np.int8),
        dims=dims,
        coords=coords,
        attrs={"flag_values": np.arange(len(names), dtype=np.int8), "flag_meanings": " ".join(names)},
    )


def phases_file(**attrs) -> xr.Dataset:
    coords = {"a": [0.5, 1.0], "c_u": [0.0, -1.0]}
    ds = xr.Dataset(
        {
            "phase_theory": flags([[3, 1], [1, 4]], ("a", "c_u"), FLAGS, coords),
            # A label the predictor never gives (a newer classifier's): read from the file's own flags.
            "phase": flags([[3, 1], [5, 4]], ("a", "c_u"), FLAGS, coords),
        },
        attrs={contract.KIND_ATTRIBUTE: "phases", "experiment": "plane", **attrs},
    )
    return ds


def mechanisms_file() -> xr.Dataset:
    primary = flags([[0, 0], [1, 2], [1, 1]], ("rho", "seed"), contract.PRIMARY_LABELS, {"rho": [0.0, 0.5, 0.9]})
    return xr.Dataset(
        {"primary": primary}, attrs={contract.KIND_ATTRIBUTE: "mechanisms", "experiment": "mech", "solver": "flow"}
    )


def nonlinear_file(extra: dict | None = None) -> xr.Dataset:
    dims = ("setting", "activation", "parametrization", "width", "init_scale", "seed", "step")
    shape = (1, 1, 1, 1, 2, 3, 4)
    accuracy = np.full(shape, np.nan)
    accuracy[..., 0, :, :3] = [0.5, 0.8, 0.9]  # init 0.5: logged until step 3, then not (a run stopped early)
    accuracy[..., 1, :, :] = [0.4, 0.5, 0.6, 0.7]
    accuracy[..., 1, 2, 3] = 0.4
    ds = xr.Dataset(
        {
            "test_accuracy": (dims, accuracy),
            "train_loss": (dims, np.ones(shape)),
            "zeta": ((*dims, "layer"), np.full((*shape, 2), 0.25)),
            **(extra or {}),
        },
        coords={"init_scale": [0.5, 4.0], "step": [0, 1, 2, 3]},
        attrs={contract.KIND_ATTRIBUTE: "nonlinear", "experiment": "acc", "dataset": "digits", "loss": "cross_entropy",
               "depth": 2},
    )  # fmt: skip
    return ds


def test_phases_line_reads_agreement_and_every_agreement_or_boundary_attribute():
    ds = phases_file(
        agreement=2 / 3, cells=4, decided_cells=3, agreement_decided=1.0, boundary_fraction=0.25,
        boundary_note="text is not a number",
        disagreeing_cells="a = 1, c_u = 0: measured boundary, predicted frozen",
    )  # fmt: skip
    (line,) = summary._bullets([summary._phase_line(ds)])[:1]
    assert line.startswith(
        "- ``plane``, 4 cells (a 2 x c_u 2): classifier and predictor agree on 2 of 3 decided cells (66.7%)"
    )
    assert "agreement_decided 1; boundary_fraction 0.25;" in line
    assert "boundary_note" not in line
    assert "measured phases: frozen 1, kernel 1, feature-learning 1, boundary 1" in line
    assert "disagreeing: a = 1, c_u = 0: measured boundary, predicted frozen" in line


def test_phases_line_without_width_fits_gives_the_prediction():
    ds = phases_file().drop_vars("phase")
    assert summary._phase_line(ds).endswith(
        "predicted phases: frozen 2, kernel 1, feature-learning 1 (too few widths to classify)"
    )


def test_mechanism_line_counts_the_labels_of_every_run():
    assert summary._mechanism_line(mechanisms_file()) == (
        "``mech``, flow, 6 runs (rho 3 x 2 seeds): kernel 2, alignment 3, disalignment 1"
    )


def test_nonlinear_line_gives_accuracy_by_init_scale_at_each_runs_last_logged_step():
    line = summary._nonlinear_line(nonlinear_file())
    assert line.startswith("``acc``, digits, cross_entropy, depth 2, 6 runs (init_scale 2 x 3 seeds): ")
    # init 0.5: 0.9 for all three seeds; init 4: 0.7, 0.7, 0.4.
    assert "test accuracy by init scale 0.5: 0.900 ± 0.000, 4: 0.600 ± 0.141 (best 0.5)" in line
    assert line.endswith("final zeta of layer 1 0.25 to 0.25")


def test_nonlinear_line_reports_the_per_run_variables_a_dataset_has():
    run_dims = ("setting", "activation", "parametrization", "width", "init_scale", "seed")
    extra = {
        "converged": (run_dims, np.array([True, True, False, True, True, True]).reshape(1, 1, 1, 1, 2, 3)),
        "stop_step": (run_dims, np.arange(10, 70, 10).reshape(1, 1, 1, 1, 2, 3)),
        "lr_selected": (("init_scale",), [0.05, 0.1]),
    }
    line = summary._nonlinear_line(nonlinear_file(extra))
    assert "converged 5 of 6 runs" in line
    assert "stopped at step 10 to 60 (median 35)" in line
    assert "learning rate selected 0.05, 0.1" in line
    assert set(summary.NONLINEAR_RUN_VARIABLES) == set(extra)


def test_front_page_puts_the_summary_at_the_marker_inside_a_raw_block():
    template = f"intro\n\n{summary.MARKER}\n\nAbout\n-----\n\n{{{{ snakemake.config }}}}\n"
    figures = [summary.Figure("phases_diagram_rate", "phases_diagram_rate", ["plane"])]
    page = summary.front_page(template, [phases_file(agreement=1.0, cells=4), mechanisms_file()], figures)
    lines = page.splitlines()
    assert lines[:3] == ["intro", "", "{% raw %}"]
    assert lines[lines.index("{% endraw %}") + 1 :] == ["", "About", "-----", "", "{{ snakemake.config }}"]
    assert "This run simulated 1 experiments of the linear network (6 runs), classified the phases of 1" in page
    # The paper map links the run's figures, and says what the run did not draw.
    assert "- The phase diagram over width, layer-wise learning rates, output scale and init scale: " \
           "`phases_diagram_rate.png`_" in page  # fmt: skip
    assert "- Figure 3: larger initialization is worse (CIFAR-10): not drawn in this run" in page
    assert "Nonlinear networks" not in page


def test_front_page_refuses_a_template_without_marker_and_other_kinds():
    with pytest.raises(InputError, match=re.escape("no line '.. featlearn-summary'")):
        summary.front_page("About\n", [], [])
    trajectories = xr.Dataset(attrs={contract.KIND_ATTRIBUTE: "trajectories"})
    with pytest.raises(InputError, match="not 'trajectories' ones"):
        summary.front_page(summary.MARKER, [trajectories], [])


def test_paper_map_names_figures_of_the_table():
    from featlearn.figures import table

    for entry in summary.PAPER:
        assert set(entry.figures) <= set(table.BY_NAME), entry.result


def test_the_command_writes_the_page(tmp_path, run_featlearn):
    template = tmp_path / "page.rst"
    template.write_text(f"{summary.MARKER}\n")
    io.write_netcdf(contract.annotate(mechanisms_file(), "mechanisms"), tmp_path / "mech.nc")
    settings = json.dumps({"figures": [{"stem": "s", "figure": "solver_comparison", "experiments": ["mech"]}]})
    out = tmp_path / "summary.rst"
    result = run_featlearn(
        "summary", str(template), str(tmp_path / "mech.nc"), "--output", str(out), "--settings", settings
    )
    assert result.returncode == 0, result.stderr
    assert "- ``mech``, flow, 6 runs (rho 3 x 2 seeds): kernel 2, alignment 3, disalignment 1" in out.read_text()
    assert "- The exact solution of the network at finite width: `s.png`_" in out.read_text()

    bad = run_featlearn("summary", str(template), "--output", str(out), "--settings", '{"figures": [{"stem": "s"}]}')
    assert bad.returncode == 2
    assert "missing keys ['figure', 'experiments']" in bad.stderr


def test_the_modules_examples_run():
    import doctest

    result = doctest.testmod(summary)
    assert result.attempted > 0 and result.failed == 0
