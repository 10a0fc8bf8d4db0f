"""The README and the reference pages: the first five minutes, the paper map, the data contract, links that resolve."""

from __future__ import annotations

import fnmatch
import itertools
import re
from pathlib import Path

import pytest
import yaml

from featlearn import contract, summary

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def section(text: str, heading: str) -> str:
    """The text of the ``## heading`` section."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def tables(text: str) -> list[list[list[str]]]:
    """The markdown tables of ``text``: rows of cells, header and separator left out."""
    found, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
        elif current:
            found.append(current[2:])
            current = []
    return found


def test_the_readme_opens_with_the_two_commands_then_the_first_five_minutes():
    first_block = re.search(r"```bash\n(.*?)```", README, re.DOTALL)
    assert first_block.start() < README.index("## The first five minutes")
    assert [line.split()[:2] for line in first_block.group(1).splitlines()] == [["make", "reproduce"], ["make", "test"]]
    five = section(README, "The first five minutes")
    assert "make smoke" in five and "results/report.html" in five
    assert "![The rule graph of the default pipeline](docs/rulegraph.svg)" in five
    assert "**Change a grid.**" in five and "config/smoke.yaml" in five
    assert "docs/tutorial.md" in five


def test_make_smoke_builds_the_report_it_tells_you_to_open():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^smoke:.*?\n((?:\t.*\n)+)", makefile, re.MULTILINE).group(1)
    assert "--configfile config/smoke.yaml --report results/report.html" in recipe


def test_the_paper_map_lists_the_results_the_report_maps_in_the_same_order():
    paper, beyond = tables(section(README, "The paper, result by result"))
    assert [row[0] for row in paper] == [entry.result for entry in summary.PAPER if not entry.beyond_the_paper]
    assert [row[0] for row in beyond] == [entry.result for entry in summary.PAPER if entry.beyond_the_paper]


def expand(pattern: str) -> list[str]:
    """Brace expansion: ``a_{b,c}`` -> ``a_b``, ``a_c``."""
    parts = re.split(r"\{([^}]*)\}", pattern)
    options = [[part] if i % 2 == 0 else part.split(",") for i, part in enumerate(parts)]
    return ["".join(choice) for choice in itertools.product(*options)]


def test_the_paper_map_names_experiments_and_rules_of_the_default_workflow():
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    experiments = {*config["experiments"], *config["nonlinear"]["experiments"], *config["nonlinear"]["planes"]}
    rules = set(re.findall(r'label = "([^"]+)"', (ROOT / "docs" / "rulegraph.dot").read_text()))
    for table in tables(section(README, "The paper, result by result")):
        for row in table:
            for name in re.findall(r"`([a-z][a-z0-9_]*)`", row[1]):
                assert name in experiments, f"paper map: no experiment {name!r} in config/config.yaml"
            # Backticked names of the rule column are rules (patterns allowed) or files (with a /).
            for token in re.findall(r"`([^`]+)`", row[2]):
                if "/" in token or "(" in token:
                    continue
                for rule in expand(token):
                    assert fnmatch.filter(rules, rule), f"paper map: no rule {rule!r} in the workflow's rule graph"


def test_the_data_page_names_every_variable_of_the_contract():
    page = (ROOT / "docs" / "data.md").read_text()
    for kind in ("trajectories", "mechanisms", "phases", "nonlinear", "nonlinear_plane"):
        for name in contract.KINDS[kind].variables:
            assert f"`{name}`" in page, f"docs/data.md does not describe {kind} variable {name!r}"


@pytest.mark.parametrize("page", PAGES, ids=lambda path: path.name)
def test_relative_links_resolve(page):
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
        assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_the_readmes_notebook_example_runs():
    (block,) = re.findall(r"```python\n(.*?)```", README, re.DOTALL)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert set(namespace["fl"].flag_names(namespace["labels"]["primary"]).values.ravel()) <= set(
        contract.PRIMARY_LABELS
    )
