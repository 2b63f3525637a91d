"""Read, predict and write in step, so that the model never waits on the store.

:func:`run_pipelined` drives a job over a cursor: while the model works on one
batch, a reader thread fetches the next chunk of documents and a writer thread
stores the previous batch's outputs (one bulk write per batch). With a server
(pymongo releases the GIL while it waits on the network) or a model that
releases it (torch, numpy), the three overlap; at worst it runs as the plain
loop would. Errors from any stage surface in the calling thread.

:class:`Progress` records a job's progress at a bounded rate: a record update
costs a round trip, and a progress bar needs a few updates a second, not one
per batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import Any, TypeVar

from ..store import records
from ..store.context import Context

T = TypeVar("T")
R = TypeVar("R")

# A progress record is written at most this often (seconds), and at the end.
PROGRESS_INTERVAL = 0.5
# The fewest inputs per model call when a job splits a chunk into batches for progress.
MIN_STEP = 256


def chunks(it: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    it = iter(it)
    while chunk := list(islice(it, size)):
        yield chunk


def step_size(model: Any, chunk_size: int) -> int:
    """Inputs per model call: the model's batch size, at least :data:`MIN_STEP`, at most a chunk."""
    batch = getattr(model, "batch_size", None)
    batch = batch if isinstance(batch, int) and not isinstance(batch, bool) and batch > 0 else 1
    step = batch * max(1, -(-MIN_STEP // batch))  # a whole number of batches, >= MIN_STEP
    return max(1, min(step, chunk_size))


def run_pipelined(read: Iterable[list[T]], work: Callable[[list[T]], Iterable[R | None]],
                  write: Callable[[R], None], check: Callable[[], None] = lambda: None) -> None:
    """Overlap reading, working and writing.

    Parameters
    ----------
    read : iterable of lists
        Chunks of input, fetched one ahead by a reader thread.
    work : callable
        ``work(chunk)`` yields results to write (None: nothing to write), e.g.
        one per model batch; it runs in the calling thread.
    write : callable
        ``write(result)``, run by a writer thread, one at a time and in order;
        ``work`` goes on meanwhile, but waits before handing over the next
        result until the previous write finished (one write in flight).
    check : callable
        Called before each chunk and each write (e.g. raises when the job was cancelled).

    Examples
    --------
    >>> out = []
    >>> run_pipelined(chunks(range(5), 2), lambda c: [sum(c)], out.append)
    >>> out
    [1, 5, 4]
    """
    chunks_in = iter(read)
    # Leaving the pool waits for the read and the write in flight: on an error too, no write
    # lands after this returns.
    with ThreadPoolExecutor(2, thread_name_prefix="superduperdb-pipeline") as pool:
        writing: Future | None = None
        reading = pool.submit(next, chunks_in, None)
        while (chunk := reading.result()) is not None:
            reading = pool.submit(next, chunks_in, None)  # read ahead while this chunk is worked on
            check()
            for result in work(chunk):
                if result is None:
                    continue
                check()
                if writing is not None:
                    writing.result()
                writing = pool.submit(write, result)
        if writing is not None:
            writing.result()


class Progress:
    """Count a job's work and record its progress at most every :data:`PROGRESS_INTERVAL` seconds.

    Parameters
    ----------
    ctx : Context
        The job's context (its record is updated; without a job id nothing is written).
    total : int
        How much work there is (documents).
    label : str
        Names the work in the log lines written by :meth:`log`.
    scale : float
        The share of the job's progress this work stands for (the record shows ``scale * done / total``).
    """

    def __init__(self, ctx: Context, total: int, label: str, *, scale: float = 1.0,
                 interval: float = PROGRESS_INTERVAL) -> None:
        self.ctx, self.total, self.label, self.scale, self.interval = ctx, total, label, scale, interval
        self.done = 0
        self._written = time.monotonic()

    def advance(self, n: int) -> None:
        """Count ``n`` more documents done; update the record if the last update is old enough."""
        self.done += n
        now = time.monotonic()
        if now - self._written >= self.interval:
            self._write()
            self._written = now

    def log(self) -> None:
        """Add a line with the count so far to the job's logs (once a chunk: not per batch)."""
        self.ctx.log(f"{self.label}: {self.done}/{self.total} documents")

    def close(self) -> None:
        """Record the final count (the log has it from the last chunk)."""
        self._write()

    def _write(self) -> None:
        if self.ctx.job_id is not None:
            fraction = min(1.0, self.done / self.total) if self.total else 1.0
            records.progress(self.ctx.jobs, self.ctx.job_id, self.scale * fraction)
