"""Handles on jobs: :class:`Job` and :class:`JobGroup`.

A job's record in ``<collection>._jobs`` is the source of truth (status, times,
progress, logs, error and remote traceback); a handle also holds the Dask
future when the job was submitted from this process, so waiting needs no
polling there. Every wait has a timeout; none blocks forever.

There is one wait (:meth:`Job.wait`): ``Collection.watch_job`` is ``wait`` with
``on_line`` (each new log line as it arrives). A job whose task the cluster has
lost (its worker died and Dask gave up on it) ends the wait at once, failed:
from its future when this process holds it, else by asking the scheduler that
runs it whether it still knows the task (the record names the scheduler).
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..errors import JobCancelledError, JobFailedError, JobNotFoundError, JobTimeoutError
from ..store.metadata import metadata_changed
from ..store.records import CANCELLED, FAILED, FINAL, finish

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0
LOST_CHECK = 1.0  # seconds between asking the scheduler about a task whose future is not held here


def raise_for(record: dict) -> None:
    """Raise what a final job record says: :class:`JobFailedError` (with the remote traceback) or
    :class:`JobCancelledError`; nothing for a success."""
    record = {**record, "_id": str(record["_id"])}
    status = record.get("status")
    if status == FAILED:
        tb = record.get("traceback") or ""
        raise JobFailedError(
            f"Job {record['_id']} ({record.get('kind')}"
            f"{', model ' + repr(record['model']) if record.get('model') else ''}) failed: "
            f"{record.get('error')}\n\nRemote traceback:\n{tb}",
            job_id=record["_id"],
            error=record.get("error"),
            remote_traceback=tb,
        )
    if status == CANCELLED:
        raise JobCancelledError(f"Job {record['_id']} was cancelled.", job_id=record["_id"])


class Job:
    """One job: compute outputs, download content, update the index, train ...

    Parameters
    ----------
    id : str
        The job's id (also ``_id`` of its record).
    table : Collection
        The raw ``<collection>._jobs`` collection.
    future : distributed.Future, optional
        The Dask future, when submitted from this process.
    default_timeout : float, optional
        Of :meth:`wait` (the config's ``jobs.wait_timeout``).
    task_known : callable, optional
        ``task_known(record) -> bool | None``: whether the scheduler running the job
        still knows its task (None: cannot tell); finds lost jobs without a future.

    Examples
    --------
    >>> result = docs.insert_one({"x": 1})          # doctest: +SKIP
    >>> job = result.jobs[0]                         # doctest: +SKIP
    >>> job.wait(timeout=60).status                  # doctest: +SKIP
    'success'
    """

    def __init__(self, id: str, table: Any, future: Any = None, *, default_timeout: float | None = None,
                 task_known: Callable[[dict], bool | None] | None = None) -> None:
        self.id = id
        self._table = table
        self._future = future
        self._default_timeout = default_timeout or DEFAULT_TIMEOUT
        self._task_known = task_known

    # -- state ------------------------------------------------------------------
    def record(self) -> dict:
        """The job's record, fresh from the database.

        Raises
        ------
        JobNotFoundError
            No record has this id (it was never submitted to this collection, or was deleted).
        """
        from bson import ObjectId
        from bson.errors import InvalidId

        try:
            oid = ObjectId(self.id)
        except (InvalidId, TypeError):
            raise JobNotFoundError(
                f"{self.id!r} is not a job id: job ids are 24-character hex strings, as in "
                "list_jobs()[i]['_id'] or result.jobs.ids.", job_id=self.id) from None
        record = self._table.find_one({"_id": oid})
        if record is None:
            raise JobNotFoundError(
                f"No record for job {self.id} in {self._table.full_name}: it was not submitted to this "
                "collection, or its record was deleted (dropping the collection deletes its jobs). "
                "list_jobs() shows the jobs there are.", job_id=str(self.id))
        return record

    @property
    def status(self) -> str:
        """``pending``, ``running``, ``success``, ``failed`` or ``cancelled``."""
        return self.record()["status"]

    def done(self) -> bool:
        return self.status in FINAL

    def logs(self) -> list[str]:
        """Log lines captured on the worker."""
        return list(self.record().get("logs", []))

    # -- waiting ----------------------------------------------------------------
    def wait(self, timeout: float | None = None, *, progress: bool | None = None,
             on_line: Callable[[str], Any] | None = None) -> Job:
        """Wait until the job has finished; return ``self``.

        ``progress=None`` shows a progress bar (tqdm.auto) in notebooks and
        terminals once the job has run for a second; ``True`` shows it at once,
        ``False`` never. ``on_line(line)`` is called with each log line of the job
        as it arrives (``Collection.watch_job`` logs them).

        Raises
        ------
        JobFailedError
            The job failed; carries the worker's traceback.
        JobCancelledError
            The job was cancelled.
        JobTimeoutError
            Still not finished after ``timeout`` seconds (default: the
            configured ``jobs.wait_timeout``).
        """
        timeout = self._default_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        after = 1.0 if progress is None else 0.0
        if progress is None:
            progress = interactive()
        if progress or on_line is not None:
            record = self._poll(deadline, bar_after=after if progress else None, on_line=on_line)
        else:
            if self._future is not None:
                self._wait_future(deadline)
            record = self._poll(deadline)
        # A finished job may have changed metadata on a worker (a promoted model version, a new
        # index uid): what this process cached from the metadata is re-read (services/search.py).
        metadata_changed()
        raise_for(record)
        self._tell_failed(record)
        return self

    def _tell_failed(self, record: dict) -> None:
        """One line when the job succeeded but set documents aside (the model raised on them)."""
        failed = (record.get("result") or {}).get("failed") if isinstance(record.get("result"), dict) else None
        if failed and not getattr(self, "_told", False):
            self._told = True
            model = record.get("model")
            logger.warning("job %s (%s%s): %d document(s) failed and got no output; list_errors(%s) shows them",
                           self.id, record.get("kind"), f", model {model!r}" if model else "", failed,
                           repr(model) if model else "")

    def _wait_future(self, deadline: float) -> None:
        import distributed

        try:
            self._future.result(timeout=max(0.0, deadline - time.monotonic()))
        except (distributed.TimeoutError, TimeoutError):
            raise self._timeout_error(deadline) from None
        except Exception:  # noqa: S110 - the record (read next) says what happened
            pass

    def _poll(self, deadline: float, bar_after: float | None = None,
              on_line: Callable[[str], Any] | None = None) -> dict:
        """Read the record until it is final (or the deadline passes, or the task is lost); draw a bar
        once ``bar_after`` seconds have passed (None: no bar), and hand each new log line to ``on_line``."""
        delay, start, shown, seen = 0.005, time.monotonic(), None, 0
        lost = _LostTask(self._task_known)
        try:
            while True:
                record = self.record()
                if on_line is not None:
                    lines = record.get("logs") or []
                    for line in lines[seen:]:
                        on_line(line)
                    seen = len(lines)
                if bar_after is not None and shown is None and time.monotonic() - start >= bar_after:
                    from tqdm.auto import tqdm

                    shown = tqdm(total=100, unit="%", desc=f"{record.get('kind')} {record.get('model') or ''}".strip())
                if shown is not None:
                    shown.n = int(100 * float(record.get("progress") or 0.0))
                    shown.refresh()
                if record["status"] in FINAL:
                    return record
                if self._future is not None and self._future.status in ("error", "cancelled"):
                    return self._mark_lost(record)
                if self._future is None and lost.check(record) and self.record()["status"] not in FINAL:
                    finish(self._table, self.id, FAILED, error="lost: its task is no longer on the cluster (its worker "
                           "died and Dask gave up on it, or the cluster restarted); the reconciler repairs its "
                           "documents (coll.reconcile() does it now)")
                    return self.record()
                if time.monotonic() >= deadline:
                    raise self._timeout_error(deadline)
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, 0.2)
        finally:
            if shown is not None:
                shown.close()

    def _mark_lost(self, record: dict) -> dict:
        """The future ended without the task writing a final status (an upstream job
        failed, or the job was cancelled): record why."""
        if self._future.status == "cancelled":
            finish(self._table, self.id, CANCELLED, error="cancelled")
        else:
            exc = self._future.exception(timeout=5)
            finish(self._table, self.id, FAILED, error=f"did not run: {type(exc).__name__}: {exc}",
                   traceback="".join(_format_tb(self._future)))
        return self.record()

    def _timeout_error(self, deadline: float) -> JobTimeoutError:
        return JobTimeoutError(
            f"Job {self.id} did not finish in time (status {self.status!r}). It may still finish: "
            "wait again with a longer timeout, or cancel() it.",
            job_id=self.id,
        )

    def result(self, timeout: float | None = None) -> Any:
        """Wait, then return what the job returned (a small summary dict)."""
        self.wait(timeout)
        return self.record().get("result")

    def cancel(self) -> None:
        """Cancel the job if it has not finished (its record says ``cancelled``)."""
        if self._future is not None:
            self._future.cancel()
        finish(self._table, self.id, CANCELLED, error="cancelled by the user", only_if_unfinished=True)

    # -- display ----------------------------------------------------------------
    def __repr__(self) -> str:
        try:
            r = self.record()
            model = f", model={r['model']!r}" if r.get("model") else ""
            return f"Job(id={self.id!r}, kind={r.get('kind')!r}{model}, status={r['status']!r})"
        except Exception:  # pragma: no cover - repr must never raise
            return f"Job(id={self.id!r})"

    def _repr_html_(self) -> str:
        r = self.record()
        rows = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td>{html.escape(str(r.get(k)))}</td></tr>"
            for k in ("_id", "kind", "model", "status", "progress", "created_at", "started_at", "finished_at", "error")
            if r.get(k) is not None
        )
        return f"<table>{rows}</table>"


class _LostTask:
    """Whether a job's task is lost: its scheduler has not known it at two looks :data:`LOST_CHECK` apart."""

    def __init__(self, task_known: Callable[[dict], bool | None] | None) -> None:
        self.task_known = task_known
        self.next = time.monotonic() + LOST_CHECK
        self.unknown = 0

    def check(self, record: dict) -> bool:
        if self.task_known is None or not record.get("key") or time.monotonic() < self.next:
            return False
        self.next = time.monotonic() + LOST_CHECK
        known = self.task_known(record)
        self.unknown = self.unknown + 1 if known is False else 0
        return self.unknown >= 2


def interactive() -> bool:
    """Whether progress bars are wanted: in a notebook kernel, or on a terminal."""
    import sys

    return "ipykernel" in sys.modules or (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())


def _format_tb(future: Any) -> list[str]:
    import traceback

    tb = future.traceback(timeout=5)
    return traceback.format_tb(tb) if tb is not None else []


class JobGroup:
    """The jobs one write (or one call) submitted; behaves like a list of :class:`Job`.

    ``wait()`` waits for all of them and raises the first failure.
    """

    def __init__(self, jobs: Iterable[Job] = ()) -> None:
        self._jobs = list(jobs)

    def __iter__(self) -> Iterator[Job]:
        return iter(self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)

    def __getitem__(self, i: int) -> Job:
        return self._jobs[i]

    def __bool__(self) -> bool:
        return bool(self._jobs)

    def __add__(self, other: JobGroup) -> JobGroup:
        return JobGroup([*self._jobs, *other])

    @property
    def ids(self) -> list[str]:
        return [j.id for j in self._jobs]

    @property
    def status(self) -> dict[str, str]:
        """``{job_id: status}``."""
        return {j.id: j.status for j in self._jobs}

    def wait(self, timeout: float | None = None, *, progress: bool | None = None) -> JobGroup:
        """Wait for every job (all within ``timeout`` seconds in total).

        ``progress=None`` shows progress bars in notebooks and terminals; the
        first failure raises (:class:`JobFailedError` with the remote traceback).
        """
        if not self._jobs:
            return self
        timeout = self._jobs[0]._default_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        if progress is None:
            progress = interactive()
        bar = None
        if progress and len(self._jobs) > 1:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(self._jobs), desc="jobs", unit="job")
        try:
            for job in self._jobs:
                job.wait(max(0.0, deadline - time.monotonic()), progress=progress and len(self._jobs) == 1)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return self

    def result(self, timeout: float | None = None) -> list[Any]:
        self.wait(timeout)
        return [j.record().get("result") for j in self._jobs]

    def logs(self) -> dict[str, list[str]]:
        return {j.id: j.logs() for j in self._jobs}

    def cancel(self) -> None:
        for job in self._jobs:
            job.cancel()

    def __repr__(self) -> str:
        return f"JobGroup({len(self._jobs)} jobs: {self.status if self._jobs else {}})"

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(j.id)}</td><td>{html.escape(str(r.get('kind')))}</td>"
            f"<td>{html.escape(str(r.get('model') or ''))}</td><td>{html.escape(r['status'])}</td></tr>"
            for j in self._jobs
            for r in [j.record()]
        )
        return f"<table><tr><th>id</th><th>kind</th><th>model</th><th>status</th></tr>{rows}</table>"
