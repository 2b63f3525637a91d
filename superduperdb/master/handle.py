"""Finding, creating and recovering the master from any client of a cluster.

One master per cluster: the actor is published on the scheduler as the
dataset ``superduperdb-master`` with its generation number, so every client
(and every job on a worker) finds the same one. It is pinned to a worker with
the ``MASTER`` resource (``dask worker --resources MASTER=1``), else to the
first worker.

If the master's worker dies, the next call replaces it: under a cluster-wide
``distributed.Lock``, a handle whose generation ``g`` was lost creates
generation ``g + 1`` only if ``g`` is still the published one; otherwise
another client already replaced it, and the handle switches to that one. A
published master whose worker has left the cluster counts as lost as soon as
it is found (a job's fresh handle would otherwise call the dead worker and
wait for Dask's connect timeout, 30 s, before replacing it). So with any
number of clients there is one master, and every client ends up using it. A
new master reloads its indexes from MongoDB on first use (the master is a
cache) and is told again which collections to sweep. A new master loads each
index from its latest snapshot and catches up with the writes since
(:mod:`.snapshots`), or from the documents when there is none.
Inline clients (``cluster=None``) use a master in their own process.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import IndexLoadingError, MasterUnavailableError, SuperDuperError

if TYPE_CHECKING:
    from ..config import Config
    from ..store.context import Target

logger = logging.getLogger(__name__)

DATASET = "superduperdb-master"
FUTURE = "superduperdb-master-future"
GENERATION = "superduperdb-master-generation"
_LOCAL: dict[str, Any] = {}
_LOCAL_LOCK = threading.Lock()
FIRST_PROBE = 0.25  # seconds a call waits before the first check that the master's worker lives
PROBE_EVERY = 1.0  # seconds between the next checks
LOADING_RETRY = 0.25  # seconds between two tries of a call while an index loads


class MasterLost(ConnectionError):
    """The master's worker died while a call waited (internal: the call is repeated on a new master)."""


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


def _local_master(warm_up: bool, sweep: Any) -> Any:
    from .actor import Master

    with _LOCAL_LOCK:
        if "master" not in _LOCAL:
            _LOCAL["master"] = Master(warm_up=warm_up, sweep=sweep)
        return _LOCAL["master"]


def _is_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the actor (or its worker) is gone, not that the call failed."""
    from distributed.comm.core import CommClosedError

    text = str(exc)
    return isinstance(exc, (CommClosedError, OSError)) or "Actor" in text and ("lost" in text or "not" in text) \
        or "Worker holding Actor" in text


class MasterHandle:
    """Client-side access to the master of a cluster.

    Parameters
    ----------
    dask_client : distributed.Client or None
        None: use an in-process master (inline jobs).
    resource : str
        Worker resource that marks the master's worker.
    timeout : float
        Seconds to wait for the master's creation and for each call.
    warm_up : bool
        Whether a new master compiles pynndescent's JIT (once it loads an index).
    sweep : callable, optional
        The reconcile pass a new master runs periodically for the collections
        it is told to :meth:`watch` (:func:`superduperdb.tasks.reconcile.sweep`).
    """

    def __init__(self, dask_client: Any, *, resource: str = "MASTER", timeout: float = 60.0, warm_up: bool = True,
                 sweep: Any = None) -> None:
        self.dask_client = dask_client
        self.resource = resource
        self.timeout = timeout
        self.warm_up = warm_up
        self.sweep = sweep
        self._actor = None
        self._generation: int | None = None
        self._watched: dict[str, Target] = {}
        self._dead: set[str] = set()  # addresses of masters' workers this handle saw die

    # -- finding and creating ---------------------------------------------------------
    def _pick_worker(self) -> str:
        """A live worker for a new master: the ``MASTER`` one, else the first; never one known dead.

        When none is live (all restarting: a killed worker's nanny starts a new one), waits for one, up to
        the handle's timeout, polling the scheduler.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            workers = self.dask_client.scheduler_info(n_workers=-1)["workers"]
            live = {a: w for a, w in workers.items() if a not in self._dead and not refuses_connections(a)}
            if live:
                marked = sorted(a for a, w in live.items() if (w.get("resources") or {}).get(self.resource))
                return (marked or sorted(live))[0]
            if time.monotonic() >= deadline:
                raise MasterUnavailableError(
                    "The cluster has no live workers to run the master on right now: none has connected yet, or "
                    "they are restarting. Check that the workers are running and can reach the scheduler "
                    "(`superduperdb info` lists them), wait until at least one has reconnected, then retry the "
                    "call.", reason="no workers")
            time.sleep(min(LOADING_RETRY, max(0.0, deadline - time.monotonic())))  # polling the scheduler

    def _published(self) -> tuple[Any, int]:
        """The published master and its generation (KeyError: none yet)."""
        # The proxy binds to the current client when it is unpickled: make that ours
        # (clients made with set_as_default=False are not found otherwise).
        with self.dask_client.as_current():
            actor = self.dask_client.get_dataset(DATASET)
        return actor, int(self.dask_client.get_dataset(GENERATION, default=1))

    def _find_or_create(self, lost: int | None = None) -> tuple[Any, int]:
        """The published master unless it is generation ``lost``; else a new one, created atomically."""
        import distributed

        client = self.dask_client
        try:
            actor, generation = self._published()
            if generation != lost and self._alive(actor):
                return actor, generation
        except KeyError:
            pass
        lock = distributed.Lock(DATASET, scheduler_rpc=client.scheduler, loop=client.loop)
        if not lock.acquire(timeout=self.timeout):
            raise MasterUnavailableError(f"Timed out after {self.timeout:g} s waiting for another client to create "
                                         "the master. Check that the cluster's workers are running.")
        try:
            try:
                actor, generation = self._published()
                if generation != lost and self._alive(actor):
                    return actor, generation  # another client replaced it first: use that one
            except KeyError:
                generation = 0
            from .actor import Master

            began = time.monotonic()
            generation += 1
            worker = self._pick_worker()
            future = client.submit(Master, self.warm_up, self.sweep, generation, actor=True, workers=[worker],
                                   allow_other_workers=False, key=f"superduperdb-master-{uuid.uuid4().hex}", pure=False)
            with client.as_current():
                actor = future.result(timeout=self.timeout)
            for name in (DATASET, FUTURE, GENERATION):
                with contextlib.suppress(KeyError):
                    client.unpublish_dataset(name)
            # The proxy is what other clients use; the future keeps the actor alive.
            client.publish_dataset(**{DATASET: actor, FUTURE: future, GENERATION: generation})
            logger.info("started the master (generation %d) on %s in %.2f s", generation, worker,
                        time.monotonic() - began)
            return actor, generation
        finally:
            lock.release()

    def _alive(self, actor: Any) -> bool:
        """Whether the actor's worker is still in the cluster. A published master whose worker
        is gone is lost too: a call to it would wait for the connect timeout (30 s) before failing."""
        return self._worker_alive(actor._address)

    def _switch(self, lost: int | None = None) -> None:
        """Take the current master (replacing generation ``lost``); tell it what to sweep."""
        if lost is not None and self._actor is not None:
            self._dead.add(self._actor._address)  # never the place of the next master, even if still listed
        self._actor = None
        actor, generation = self._find_or_create(lost)
        for target in self._watched.values():
            actor.watch(target).result(timeout=self.timeout)
        self._actor, self._generation = actor, generation

    @property
    def actor(self) -> Any:
        if self.dask_client is None:
            return _local_master(self.warm_up, self.sweep)
        if self._actor is None:
            self._switch()
        return self._actor

    @property
    def generation(self) -> int | None:
        """The generation of the master this handle uses (None when inline)."""
        if self.dask_client is None:
            return None
        if self._actor is None:
            self._switch()
        return self._generation

    @classmethod
    def from_config(cls, dask_client: Any, config: Config, sweep: Any = None) -> MasterHandle:
        """A handle with the config's master options (``master.resource``, ``master.warm_up``, ``cluster.timeout``)."""
        return cls(dask_client, resource=config.master.resource, timeout=config.cluster.timeout,
                   warm_up=config.master.warm_up, sweep=sweep)

    # -- the master's methods ------------------------------------------------------------------
    def ping(self) -> float:
        """When the master started (seconds since the epoch)."""
        return self._call("ping")

    def info(self) -> dict:
        """``started_at`` and ``generation`` of the master."""
        return self._call("info")

    def watch(self, target: Target) -> None:
        """Have the master's reconciler sweep this collection (every ``reconcile.interval`` seconds)."""
        key = f"{target.uri}|{target.database}|{target.collection}"
        if self.dask_client is not None and self._actor is None:
            self._switch()  # a switch to a new master re-sends what was watched before
        if key not in self._watched:
            self._watched[key] = target
            self._call("watch", target)

    def reconciler(self) -> dict:
        """The reconciler's watched collections and last passes."""
        return self._call("reconciler")

    def sync(self, target: Target, row: dict, ids: list, fingerprints: list, within: list | None = None,
             partitions: list | None = None) -> dict:
        """Make index ``row`` hold exactly ``ids`` with these fingerprints (see ``Master.sync``)."""
        return self._call("sync", target, row, list(ids), list(fingerprints), None if within is None else list(within),
                          None if partitions is None else list(partitions))

    def ensure(self, target: Target, row: dict, wait: float | None = None) -> dict:
        """Load index ``row`` of ``target`` unless loaded, waiting up to ``wait`` seconds (default
        ``cluster.timeout``, then :class:`IndexLoadingError`); return its stats."""
        return self._call("ensure", target, row, wait=wait)

    def reload(self, target: Target, row: dict, wait: float | None = None) -> dict:
        """Drop index ``row`` and load it again from MongoDB (waiting as :meth:`ensure`); return its stats."""
        try:
            return self._call("reload", target, row, retry_loading=False)
        except IndexLoadingError:  # the load goes on: wait for it without starting another
            return self.ensure(target, row, wait=wait)

    def refresh(self, target: Target, row: dict, ids: list) -> dict:
        """Re-read the outputs of ``ids``: upsert those present, remove the others."""
        return self._call("refresh", target, row, list(ids))

    def search(self, target: Target, row: dict, vector: Any, n: int, candidates: list | None = None) -> tuple[list, list]:
        """The ``n`` nearest ids (among ``candidates`` if given) and their scores, best first."""
        return self._call("search", target, row, vector, n, candidates)

    def search_many(self, target: Target, row: dict, vectors: list, n: int,
                    candidates: list | None = None) -> list[tuple[list, list]]:
        """:meth:`search` for each of ``vectors``, in one call to the master."""
        return self._call("search_many", target, row, vectors, n, candidates)

    def vector_of(self, target: Target, row: dict, id: Any) -> Any:
        """The indexed vector of document ``id`` (None if it has none)."""
        return self._call("vector_of", target, row, id)

    def vectors_of(self, target: Target, row: dict, ids: list) -> list:
        """The indexed vector of each of ``ids`` (None where it has none), in one call."""
        return self._call("vectors_of", target, row, list(ids))

    def snapshot(self, target: Target, row: dict) -> dict:
        """Save a snapshot of index ``row`` now (see :mod:`superduperdb.master.snapshots`); what was written."""
        return self._call("snapshot", target, row)

    def neighbours(self, target: Target, row: dict, ids: list | None, n: int) -> dict:
        """``{id: [the n nearest other ids]}`` for ``ids`` (None: every indexed id)."""
        return self._call("neighbours", target, row, None if ids is None else list(ids), int(n))

    def drop(self, target: Target, row: dict, forget: bool = False) -> bool:
        """Forget index ``row`` in memory (it loads again on next use); ``forget``: its snapshots too."""
        return self._call("drop", target, row, forget)

    def rebuild(self, target: Target, row: dict, wait: bool = True, timeout: float = 600.0) -> dict:
        """Build the index's graph now (``wait``: until it is swapped in); return its stats."""
        return self._call("rebuild", target, row, wait, timeout)

    def verify(self, target: Target, row: dict, limit: int | None = None) -> dict:
        """Check index ``row``'s vectors against their checksums; repair those that rotted (see ``Master.verify``)."""
        return self._call("verify", target, row, limit)

    def stats(self) -> list[dict]:
        """Stats of every loaded index."""
        return self._call("stats")

    # -- calls ------------------------------------------------------------------------------
    def _call(self, method: str, *args: Any, wait: float | None = None, retry_loading: bool = True) -> Any:
        """Call ``method`` on the master; re-create it once if it was lost.

        While an index loads, the master answers :class:`IndexLoadingError` at once; the call is repeated
        until ``wait`` seconds (default ``cluster.timeout``) have passed, then that error is raised.
        """
        deadline = time.monotonic() + (self.timeout if wait is None else wait)
        while True:
            try:
                return self._call_once(method, args, deadline)
            except IndexLoadingError:
                remaining = deadline - time.monotonic()
                if not retry_loading or remaining <= 0:
                    raise
                time.sleep(min(LOADING_RETRY, remaining))  # the load runs in the master meanwhile

    def _call_once(self, method: str, args: tuple, deadline: float) -> Any:
        if self.dask_client is None:
            return getattr(self.actor, method)(*args)
        if self._actor is not None and self._actor._address not in self.dask_client.nthreads():
            logger.warning("the master's worker %s is gone; replacing the master", self._actor._address)
            self._switch(lost=self._generation)
        for attempt in (1, 2):
            try:
                return self._result(getattr(self.actor, method)(*args), deadline)
            except Exception as exc:
                if attempt == 2 or not self._lost(exc):
                    raise
                logger.warning("the master was lost (%s: %s); replacing it", type(exc).__name__, exc)
                self._switch(lost=self._generation)
        raise MasterUnavailableError("unreachable")  # pragma: no cover

    def _result(self, future: Any, deadline: float) -> Any:
        """The actor call's result by ``deadline``, checking every :data:`PROBE_EVERY` seconds that the master's
        worker is still there: a dead worker is noticed in about that long, not after Dask's connect timeout."""
        step = FIRST_PROBE  # most calls take milliseconds: check early, then every PROBE_EVERY
        while True:
            step = min(step, max(0.0, deadline - time.monotonic()))
            try:
                return future.result(timeout=step)
            except TimeoutError as exc:
                if isinstance(exc, SuperDuperError):  # the call's own answer (IndexLoadingError), not our wait
                    raise
                if self._actor is not None and not self._worker_alive(self._actor._address):
                    raise MasterLost(f"the master's worker {self._actor._address} is gone") from None
                if time.monotonic() >= deadline:
                    raise
                step = PROBE_EVERY

    def _worker_alive(self, address: str) -> bool:
        """Whether ``address`` is a live worker: the scheduler lists it, and its port takes connections."""
        return address in self.dask_client.nthreads() and not refuses_connections(address)

    def _lost(self, exc: BaseException) -> bool:
        """Whether a failed call means the master is gone (not merely slow: a timeout
        while its worker is still there, e.g. a big index loading, is not a loss)."""
        if isinstance(exc, MasterLost):
            return True
        if isinstance(exc, SuperDuperError):  # an answer of the master (IndexLoadingError ...): it is there
            return False
        if isinstance(exc, TimeoutError):
            return self._actor is None or not self._worker_alive(self._actor._address)
        return _is_lost(exc)

    def worker(self) -> str | None:
        """Address of the worker holding the master (None when inline)."""
        if self.dask_client is None:
            return None
        return self.actor._address


@contextlib.contextmanager
def master_for_job(config: Config, sweep: Any = None) -> Iterator[MasterHandle]:
    """The master, seen from a job: the cluster's actor, or the in-process one when inline.

    On a worker the job secedes from the worker's thread pool while it talks
    to the master (``worker_client``), so that creating the master on this
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
