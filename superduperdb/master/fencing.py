"""A shard actor's leases: one per collection it serves, taken, renewed, and lost (:mod:`superduperdb.store.shards`).

A shard actor takes the lease of its shard in a collection's ``_shards``
table when it first loads one of that collection's indexes, and a background
thread renews every lease it holds each ``ttl / 3`` seconds. A renewal that
fails means another actor took the shard (this one was presumed lost): the
collection is marked **fenced** here, its indexes are dropped by the actor,
and every later call about it raises :class:`~superduperdb.errors.ShardFencedError`,
so that the caller re-resolves the shard's owner. The thread also fences the
actor as a whole when it is no longer the actor published for its shard on the
scheduler (replaced, or the scheduler restarted and forgot it), so a stale
actor never keeps renewing a lease a new owner waits for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ShardFencedError
from ..store import shards as store

logger = logging.getLogger(__name__)

DATASET = "superduperdb-master"
FUTURE = "superduperdb-master-future"
GENERATION = "superduperdb-master-generation"


@dataclass(frozen=True)
class Names:
    """The scheduler datasets that publish one shard's actor."""

    dataset: str
    future: str
    generation: str


def names(shard: int) -> Names:
    """The datasets of shard ``shard`` (shard 0 keeps the names of the single master).

    >>> names(0).dataset, names(2).dataset
    ('superduperdb-master', 'superduperdb-master-shard-2')
    """
    if shard == 0:
        return Names(DATASET, FUTURE, GENERATION)
    return Names(f"{DATASET}-shard-{shard}", f"{FUTURE}-shard-{shard}", f"{GENERATION}-shard-{shard}")


class Fence:
    """The leases one shard actor holds.

    Parameters
    ----------
    shard : int
        The shard this actor serves.
    owner : str
        This actor's identity (its Dask key), written into the leases.
    worker : str or None
        This actor's worker address (a taker checks whether it is still in the cluster).
    ttl : float
        Seconds a lease stays valid without renewal.
    replaces : str, optional
        The owner this actor replaces (its lease is free to take at once).
    gone : callable
        ``gone(worker) -> bool``: whether a worker has left the cluster.
    published : callable
        ``published() -> bool | None``: whether this actor is the published one for its
        shard (None: cannot tell, e.g. not published yet).
    on_lost : callable
        ``on_lost(key)``: called when the lease of collection ``key`` is lost (drop its indexes).
    enabled : bool
        False for an in-process master (no cluster: jobs inline): it is a private cache of one
        process, takes no lease and answers with epoch 0.
    """

    def __init__(self, shard: int, owner: str, worker: str | None, ttl: float, *, replaces: str | None = None,
                 gone: Callable[[str | None], bool] = lambda w: False,
                 published: Callable[[], bool | None] = lambda: None,
                 on_lost: Callable[[str], None] = lambda key: None, grace: float = 60.0,
                 enabled: bool = True) -> None:
        self.enabled = enabled
        self.shard, self.owner, self.worker, self.ttl = shard, owner, worker, float(ttl)
        self.replaces, self._gone, self._published, self._on_lost = replaces, gone, published, on_lost
        self.grace = grace
        self._held: dict[str, tuple[Any, int]] = {}  # collection key -> (shards table, epoch)
        self._fenced: set[str] = set()
        self.retired = False  # no longer the published actor of its shard: every lease let go
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._started = time.monotonic()

    def epoch(self, key: str, table: Any) -> int:
        """This actor's epoch for collection ``key``: its lease, taken now if not held (waits up to ``ttl``).

        Raises
        ------
        ShardFencedError
            The lease was lost, this actor was retired, or another live owner holds it.
        """
        if not self.enabled:
            return 0
        with self._lock:
            self._check(key)
            held = self._held.get(key)
            if held is not None:
                return held[1]
        deadline = time.monotonic() + self.ttl + 1.0
        while True:
            lease = store.take_lease(table, self.shard, self.owner, self.worker, self.ttl, replaces=self.replaces,
                                     gone=self._gone)
            if lease is not None:
                break
            if time.monotonic() > deadline:
                raise ShardFencedError(f"Shard {self.shard} of {key.split('|', 1)[-1]} is held by another live owner; "
                                       "this shard actor is not its owner. Retry: the caller finds the owner.",
                                       shard=self.shard)
            time.sleep(min(0.5, self.ttl / 10))
        with self._lock:
            self._check(key)
            self._held[key] = (table, int(lease["epoch"]))
        self._start()
        return int(lease["epoch"])

    def check(self, key: str) -> None:
        """Raise :class:`ShardFencedError` if collection ``key`` (or the whole actor) was fenced."""
        with self._lock:
            self._check(key)

    def _check(self, key: str) -> None:
        if self.retired or key in self._fenced:
            raise ShardFencedError(f"This actor lost shard {self.shard}"
                                   f"{' (it was replaced)' if self.retired else ' of ' + key.split('|', 1)[-1]}; "
                                   "retry: the caller finds the shard's new owner.", shard=self.shard)

    def confirm(self, key: str) -> bool:
        """Whether this actor still holds collection ``key``'s lease right now (renewed here, in MongoDB:
        what an owner checks before it writes a snapshot); a lost one is fenced at once."""
        if not self.enabled:
            return True
        with self._lock:
            if self.retired or key in self._fenced:
                return False
            held = self._held.get(key)
        if held is None:
            return False
        table, epoch = held
        try:
            ok = store.renew_lease(table, self.shard, self.owner, epoch)
        except Exception as exc:  # noqa: BLE001 - the database away: not confirmed (the next renewal tells)
            logger.warning("cannot confirm the lease of shard %d: %s", self.shard, exc)
            return False
        if not ok:
            self._lose(key)
        return ok

    def held(self) -> dict[str, int]:
        """``{collection key: epoch}`` of the leases held."""
        with self._lock:
            return {k: e for k, (_, e) in self._held.items()}

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="superduperdb-leases", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(max(0.2, self.ttl / 3)):
            self.renew()

    def renew(self) -> None:
        """Renew every lease; fence what was lost (and everything, once this actor is no longer published)."""
        published = self._published()
        if published is False or (published is None and time.monotonic() - self._started > self.grace):
            self.retire()
            return
        with self._lock:
            held = list(self._held.items())
        for key, (table, epoch) in held:
            try:
                ok = store.renew_lease(table, self.shard, self.owner, epoch)
            except Exception as exc:  # noqa: BLE001 - the database away: try again next time, the lease may expire
                logger.warning("cannot renew the lease of shard %d: %s", self.shard, exc)
                continue
            if not ok:
                self._lose(key)

    def _lose(self, key: str) -> None:
        with self._lock:
            self._held.pop(key, None)
            self._fenced.add(key)
        logger.warning("shard %d lost its lease of %s: fenced", self.shard, key.split("|", 1)[-1])
        self._on_lost(key)

    def retire(self) -> None:
        """Give every lease up and refuse every later call (this actor is not its shard's owner any more)."""
        with self._lock:
            if self.retired:
                return
            self.retired = True
            held = list(self._held.items())
            self._held.clear()
        self._stop.set()
        for key, (table, epoch) in held:
            try:
                store.release_lease(table, self.shard, self.owner, epoch)
            except Exception:  # noqa: BLE001 - it expires anyway
                pass
            self._on_lost(key)
        logger.warning("shard actor %s (shard %d) retired: it is no longer the published owner", self.owner,
                       self.shard)

    def close(self) -> None:
        self._stop.set()
