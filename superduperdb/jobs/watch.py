"""Follow a job's logs as they arrive (``Collection.watch_job``): :meth:`Job.wait` with ``on_line``."""

from __future__ import annotations

import logging

from .handles import Job

logger = logging.getLogger("superduperdb.jobs")


def watch(job: Job, timeout: float | None = None) -> Job:
    """Log each new line of ``job`` until it finishes; raise as :meth:`Job.wait` does (the same wait:
    its timeout default, lost-task detection and errors)."""
    return job.wait(timeout, progress=False, on_line=lambda line: logger.info("[%s] %s", job.id[:8], line))
