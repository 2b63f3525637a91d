"""Follow a job's logs as they arrive (``Collection.watch_job``)."""

from __future__ import annotations

import logging
import time

from ..errors import JobTimeoutError
from .handles import DEFAULT_TIMEOUT, FINAL, Job, _raise_for

logger = logging.getLogger("superduperdb.jobs")


def watch(job: Job, timeout: float | None = None) -> Job:
    """Log each new line of ``job`` until it finishes; raise as :meth:`Job.wait` does."""
    deadline = time.monotonic() + (DEFAULT_TIMEOUT if timeout is None else timeout)
    seen = 0
    delay = 0.01
    while True:
        record = job.record()
        lines = record.get("logs", [])
        for line in lines[seen:]:
            logger.info("[%s] %s", job.id[:8], line)
        seen = len(lines)
        if record["status"] in FINAL:
            _raise_for(record)
            return job
        if time.monotonic() > deadline:
            raise JobTimeoutError(f"Job {job.id} still {record['status']!r} after the timeout.", job_id=job.id)
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
