"""Report: `snakemake --report` opens on what the run found, holds every figure with its caption, and the config.

The report is a JavaScript application: besides reading its HTML, one test opens it in
headless Chromium (Debian's ``chromium``, installed by ``.ci/run``) and checks what a reader
sees, driving the page through the DevTools protocol over a pipe.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xarray as xr
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report(smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the finished smoke run in which ``snakemake --report results/report.html`` has run."""
    run = Path(shutil.copytree(smoke_run, tmp_path_factory.mktemp("report") / "run", symlinks=True))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--configfile", "config/smoke.yaml", "--report", "results/report.html"],
        cwd=run, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return run


def figure_files(run: Path) -> list[str]:
    figures = sorted(path.name for path in (run / "results" / "figures").glob("*.png"))
    assert figures
    return figures


@pytest.mark.slow
def test_report_has_every_figure_with_caption_and_the_config(report):
    html = (report / "results" / "report.html").read_text()

    # Each result is embedded as a JSON object with its file name and rendered caption.
    captions = {
        name: caption for name, caption in re.findall(r'"filename": "([^"]+)".*?"caption": "((?:[^"\\]|\\.)*)"', html)
    }
    for figure in figure_files(report):
        assert figure in captions, f"{figure} is not in the report"
        assert len(json.loads(f'"{captions[figure]}"')) > 40, f"{figure} has no caption"

    config = yaml.safe_load((report / "config" / "smoke.yaml").read_text())
    assert "The configuration of this run" in html
    for experiment in config["experiments"]:
        # In the front page, a JSON string inside the report's script.
        assert f'\\"{experiment}\\"' in html, experiment


@pytest.mark.slow
def test_the_summary_is_written_from_the_runs_outputs(smoke_run):
    page = (smoke_run / "results" / "summary.rst").read_text()
    template = (ROOT / "workflow" / "report" / "workflow.rst").read_text()
    config = yaml.safe_load((smoke_run / "config" / "smoke.yaml").read_text())
    assert "What this run found" in page and "About this report" in page
    assert ".. featlearn-summary" in template and ".. featlearn-summary" not in page
    for name in config["phases"]["experiments"]:
        phases = xr.open_dataset(smoke_run / "results" / name / "phases.nc")
        if "agreement" in phases.attrs:
            cells, decided = int(phases.attrs["cells"]), int(phases.attrs["decided_cells"])
            agreeing = round(float(phases.attrs["agreement"]) * decided)
            assert f"``{name}``, {cells} cells" in page and f"agree on {agreeing} of {decided} decided cells" in page
    for name in config["experiments"]:
        assert f"- ``{name}``, " in page, name
    for name in config["nonlinear"]["experiments"]:
        assert f"- ``{name}``, " in page, name
    for figure in figure_files(smoke_run):
        assert f"`{figure}`_" in page, f"the paper map does not link {figure}"


# --- in a real browser -----------------------------------------------------------------------


class DevTools:
    """Chromium run headless with the DevTools protocol on a pipe (``--remote-debugging-pipe``).

    Commands go to the browser's fd 3 and answers come from its fd 4, as JSON
    messages ending in a NUL byte; :meth:`evaluate` runs JavaScript in the page.
    """

    def __init__(self, executable: str, url: str, profile: str):
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def onto_fds_3_and_4() -> None:
            os.dup2(to_browser_read, 3)
            os.dup2(from_browser_write, 4)

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--remote-debugging-pipe", "--window-size=1400,900", f"--user-data-dir={profile}"]  # fmt: skip
        self.process = subprocess.Popen(
            [executable, *flags, url],
            pass_fds=(3, 4),
            preexec_fn=onto_fds_3_and_4,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self._session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        for answer in self._messages():
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
        raise RuntimeError(f"{method}: the browser closed the pipe")

    def _messages(self) -> Iterator[dict[str, Any]]:
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    return
                self._buffer += chunk
            message, self._buffer = self._buffer.split(b"\0", 1)
            yield json.loads(message)

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", self._session, expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """The value of ``expression`` once it is truthy (polled)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}")

    def close(self) -> None:
        os.close(self._to_browser)
        os.close(self._from_browser)
        self.process.terminate()
        self.process.wait(timeout=30)


def chromium() -> str:
    """Chromium's executable; skips without one (fails where CI requires it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("FEATLEARN_REQUIRE_CHROMIUM") == "1":
            pytest.fail("FEATLEARN_REQUIRE_CHROMIUM=1 but no chromium on PATH")
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    return found


@pytest.fixture(scope="module")
def browser(report: Path) -> Iterator[DevTools]:
    executable = chromium()
    with tempfile.TemporaryDirectory() as profile:
        page = DevTools(executable, (report / "results" / "report.html").as_uri(), profile)
        try:
            yield page
        finally:
            page.close()


APP_TEXT = "document.querySelector('#app') ? document.querySelector('#app').innerText : ''"


@pytest.mark.slow
def test_the_report_opens_on_the_summary_in_a_browser(report, browser):
    text = browser.wait_for(f"({APP_TEXT}).includes('What this run found') && {APP_TEXT}")
    summary = (report / "results" / "summary.rst").read_text()
    # What a reader sees first: the summary's sections, each experiment's line, the paper map.
    for heading in re.findall(r"^(.+)\n-+\n", summary, re.MULTILINE):
        assert heading in text, heading
    config = yaml.safe_load((report / "config" / "smoke.yaml").read_text())
    for name in [*config["experiments"], *config["nonlinear"]["experiments"]]:
        assert name in text, name
    assert "agree on" in text
    # docutils reports a broken reference or markup inside the page.
    assert "System Message" not in text and "Unknown target" not in text
    # The top of the page is in view (the report centres pages vertically), above the window's fold.
    top = browser.evaluate("[...document.querySelectorAll('#app .prose h1')].map(h => h.getBoundingClientRect().top)")
    assert top and 0 <= top[0] < 200, top

    # The configuration is folded, and holds every experiment.
    folded = browser.evaluate(
        "[...document.querySelectorAll('#app .prose details')].map(d => [d.open, d.querySelector('pre').textContent])"
    )
    assert len(folded) == 1 and folded[0][0] is False
    assert all(f'"{name}"' in folded[0][1] for name in config["experiments"])


@pytest.mark.slow
def test_every_figure_shows_in_a_browser(report, browser):
    browser.wait_for(f"({APP_TEXT}).includes('What this run found')")
    # Every figure link of the front page names a result of the report.
    linked = browser.evaluate(
        "[...document.querySelectorAll('#app .prose a')].map(a => a.getAttribute('href'))"
        ".filter(h => h && h.startsWith('javascript:app.showResultInfo'))"
    )
    linked = {re.search(r"showResultInfo\('([^']+)'\)", href).group(1).replace("%2F", "/") for href in linked}
    figures = figure_files(report)
    assert {path.rsplit("/", 1)[-1] for path in linked} == set(figures)
    assert all(browser.evaluate(f"{json.dumps(path)} in results") for path in linked)

    for figure in figures:
        path = f"results/figures/{figure}"
        # Its entry, as a click on its link shows it: the caption and the rule that drew it.
        browser.evaluate(f"app.showResultInfo({json.dumps(path)})")
        rule = f"figure_{figure.removesuffix('.png')}"
        info = browser.wait_for(f"({APP_TEXT}).includes({json.dumps(rule)}) && {APP_TEXT}")
        caption = browser.evaluate(
            f"(() => {{ const d = document.createElement('div'); d.innerHTML = results[{json.dumps(path)}].caption;"
            " return d.textContent.trim().split(/\\s+/).slice(0, 6).join(' '); })()"
        )
        assert caption and caption in " ".join(info.split()), (figure, caption)
        # The picture itself, decoded by the browser.
        quoted = json.dumps(path)
        shown = f"[...document.querySelectorAll('#app img')].find(img => img.src === results[{quoted}].data_uri)"
        browser.evaluate(
            f"app.setView({{content: 'img', contentPath: results[{quoted}].data_uri, resultPath: {quoted}}})"
        )
        size = browser.wait_for(
            f"(() => {{ const img = {shown}; return img && img.complete && [img.naturalWidth, img.naturalHeight]; }})()"
        )
        assert min(size) > 100, (figure, size)
        browser.evaluate("app.setView({content: 'rulegraph'})")
        browser.wait_for(f"!{shown}")


def render_front_page(text: str, config: dict) -> tuple[str, str]:
    """``text`` rendered as Snakemake renders the report's front page: Jinja, then docutils; and the warnings."""
    import io

    import docutils.core
    from jinja2 import Environment

    class Snakemake:
        pass

    Snakemake.config = config
    warnings = io.StringIO()
    source = Environment(trim_blocks=True, lstrip_blocks=True).from_string(text).render(snakemake=Snakemake)
    html = docutils.core.publish_parts(
        source, writer="html", settings_overrides={"warning_stream": warnings, "report_level": 2}
    )["html_body"]
    return html, warnings.getvalue()


def test_the_static_page_renders_without_a_summary():
    # The report of a run that has no summary yet opens on the static page itself.
    config = {"experiments": {"a<b": {"description": "x & y"}}}
    html, warnings = render_front_page((ROOT / "workflow" / "report" / "workflow.rst").read_text(), config)
    assert warnings == ""
    visible = re.sub(r"<!--.*?-->", "", html, flags=re.DOTALL)
    assert "About this report" in visible and "<details>" in visible and "featlearn-summary" not in visible
    # The configuration as JSON inside <pre>, with what HTML would read escaped.
    assert '"a\\u003cb"' in html and '"x \\u0026 y"' in html


@pytest.mark.slow
def test_the_summary_page_renders_without_warnings(smoke_run):
    config = yaml.safe_load((smoke_run / "config" / "smoke.yaml").read_text())
    page = (smoke_run / "results" / "summary.rst").read_text()
    # The figure links resolve in the report, which appends their targets; here, any target will do.
    targets = "".join(f"\n.. _{name}: #\n" for name in set(re.findall(r"`([^`]+\.png)`_", page)))
    html, warnings = render_front_page(page + targets, config)
    assert warnings == ""
    assert "What this run found" in html


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
