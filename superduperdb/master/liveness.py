"""Noticing at once that a shard actor's worker died, whatever the load.

Dask notices a dead worker only after its heartbeat times out, and a call to an
actor on a dead worker waits for Dask's connect timeout (30 s) before it fails.
So every wait on a shard actor (a call's answer, the actor's creation) is cut
into short waits (:data:`FIRST_PROBE`, then :data:`PROBE_EVERY` seconds), and
between them the handle asks whether the worker still lives: the scheduler
still lists it, and its TCP port still takes connections
(:func:`refuses_connections`: a dead process's port refuses at once, a slow
one does not). A dead worker ends the wait with :class:`MasterLost` within
about a second, and the handle replaces the shard elsewhere.

>>> refuses_connections("inproc://127.0.0.1/1/2")  # threads of this process: never refused
False
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from ..errors import SuperDuperError

FIRST_PROBE = 0.25  # seconds a call waits before the first check that the shard's worker lives
PROBE_EVERY = 1.0  # seconds between the next checks


class MasterLost(ConnectionError):
    """A shard actor's worker died while a call waited (internal: the call is repeated on a new actor)."""


def refuses_connections(address: str, timeout: float = 1.0) -> bool:
    """Whether nothing listens at a worker's TCP ``address`` any more (a dead process: refused at once).

    Addresses that are not TCP (``inproc://``: threads of this process) are never refused.
    """
    scheme, _, rest = address.partition("://")
    if scheme not in ("tcp", "tls") or ":" not in rest:
        return False
    host, _, port = rest.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return False
    except ConnectionRefusedError:
        return True
    except (OSError, ValueError):  # slow or unreachable: not proof that it is dead
        return False


def wait_result(future: Any, deadline: float, alive: Callable[[], bool], what: str = "the shard's worker") -> Any:
    """``future.result()`` by ``deadline`` (monotonic), checking ``alive()`` after :data:`FIRST_PROBE` seconds,
    then every :data:`PROBE_EVERY`: a dead worker raises :class:`MasterLost` in about that long. A
    ``TimeoutError`` that is the call's own answer (a :class:`~superduperdb.errors.SuperDuperError` such as
    ``IndexLoadingError``) is raised as it is; the deadline passing raises ``TimeoutError``."""
    step = FIRST_PROBE  # most calls take milliseconds: check early, then every PROBE_EVERY
    while True:
        step = min(step, max(0.0, deadline - time.monotonic()))
        try:
            return future.result(timeout=step)
        except TimeoutError as exc:
            if isinstance(exc, SuperDuperError):  # the call's own answer, not our wait
                raise
            if not alive():
                raise MasterLost(f"{what} is gone") from None
            if time.monotonic() >= deadline:
                raise
            step = PROBE_EVERY
