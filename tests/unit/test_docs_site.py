"""The documentation site builds with warnings as errors, and its API reference is generated.

``mkdocs build --strict`` (config: ``mkdocs.yml``; packages: the ``docs`` extra, part of
``dev``) fails on a broken link or anchor, a guide in ``docs/`` missing from the navigation,
an API page naming an object that does not exist, or a docstring mkdocstrings cannot render.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"),
         "--site-dir", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def _ids(page: Path) -> set[str]:
    return set(re.findall(r'id="([^"]+)"', page.read_text()))


def test_every_guide_is_a_page(site: Path) -> None:
    for guide in DOCS.glob("*.md"):
        page = site / ("index.html" if guide.stem == "index" else f"{guide.stem}/index.html")
        assert page.is_file(), f"{guide.name} was not built"


def test_api_reference_is_generated_from_docstrings(site: Path) -> None:
    expected = {
        "client": ["superduperdb.client.connect", "superduperdb.client.SuperDuperClient"],
        "collection": ["superduperdb.collection.Collection.find", "superduperdb.collection.Collection.create_model",
                       "superduperdb.collection.Collection.create_semantic_index"],
        "cursor": ["superduperdb.cursor.Cursor"],
        "jobs": ["superduperdb.jobs.handles.JobGroup.wait", "superduperdb.jobs.handles.Job",
                 "superduperdb.results.InsertOneResult"],
        "models": ["superduperdb.models.base.Model.predict", "superduperdb.models.text.load_minilm"],
        "types": ["superduperdb.types.registry.TypeRegistry", "superduperdb.types.builtin.ArrayType"],
        "config": ["superduperdb.config.resolve.resolve_config", "superduperdb.config.resolve.Config"],
        "errors": ["superduperdb.errors.SuperDuperError", "superduperdb.errors.NotRegisteredError"],
    }
    for page, anchors in expected.items():
        ids = _ids(site / "api" / page / "index.html")
        missing = [a for a in anchors if a not in ids]
        assert not missing, f"api/{page}: {missing} not documented"
    # A docstring's text, not just a heading: connect's example is rendered.
    assert "mongomock://" in (site / "api" / "client" / "index.html").read_text()


def test_cli_reference_lists_every_command(site: Path) -> None:
    from superduperdb.cli import main

    text = (site / "api" / "cli" / "index.html").read_text()
    for name in main.commands:
        assert f"superduperdb {name}" in text


def test_diagrams_render_offline(site: Path) -> None:
    """Diagrams are SVG files of the site (a Mermaid fence renders only with its script from a CDN)."""
    page = (site / "cluster" / "index.html").read_text()
    assert 'src="../img/cluster.svg"' in page and 'class="mermaid"' not in page
    svg = (site / "img" / "cluster.svg").read_text()
    assert svg.startswith("<svg") and "master worker" in svg and "http://" not in svg.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    for guide in DOCS.glob("*.md"):
        assert "```mermaid" not in guide.read_text(), f"{guide.name} has a Mermaid diagram: draw it as an SVG"
