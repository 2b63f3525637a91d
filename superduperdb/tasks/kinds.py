"""The registry of job kinds: ``KINDS[name](ctx, job_id, **params) -> dict``.

Each job-kind module registers its function with :func:`job_kind`;
:mod:`superduperdb.tasks.runner` imports every such module (so a worker knows every
kind before it unpickles any job) and :func:`~superduperdb.tasks.runner.run_job`
looks kinds up here.
"""

from __future__ import annotations

from collections.abc import Callable

KINDS: dict[str, Callable[..., dict]] = {}


def job_kind(name: str) -> Callable:
    """Register ``fn(ctx, job_id, **params) -> dict`` as the job kind ``name``."""

    def register(fn: Callable) -> Callable:
        KINDS[name] = fn
        return fn

    return register

