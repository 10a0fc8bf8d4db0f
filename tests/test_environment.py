"""The conda environments and pyproject.toml (pip) describe the same packages at the same versions."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

#: Each conda environment and the pyproject.toml requirement groups it must hold exactly.
ENVIRONMENTS = {
    "environment.yml": ("dependencies", "nonlinear", "test"),
    "workflow/envs/featlearn.yaml": ("dependencies",),
    "workflow/envs/nonlinear.yaml": ("dependencies", "nonlinear"),
}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_pins(groups: tuple[str, ...]) -> dict[str, str]:
    requirements = [
        r
        for group in groups
        for r in (PROJECT[group] if group == "dependencies" else PROJECT["optional-dependencies"][group])
    ]
    pins = {}
    for requirement in requirements:
        name, _, version = requirement.partition("==")
        assert version, f"pyproject.toml: {requirement!r} is not pinned with =="
        pins[normalise(name)] = version
    return pins


def environment_pins(path: str) -> tuple[dict[str, str], str, list[str]]:
    """The pinned packages of a conda environment file, its Python, and its pip editable installs."""
    environment = yaml.safe_load((ROOT / path).read_text())
    pins, python, editable = {}, "", []
    for entry in environment["dependencies"]:
        if isinstance(entry, dict):
            for requirement in entry["pip"]:
                if requirement.startswith("-e"):
                    editable.append(requirement.split()[1])
                    continue
                name, _, version = requirement.partition("==")
                pins[normalise(name)] = version
        elif entry.startswith("python="):
            python = entry.partition("=")[2]
        elif entry != "pip":
            name, _, version = entry.partition("=")
            pins[normalise(name)] = version
    return pins, python, editable


@pytest.mark.parametrize("path", ENVIRONMENTS)
def test_environment_pins_exactly_its_pyproject_groups(path):
    pins, _, _ = environment_pins(path)
    assert pins == pyproject_pins(ENVIRONMENTS[path])


@pytest.mark.parametrize("path", ENVIRONMENTS)
def test_environment_installs_featlearn_itself_and_its_python(path):
    _, python, editable = environment_pins(path)
    assert f">={python}" in PROJECT["requires-python"]
    # conda runs pip in the environment file's folder: the path must lead to the project root.
    assert [(ROOT / path).parent.joinpath(target).resolve() for target in editable] == [ROOT]


def test_the_rules_use_the_environment_of_their_stage():
    rules = {path.name: path.read_text() for path in (ROOT / "workflow" / "rules").glob("*.smk")}
    common = rules["common.smk"]
    assert 'ENV = "../envs/featlearn.yaml"' in common and 'TORCH_ENV = "../envs/nonlinear.yaml"' in common
    # Only the training rules (nonlinear experiments and phase planes) import torch; every other rule runs without it.
    assert rules["nonlinear.smk"].count("TORCH_ENV") == 2
    assert re.findall(r"^rule (\w+):", rules["nonlinear.smk"], re.MULTILINE) == ["train", "train_plane"]
    assert (
        sum(text.count("TORCH_ENV") for name, text in rules.items() if name not in ("common.smk", "nonlinear.smk")) == 0
    )


def test_torch_is_the_cpu_build_pinned_exactly_everywhere():
    # A torch range admitting newer releases, or an unpinned torch, pulls a multi-GB CUDA build.
    torch = pytest.importorskip("torch")
    pinned = {pyproject_pins(("nonlinear",))["torch"]}
    pinned |= {environment_pins(path)[0]["torch"] for path, groups in ENVIRONMENTS.items() if "nonlinear" in groups}
    assert pinned == {torch.__version__.split("+")[0]}
    assert torch.version.cuda is None, "the installed torch is a CUDA build"
