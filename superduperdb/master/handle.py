"""Finding, creating and recovering the master's shard actors from any client of a cluster.

The master is ``master.shards`` actors (default 1), shard ``i`` of each
semantic index living in actor ``i`` (:mod:`.fanout` routes and fans calls
out; docs/scaling.md). Each actor is published on the scheduler with its
generation number (shard 0 as the dataset ``superduperdb-master``, shard ``i``
as ``superduperdb-master-shard-<i>``), so every client (and every job on a
worker) finds the same ones. Where each runs is :mod:`.placement`'s business
(pinned, spread over the master workers, never on a worker seen dead).

If a shard's worker dies, the next call replaces it: under a cluster-wide
``distributed.Lock`` per shard, a handle whose actor was lost creates the next
generation only if that actor is still the published one; otherwise another
client already replaced it, and the handle switches to that one. A dead
worker is noticed at once (:mod:`.liveness`): every wait on an actor probes its
worker, so neither Dask's heartbeat timeout nor its connect timeout (30 s)
stands between a kill and the replacement. A new actor loads each index from
its shard's latest snapshot and catches up over its partitions from the
snapshot's write position (:mod:`.loading`), or from the documents; while it
loads, a call is retried within its timeout, then raises
:class:`~superduperdb.errors.IndexLoadingError`. Ownership is fenced in
MongoDB, not on the scheduler (:mod:`.fencing`): the new actor takes its
shard's lease with the next epoch, and an actor that lost it (presumed dead,
or no longer published after a scheduler restart) refuses to answer. So with
any number of clients there is one live owner per shard, and every client
ends up using it. Inline clients (``cluster=None``) use actors in their own process.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import (
    IndexLoadingError,
    MasterUnavailableError,
    ShardFencedError,
    ShardUnavailableError,
    SuperDuperError,
)
from . import fanout, placement
from .fencing import DATASET, FUTURE, GENERATION, names  # noqa: F401 - re-exported (tests, the CLI)
from .liveness import MasterLost, refuses_connections, wait_result
from .placement import LOADING_RETRY

if TYPE_CHECKING:
    from ..config import Config
    from ..store.context import Target

logger = logging.getLogger(__name__)

_LOCAL: dict[str, Any] = {}
_LOCAL_LOCK = threading.Lock()
POLL = placement.POLL


def _local_master(warm_up: bool, sweep: Any, shard: int = 0, shards: int = 1, ttl: float = 15.0) -> Any:
    from .actor import Master

    with _LOCAL_LOCK:
        name = "master" if shard == 0 and shards == 1 else f"master-{shard}-of-{shards}"
        if name not in _LOCAL:
            _LOCAL[name] = Master(warm_up=warm_up, sweep=sweep if shard == 0 else None, shard=shard, shards=shards,
                                  lease_ttl=ttl)
        return _LOCAL[name]


def _key(actor: Any) -> str | None:
    """The Dask key of an actor proxy (what names a lost one)."""
    return None if actor is None else actor.key


def _is_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the actor (or its worker) is gone, not that the call failed."""
    from distributed.comm.core import CommClosedError

    if isinstance(exc, SuperDuperError) and not isinstance(exc, ShardFencedError):
        return False  # an answer of the actor (IndexLoadingError ...): it is there
    text = str(exc)
    return isinstance(exc, (CommClosedError, OSError, ShardFencedError, MasterLost)) \
        or "Actor" in text and ("lost" in text or "not" in text) or "Worker holding Actor" in text


class _Shard:
    """What a handle knows of one shard's actor."""

    def __init__(self) -> None:
        self.actor: Any = None
        self.generation: int | None = None
        self.lock = threading.Lock()


class MasterHandle:
    """Client-side access to the master (its shard actors) of a cluster.

    Parameters
    ----------
    dask_client : distributed.Client or None
        None: use in-process actors (inline jobs).
    resource : str
        Worker resource that marks the workers shards may run on.
    timeout : float
        Seconds to wait for a worker, for an actor's creation and for each call.
    warm_up : bool
        Whether a new actor compiles pynndescent's JIT (once it loads an index).
    sweep : callable, optional
        The reconcile pass shard 0 runs periodically for the collections
        it is told to :meth:`watch` (:func:`superduperdb.tasks.reconcile.sweep`).
    shards : int
        How many shard actors (``master.shards``).
    shard_wait : float
        Seconds a call waits for a lost shard to come back (``master.shard_wait``).
    lease_ttl : float
        Seconds a shard's lease stays valid without renewal (``master.lease_ttl``).
    """

    def __init__(self, dask_client: Any, *, resource: str = "MASTER", timeout: float = 60.0, warm_up: bool = True,
                 sweep: Any = None, shards: int = 1, shard_wait: float = 60.0, lease_ttl: float = 15.0) -> None:
        self.dask_client = dask_client
        self.resource = resource
        self.timeout = timeout
        self.warm_up = warm_up
        self.sweep = sweep
        self.shards = int(shards)
        self.shard_wait = float(shard_wait)
        self.lease_ttl = float(lease_ttl)
        self._shards = [_Shard() for _ in range(self.shards)]
        self._watched: dict[str, Target] = {}
        self._epochs: dict[tuple[str, int], int] = {}  # highest epoch seen per (collection, shard)
        self._layouts = fanout.Layouts(self.shards)
        self._recovering: set[int] = set()
        self._used: dict[str, tuple[Target, dict]] = {}  # the indexes this handle searched: warmed before a move
        self._balanced_at = time.monotonic()
        self._dead: set[str] = set()  # addresses of shards' workers this handle saw die

    @classmethod
    def from_config(cls, dask_client: Any, config: Config, sweep: Any = None) -> MasterHandle:
        """A handle with the config's master options (``master.*``, ``cluster.timeout``)."""
        m = config.master
        return cls(dask_client, resource=m.resource, timeout=config.cluster.timeout, warm_up=m.warm_up, sweep=sweep,
                   shards=m.shards, shard_wait=m.shard_wait, lease_ttl=m.lease_ttl)

    # -- finding and creating ---------------------------------------------------------
    def _published(self, shard: int) -> tuple[Any, int, str | None]:
        """The published actor of ``shard``, its generation and key (KeyError: none yet)."""
        n = names(shard)
        # The proxy binds to the current client when it is unpickled: make that ours
        # (clients made with set_as_default=False are not found otherwise).
        with self.dask_client.as_current():
            actor = self.dask_client.get_dataset(n.dataset)
            future = self.dask_client.get_dataset(n.future, default=None)
        return actor, int(self.dask_client.get_dataset(n.generation, default=1)), getattr(future, "key", None)

    def _find_or_create(self, shard: int, lost: str | None = None) -> tuple[Any, int]:
        """The published actor of ``shard`` unless it is the one with key ``lost`` or its worker is dead; else a
        new one, created atomically. (Keys, not generation numbers, name the lost one: a restarted scheduler
        counts from 1 again.)"""
        import distributed

        client = self.dask_client
        try:
            actor, generation, _ = self._published(shard)
            if actor.key != lost and self.worker_alive(actor._address):
                return actor, generation
        except KeyError:
            pass
        n = names(shard)
        lock = distributed.Lock(n.dataset, scheduler_rpc=client.scheduler, loop=client.loop)
        if not lock.acquire(timeout=self.timeout):
            raise MasterUnavailableError(f"Timed out after {self.timeout:g} s waiting for another client to create "
                                         f"shard {shard} of the master. Check that the cluster's workers are running.")
        try:
            replaces = None
            try:
                actor, generation, replaces = self._published(shard)
                if actor.key != lost and self.worker_alive(actor._address):
                    return actor, generation  # another client replaced it first: use that one
                if actor.key != lost and actor._address in client.nthreads() \
                        and not refuses_connections(actor._address):  # replaced while alive (a stale owner)
                    with contextlib.suppress(Exception):
                        actor.retire().result(timeout=min(self.timeout, 5.0))
                elif actor._address not in self._dead and refuses_connections(actor._address):
                    self._dead.add(actor._address)
            except KeyError:
                generation = 0
            actor, future, _ = placement.create(self, shard, generation + 1, replaces)
            # The proxy is what other clients use; the future keeps the actor alive.
            placement.publish(self, shard, actor, future, generation + 1)
            return actor, generation + 1
        finally:
            lock.release()

    def _alive(self, actor: Any) -> bool:
        """Whether the actor's worker is still in the cluster (a scheduler lookup: the port probe runs while a
        call waits). A published actor whose worker is gone is lost too: a call to it would wait for the
        connect timeout (30 s) before failing."""
        return actor._address not in self._dead and actor._address in self.dask_client.nthreads()

    def worker_alive(self, address: str) -> bool:
        """Whether ``address`` is a live worker: not seen dead, listed by the scheduler, its port taking connections."""
        alive = address not in self._dead and address in self.dask_client.nthreads() \
            and not refuses_connections(address)
        if not alive and address in self.dask_client.nthreads():
            self._dead.add(address)  # listed, but its process is gone: never a place for a shard again
        return alive

    def _switch(self, shard: int, lost: str | None = None) -> Any:
        """Take the current actor of ``shard`` (replacing the one with key ``lost``); shard 0 is told what to sweep."""
        state = self._shards[shard]
        with state.lock:
            if lost is not None and state.actor is not None and state.actor.key != lost:
                return state.actor  # another thread of this client replaced it already
            if lost is not None and state.actor is not None:
                self.worker_alive(state.actor._address)  # a dead one is never the place of the next actor
            state.actor = None
            actor, generation = self._find_or_create(shard, lost)
            if shard == 0:
                deadline = time.monotonic() + self.timeout
                for target in self._watched.values():
                    wait_result(actor.watch(target), deadline, lambda: self.worker_alive(actor._address))
            state.actor, state.generation = actor, generation
            return actor

    def shard_actor(self, shard: int) -> Any:
        """The actor (or in-process object, inline) of ``shard``."""
        if self.dask_client is None:
            return _local_master(self.warm_up, self.sweep, shard, self.shards, self.lease_ttl)
        state = self._shards[shard]
        return state.actor if state.actor is not None else self._switch(shard)

    @property
    def actor(self) -> Any:
        """Shard 0's actor (the master of a single-shard cluster)."""
        return self.shard_actor(0)

    @property
    def generation(self) -> int | None:
        """The generation of shard 0's actor this handle uses (None when inline)."""
        if self.dask_client is None:
            return None
        self.shard_actor(0)
        return self._shards[0].generation

    # -- calls ------------------------------------------------------------------------------
    def _call(self, method: str, *args: Any) -> Any:
        """Call ``method`` on shard 0."""
        return self.call_shard(0, method, *args)

    def submit(self, shard: int, method: str, *args: Any) -> Any:
        """Start ``method`` on ``shard`` without waiting: an object with ``result(timeout)``."""
        if self.dask_client is None:
            return fanout.Done(lambda: getattr(self.shard_actor(shard), method)(*args))
        actor = self.shard_actor(shard)
        return getattr(actor, method)(*args)

    def call_shard(self, shard: int, method: str, *args: Any, wait: float | None = None,
                   timeout: float | None = None, loading_wait: float | None = None,
                   retry_loading: bool = True) -> Any:
        """Call ``method`` on ``shard``; re-create the actor if it was lost, for up to ``wait`` seconds (default:
        once), then :class:`ShardUnavailableError`. One call is waited for up to ``timeout`` seconds (default
        ``cluster.timeout``). While the shard loads the index, the call is repeated (``retry_loading``) for up
        to ``loading_wait`` seconds (default ``timeout``), then :class:`~superduperdb.errors.IndexLoadingError`
        says how far the load got."""
        limit = self.timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + (limit if loading_wait is None else float(loading_wait))
        while True:
            try:
                if self.dask_client is None:
                    return getattr(self.shard_actor(shard), method)(*args)
                return self._call_once(shard, method, args, wait, limit)
            except IndexLoadingError:
                remaining = deadline - time.monotonic()
                if not retry_loading or remaining <= 0:
                    raise
                time.sleep(min(LOADING_RETRY, remaining))  # the load runs in the actor meanwhile

    def _call_once(self, shard: int, method: str, args: tuple, wait: float | None, limit: float) -> Any:
        state = self._shards[shard]
        if state.actor is not None and not self._alive(state.actor):
            logger.warning("the worker %s of shard %d is gone; replacing the actor", state.actor._address, shard)
            self._switch(shard, lost=_key(state.actor))
        deadline = time.monotonic() + (wait if wait is not None else 0.0)
        attempt = 0
        while True:
            attempt += 1
            actor = None
            try:
                actor = self.shard_actor(shard)
                return self.result(shard, getattr(actor, method)(*args), limit, actor)
            except Exception as exc:
                if not self._lost(shard, exc) or attempt >= 2 and time.monotonic() > deadline:
                    if self._lost(shard, exc) and wait is not None:
                        raise ShardUnavailableError(
                            f"Shard {shard} of the master did not come back within {wait:g} s (master.shard_wait) "
                            f"after it was lost ({type(exc).__name__}: {exc}). Retry later, or pass "
                            "allow_partial=True to answer from the other shards.", shards=[shard]) from exc
                    raise
                logger.warning("shard %d was lost (%s: %s); replacing it", shard, type(exc).__name__, exc)
                with contextlib.suppress(Exception):
                    self._switch(shard, lost=_key(actor))  # the one that failed: another may have replaced it
                if attempt > 1:
                    time.sleep(POLL)

    def result(self, shard: int, future: Any, timeout: float | None = None, actor: Any = None) -> Any:
        """A call's answer from ``shard`` (waited for up to ``timeout``, default ``cluster.timeout``), probing its
        worker meanwhile: a dead one raises ``MasterLost`` in about a second (see :mod:`.liveness`)."""
        if self.dask_client is None or isinstance(future, fanout.Done):
            return future.result()
        actor = actor if actor is not None else self._shards[shard].actor
        address = getattr(actor, "_address", None)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        return wait_result(future, deadline, lambda: address is None or self.worker_alive(address),
                           f"the worker {address} of shard {shard}")

    def _lost(self, shard: int, exc: BaseException) -> bool:
        """Whether a failed call means the actor is gone (not merely slow: a timeout while its worker is
        still there, e.g. a big index loading, is not a loss; nor is any answer of the actor)."""
        if isinstance(exc, MasterLost):
            return True
        if isinstance(exc, SuperDuperError) and not isinstance(exc, ShardFencedError):
            return False
        if isinstance(exc, TimeoutError):
            actor = self._shards[shard].actor
            return actor is None or not self.worker_alive(actor._address)
        return _is_lost(exc)

    # -- placement as workers join ------------------------------------------------------------
    def balance(self, force: bool = False) -> int | None:
        """Move one shard that shares a worker onto a master worker that holds none; the shard moved (or None).

        Called by queries at most every :data:`.placement.BALANCE_EVERY` seconds (in a background thread), so
        shards spread out as master workers join. The new actor loads the indexes this handle used
        (snapshot + catch-up) before it is published; the old one then retires.
        """
        return placement.balance(self, force)

    def used(self, target: Target, row: dict) -> None:
        """Note that index ``row`` of ``target`` was searched (a moved shard loads it first)."""
        self._used[f"{target.key}|{row['name']}"] = (target, row)

    def recover(self, shard: int, target: Target | None = None, row: dict | None = None) -> None:
        """Replace a lost shard in a background thread (and load ``row`` there), once at a time."""
        if shard in self._recovering or self.dask_client is None:
            return
        self._recovering.add(shard)

        def run() -> None:
            try:
                state = self._shards[shard]
                if state.actor is None or not self._alive(state.actor):
                    self._switch(shard, lost=_key(state.actor))
                if target is not None and row is not None:
                    self.call_shard(shard, "ensure", target, row, self._layouts.get(target, shard),
                                    wait=self.shard_wait)
            except Exception as exc:  # noqa: BLE001 - the next query tries again
                logger.warning("recovering shard %d failed: %s: %s", shard, type(exc).__name__, exc)
            finally:
                self._recovering.discard(shard)

        threading.Thread(target=run, name=f"superduperdb-recover-shard-{shard}", daemon=True).start()

    def seen_epoch(self, target: Target, shard: int, epoch: int) -> bool:
        """Record an answer's ``epoch``; False if it is older than one seen before (a stale owner's)."""
        key = (target.key, shard)
        known = self._epochs.get(key, 0)
        if epoch < known:
            return False
        self._epochs[key] = epoch
        return True

    # -- the master's methods ------------------------------------------------------------------
    def ping(self) -> float:
        """When shard 0 started (seconds since the epoch)."""
        return self._call("ping")

    def info(self) -> dict:
        """Shard 0's ``started_at``, ``generation``, ``shard``, ``shards``, ``worker``, ``leases``."""
        return self._call("info")

    def watch(self, target: Target) -> None:
        """Have shard 0's reconciler sweep this collection (every ``reconcile.interval`` seconds)."""
        key = target.key
        if self.dask_client is not None and self._shards[0].actor is None:
            self._switch(0)  # a switch to a new actor re-sends what was watched before
        if key not in self._watched:
            self._watched[key] = target
            self._call("watch", target)

    def reconciler(self) -> dict:
        """The reconciler's watched collections and last passes."""
        return self._call("reconciler")

    def sync(self, target: Target, row: dict, ids: list, fingerprints: list, within: list | None = None,
             partitions: list | None = None) -> dict:
        """Make index ``row`` hold exactly ``ids`` with these fingerprints, each shard its own (``Master.sync``;
        ``within``/``partitions``: the documents or partitions the caller looked at, the only ones removed from)."""
        return fanout.sync(self, target, row, list(ids), list(fingerprints), None if within is None else list(within),
                           None if partitions is None else sorted(partitions))

    def ensure(self, target: Target, row: dict, wait: float | None = None) -> dict:
        """Load index ``row`` of ``target`` on every shard unless loaded, waiting up to ``wait`` seconds (default
        ``cluster.timeout``, then :class:`~superduperdb.errors.IndexLoadingError`); return its stats."""
        return fanout.combine(fanout.every(self, target, "ensure", row, loading_wait=wait))

    def reload(self, target: Target, row: dict, wait: float | None = None) -> dict:
        """Drop index ``row`` and load it again from MongoDB on every shard (waiting as :meth:`ensure`); its stats."""
        return fanout.combine(fanout.reload(self, target, row, wait))

    def verify(self, target: Target, row: dict, limit: int | None = None) -> dict:
        """Check index ``row``'s vectors against their checksums on every shard (``limit``: that many per shard,
        in turn) and repair those that rotted (``Master.verify``); the counts summed."""
        return fanout.combine(fanout.every(self, target, "verify", row, limit))

    def refresh(self, target: Target, row: dict, ids: list, wait: float | None = None) -> dict:
        """Re-read the outputs of ``ids`` on the shards that own them: upsert those present, remove the others
        (a shard still loading the index is waited for up to ``wait`` seconds, default ``cluster.timeout``)."""
        return fanout.refresh(self, target, row, list(ids), wait)

    def search(self, target: Target, row: dict, vector: Any, n: int, candidates: list | None = None,
               allow_partial: bool = False, explain: dict | None = None,
               filter: dict | None = None) -> tuple[list, list]:
        """The ``n`` nearest ids (among ``candidates`` if given) and their scores, best first."""
        return self.search_many(target, row, [vector], n, candidates, allow_partial, explain, filter)[0]

    def search_many(self, target: Target, row: dict, vectors: list, n: int, candidates: list | None = None,
                    allow_partial: bool = False, explain: dict | None = None,
                    filter: dict | None = None) -> list[tuple[list, list]]:
        """:meth:`search` for each of ``vectors``: one call to each shard, concurrently, merged here.

        ``explain`` (a dict) is filled with ``shards`` (per shard: ``shard``, ``worker``, ``epoch``,
        ``size``, ``plan``, ``candidates``, ``ms``, ``as_of``) and ``partial``. ``allow_partial``: a shard
        that is lost or still loading is left out at once (``partial: True``, its entry ``missing`` or
        ``loading``) instead of waited for (``master.shard_wait``, ``cluster.timeout``). ``filter``: a filter on
        the index's filter fields, answered by the shards instead of ``candidates``.
        """
        return fanout.search(self, target, row, list(vectors), n, candidates, allow_partial, explain, filter)

    def vector_of(self, target: Target, row: dict, id: Any) -> Any:
        """The indexed vector of document ``id`` (None if it has none), from its shard."""
        return self.vectors_of(target, row, [id])[0]

    def vectors_of(self, target: Target, row: dict, ids: list) -> list:
        """The indexed vector of each of ``ids`` (None where it has none), from their shards."""
        return fanout.vectors_of(self, target, row, list(ids))

    def snapshot(self, target: Target, row: dict) -> dict:
        """Save a snapshot of index ``row`` on every shard that includes every write made before this call; what
        was written. Takes ``master.position_lag`` seconds at least: the writes still in flight when it is
        called must have landed (see :mod:`superduperdb.store.positions`)."""
        return fanout.combine(fanout.snapshot(self, target, row))

    def neighbours(self, target: Target, row: dict, ids: list | None, n: int) -> dict:
        """``{id: [the n nearest other ids]}`` for ``ids`` (None: every indexed id), over every shard."""
        return fanout.neighbours(self, target, row, None if ids is None else list(ids), int(n))

    def drop(self, target: Target, row: dict, forget: bool = False) -> bool:
        """Forget index ``row`` on every shard (it loads again on next use); ``forget``: its snapshots too."""
        return any(fanout.every(self, target, "drop", row, forget, layout=False))

    def rebuild(self, target: Target, row: dict, wait: bool = True, timeout: float = 600.0) -> dict:
        """Compact and build the index's graphs now on every shard (``wait``: until swapped in); its stats."""
        return fanout.combine(fanout.every(self, target, "rebuild", row, wait, timeout,
                                           timeout=timeout + self.timeout if wait else None))

    def stats(self) -> list[dict]:
        """Stats of every loaded index on every shard (one dict per index and shard)."""
        return [s for i in range(self.shards) for s in self.call_shard(i, "stats")]

    def report(self) -> dict:
        """Shard 0's report: jobs and lag of the watched collections, its indexes, queries (see ``.monitor``;
        every shard's worker sends its own with its heartbeats)."""
        return self._call("report")

    def describe(self) -> dict:
        """Shard 0 as published, never created here (``superduperdb info``).

        ``{'state': 'running', 'worker', 'generation', 'started_at', 'indexes', 'reconciler'}``,
        or a ``state`` saying it is not started, lost (re-created on next use) or unknown.
        """
        if self.dask_client is None:
            return {"state": "inline (in the client's process)"}
        try:
            actor, generation, _ = self._published(0)
        except KeyError:
            return {"state": "not started (created when a semantic index is first used)"}
        except Exception as exc:
            return {"state": f"unknown ({type(exc).__name__}: {exc})"}
        master: dict = {"worker": getattr(actor, "_address", None)}
        try:
            with self.dask_client.as_current():
                started = actor.ping().result(timeout=self.timeout)
                stats = actor.stats().result(timeout=self.timeout)
                reconciler = actor.reconciler().result(timeout=self.timeout)
        except Exception as exc:
            master["state"] = f"lost ({type(exc).__name__}: {exc}); re-created on the next search or index job"
            return master
        return {**master, "state": "running", "generation": generation, "started_at": float(started),
                "indexes": [dict(s) for s in stats], "reconciler": dict(reconciler)}

    def worker(self) -> str | None:
        """Address of the worker holding shard 0 (None when inline)."""
        if self.dask_client is None:
            return None
        return self.shard_actor(0)._address

    def workers(self) -> list[str | None]:
        """Address of the worker of each shard (None when inline)."""
        if self.dask_client is None:
            return [None] * self.shards
        return [self.shard_actor(i)._address for i in range(self.shards)]


@contextlib.contextmanager
def master_for_job(config: Config, sweep: Any = None) -> Iterator[MasterHandle]:
    """The master, seen from a job: the cluster's actors, or the in-process ones when inline.

    On a worker the job secedes from the worker's thread pool while it talks
    to the master (``worker_client``), so that creating an actor on this
    very worker cannot deadlock on the job's own thread.
    """
    try:
        from distributed import get_worker, worker_client

        get_worker()
    except (ImportError, ValueError):
        yield MasterHandle.from_config(None, config, sweep)
        return
    with worker_client() as dask_client:
        yield MasterHandle.from_config(dask_client, config, sweep)
