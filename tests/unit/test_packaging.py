"""pyproject.toml and environment.yml agree, and the extras hold what their features need."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _conda_names() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            names |= {_name(d) for d in dep.get("pip", []) if not d.startswith("-")}
        else:
            names.add(_name(dep))
    return names


def test_python_has_no_upper_bound():
    spec = _project()["requires-python"]
    assert spec.startswith(">=3.11") and "<" not in spec


def test_dev_extra_includes_the_dataframe_extra():
    extras = _project()["optional-dependencies"]
    dev = {_name(r) for r in extras["dev"]}
    assert {_name(r) for r in extras["dataframe"]} <= dev
    assert {"jupyterlab", "ipywidgets", "matplotlib", "nbclient"} <= {_name(r) for r in extras["notebook"]}


def test_environment_yml_lists_the_dependencies_and_the_dev_extra():
    project = _project()
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    conda = _conda_names() | {"dask", "distributed"}  # conda-forge's dask is dask[dataframe, distributed]
    conda_name = {"mkdocstrings": "mkdocstrings-python"}  # pip's mkdocstrings[python]
    missing = sorted(n for n in wanted if conda_name.get(n, n) not in conda)
    assert not missing, f"environment.yml lacks {missing} (keep it in sync with pyproject.toml)"
