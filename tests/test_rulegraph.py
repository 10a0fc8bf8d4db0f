"""The README's rule graph (docs/rulegraph.dot and .svg) is the one Snakemake draws of the workflow now.

``make rulegraph`` regenerates both. The graph is compared as rule names and edges (Snakemake
numbers the rules and orders the edges differently from run to run); the SVG, drawn from the dot
file by Graphviz, must show the same rules and as many edges.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
STALE = "out of date: run `make rulegraph` and commit docs/rulegraph.dot and docs/rulegraph.svg"


def rule_graph(dot: str) -> tuple[set[str], set[tuple[str, str]]]:
    """The rules of a Snakemake rule graph (Graphviz dot) and its edges between rule names."""
    labels = dict(re.findall(r'^\s*(\d+)\[label = "([^"]+)"', dot, re.MULTILINE))
    edges = {(labels[a], labels[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.MULTILINE)}
    return set(labels.values()), edges


@pytest.mark.slow
def test_the_committed_rule_graph_is_the_workflows(workflow_copy, run_snakemake):
    # The default configuration: the pipeline `make reproduce` runs, with every figure rule it makes.
    result = run_snakemake(workflow_copy, "--rulegraph", "--configfile", "config/config.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    now = rule_graph(result.stdout)
    assert {"simulate", "merge", "mechanisms", "phases", "train", "summary", "all"} <= now[0]
    assert rule_graph((DOCS / "rulegraph.dot").read_text()) == now, f"docs/rulegraph.dot is {STALE}"


def test_the_picture_is_drawn_from_the_committed_graph():
    rules, edges = rule_graph((DOCS / "rulegraph.dot").read_text())
    svg = (DOCS / "rulegraph.svg").read_text()
    drawn = re.findall(r"<text[^>]*>([^<]+)</text>", svg)
    assert sorted(drawn) == sorted(rules), f"docs/rulegraph.svg is {STALE}"
    assert svg.count('<g id="edge') == len(edges), f"docs/rulegraph.svg is {STALE}"


def test_rule_graph_reads_names_and_edges():
    dot = 'digraph {\n\t0[label = "all", color = "0"];\n\t1[label = "merge", color = "1"];\n\t1 -> 0\n}\n'
    assert rule_graph(dot) == ({"all", "merge"}, {("merge", "all")})
