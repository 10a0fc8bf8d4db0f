"""docs/tutorial.md runs: every ``python`` block, in order, in one namespace, outputs compared (doctest)."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"


def blocks(text: str, language: str = "python") -> list[tuple[int, str]]:
    """The fenced blocks of ``language`` in a markdown text, each with its first line's number."""
    fence = re.compile(rf"^```{language}\n(.*?)^```", re.MULTILINE | re.DOTALL)
    return [(text.count("\n", 0, match.start(1)) + 1, match.group(1)) for match in fence.finditer(text)]


def test_every_python_block_of_the_tutorial_runs_and_prints_what_it_shows(tmp_path, monkeypatch):
    pytest.importorskip("torch")  # the tutorial's last part trains a nonlinear network
    monkeypatch.chdir(tmp_path)  # the tutorial writes a figure
    text = TUTORIAL.read_text()
    python = blocks(text)
    assert len(python) >= 8
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    namespace: dict = {}
    for line, block in python:
        test = parser.get_doctest(block, namespace, f"docs/tutorial.md:{line}", str(TUTORIAL), line - 1)
        assert test.examples, f"docs/tutorial.md:{line}: a python block without >>> examples"
        runner.run(test, clear_globs=False)
        namespace = test.globs  # a DocTest holds a copy: what this block defined goes on to the next
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} tutorial example(s) failed (see the output above)"
    assert (tmp_path / "phase_plane.png").stat().st_size > 10_000


def test_the_configuration_blocks_of_the_tutorial_are_valid():
    import yaml

    import featlearn as fl

    configurations = blocks(TUTORIAL.read_text(), "yaml")
    assert configurations
    for line, block in configurations:
        assert fl.validate(yaml.safe_load(block))["experiments"], f"docs/tutorial.md:{line}"


def test_blocks_are_found_with_their_line_numbers():
    text = "intro\n```python\n>>> 1 + 1\n2\n```\n\n```bash\nls\n```\n```python\n>>> 3\n3\n```\n"
    assert blocks(text) == [(3, ">>> 1 + 1\n2\n"), (11, ">>> 3\n3\n")]
    assert blocks(text, "bash") == [(8, "ls\n")]
