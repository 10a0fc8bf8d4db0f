"""Report: `snakemake --report` holds every figure of the run with its caption, and the configuration."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


@pytest.mark.slow
def test_report_has_every_figure_with_caption_and_the_config(smoke_run, tmp_path):
    run = Path(shutil.copytree(smoke_run, tmp_path / "run", symlinks=True))
    report = run / "results" / "report.html"
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--configfile", "config/smoke.yaml", "--report", str(report)],
        cwd=run, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    html = report.read_text()

    # Each result is embedded as a JSON object with its file name and rendered caption.
    captions = {
        name: caption for name, caption in re.findall(r'"filename": "([^"]+)".*?"caption": "((?:[^"\\]|\\.)*)"', html)
    }
    figures = sorted(path.name for path in (run / "results" / "figures").glob("*.png"))
    assert figures
    for figure in figures:
        assert figure in captions, f"{figure} is not in the report"
        assert len(json.loads(f'"{captions[figure]}"')) > 40, f"{figure} has no caption"

    config = yaml.safe_load((run / "config" / "smoke.yaml").read_text())
    assert "Configuration of this run" in html
    for experiment in config["experiments"]:
        assert f"&quot;{experiment}&quot;" in html or f'"{experiment}"' in html, experiment


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "caption", sorted(p.name for p in (ROOT / "workflow" / "report").glob("*.rst") if p.name != "workflow.rst")
)
def test_figure_captions_are_valid_restructuredtext(caption):
    # The report renders captions as reStructuredText: a stray |x| is a broken substitution.
    import io

    import docutils.core

    warnings = io.StringIO()
    text = (ROOT / "workflow" / "report" / caption).read_text()
    docutils.core.publish_string(
        text, writer="null", settings_overrides={"warning_stream": warnings, "report_level": 2}
    )
    assert warnings.getvalue() == ""
