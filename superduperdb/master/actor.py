"""The :class:`Master` actor: one shard of the semantic indexes, in memory, fed from MongoDB.

Runs on one Dask worker (pinned by :mod:`.handle`), or in the client's process
when jobs run inline. It receives plain data only: a
:class:`~superduperdb.store.context.Target` (URI, database, collection,
config), the index's metadata row and the shard's ``layout`` (the partition
table's version and the partitions this shard owns, see
:mod:`superduperdb.store.shards`); it opens its own database handle.

With ``master.shards = N`` there are N of these actors, shard ``i`` holding,
per index, only the vectors of the partitions it owns
(:class:`~superduperdb.master.loaded.LoadedIndex`). Before loading any index of
a collection it takes its shard's lease there (:mod:`.fencing`); every answer
and every snapshot carries that lease's epoch, and an actor that lost its lease
drops that collection's indexes and refuses to answer
(:class:`~superduperdb.errors.ShardFencedError`).

A shard is the unit that restarts (:mod:`.loading`): it loads its own
snapshot, catches up from its position over its own partitions, checks the
digests of its own partitions, keeps its own local copy, and reports ``as_of``
and the catch-up in its stats and in every answer (``explain()``). Loads run in
a background thread: a call waits for one up to :data:`LOAD_WAIT` seconds,
then raises :class:`~superduperdb.errors.IndexLoadingError` with the load's
progress (the actor's one thread stays free; the caller retries within its
own timeout). ``refresh(ids)`` re-reads those documents' outputs: present ones
are upserted, missing ones removed, so inserts, updates and deletes all arrive
the same way. Snapshots are refreshed in a background thread
(:mod:`.saving`). Shard 0 also runs the reconciler's sweeps. Graphs are built
in a separate process (``master.build_process``), so a build never stalls queries.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from typing import Any

from ..errors import SemanticIndexError
from ..index.env import configure_numba_env
from ..store.context import Context, Target, worker_dask_client
from ..store.measures import load_measure
from ..store.positions import Positions
from ..store.shards import shards_table
from . import loading, saving, snapshots
from .fencing import Fence
from .filters import answerable
from .loaded import LoadedIndex
from .monitor import Monitor, attach_to_worker, plan_of
from .sweeper import Sweeper

logger = logging.getLogger(__name__)

LOAD_WAIT = 2.0  # seconds a call waits for an index that is loading, then IndexLoadingError (the caller retries)


def index_key(target: Target, row: dict) -> str:
    """``uri|database|collection|name|uid``: one loaded index (a re-created index has a new uid)."""
    return f"{target.key}|{row['name']}|{row['uid']}"


class Master:
    """Holds one shard of the vector indexes of every collection that uses this cluster.

    Parameters
    ----------
    warm_up : bool
        Compile pynndescent's JIT in a background thread once an index approaches
        ``master.exact_threshold`` (``master.warm_up_at`` of it), ahead of its first graph build.
    sweep : callable, optional
        ``sweep(target, dask_client) -> report``: one reconcile pass over a
        collection, run every ``reconcile.interval`` seconds for each watched
        collection (see :mod:`superduperdb.master.sweeper`). None: no sweeps.
    generation : int
        Which actor of its shard this is in the cluster's history (1, 2 ... after re-creations).
    shard, shards : int
        Which shard this actor serves, of how many (``master.shards``).
    key : str, optional
        This actor's identity (its Dask key), written into the leases it holds.
    replaces : str, optional
        The key of the lost actor this one replaces (its leases are taken at once).
    lease_ttl : float
        Seconds a lease stays valid without renewal (``master.lease_ttl``).
    """

    def __init__(self, warm_up: bool = True, sweep: Any = None, generation: int = 1, shard: int = 0,
                 shards: int = 1, key: str | None = None, replaces: str | None = None,
                 lease_ttl: float = 15.0) -> None:
        configure_numba_env()  # before anything imports numba (pynndescent is imported lazily)
        self.started_at = time.time()
        self.generation = generation
        self.shard, self.shards = int(shard), int(shards)
        self.key = key or f"superduperdb-master-local-{shard}"
        self._indexes: dict[str, LoadedIndex] = {}
        self._jobs: dict[str, loading.LoadJob] = {}
        self._lock = threading.RLock()
        self._gate = loading.Gate()
        self._warm_up = warm_up
        self._warm: threading.Thread | None = None
        dask_client = worker_dask_client()
        self._builder: Any = None
        self.worker = _worker_address()
        self._sweeper = Sweeper(sweep, dask_client) if sweep is not None else None
        self._snapshotter = snapshots.Snapshotter(
            self._due_snapshots, self._save_snapshot,
            gone=lambda: dask_client is not None and dask_client.status in ("closing", "closed"))
        self._fence = Fence(self.shard, self.key, self.worker, lease_ttl, replaces=replaces,
                            gone=lambda w: _worker_gone(dask_client, w),
                            published=lambda: _is_published(dask_client, self.shard, self.key, replaces),
                            on_lost=self._drop_collection, enabled=dask_client is not None)
        self._monitor = Monitor(self._targets, self.stats, self.reconciler, self.info, held=self._held_contexts)
        attach_to_worker(self._monitor)  # the report travels with the worker's heartbeats (see .monitor)

    def _identity(self) -> dict:
        return {"shard": self.shard, "shards": self.shards, "owner": self.key, "worker": self.worker}

    def _drop_collection(self, ckey: str) -> None:
        """Forget every index of collection ``ckey`` (its lease was lost: another actor owns the shard)."""
        with self._lock:
            for key in [k for k in self._indexes if k.startswith(ckey + "|")]:
                del self._indexes[key]
            for key in [k for k in self._jobs if k.startswith(ckey + "|")]:
                del self._jobs[key]

    # -- the JIT and the graph builds ---------------------------------------------------------
    def _ensure_builder(self, ctx: Context) -> Any:
        with self._lock:
            if ctx.config.master.build_process and self._builder is None:
                from ..index.builder import ProcessBuilder

                self._builder = ProcessBuilder()  # one per actor: its builds, one at a time, off this process
            return self._builder

    def _start_warm_up(self, ctx: Context) -> None:
        self._ensure_builder(ctx)
        with self._lock:
            if self._warm_up and self._warm is None:
                self._warm = threading.Thread(target=self._warm_up_when_idle, name="superduperdb-jit-warm-up",
                                              daemon=True)
                self._warm.start()

    def _maybe_warm_up(self, loaded: LoadedIndex) -> None:
        """Start the warm-up once ``loaded`` has grown to ``master.warm_up_at`` of the exact threshold (a graph
        is built only past it: a small index, searched exactly, never pays ~45 s of compilation)."""
        cfg = loaded.ctx.config.master
        if self._warm_up and self._warm is None and len(loaded.index) >= float(cfg.warm_up_at) * int(cfg.exact_threshold):
            self._start_warm_up(loaded.ctx)

    def _warm_up_when_idle(self) -> None:
        """Compile pynndescent's JIT, after the loads that created this actor (see loading.GRACE)."""
        from ..index.env import warm_up

        self._gate.wait_idle()
        warm_up(builder=self._builder)  # with a build process: it compiles the builds, this process the queries

    def _new_index(self, ctx: Context, row: dict) -> Any:
        from ..index import VectorIndex

        cfg = ctx.config.master
        builder = self._ensure_builder(ctx)
        return VectorIndex(measure=load_measure(ctx.metadata, ctx.artifacts, row["measure"]),  # a custom one: its callable
                           exact_threshold=cfg.exact_threshold, exact_cost=cfg.exact_cost, epsilon=cfg.epsilon,
                           builder=builder if cfg.build_process else None)

    # -- loading ----------------------------------------------------------------------------
    def _get(self, target: Target, row: dict, layout: tuple | None = None, use_snapshot: bool = True,
             wait: float = LOAD_WAIT) -> LoadedIndex:
        """Index ``row`` (this shard's part, for ``layout``), loaded in a background thread unless it is (again
        if it was loaded with another partition table), waited for at most ``wait`` seconds (then
        :class:`~superduperdb.errors.IndexLoadingError` says how far it got: the actor's thread stays free)."""
        key, ckey = index_key(target, row), target.key
        self._fence.check(ckey)
        version = layout[0] if layout is not None else None
        with self._lock:
            loaded = self._indexes.get(key)
            if loaded is not None and layout is not None and loaded.version != version:
                logger.info("partition table of %s changed (version %s -> %s): reloading index %r (shard %d)",
                            target.collection, loaded.version, version, row["name"], self.shard)
                del self._indexes[key]
                loaded = None
            if loaded is not None:
                return loaded
            job = self._jobs.get(key)
            if job is None or job.version != version:
                job = self._jobs[key] = loading.LoadJob(row["name"], self.shard)
                job.version = version
                threading.Thread(target=self._run_load, args=(key, job, target, row, layout, use_snapshot),
                                 daemon=True, name="superduperdb-index-load").start()
        return job.wait(wait)

    def _run_load(self, key: str, job: loading.LoadJob, target: Target, row: dict, layout: tuple | None,
                  use_snapshot: bool) -> None:
        def load(progress: dict) -> LoadedIndex:
            ctx = Context(target)
            progress["phase"] = "lease"
            epoch = self._fence.epoch(target.key, shards_table(ctx.db, target.collection))
            self._ensure_builder(ctx)
            loaded = loading.load(ctx, row, lambda: self._new_index(ctx, row), progress, self._gate,
                                  shard=self._identity(), layout=layout, epoch=epoch, use_snapshot=use_snapshot)
            self._maybe_warm_up(loaded)  # before the load's waiters are answered: their stats show it
            return loaded

        job.run(load)
        with self._lock:
            if self._jobs.get(key) is job:
                del self._jobs[key]
                if job.result is not None:
                    self._indexes[key] = job.result
        if job.result is not None:
            self._snapshotter.start()

    # -- snapshots --------------------------------------------------------------------------
    def _due_snapshots(self) -> list[str]:
        with self._lock:
            items = list(self._indexes.items())
        return saving.due(items)

    def _save_snapshot(self, key: str) -> dict | None:
        with self._lock:
            loaded = self._indexes.get(key)
        if loaded is None:
            return None
        if not self._fence.confirm(loaded.target.key):
            return None  # another actor owns the shard now: its snapshots, not ours
        return saving.save(loaded)

    # -- the actor's methods ------------------------------------------------------------------
    def ping(self) -> float:
        return self.started_at

    def info(self) -> dict:
        """``started_at``, ``generation``, ``shard``, ``shards``, ``key``, ``worker``, ``leases`` and ``retired``."""
        return {"started_at": self.started_at, "generation": self.generation, "shard": self.shard,
                "shards": self.shards, "key": self.key, "worker": self.worker, "leases": self._fence.held(),
                "retired": self._fence.retired}

    def retire(self) -> bool:
        """Stop serving: leases given up, indexes dropped, every later call refused (a replaced shard actor)."""
        self._fence.retire()
        with self._lock:
            self._indexes.clear()
            self._jobs.clear()
        self._snapshotter.close()
        return True

    def ensure(self, target: Target, row: dict, layout: tuple | None = None) -> dict:
        """Load the index (from its snapshot, else from MongoDB) unless loaded; return its stats."""
        return self._stats(self._get(target, row, layout))

    def refresh(self, target: Target, row: dict, ids: list, layout: tuple | None = None) -> dict:
        """Re-read ``ids`` (those this shard owns): upsert those with outputs, remove the others."""
        loaded = self._get(target, row, layout)
        changed = loaded.refresh(ids)
        self._maybe_warm_up(loaded)
        return changed

    def sync(self, target: Target, row: dict, ids: list, fingerprints: list, within: list | None = None,
             partitions: list | None = None, layout: tuple | None = None) -> dict:
        """Make the index hold exactly ``ids`` with these output fingerprints (MongoDB's present state).

        Vectors whose fingerprint differs (or is unknown) are re-read; ids the
        index holds but ``ids`` lacks are removed (only among ``within``, when
        the caller looked at those documents only, or among the ids of
        ``partitions``, when it looked at those partitions only). Only the ids
        this shard owns are looked at. Returns the counts and the ids that changed.
        """
        loaded = self._get(target, row, layout)
        changed = loaded.sync(ids, fingerprints, within, partitions)
        self._maybe_warm_up(loaded)
        return changed

    def verify(self, target: Target, row: dict, limit: int | None = None, layout: tuple | None = None) -> dict:
        """Check the index's vectors (``limit``: that many, in turn) against their checksums and repair those
        that rotted (see :meth:`LoadedIndex.verify`)."""
        return self._get(target, row, layout).verify(limit)

    def search(self, target: Target, row: dict, vector: Any, n: int, candidates: list | None = None,
               layout: tuple | None = None) -> tuple[list, list]:
        """The ``n`` nearest ids (restricted to ``candidates`` if given) and their scores."""
        loaded = self._get(target, row, layout)
        plan, start = plan_of(loaded.index, candidates), time.perf_counter()
        ids, scores = loaded.index.search(vector, n, candidates=candidates)
        self._monitor.query(target, row["name"], plan, time.perf_counter() - start)
        return ids, [float(s) for s in scores]

    def search_many(self, target: Target, row: dict, vectors: list, n: int,
                    candidates: list | None = None, layout: tuple | None = None) -> list[tuple[list, list]]:
        """:meth:`search` for each of ``vectors`` (one call for the batch); ``(ids, scores)`` each."""
        loaded = self._get(target, row, layout)
        if not len(vectors):
            return []
        plan, start = plan_of(loaded.index, candidates), time.perf_counter()
        found = loaded.index.search_batch(vectors, n, candidates=candidates)
        self._monitor.query(target, row["name"], plan, time.perf_counter() - start, len(vectors))
        return [(ids, [float(s) for s in scores]) for ids, scores in found]

    def query(self, target: Target, row: dict, vectors: list, n: int, candidates: list | None = None,
              layout: tuple | None = None, wait: float = LOAD_WAIT, filter: dict | None = None) -> dict:
        """This shard's answer to a fanned-out query: its top ``n`` of each vector, and how it got them.

        Returns ``{"results": [(ids, scores), ...], "shard", "epoch", "worker", "size", "plan",
        "candidates", "ms", "as_of", "source"}``: the fields of ``explain()``'s per-shard entry (``plan`` is
        ``'exact'`` or ``'graph'``, ``candidates`` the vectors scored, ``ms`` the time taken here, ``as_of``
        where the shard's catch-up started from and how far behind that was, ``source`` what it loaded from).
        ``wait``: seconds to wait for the index if it is loading (then ``IndexLoadingError``).
        ``filter``: a filter on the index's filter fields (:func:`~superduperdb.master.filters.answerable`),
        evaluated here over the documents this shard holds instead of ``candidates`` (``matched`` says how
        many matched, ``filter_ms`` how long that took). The planner's fields: ``retries``, ``fetch`` (the
        largest graph over-fetch) and ``selectivity`` (the matching share of this shard).
        """
        start = time.perf_counter()
        loaded = self._get(target, row, layout, wait=wait)
        filter_ms = None
        if filter is not None:
            if loaded.filter is None or not answerable(filter, loaded.filter.fields):
                raise SemanticIndexError(
                    f"Index {row['name']!r} cannot answer the filter {filter!r} from its filter fields "
                    f"{row.get('filter_fields') or []}: search with the filter's ids instead.", index=row["name"])
            candidates = loaded.filter.match(filter)
            filter_ms = (time.perf_counter() - start) * 1000
        info: dict = {"plan": "exact", "candidates": 0}
        searched = time.perf_counter()
        found = loaded.index.search_batch(vectors, n, candidates=candidates, info=info) if len(vectors) else []
        if len(vectors):  # the metrics' plan label: what the planner did (graph, whatever its retries)
            plan = ("filtered-" if candidates is not None else "") + \
                ("graph" if info["plan"].startswith("graph") else "exact")
            self._monitor.query(target, row["name"], plan, time.perf_counter() - searched, len(vectors))
        return {"results": [(ids, [float(s) for s in scores]) for ids, scores in found], "shard": self.shard,
                "epoch": loaded.epoch, "worker": self.worker, "size": len(loaded.index), "plan": info["plan"],
                "candidates": info["candidates"], "retries": info.get("retries", 0), "fetch": info.get("fetch", 0),
                "selectivity": info.get("selectivity"), "matched": None if candidates is None else len(candidates),
                "filter_ms": filter_ms, "ms": (time.perf_counter() - start) * 1000,
                "as_of": (loaded.catch_up or {}).get("as_of"), "source": loaded.source}

    def vector_of(self, target: Target, row: dict, id: Any, layout: tuple | None = None) -> Any:
        """The stored vector of document ``id`` (None if it has none)."""
        return self._get(target, row, layout).index.get(id)

    def vectors_of(self, target: Target, row: dict, ids: list, layout: tuple | None = None) -> list:
        """The stored vector of each of ``ids`` (None where it has none)."""
        index = self._get(target, row, layout).index
        return [index.get(i) for i in ids]

    def indexed_ids(self, target: Target, row: dict, layout: tuple | None = None) -> list:
        """Every id this shard holds in index ``row``."""
        return self._get(target, row, layout).index.ids()

    def snapshot(self, target: Target, row: dict, layout: tuple | None = None, after: int | None = None) -> dict:
        """Save a snapshot of the index that includes every write made before the first call (``after``: the
        collection's position then, which that call returns); what was written, or ``{"pending": True, "after"}``
        until that position is safe (``master.position_lag`` seconds after it was read: the writes in flight
        then have landed, see :mod:`superduperdb.store.positions`). The caller asks again with ``after``; the
        actor's thread never sleeps here.
        """
        loaded = self._get(target, row, layout)
        if after is None:
            now = Positions(loaded.ctx.collection).current()
            loaded.safe.observe(now)
            after = now.seq
        asked = loaded.wanted.setdefault(after, time.monotonic())
        last = loaded.last_snapshot or {}
        if last.get("position") is not None and last["position"] >= after:
            loaded.wanted.pop(after, None)
            return dict(last)
        if time.monotonic() - asked >= loaded.safe.lag:
            saved = self._save_snapshot(index_key(target, row)) or {}
            if saved.get("position") is not None and saved["position"] >= after:
                loaded.wanted.pop(after, None)
                return dict(saved)
        return {"pending": True, "after": after, "shard": self.shard,
                "retry_in": max(0.05, loaded.safe.lag - (time.monotonic() - asked))}

    def neighbours(self, target: Target, row: dict, ids: list | None, n: int, layout: tuple | None = None) -> dict:
        """``{id: [the n nearest other ids]}`` for ``ids`` (None: every indexed id), within this shard."""
        index = self._get(target, row, layout).index
        ids = index.ids() if ids is None else [i for i in ids if i in index]
        out = {}
        for _id in ids:
            found, _ = index.search(index.get(_id), n + 1)
            out[_id] = [i for i in found if i != _id][:n]
        return out

    def reload(self, target: Target, row: dict, layout: tuple | None = None) -> dict:
        """Drop the index and load it again from MongoDB (not from a snapshot); return its stats."""
        self.drop(target, row)
        return self._stats(self._get(target, row, layout, use_snapshot=False))

    def watch(self, target: Target) -> None:
        """Sweep this collection every ``reconcile.interval`` seconds of its config (see :mod:`.sweeper`)."""
        if self._sweeper is not None:
            self._sweeper.watch(target, Context(target).config.reconcile.interval)

    def reconciler(self) -> dict:
        """The sweeper's watched collections and their last passes (empty without a sweeper)."""
        return self._sweeper.stats() if self._sweeper is not None else {}

    def report(self) -> dict:
        """A fresh report on the watched collections' jobs and lag, the indexes and the queries
        (what the master's worker sends the scheduler with its heartbeats; see :mod:`.monitor`)."""
        return self._monitor.report()

    def _targets(self) -> list[Target]:
        """The collections this master knows: those its reconciler watches, those of its indexes."""
        watched = self._sweeper.targets() if self._sweeper is not None else []
        with self._lock:
            held = [loaded.target for loaded in self._indexes.values()]
        return watched + held

    def _held_contexts(self) -> dict[str, Context]:
        """``{target.key: Context}`` of the loaded indexes' collections (the monitor reads through these)."""
        with self._lock:
            return {loaded.target.key: loaded.ctx for loaded in self._indexes.values()}

    def drop(self, target: Target, row: dict, forget: bool = False) -> bool:
        """Forget the index in memory (``forget``: its snapshots too, every shard's). Whether it was loaded."""
        key = index_key(target, row)
        with self._lock:
            loaded = self._indexes.pop(key, None)
            self._jobs.pop(key, None)
        if forget:
            snapshots.delete((loaded.ctx if loaded is not None else Context(target)).artifacts, row)
        return loaded is not None

    def rebuild(self, target: Target, row: dict, wait: bool = True, timeout: float = 600.0,
                layout: tuple | None = None) -> dict:
        """Build the graph now (``wait``: until it is swapped in)."""
        loaded = self._get(target, row, layout)
        loaded.index.rebuild(wait=wait, timeout=timeout)
        return self._stats(loaded)

    def stats(self) -> list[dict]:
        with self._lock:
            return [self._stats(loaded) for loaded in self._indexes.values()]

    def _stats(self, loaded: LoadedIndex) -> dict:
        return {**loaded.stats(warm=self._warm is None or not self._warm.is_alive()), "jit": self._jit_state()}

    def _jit_state(self) -> str:
        """pynndescent's JIT in this actor: ``'not needed yet'`` (no index near the exact threshold),
        ``'compiling'`` (the warm-up runs), ``'compiled'``, or ``'off'`` (``master.warm_up: false``)."""
        if not self._warm_up:
            return "off"
        if self._warm is None:
            return "not needed yet"
        return "compiling" if self._warm.is_alive() else "compiled"


def _worker_address() -> str | None:
    """The address of the Dask worker this runs on (None: not on a worker)."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return None


def _worker_gone(dask_client: Any, worker: str | None) -> bool:
    """Whether ``worker`` (a lease holder's address) has left the cluster."""
    if dask_client is None or worker is None:
        return False
    try:
        return worker not in dask_client.scheduler_info(n_workers=-1)["workers"]
    except Exception:  # noqa: BLE001 - cannot tell: not gone
        return False


def _is_published(dask_client: Any, shard: int, key: str, replaces: str | None = None) -> bool | None:
    """Whether the actor with ``key`` is the one published for ``shard`` (None: cannot tell: none published, or
    the one it ``replaces`` still is, as while a moved shard loads before it is published)."""
    if dask_client is None:
        return True
    from .fencing import names

    try:
        future = dask_client.get_dataset(names(shard).future)
    except KeyError:
        return None
    except Exception:  # noqa: BLE001 - the scheduler away: cannot tell
        return True
    if inspect.isawaitable(future):  # a client switched to asynchronous use (its worker closing): cannot tell
        getattr(future, "close", lambda: None)()
        return True
    published = getattr(future, "key", None)
    return None if replaces is not None and published == replaces else published == key
