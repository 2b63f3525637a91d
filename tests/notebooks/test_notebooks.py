"""Execute every notebook in ``notebooks/`` headlessly, as a user would run it,
and the code examples of the user guides in ``docs/``.

Each notebook runs top to bottom in a fresh ``python3`` kernel (the one of this
virtual environment, see :func:`_kernel_name`) with the repository root as
working directory. A cell that raises fails the test with the cell's source and
its error. Notebooks that need the real MiniLM model (or anything else slow)
are marked ``slow``: by a name ending in ``_slow.ipynb``, or by
``"superduperdb": {"slow": true}`` in the notebook's metadata.

The notebooks in the repository must be saved with their outputs cleared
(tested too): outputs are run-specific noise in diffs.

Each guide in :data:`GUIDES` runs as one script: its ```python blocks in
order, in a fresh interpreter, in an empty temporary directory. A block
preceded by ``<!-- no-run -->`` is skipped.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 300  # seconds per cell
KERNEL = "python3"
GUIDES = ("index.md", "config.md", "storage.md", "types.md", "jobs.md", "search.md", "training.md", "dataframes.md")
GUIDE_TIMEOUT = 300  # seconds per guide
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_BLOCK = re.compile(r"(<!--\s*no-run\s*-->\s*\n)?```python\n(.*?)```", re.S)


def _is_slow(path: Path) -> bool:
    if path.stem.endswith("_slow"):
        return True
    meta = nbformat.read(path, as_version=4).metadata.get("superduperdb", {})
    return bool(meta.get("slow"))


def _params():
    return [pytest.param(p, id=p.name, marks=[pytest.mark.slow] if _is_slow(p) else []) for p in NOTEBOOKS]


def _kernel_name() -> str:
    """``python3``, after checking that it is this interpreter's kernel.

    ipykernel's own spec is ``python3`` running ``sys.executable``; a spec of
    that name installed elsewhere (another venv, the system) would run the
    notebooks with other packages, so refuse it with a clear message.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        pytest.fail(f"No {KERNEL!r} kernel: install ipykernel in this environment ({sys.executable}).")
    argv0 = spec.argv[0]
    # jupyter_client runs "python", "python3" and "python3.11" with sys.executable.
    generic = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
    if argv0 not in generic and Path(argv0).resolve() != Path(sys.executable).resolve():
        pytest.fail(
            f"The {KERNEL!r} kernelspec runs {argv0}, not this interpreter {sys.executable}. "
            f"Remove it (jupyter kernelspec remove {KERNEL}) or install ipykernel here."
        )
    return KERNEL


def _environment() -> dict[str, str]:
    """This process's environment, without superduperdb config variables (the examples
    choose their own settings), and with this checkout importable and the network off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERDUPERDB_") or k.startswith("SUPERDUPERDB_TEST_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


@pytest.fixture(scope="module")
def kernel_name() -> str:
    return _kernel_name()


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks in {ROOT / 'notebooks'}"


@pytest.mark.parametrize("path", _params())
def test_notebook_is_saved_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: clear the outputs of cells {dirty} before committing"


_EXECUTED: dict[Path, object] = {}


def _execute(path: Path, kernel_name: str):
    """Run the notebook once per test session; return it with its outputs."""
    if path in _EXECUTED:
        return _EXECUTED[path]
    nb = nbformat.read(path, as_version=4)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(_environment())  # the kernel inherits it
    try:
        client = nbclient.NotebookClient(
            nb,
            timeout=CELL_TIMEOUT,
            kernel_name=kernel_name,
            resources={"metadata": {"path": str(ROOT)}},  # the kernel's working directory
            allow_errors=False,
        )
        try:
            client.execute()
        except nbclient.exceptions.CellExecutionError as exc:
            result = f"{path.name}: a cell raised\n{_ANSI.sub('', str(exc))}"
        except nbclient.exceptions.CellTimeoutError as exc:
            result = f"{path.name}: a cell ran longer than {CELL_TIMEOUT} s\n{exc}"
        else:
            result = nb
    finally:
        os.environ.clear()
        os.environ.update(saved)
    _EXECUTED[path] = result
    return result


@pytest.mark.parametrize("path", _params())
def test_notebook_runs(path: Path, kernel_name: str):
    result = _execute(path, kernel_name)
    if isinstance(result, str):
        pytest.fail(result, pytrace=False)


@pytest.mark.parametrize("path", _params())
def test_notebook_output_reaches_its_cells(path: Path, kernel_name: str):
    """What a cell prints shows under that cell, also after jobs have run in the kernel.

    (Jobs capture their own prints; that must not swallow the notebook's.)
    """
    result = _execute(path, kernel_name)
    if isinstance(result, str):
        pytest.skip("the notebook did not run (see test_notebook_runs)")
    silent = [
        i for i, cell in enumerate(result.cells)
        if cell.cell_type == "code" and "print(" in cell.source
        and not any(o.output_type == "stream" and o.name == "stdout" and o.text.strip() for o in cell.outputs)
    ]
    assert not silent, f"{path.name}: cells {silent} call print() but show no output"


def test_config_guide_lists_every_key():
    from superduperdb.config import resolve_config

    text = (ROOT / "docs" / "config.md").read_text()
    keys = [path for path, _, _ in resolve_config(home="/nonexistent", cwd="/nonexistent", environ={}).items()]
    missing = [k for k in keys if f"`{k}`" not in text]
    assert not missing, f"docs/config.md does not describe {missing} (see superduperdb/defaults.yaml)"


def guide_code(path: Path) -> str:
    """The guide's runnable Python blocks, joined into one script."""
    blocks = [m.group(2) for m in _BLOCK.finditer(path.read_text()) if not m.group(1)]
    return "\n".join(f"# --- {path.name}, example {i + 1}\n{block}" for i, block in enumerate(blocks))


@pytest.mark.parametrize("name", GUIDES)
def test_guide_examples_run(name: str, tmp_path: Path):
    path = ROOT / "docs" / name
    code = guide_code(path)
    assert code, f"{name} has no python examples"
    try:
        run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_environment(), capture_output=True, text=True,
                             timeout=GUIDE_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"docs/{name}: the examples ran longer than {GUIDE_TIMEOUT} s", pytrace=False)
    if run.returncode:
        pytest.fail(f"docs/{name}: an example failed (the examples run as one script, "
                    f"'# --- example N' marks each)\n{run.stderr[-4000:]}", pytrace=False)
