"""Graph builds in a separate, long-lived process, so that a build never holds the index's GIL.

pynndescent's build is numba code that holds the GIL for long stretches: run in
a thread of the process that answers queries, it stalled them by up to 0.55 s
at a time. :class:`ProcessBuilder` is a ``builder`` for
:class:`~superduperdb.index.VectorIndex` that runs
:func:`~superduperdb.index.graph.build_graph` in a child process
(``python -m superduperdb.index.builder``) instead: the rows go over as an
``.npy`` file in a private temporary folder, the graph comes back pickled. The
child is started on first use and kept, so it pays numba's JIT once; one build
at a time. A child that has died (killed, out of memory) is replaced by a new
one, which takes the build (once); if no child can be started at all, the
build runs in the calling thread (logged).

A plain ``subprocess`` rather than ``multiprocessing``: Dask worker processes
are daemonic, and daemonic processes may not have ``multiprocessing`` children.

Examples
--------
>>> from superduperdb.index import VectorIndex
>>> from superduperdb.index.builder import ProcessBuilder
>>> index = VectorIndex(builder=ProcessBuilder())   # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


class BuildProcessError(RuntimeError):
    """The build process failed or exited (its message has the child's error)."""


class _ChildExited(Exception):
    """The child exited before answering (the build is sent once more, to a new child)."""


class ProcessBuilder:
    """``builder(X, measure, **options) -> Graph``, built in a child process.

    Parameters
    ----------
    timeout : float
        Seconds one build may take (JIT included) before it counts as failed.
    python : str, optional
        The interpreter of the child (default: this one).
    """

    def __init__(self, timeout: float = 3600.0, python: str | None = None) -> None:
        self.timeout = float(timeout)
        self.python = python or sys.executable
        self._proc: subprocess.Popen | None = None
        self._dir: str | None = None
        self._lock = threading.Lock()
        self.builds = 0

    def _start(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            if self._dir is None:
                self._dir = tempfile.mkdtemp(prefix="superduperdb-build-")
            self._proc = subprocess.Popen([self.python, "-m", "superduperdb.index.builder"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=None, text=True, bufsize=1,
                                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
            logger.info("started the graph build process (pid %d)", self._proc.pid)
        return self._proc

    def __call__(self, X: np.ndarray, measure: Any, **options: Any) -> Any:
        with self._lock:
            for attempt in (1, 2):
                try:
                    proc = self._start()
                except OSError as exc:
                    logger.warning("cannot start a build process (%s); building in this thread", exc)
                    from .graph import build_graph

                    return build_graph(X, measure, **options)
                try:
                    return self._build(proc, X, measure, options)
                except _ChildExited as exc:
                    # The child died since its last build (killed, out of memory) or while building:
                    # a new one takes the build, once.
                    self.close()
                    if attempt == 2:
                        raise BuildProcessError(f"The graph build process exited ({exc}); the next build starts "
                                                "a new one.") from exc
                    logger.warning("the graph build process (pid %d) exited (%s); starting a new one", proc.pid, exc)
        raise AssertionError("unreachable")

    def _build(self, proc: subprocess.Popen, X: np.ndarray, measure: Any, options: dict) -> Any:
        name = uuid.uuid4().hex
        rows, out = os.path.join(self._dir, f"{name}.npy"), os.path.join(self._dir, f"{name}.graph")
        try:
            np.save(rows, np.ascontiguousarray(X, np.float32))
            try:
                proc.stdin.write(json.dumps({"rows": rows, "out": out, "measure": measure, "options": options}) + "\n")
                proc.stdin.flush()
            except (OSError, ValueError) as exc:  # a broken pipe: the child died
                raise _ChildExited(str(exc)) from exc
            reply = self._reply(proc)
            if "error" in reply:
                raise BuildProcessError(f"The graph build failed in the build process: {reply['error']}")
            with open(out, "rb") as f:
                graph = pickle.load(f)
            self.builds += 1
            return graph
        finally:
            for path in (rows, out):
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def _reply(self, proc: subprocess.Popen) -> dict:
        result: list = []
        reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(self.timeout)
        if reader.is_alive():
            self.close()
            raise BuildProcessError(f"The graph build process gave no answer within {self.timeout:g} s; the next "
                                    "build starts a new one.")
        if not result or not result[0]:  # end of its output: the child exited
            raise _ChildExited(f"exit code {proc.poll()}")
        return json.loads(result[0])

    @property
    def pid(self) -> int | None:
        """The child's process id (None when not running)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def close(self) -> None:
        """Stop the child (a later build starts a new one)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.stdin.close()
                proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(5)

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
        except Exception:
            pass

    def __getstate__(self) -> dict:  # travels without its child
        return {"timeout": self.timeout, "python": self.python}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)


def _serve() -> None:  # pragma: no cover - runs in the child
    """The child: one JSON request per line on stdin, one JSON reply per line on stdout."""
    from .env import configure_numba_env

    configure_numba_env()
    from .graph import build_graph

    for line in sys.stdin:
        request = json.loads(line)
        try:
            X = np.load(request["rows"], mmap_mode="r")
            graph = build_graph(np.asarray(X), request["measure"], **request["options"])
            with open(request["out"], "wb") as f:
                pickle.dump(graph, f, protocol=pickle.HIGHEST_PROTOCOL)
            reply: dict = {"ok": True}
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            import traceback

            reply = {"error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"}
        try:
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:  # the parent is gone: so is the reason to build
            return


if __name__ == "__main__":  # pragma: no cover
    _serve()
