"""Finding, creating and recovering the master's shard actors from any client of a cluster.

The master is ``master.shards`` actors (default 1), shard ``i`` of each
semantic index living in actor ``i`` (:mod:`.fanout` routes and fans calls
out; docs/scaling.md). Each actor is published on the scheduler with its
generation number (shard 0 as the dataset ``superduperdb-master``, shard ``i``
as ``superduperdb-master-shard-<i>``), so every client (and every job on a
worker) finds the same ones. Each is pinned to one worker with
``workers=[address]`` (``resources=`` does not keep actors apart): the workers
that offer the ``MASTER`` resource (``dask worker --resources MASTER=1``, else
every worker), the one holding the fewest other shards first, so shards spread
over distinct workers. Until a worker has joined, creating one waits for it up
to ``cluster.timeout``.

If a shard's worker dies, the next call replaces it: under a cluster-wide
``distributed.Lock`` per shard, a handle whose generation ``g`` was lost creates
generation ``g + 1`` only if ``g`` is still the published one; otherwise
another client already replaced it, and the handle switches to that one. A
published actor whose worker has left the cluster counts as lost as soon as it
is found (a call to the dead worker would wait for Dask's connect timeout, 30 s).
A new actor loads each index from its shard's latest snapshot and catches up
with the writes since (:mod:`.snapshots`), or from the documents. Ownership is
fenced in MongoDB, not on the scheduler (:mod:`.fencing`): the new actor takes
its shard's lease with the next epoch, and an actor that lost it (presumed
dead, or no longer published after a scheduler restart) refuses to answer. So
with any number of clients there is one live owner per shard, and every client
ends up using it. Inline clients (``cluster=None``) use actors in their own process.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import MasterUnavailableError, ShardFencedError, ShardUnavailableError
from . import fanout
from .fencing import DATASET, FUTURE, GENERATION, names  # noqa: F401 - re-exported (tests, the CLI)

if TYPE_CHECKING:
    from ..config import Config
    from ..store.context import Target

logger = logging.getLogger(__name__)

_LOCAL: dict[str, Any] = {}
_LOCAL_LOCK = threading.Lock()
POLL = 0.2  # seconds between looks for a worker to place a shard on
BALANCE_EVERY = 30.0  # seconds between two looks, by a querying handle, at whether shards should spread out


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

    text = str(exc)
    return isinstance(exc, (CommClosedError, OSError, ShardFencedError)) \
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

    @classmethod
    def from_config(cls, dask_client: Any, config: Config, sweep: Any = None) -> MasterHandle:
        """A handle with the config's master options (``master.*``, ``cluster.timeout``)."""
        m = config.master
        return cls(dask_client, resource=m.resource, timeout=config.cluster.timeout, warm_up=m.warm_up, sweep=sweep,
                   shards=m.shards, shard_wait=m.shard_wait, lease_ttl=m.lease_ttl)

    # -- finding and creating ---------------------------------------------------------
    def _pick_worker(self, shard: int) -> str:
        """A worker for ``shard``: offering the resource, holding the fewest other shards (waits for one)."""
        deadline = time.monotonic() + self.timeout
        while True:
            workers = self.dask_client.scheduler_info(n_workers=-1)["workers"]
            if workers:
                break
            if time.monotonic() > deadline:
                raise MasterUnavailableError(
                    f"The cluster has had no workers to run the master on for {self.timeout:g} s (cluster.timeout): "
                    "none has connected yet, or they are restarting. Check that the workers are running and can "
                    "reach the scheduler (`superduperdb info` lists them), then retry the call.",
                    reason="no workers")
            time.sleep(POLL)
        marked = sorted(a for a, w in workers.items() if (w.get("resources") or {}).get(self.resource))
        candidates = marked or sorted(workers)
        held: dict[str, int] = {}
        for i, state in enumerate(self._shards):
            if i != shard and state.actor is not None:
                held[state.actor._address] = held.get(state.actor._address, 0) + 1
        return min(candidates, key=lambda a: (held.get(a, 0), candidates.index(a)))

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
        """The published actor of ``shard`` unless it is the one with key ``lost``; else a new one, created
        atomically. (Keys, not generation numbers, name the lost one: a restarted scheduler counts from 1 again.)"""
        import distributed

        client = self.dask_client
        try:
            actor, generation, _ = self._published(shard)
            if actor.key != lost and self._alive(actor):
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
                if actor.key != lost and self._alive(actor):
                    return actor, generation  # another client replaced it first: use that one
                if self._alive(actor):  # replaced while alive (a stale owner): it stops answering
                    with contextlib.suppress(Exception):
                        actor.retire().result(timeout=self.timeout)
            except KeyError:
                generation = 0
            from .actor import Master

            generation += 1
            worker = self._pick_worker(shard)
            key = f"superduperdb-master-{shard}-{uuid.uuid4().hex}"
            future = client.submit(Master, self.warm_up, self.sweep if shard == 0 else None, generation, shard,
                                   self.shards, key, replaces, self.lease_ttl, actor=True, workers=[worker],
                                   allow_other_workers=False, key=key, pure=False)
            with client.as_current():
                actor = future.result(timeout=self.timeout)
            for name in (n.dataset, n.future, n.generation):
                with contextlib.suppress(KeyError):
                    client.unpublish_dataset(name)
            # The proxy is what other clients use; the future keeps the actor alive.
            client.publish_dataset(**{n.dataset: actor, n.future: future, n.generation: generation})
            logger.info("started shard %d of the master (generation %d) on %s", shard, generation, worker)
            return actor, generation
        finally:
            lock.release()

    def _alive(self, actor: Any) -> bool:
        """Whether the actor's worker is still in the cluster. A published actor whose worker
        is gone is lost too: a call to it would wait for the connect timeout (30 s) before failing."""
        return actor._address in self.dask_client.nthreads()

    def _switch(self, shard: int, lost: str | None = None) -> Any:
        """Take the current actor of ``shard`` (replacing the one with key ``lost``); shard 0 is told what to sweep."""
        state = self._shards[shard]
        with state.lock:
            if lost is not None and state.actor is not None and state.actor.key != lost:
                return state.actor  # another thread of this client replaced it already
            state.actor = None
            actor, generation = self._find_or_create(shard, lost)
            if shard == 0:
                for target in self._watched.values():
                    actor.watch(target).result(timeout=self.timeout)
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

    def call_shard(self, shard: int, method: str, *args: Any, wait: float | None = None) -> Any:
        """Call ``method`` on ``shard``; re-create the actor if it was lost, for up to ``wait`` seconds
        (default: once), then :class:`ShardUnavailableError`."""
        if self.dask_client is None:
            return getattr(self.shard_actor(shard), method)(*args)
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
                return getattr(actor, method)(*args).result(timeout=self.timeout)
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

    def _lost(self, shard: int, exc: BaseException) -> bool:
        """Whether a failed call means the actor is gone (not merely slow: a timeout
        while its worker is still there, e.g. a big index loading, is not a loss)."""
        if isinstance(exc, TimeoutError):
            actor = self._shards[shard].actor
            return actor is None or not self._alive(actor)
        return _is_lost(exc)

    # -- placement as workers join ------------------------------------------------------------
    def balance(self, force: bool = False) -> int | None:
        """Move one shard that shares a worker onto a master worker that holds none; the shard moved (or None).

        Called by queries at most every :data:`BALANCE_EVERY` seconds (in a background thread), so
        shards spread out as master workers join. The new actor loads the indexes this handle used
        (snapshot + catch-up) before it is published; the old one then retires.
        """
        if self.dask_client is None or self.shards == 1:
            return None
        now = time.monotonic()
        if not force and (now - self._balanced_at < BALANCE_EVERY or self._recovering):
            return None
        self._balanced_at = now
        workers = self.dask_client.scheduler_info(n_workers=-1)["workers"]
        marked = sorted(a for a, w in workers.items() if (w.get("resources") or {}).get(self.resource))
        where = {i: st.actor._address for i, st in enumerate(self._shards) if st.actor is not None}
        if len(where) < self.shards or not marked:
            return None
        crowded = [i for i in sorted(where, reverse=True) if list(where.values()).count(where[i]) > 1]
        free = [a for a in marked if a not in where.values()]
        if not crowded or not free:
            return None
        shard = crowded[0]
        self._move(shard, free[0])
        return shard

    def _move(self, shard: int, worker: str) -> None:
        import distributed

        n, state = names(shard), self._shards[shard]
        lock = distributed.Lock(n.dataset, scheduler_rpc=self.dask_client.scheduler, loop=self.dask_client.loop)
        if not lock.acquire(timeout=self.timeout):
            return
        actor = None
        try:
            old, generation, old_key = self._published(shard)
            if state.actor is None or old.key != state.actor.key:
                return  # another client moved or replaced it
            from .actor import Master

            key = f"superduperdb-master-{shard}-{uuid.uuid4().hex}"
            future = self.dask_client.submit(Master, self.warm_up, self.sweep if shard == 0 else None,
                                             generation + 1, shard, self.shards, key, old_key, self.lease_ttl,
                                             actor=True, workers=[worker], allow_other_workers=False, key=key,
                                             pure=False)
            with self.dask_client.as_current():
                actor = future.result(timeout=self.timeout)
            for target, row in list(self._used.values()):  # loaded before any query reaches it
                actor.ensure(target, row, self._layouts.get(target, shard)).result(timeout=self.timeout)
            for name in (n.dataset, n.future, n.generation):
                with contextlib.suppress(KeyError):
                    self.dask_client.unpublish_dataset(name)
            self.dask_client.publish_dataset(**{n.dataset: actor, n.future: future, n.generation: generation + 1})
            state.actor, state.generation = actor, generation + 1
            with contextlib.suppress(Exception):
                old.retire().result(timeout=self.timeout)
            logger.info("moved shard %d from %s to %s, a master worker that held none", shard, old._address, worker)
        except Exception as exc:  # noqa: BLE001 - the shard stays where it is; tried again later
            logger.warning("moving shard %d to %s failed: %s: %s", shard, worker, type(exc).__name__, exc)
            if actor is not None and state.actor is not actor:  # never published: it gives its leases back
                with contextlib.suppress(Exception):
                    actor.retire().result(timeout=self.timeout)
        finally:
            lock.release()

    def used(self, target: Target, row: dict) -> None:
        """Note that index ``row`` of ``target`` was searched (a moved shard loads it first)."""
        self._used[f"{target.uri}|{target.database}|{target.collection}|{row['name']}"] = (target, row)

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
        key = (f"{target.uri}|{target.database}|{target.collection}", shard)
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
        key = f"{target.uri}|{target.database}|{target.collection}"
        if self.dask_client is not None and self._shards[0].actor is None:
            self._switch(0)  # a switch to a new actor re-sends what was watched before
        if key not in self._watched:
            self._watched[key] = target
            self._call("watch", target)

    def reconciler(self) -> dict:
        """The reconciler's watched collections and last passes."""
        return self._call("reconciler")

    def sync(self, target: Target, row: dict, ids: list, fingerprints: list, within: list | None = None) -> dict:
        """Make index ``row`` hold exactly ``ids`` with these fingerprints, each shard its own (``Master.sync``)."""
        return fanout.sync(self, target, row, list(ids), list(fingerprints), None if within is None else list(within))

    def ensure(self, target: Target, row: dict) -> dict:
        """Load index ``row`` of ``target`` on every shard unless loaded; return its stats."""
        return fanout.combine(fanout.every(self, target, "ensure", row))

    def reload(self, target: Target, row: dict) -> dict:
        """Drop index ``row`` and load it again from MongoDB on every shard; return its stats."""
        return fanout.combine(fanout.every(self, target, "reload", row))

    def refresh(self, target: Target, row: dict, ids: list) -> dict:
        """Re-read the outputs of ``ids`` on the shards that own them: upsert those present, remove the others."""
        return fanout.refresh(self, target, row, list(ids))

    def search(self, target: Target, row: dict, vector: Any, n: int, candidates: list | None = None,
               allow_partial: bool = False, explain: dict | None = None) -> tuple[list, list]:
        """The ``n`` nearest ids (among ``candidates`` if given) and their scores, best first."""
        return self.search_many(target, row, [vector], n, candidates, allow_partial, explain)[0]

    def search_many(self, target: Target, row: dict, vectors: list, n: int, candidates: list | None = None,
                    allow_partial: bool = False, explain: dict | None = None) -> list[tuple[list, list]]:
        """:meth:`search` for each of ``vectors``: one call to each shard, concurrently, merged here.

        ``explain`` (a dict) is filled with ``shards`` (per shard: ``shard``, ``worker``, ``epoch``,
        ``size``, ``plan``, ``candidates``, ``ms``) and ``partial``. ``allow_partial``: a shard that
        is lost is left out at once (``partial: True``) instead of waited for (``master.shard_wait``).
        """
        return fanout.search(self, target, row, list(vectors), n, candidates, allow_partial, explain)

    def vector_of(self, target: Target, row: dict, id: Any) -> Any:
        """The indexed vector of document ``id`` (None if it has none), from its shard."""
        return self.vectors_of(target, row, [id])[0]

    def vectors_of(self, target: Target, row: dict, ids: list) -> list:
        """The indexed vector of each of ``ids`` (None where it has none), from their shards."""
        return fanout.vectors_of(self, target, row, list(ids))

    def snapshot(self, target: Target, row: dict) -> dict:
        """Save a snapshot of index ``row`` on every shard now; what was written."""
        return fanout.combine(fanout.every(self, target, "snapshot", row))

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
