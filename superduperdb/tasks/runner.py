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
import time
import traceback
from typing import Any

import pymongo.errors

from .. import metrics
from ..errors import JobCancelledError
from ..store import records
from ..store.context import Context, Target

# Every module that defines job kinds, imported here where kinds are looked up (never registered as a side
# effect of unpickling a job's parameters): tests/unit/test_layers.py checks the list is whole.
from . import apply, download, index, learning, outputs, reconcile, training, validation, versions  # noqa: F401
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
        try:
            return self.fallback.isatty()
        except ValueError:  # the real stream was closed (at interpreter exit)
            return False

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


def _quietly(action: Any, *args: Any, **kwargs: Any) -> None:
    """A record update that may fail while the database is away (it is best effort then)."""
    try:
        action(*args, **kwargs)
    except pymongo.errors.PyMongoError as exc:
        logger.warning("could not update a job record: %s: %s", type(exc).__name__, exc)


def run_job(target: Target, job_id: str, kind: str, params: dict, *upstream: dict, inline: bool = False) -> dict:
    """Execute job ``job_id`` of ``kind`` (a Dask task); ``upstream`` are the outcomes of
    the jobs it depends on; ``inline`` says it runs in the caller's process (no cluster).

    The record is the job's truth: a job whose record is already final (it
    succeeded, failed or was cancelled) does nothing, so a recomputation by
    Dask after a lost worker never repeats finished work. A job interrupted by
    the database (a ``pymongo.errors.ConnectionFailure``) runs again, up to
    ``jobs.retries`` times with exponential backoff from ``jobs.retry_delay``
    seconds (jobs are idempotent); its record logs each interruption (once the
    database is back, if it stayed away through several).

    Never raises for a failing job: the record says ``failed`` (with the
    traceback) and the outcome tells dependent jobs not to run, which they
    record as ``failed`` ("did not run") themselves, so nothing stays pending.
    That holds for user code raising any ``BaseException`` too (``SystemExit``,
    ``KeyboardInterrupt`` ...), which must not take a worker thread or its
    event loop down; the one exception is a ``KeyboardInterrupt`` inline,
    which is recorded and then re-raised so that Ctrl-C still stops the caller.
    Returns ``{'job_id', 'status'}``.
    """
    ctx = Context(target, job_id)
    retries, delay = ctx.config.jobs.retries, ctx.config.jobs.retry_delay
    untold: list[str] = []  # interruptions not yet in the record (the database was still away)
    for attempt in range(1, retries + 2):
        try:
            if untold:
                records.log(ctx.jobs, job_id, untold)
                untold.clear()
            return _run_once(ctx, job_id, kind, params, upstream, attempt, inline)
        except pymongo.errors.ConnectionFailure as exc:
            error = f"{type(exc).__name__}: {exc}"
            if attempt > retries:
                logger.warning("job %s (%s): the database stayed unreachable after %d attempts", job_id, kind, attempt)
                _quietly(records.log, ctx.jobs, job_id, untold)
                _quietly(records.finish, ctx.jobs, job_id, records.FAILED, attempts=attempt,
                         error=f"interrupted: the database was unreachable ({attempt} attempts; last: {error}); "
                               "the reconciler repairs what it left undone")
                return _outcome(job_id, records.FAILED)
            pause = delay * 2 ** (attempt - 1)
            logger.warning("job %s (%s), attempt %d interrupted by the database (%s); again in %.1f s",
                           job_id, kind, attempt, error, pause)
            time.sleep(pause)  # backoff before a retry, not a synchronisation
            # Written when the next attempt starts: with the database still away, the line waits
            # for the attempt that reaches it, so the record tells every interruption.
            untold.append(f"attempt {attempt} interrupted by the database ({error}); retried")
    raise AssertionError("unreachable")  # pragma: no cover


def _run_once(ctx: Context, job_id: str, kind: str, params: dict, upstream: tuple, attempt: int,
              inline: bool = False) -> dict:
    table = ctx.jobs
    record = table.find_one({"_id": records.oid(job_id)}, {"status": 1})
    if record is None:
        logger.warning("job %s (%s) has no record (its collection was dropped?): not run", job_id, kind)
        return _outcome(job_id, records.FAILED)
    if record["status"] in records.FINAL:
        return _outcome(job_id, record["status"])
    blocked = [u for u in upstream if isinstance(u, dict) and u.get("status") != records.SUCCESS]
    if blocked:
        status = records.CANCELLED if blocked[0]["status"] == records.CANCELLED else records.FAILED
        records.finish(table, job_id, status, error=f"did not run: upstream job {blocked[0]['job_id']} {blocked[0]['status']}")
        return _outcome(job_id, status)
    records.start(table, job_id, _worker_name(), attempt=attempt)
    capture = capture_logs()
    started = time.perf_counter()
    try:
        with capture:
            result = KINDS[kind](ctx, job_id, **params)
    except JobCancelledError:
        records.log(table, job_id, capture.lines)
        ctx.log("stopped: the job was cancelled")
        _observe(ctx, kind, records.CANCELLED, started, params)
        return _outcome(job_id, records.CANCELLED)
    except pymongo.errors.ConnectionFailure:
        _quietly(records.log, table, job_id, capture.lines)
        raise
    except BaseException as exc:  # noqa: BLE001 - user code may raise SystemExit, KeyboardInterrupt ...
        tb = traceback.format_exc()
        name = type(exc).__name__
        message = f"{name}: {exc}" if str(exc) else name
        records.log(table, job_id, capture.lines)
        records.finish(table, job_id, records.FAILED, error=message, traceback=tb)
        logger.warning("job %s (%s) failed: %s", job_id, kind, message)
        _observe(ctx, kind, records.FAILED, started, params)
        if inline and isinstance(exc, KeyboardInterrupt):
            raise  # Ctrl-C in the caller's process: the job is recorded failed, the caller stops
        return _outcome(job_id, records.FAILED)
    records.log(table, job_id, capture.lines)
    records.finish(table, job_id, records.SUCCESS, result=result)
    _observe(ctx, kind, records.SUCCESS, started, params, result)
    return _outcome(job_id, records.SUCCESS)


def _observe(ctx: Context, kind: str, status: str, started: float, params: dict, result: Any = None) -> None:
    """The job's run time and (model jobs) outputs computed, on this worker's ``/metrics``."""
    if not ctx.config.metrics.enabled:
        return
    computed = result.get("computed", 0) if isinstance(result, dict) else 0
    metrics.observe_job(ctx.target.database, ctx.target.collection, kind, status, time.perf_counter() - started,
                        watcher=params.get("watcher") if kind == "model" else None,
                        documents=computed if isinstance(computed, int) else 0)
