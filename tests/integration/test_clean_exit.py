"""Scripts end cleanly: a client that was not closed finishes its jobs and closes quietly at exit.

The script runs as a user runs one (``python script.py``, a local cluster of threads, no
``client.close()``): its output is only what it prints; Dask's shutdown warnings and "cannot
schedule new futures after shutdown" never show, and the jobs of a write whose result was
dropped (fire and forget) are done before the process ends (checked in the folder store
afterwards, from this process).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import superduperdb

ROOT = Path(__file__).resolve().parents[2]
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("SUPERDUPERDB_")},
       "SUPERDUPERDB_MASTER__WARM_UP": "false"}

SCRIPT = """
import numpy as np
import superduperdb

client = superduperdb.connect("./my-data")
docs = client.my_db.documents
docs.insert_many([{"text": "Arrays of numbers", "lang": "en"}, {"text": "Tableaux de nombres", "lang": "fr"}])
docs.create_model("vec", lambda t: np.array([len(t), t.count("a"), 1.0], dtype="float32"), key="text").wait()
docs.create_semantic_index("text", models=["vec"], keys=["text"]).wait()
docs.insert_one({"text": "Matrices and vectors", "lang": "en"}).jobs.wait()
docs.insert_one({"text": "Vectors again", "lang": "en"})   # fire and forget
for doc in docs.find({"lang": "en"}, like={"text": "linear algebra"}, n=5):
    print(round(doc["_score"], 3), doc["text"])
"""


def run(script: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    path = cwd / "script.py"
    path.write_text(textwrap.dedent(script))
    return subprocess.run([sys.executable, str(path)], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_a_script_without_close_prints_only_its_results_and_finishes_its_jobs(tmp_path, attempt):
    done = run(SCRIPT, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert 2 <= len(lines) <= 3 and all(re.fullmatch(r"-?[0-9.]+ [A-Za-z ]+", line) for line in lines), lines
    client = superduperdb.connect(str(tmp_path / "my-data"), cluster=None)
    again = client.my_db.documents.find_one({"text": "Vectors again"})
    assert again["_outputs"]["text"]["vec"] is not None  # its jobs ran before the process ended
    client.close()


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## In a notebook", 1)[1]
    return section.split("```python", 1)[1].split("```", 1)[0]


@pytest.mark.slow
def test_the_readme_snippet_run_as_a_script_prints_only_its_results(tmp_path):
    done = run(readme_snippet(), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    lines = done.stdout.splitlines()
    assert lines and all(re.fullmatch(r"-?[0-9.]+(e-?[0-9]+)? [A-Za-z ]+", line) for line in lines), lines


@pytest.mark.slow
def test_the_demo_says_how_long_it_takes_and_counts_paragraphs(tmp_path):
    done = subprocess.run([str(Path(sys.executable).parent / "superduperdb"), "demo", "--n", "40"], cwd=tmp_path,
                          env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"about \d+ (seconds|minutes) on \d+ idle CPU core", done.stdout)
    assert "superduperdb demo --n 300" in done.stdout
    # The bar counts paragraphs, batch by batch (32, 40), with a rate in paragraphs per second.
    assert "32/40" in done.stderr and "40/40" in done.stderr and "paragraph/s" in done.stderr
    assert "demo finished" in done.stdout
