"""Run one job on a worker: record its status, capture its logs, report errors.

:func:`run_job` is what the client submits to Dask. It marks the record
``running``, calls the job kind's function, captures log records and
``print`` output from the job's thread into the record, and finishes the
record with ``success`` (and a small result dict) or ``failed`` (error and
formatted traceback). The client's :meth:`Job.wait` raises
:class:`~superduperdb.errors.JobFailedError` from the record.
"""

from __future__ import annotations

import io
import logging
import socket
import sys
import threading
import traceback
from typing import Any

from ..errors import JobCancelledError
from ..store import records
from ..store.context import Context, Target
from . import download, index, outputs, training, versions  # noqa: F401  (they register the job kinds)
from .kinds import KINDS

logger = logging.getLogger(__name__)


class _ThreadStream(io.TextIOBase):
    """Routes writes from threads running a job into that job's buffer."""

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback
        self.buffers: dict[int, list[str]] = {}

    def write(self, text: str) -> int:
        buf = self.buffers.get(threading.get_ident())
        if buf is None:
            return self.fallback.write(text)
        buf.append(text)
        return len(text)

    def flush(self) -> None:
        self.fallback.flush()

    def isatty(self) -> bool:
        return self.fallback.isatty()

    def __getattr__(self, name: str) -> Any:
        # Everything else (ipykernel's set_parent, encoding, fileno ...) is the real stream's.
        return getattr(self.fallback, name)


_STREAMS: dict[str, _ThreadStream] = {}
_STREAMS_LOCK = threading.Lock()


def _install_streams() -> None:
    with _STREAMS_LOCK:
        for name in ("stdout", "stderr"):
            current = getattr(sys, name)
            if not isinstance(current, _ThreadStream):
                stream = _ThreadStream(current)
                setattr(sys, name, stream)
                _STREAMS[name] = stream


class _Capture(logging.Handler):
    def __init__(self, thread: int, lines: list[str]) -> None:
        super().__init__(logging.NOTSET)
        self.thread = thread
        self.lines = lines
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.lines.append(self.format(record))


class capture_logs:
    """Collect log records and prints of the current thread into a list of lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._printed: list[str] = []

    def __enter__(self) -> capture_logs:
        _install_streams()
        ident = threading.get_ident()
        for stream in _STREAMS.values():
            stream.buffers[ident] = self._printed
        # Records that pass the loggers' configured levels are captured; levels are
        # never changed here (jobs run concurrently in threads of one process).
        self._handler = _Capture(ident, self.lines)
        logging.getLogger().addHandler(self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        ident = threading.get_ident()
        for stream in _STREAMS.values():
            stream.buffers.pop(ident, None)
        logging.getLogger().removeHandler(self._handler)
        printed = "".join(self._printed).splitlines()
        self.lines.extend(printed)


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"inline@{socket.gethostname()}"


def _outcome(job_id: str, status: str) -> dict:
    return {"job_id": job_id, "status": status}


def run_job(target: Target, job_id: str, kind: str, params: dict, *upstream: dict) -> dict:
    """Execute job ``job_id`` of ``kind`` (a Dask task); ``upstream`` are the outcomes of
    the jobs it depends on.

    Never raises for a failing job: the record says ``failed`` (with the
    traceback) and the outcome tells dependent jobs not to run, which they
    record as ``failed`` ("did not run") themselves, so nothing stays pending.
    Returns ``{'job_id', 'status'}``.
    """
    ctx = Context(target, job_id)
    table = ctx.jobs
    blocked = [u for u in upstream if isinstance(u, dict) and u.get("status") != "success"]
    if blocked:
        status = "cancelled" if blocked[0]["status"] == "cancelled" else "failed"
        records.finish(table, job_id, status, error=f"did not run: upstream job {blocked[0]['job_id']} {blocked[0]['status']}")
        return _outcome(job_id, status)
    records.start(table, job_id, _worker_name())
    if ctx.cancelled():
        return _outcome(job_id, "cancelled")
    capture = capture_logs()
    try:
        with capture:
            result = KINDS[kind](ctx, job_id, **params)
    except JobCancelledError:
        records.log(table, job_id, capture.lines)
        ctx.log("stopped: the job was cancelled")
        return _outcome(job_id, "cancelled")
    except Exception as exc:
        tb = traceback.format_exc()
        records.log(table, job_id, capture.lines)
        records.finish(table, job_id, "failed", error=f"{type(exc).__name__}: {exc}", traceback=tb)
        logger.warning("job %s (%s) failed: %s: %s", job_id, kind, type(exc).__name__, exc)
        return _outcome(job_id, "failed")
    records.log(table, job_id, capture.lines)
    records.finish(table, job_id, "success", result=result)
    return _outcome(job_id, "success")
