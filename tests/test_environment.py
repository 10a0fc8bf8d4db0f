"""environment.yml (conda) and pyproject.toml (pip) must describe the same environment."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["test"]
    pins = {}
    for requirement in requirements:
        name, _, version = requirement.partition("==")
        assert version, f"pyproject.toml: {requirement!r} is not pinned with =="
        pins[normalise(name)] = version
    return pins


def environment_pins() -> tuple[dict[str, str], str]:
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pins, python = {}, ""
    for entry in environment["dependencies"]:
        if isinstance(entry, dict):
            for requirement in entry["pip"]:
                if requirement.startswith("-e"):
                    continue
                name, _, version = requirement.partition("==")
                pins[normalise(name)] = version
        elif entry.startswith("python="):
            python = entry.partition("=")[2]
        elif entry != "pip":
            name, _, version = entry.partition("=")
            pins[normalise(name)] = version
    return pins, python


def test_environment_yml_pins_exactly_the_pyproject_dependencies():
    conda, _ = environment_pins()
    assert conda == pyproject_pins()


def test_python_versions_agree():
    _, python = environment_pins()
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f">={python}" in requires


def test_torch_is_pinned_to_the_cpu_build_version():
    # An unpinned torch, or a range admitting newer releases, pulls a multi-GB CUDA build.
    assert pyproject_pins()["torch"] == "2.13.0"
