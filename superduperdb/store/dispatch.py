"""The one door to the Dask cluster: every callable the library hands to Dask passes here.

Code that runs on the cluster lives on one floor: ``superduperdb.tasks`` (jobs
and the other tasks) and ``superduperdb.master`` (the master actor). Each
function below refuses, before anything reaches the cluster, a callable
defined anywhere else (:func:`check`), so worker code cannot hide in a client
module (it would import client-side code on the workers, and the layer test,
which reads imports by folder, could not see it). ``tests/unit/test_layers.py``
also inspects, on a running cluster, every task the library submits.

Shared by both sides (the client's services and cluster handle, the master's
handle, the reconciler's tasks), hence on the store floor.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

WORKER_FLOORS = ("superduperdb.tasks", "superduperdb.master")


def defined_in(fn: Any) -> str:
    """The module that defines ``fn`` (a function, class or bound method)."""
    target = getattr(fn, "__func__", fn)
    return getattr(target, "__module__", None) or getattr(inspect.getmodule(target), "__name__", "?")


def on_worker_floor(fn: Any) -> bool:
    """Whether ``fn`` is defined in ``superduperdb.tasks`` or ``superduperdb.master``.

    >>> from superduperdb.tasks.runner import run_job
    >>> from superduperdb.store.frames import to_frame
    >>> on_worker_floor(run_job), on_worker_floor(to_frame)
    (True, False)
    """
    module = defined_in(fn)
    return any(module == floor or module.startswith(floor + ".") for floor in WORKER_FLOORS)


def check(fn: Callable) -> Callable:
    """``fn``, if it may run on the cluster; else :class:`TypeError` (nothing is submitted)."""
    if not on_worker_floor(fn):
        name = getattr(fn, "__qualname__", repr(fn))
        raise TypeError(f"{defined_in(fn)}.{name} is handed to the Dask cluster, but code that runs on the cluster "
                        f"is defined in {' or '.join(WORKER_FLOORS)}: move it there (see the README's Layout).")
    return fn


def submit(dask_client: Any, fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """``dask_client.submit(fn, *args, **kwargs)`` for a callable of the worker floor (actors too)."""
    return dask_client.submit(check(fn), *args, **kwargs)


def delayed(fn: Callable) -> Any:
    """``dask.delayed(fn, pure=False)`` for a function of the worker floor (side effects: never cached)."""
    import dask

    return dask.delayed(check(fn), pure=False)


def run(dask_client: Any, fn: Callable, **kwargs: Any) -> Any:
    """``dask_client.run(fn, **kwargs)``: ``fn`` on every worker (a function of the worker floor)."""
    return dask_client.run(check(fn), **kwargs)


def run_on_scheduler(dask_client: Any, fn: Callable, **kwargs: Any) -> Any:
    """``dask_client.run_on_scheduler(fn, **kwargs)`` for a function of the worker floor."""
    return dask_client.run_on_scheduler(check(fn), **kwargs)
