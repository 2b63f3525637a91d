"""The :class:`Master` actor: semantic indexes in memory, fed from MongoDB.

Runs on one Dask worker (resource ``MASTER=1`` or the first worker), or in the
client's process when jobs run inline. It receives plain data only: a
:class:`~superduperdb.store.context.Target` (URI, database, collection,
config) and the index's metadata row; it opens its own database handle.

Per index it holds a :class:`~superduperdb.index.VectorIndex` (exact search +
pynndescent graph rebuilt in the background). ``refresh(ids)`` re-reads those
documents' outputs: present ones are upserted, missing ones removed, so
inserts, updates and deletes all arrive the same way.

Warm restarts (:mod:`.snapshots`): an index is loaded from its latest snapshot
when there is one, then caught up with the documents' present fingerprints;
snapshots are refreshed in a background thread.

Shards (docs/scaling.md): with ``master.shards = N`` there are N of these
actors, each ``shard`` of N, each holding only the vectors of the partitions
its shard owns (:mod:`superduperdb.store.shards`: the partition table the
caller passes as a ``layout``). Before loading any index of a collection it
takes its shard's lease there (:mod:`.fencing`); every answer carries that
lease's epoch, and an actor that lost its lease drops that collection's
indexes and refuses to answer (:class:`~superduperdb.errors.ShardFencedError`).
Shard 0 also runs the reconciler's sweeps. Graphs are built in a separate
process (``master.build_process``), so a build never stalls queries.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from typing import Any

from ..config import redact
from ..errors import SemanticIndexError
from ..index.env import configure_numba_env
from ..store.context import Context, Target, worker_dask_client
from ..store.layout import MISSING, fingerprint_path, get_path, output_path
from ..store.measures import load_measure
from ..store.partitions import PARTITIONS, partition_of
from ..store.shards import shards_table
from ..types import npy
from . import snapshots
from .fencing import Fence
from .sweeper import Sweeper

logger = logging.getLogger(__name__)

LOAD_CHUNK = 5000
# The JIT warm-up waits this long after the master starts, then for loads in progress
# to finish: compiling holds the GIL for long stretches, and a 10k-vector load that
# ran beside it took 9.2 s instead of 3.6 s (bench/search.py), delaying the first answer.
WARM_UP_GRACE = 1.0


def index_key(target: Target, row: dict) -> str:
    return f"{target.uri}|{target.database}|{target.collection}|{row['name']}|{row['uid']}"


def collection_key(target: Target) -> str:
    return f"{target.uri}|{target.database}|{target.collection}"


def owned(layout: tuple | None) -> frozenset | None:
    """The partitions a ``(version, partitions)`` layout gives this shard (None: every one)."""
    if layout is None or len(layout[1]) >= PARTITIONS:
        return None
    return frozenset(layout[1])


def indexed_path(row: dict) -> str:
    """Where the indexed outputs of semantic index ``row`` are stored."""
    return output_path(row["keys"][0], row["models"][0])


class _Loaded:
    """One index in memory, with the fingerprint of each vector (what its output was computed from)."""

    def __init__(self, target: Target, row: dict, index: Any, seconds: float, fingerprints: dict,
                 source: str = "database", layout: tuple | None = None, epoch: int = 0) -> None:
        self.target, self.row, self.index, self.load_seconds = target, row, index, seconds
        self.fingerprints = fingerprints
        self.version = layout[0] if layout is not None else None  # of the partition table it was loaded with
        self.partitions = owned(layout)  # None: every partition
        self.epoch = epoch
        self.source = source  # "database" or "snapshot"
        self.catch_up: dict | None = None  # what loading from a snapshot re-read
        cfg = Context(target).config.master
        self.snapshot_interval = float(cfg.snapshot_interval)
        self.snapshot_changes = int(cfg.snapshot_changes)
        self.changes = 0  # vectors upserted or removed since the last snapshot (under the fingerprints lock)
        self.snapshot_due = source == "database"  # loaded the slow way: save one soon
        self.snapshot_attempt = time.monotonic()
        self.last_snapshot: dict | None = None
        self.saving = threading.Lock()


class Master:
    """Holds the vector indexes of every collection that uses this cluster.

    Parameters
    ----------
    warm_up : bool
        Compile pynndescent's JIT in a background thread once the first index loads.
    sweep : callable, optional
        ``sweep(target, dask_client) -> report``: one reconcile pass over a
        collection, run every ``reconcile.interval`` seconds for each watched
        collection (see :mod:`superduperdb.master.sweeper`). None: no sweeps.
    generation : int
        Which master this is in the cluster's history (1, 2 ... after re-creations).
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
        self._indexes: dict[str, _Loaded] = {}
        self._lock = threading.RLock()
        self._fingerprints_lock = threading.Lock()
        self._loading = 0
        self._loads_done = threading.Condition()
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

    def _drop_collection(self, ckey: str) -> None:
        """Forget every index of collection ``ckey`` (its lease was lost: another actor owns the shard)."""
        with self._lock:
            for key in [k for k in self._indexes if k.startswith(ckey + "|")]:
                del self._indexes[key]

    def _start_warm_up(self, ctx: Context | None = None) -> None:
        if ctx is not None and ctx.config.master.build_process and self._builder is None:
            from ..index.builder import ProcessBuilder

            self._builder = ProcessBuilder()
        with self._lock:
            if self._warm_up and self._warm is None:
                self._warm = threading.Thread(target=self._warm_up_when_idle, name="superduperdb-jit-warm-up",
                                              daemon=True)
                self._warm.start()

    def _warm_up_when_idle(self) -> None:
        """Compile pynndescent's JIT, after the loads that created this master (see WARM_UP_GRACE)."""
        from ..index.env import warm_up

        time.sleep(WARM_UP_GRACE)
        with self._loads_done:
            self._loads_done.wait_for(lambda: self._loading == 0)
        warm_up(builder=self._builder)  # with a build process: it compiles the builds, this process the queries

    def _attach_graph_when_idle(self, index: Any, name: str) -> None:
        """Install a restored graph (unpickling it imports numba: seconds), after the loads that started
        this master, so that its first answers (exact meanwhile) do not wait for it (see WARM_UP_GRACE)."""
        time.sleep(WARM_UP_GRACE)
        with self._loads_done:
            self._loads_done.wait_for(lambda: self._loading == 0)
        start = time.perf_counter()
        try:
            attached = index.attach_pending_graph()
        except Exception:  # noqa: BLE001 - the index answers exactly, and rebuilds as it grows
            logger.exception("cannot attach the restored graph of index %r", name)
            return
        logger.info("restored graph of index %r %s in %.2f s", name, "attached" if attached else "dropped",
                    time.perf_counter() - start)

    # -- loading ----------------------------------------------------------------------
    def _read(self, ctx: Context, row: dict, query: dict, partitions: frozenset | None = None
              ) -> tuple[list, list, list]:
        """``(ids, vectors, fingerprints)`` of the documents matching ``query`` that have an indexed output
        (and whose ``_id`` falls in ``partitions``, if given)."""
        path, fp_path = indexed_path(row), fingerprint_path(row["keys"][0], row["models"][0])
        ids, vectors, fps = [], [], []
        # A shard reads every matching document and keeps its own (one streaming pass: the database cannot
        # select by a hash of _id); only those are decoded.
        cursor = ctx.collection.find({"$and": [query, {path: {"$exists": True}}]}, {path: 1, fp_path: 1})
        for doc in cursor.batch_size(LOAD_CHUNK):
            if partitions is not None and partition_of(doc["_id"]) not in partitions:
                continue
            value = get_path(doc, path)
            ids.append(doc["_id"])
            fp = get_path(doc, fp_path)
            fps.append(None if fp is MISSING else fp)  # no fingerprint: always re-read
            vector = _npy_vector(value)
            vectors.append(vector if vector is not None else _as_vector(ctx.types.decode(value)))
        return ids, vectors, fps

    def _get(self, target: Target, row: dict, use_snapshot: bool = True, layout: tuple | None = None) -> _Loaded:
        """Index ``row``, loaded unless it is (again, if it was loaded with another partition ``layout``)."""
        key, ckey = index_key(target, row), collection_key(target)
        self._fence.check(ckey)
        with self._lock:
            loaded = self._indexes.get(key)
            if loaded is not None and layout is not None and loaded.version != layout[0]:
                logger.info("partition table of %s changed (version %s -> %s): reloading index %r", target.collection,
                            loaded.version, layout[0], row["name"])
                loaded = None
            if loaded is None:
                epoch = self._fence.epoch(ckey, shards_table(Context(target).db, target.collection))
                loaded = self._load(target, row, use_snapshot, layout, epoch)
                self._indexes[key] = loaded
                self._snapshotter.start()
            return loaded

    def _new_index(self, ctx: Context, row: dict) -> Any:
        from ..index import VectorIndex

        cfg = ctx.config.master
        if cfg.build_process and self._builder is None:
            from ..index.builder import ProcessBuilder

            self._builder = ProcessBuilder()  # one per actor: its builds, one at a time, off this process
        return VectorIndex(measure=load_measure(ctx.metadata, ctx.artifacts, row["measure"]),  # a custom one: its callable
                           exact_threshold=cfg.exact_threshold, epsilon=cfg.epsilon,
                           builder=self._builder if cfg.build_process else None)

    def _load(self, target: Target, row: dict, use_snapshot: bool = True, layout: tuple | None = None,
              epoch: int = 0) -> _Loaded:
        start = time.perf_counter()
        ctx = Context(target)
        self._start_warm_up(ctx)
        cfg = ctx.config.master
        with self._loads_done:
            self._loading += 1
        partitions = owned(layout)
        try:
            if use_snapshot and cfg.snapshot_interval > 0:
                loaded = self._load_snapshot(ctx, row, layout, epoch)
                if loaded is not None:
                    loaded.load_seconds = time.perf_counter() - start
                    return loaded
            index = self._new_index(ctx, row)
            ids, vectors, fps = self._read(ctx, row, {}, partitions)
            if ids:
                index.add(ids, vectors)
        finally:
            with self._loads_done:
                self._loading -= 1
                self._loads_done.notify_all()
        seconds = time.perf_counter() - start
        logger.info("loaded index %r of %s.%s (shard %d of %d): %d vectors in %.2f s", row["name"], target.database,
                    target.collection, self.shard, self.shards, len(ids), seconds)
        return _Loaded(target, row, index, seconds, dict(zip(ids, fps)), layout=layout, epoch=epoch)

    def _load_snapshot(self, ctx: Context, row: dict, layout: tuple | None = None, epoch: int = 0) -> _Loaded | None:
        """The index from its latest snapshot, caught up with the documents (None: no usable snapshot)."""
        from ..errors import SemanticIndexError

        start = time.perf_counter()
        partitions = owned(layout)
        payload = snapshots.load(ctx.artifacts, row, partitions=partitions)
        if payload is None:
            return None
        index = self._new_index(ctx, row)
        try:
            index.restore_state(payload["state"])
        except SemanticIndexError as exc:
            logger.warning("cannot restore the snapshot of index %r: %s; loading from the documents", row["name"], exc)
            return None
        if index.has_pending_graph:
            threading.Thread(target=self._attach_graph_when_idle, args=(index, row["name"]),
                             name="superduperdb-attach-graph", daemon=True).start()
        restored = time.perf_counter() - start
        loaded = _Loaded(ctx.target, row, index, restored, payload["fingerprints"], source="snapshot", layout=layout,
                         epoch=epoch)
        ids, fps = self._read_fingerprints(ctx, row, partitions)
        changed = self._sync(loaded, ctx, ids, fps, None)
        loaded.catch_up = {"upserted": changed["upserted"], "removed": changed["removed"],
                           "snapshot_age_s": time.time() - payload["taken_at"], "restore_s": restored,
                           "seconds": time.perf_counter() - start - restored}
        loaded.changes = changed["upserted"] + changed["removed"]
        logger.info("loaded index %r from its snapshot (%d vectors, %.0f s old) in %.2f s; caught up: %s",
                    row["name"], len(index), loaded.catch_up["snapshot_age_s"], time.perf_counter() - start,
                    loaded.catch_up)
        return loaded

    def _read_fingerprints(self, ctx: Context, row: dict, partitions: frozenset | None = None) -> tuple[list, list]:
        """``(ids, fingerprints)`` of every document with an indexed output (in ``partitions``; no vectors read)."""
        path, fp_path = indexed_path(row), fingerprint_path(row["keys"][0], row["models"][0])
        ids, fps = [], []
        for doc in ctx.collection.find({path: {"$exists": True}}, {fp_path: 1}).batch_size(LOAD_CHUNK):
            if partitions is not None and partition_of(doc["_id"]) not in partitions:
                continue
            ids.append(doc["_id"])
            fp = get_path(doc, fp_path)
            fps.append(None if fp is MISSING else fp)
        return ids, fps

    # -- snapshots --------------------------------------------------------------------------
    def _due_snapshots(self) -> list[str]:
        now = time.monotonic()
        with self._lock:
            items = list(self._indexes.items())
        due = []
        for key, loaded in items:
            if loaded.snapshot_interval <= 0 or loaded.saving.locked():
                continue
            since = now - loaded.snapshot_attempt
            if since < snapshots.MIN_GAP or not (loaded.changes > 0 or loaded.snapshot_due):
                continue
            if loaded.snapshot_due or since >= loaded.snapshot_interval or loaded.changes >= loaded.snapshot_changes:
                due.append(key)
        return due

    def _save_snapshot(self, key: str) -> dict | None:
        with self._lock:
            loaded = self._indexes.get(key)
        if loaded is None:
            return None
        with loaded.saving:
            loaded.snapshot_attempt = time.monotonic()
            start = time.perf_counter()
            with self._fingerprints_lock:  # the fingerprints first: see snapshots.dumps
                fingerprints, changes = dict(loaded.fingerprints), loaded.changes
            data = snapshots.dumps(loaded.index, fingerprints, loaded.row, partitions=loaded.partitions,
                                   epoch=loaded.epoch)
            size = len(loaded.index)
            snapshots.save(Context(loaded.target).artifacts, loaded.row, data, size=size, partitions=loaded.partitions)
            with self._fingerprints_lock:
                loaded.changes -= changes
            loaded.snapshot_due = False
            loaded.last_snapshot = {"at": time.time(), "vectors": size, "bytes": len(data),
                                    "seconds": time.perf_counter() - start}
            logger.info("saved a snapshot of index %r: %d vectors, %.1f MB in %.2f s", loaded.row["name"], size,
                        len(data) / 1e6, loaded.last_snapshot["seconds"])
            return loaded.last_snapshot

    # -- the actor's methods --------------------------------------------------------------
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
        self._snapshotter.close()
        return True

    def ensure(self, target: Target, row: dict, layout: tuple | None = None) -> dict:
        """Load the index (from its snapshot, else from MongoDB) unless loaded; return its stats."""
        return self._stats(self._get(target, row, layout=layout))

    def refresh(self, target: Target, row: dict, ids: list, layout: tuple | None = None) -> dict:
        """Re-read ``ids`` (those this shard owns): upsert those with outputs, remove the others."""
        loaded = self._get(target, row, layout=layout)
        return self._refresh(loaded, Context(target), self._own(loaded, ids))

    @staticmethod
    def _own(loaded: _Loaded, ids: list) -> list:
        """The ids among ``ids`` whose partition this shard owns."""
        if loaded.partitions is None:
            return list(ids)
        return [i for i in ids if partition_of(i) in loaded.partitions]

    def _refresh(self, loaded: _Loaded, ctx: Context, ids: list) -> dict:
        if not ids:
            return {"upserted": 0, "removed": 0, "shard": self.shard}
        found, vectors, fps = self._read(ctx, loaded.row, {"_id": {"$in": list(ids)}})
        if found:
            loaded.index.add(found, vectors)
        present = set(found)
        gone = [i for i in ids if i not in present]
        removed = loaded.index.remove(gone) if gone else 0
        with self._fingerprints_lock:
            loaded.fingerprints.update(zip(found, fps))
            for i in gone:
                loaded.fingerprints.pop(i, None)
            loaded.changes += len(found) + removed
        return {"upserted": len(found), "removed": removed, "shard": self.shard}

    def sync(self, target: Target, row: dict, ids: list, fingerprints: list, within: list | None = None,
             layout: tuple | None = None) -> dict:
        """Make the index hold exactly ``ids`` with these output fingerprints (MongoDB's present state).

        Vectors whose fingerprint differs (or is unknown) are re-read; ids the
        index holds but ``ids`` lacks are removed (only among ``within``, when
        the caller looked at those documents only). Returns the counts and the
        ids that changed. Only the ids this shard owns are looked at.
        """
        loaded = self._get(target, row, layout=layout)
        if loaded.partitions is not None:
            keep = [j for j, i in enumerate(ids) if partition_of(i) in loaded.partitions]
            ids, fingerprints = [ids[j] for j in keep], [fingerprints[j] for j in keep]
            within = None if within is None else self._own(loaded, within)
        return self._sync(loaded, Context(target), ids, fingerprints, within)

    def _sync(self, loaded: _Loaded, ctx: Context, ids: list, fingerprints: list, within: list | None) -> dict:
        wanted = dict(zip(ids, fingerprints))
        with self._fingerprints_lock:
            held = loaded.fingerprints
            stale = [i for i, fp in wanted.items() if i not in held or held[i] != fp or fp is None]
            scope = held.keys() if within is None else (set(within) & held.keys())
            gone = [i for i in scope if i not in wanted]
        changed = self._refresh(loaded, ctx, stale + gone) if stale or gone else {"upserted": 0, "removed": 0}
        return {**changed, "changed": stale + gone}

    def search(self, target: Target, row: dict, vector: Any, n: int, candidates: list | None = None,
               layout: tuple | None = None) -> tuple[list, list]:
        """The ``n`` nearest ids (restricted to ``candidates`` if given) and their scores."""
        loaded = self._get(target, row, layout=layout)
        ids, scores = loaded.index.search(vector, n, candidates=candidates)
        return ids, [float(s) for s in scores]

    def search_many(self, target: Target, row: dict, vectors: list, n: int,
                    candidates: list | None = None, layout: tuple | None = None) -> list[tuple[list, list]]:
        """:meth:`search` for each of ``vectors`` (one call for the batch); ``(ids, scores)`` each."""
        loaded = self._get(target, row, layout=layout)
        if not len(vectors):
            return []
        found = loaded.index.search_batch(vectors, n, candidates=candidates)
        return [(ids, [float(s) for s in scores]) for ids, scores in found]

    def query(self, target: Target, row: dict, vectors: list, n: int, candidates: list | None = None,
              layout: tuple | None = None) -> dict:
        """This shard's answer to a fanned-out query: its top ``n`` of each vector, and how it got them.

        Returns ``{"results": [(ids, scores), ...], "shard", "epoch", "worker", "size", "plan",
        "candidates", "ms"}``: the fields of ``explain()``'s per-shard entry (``plan`` is
        ``'exact'`` or ``'graph'``, ``candidates`` the vectors scored, ``ms`` the time taken here).
        """
        start = time.perf_counter()
        loaded = self._get(target, row, layout=layout)
        info: dict = {"plan": "exact", "candidates": 0}
        found = loaded.index.search_batch(vectors, n, candidates=candidates, info=info) if len(vectors) else []
        return {"results": [(ids, [float(s) for s in scores]) for ids, scores in found], "shard": self.shard,
                "epoch": loaded.epoch, "worker": self.worker, "size": len(loaded.index), "plan": info["plan"],
                "candidates": info["candidates"], "ms": (time.perf_counter() - start) * 1000}

    def vector_of(self, target: Target, row: dict, id: Any, layout: tuple | None = None) -> Any:
        """The stored vector of document ``id`` (None if it has none)."""
        loaded = self._get(target, row, layout=layout)
        return loaded.index.get(id)

    def vectors_of(self, target: Target, row: dict, ids: list, layout: tuple | None = None) -> list:
        """The stored vector of each of ``ids`` (None where it has none)."""
        index = self._get(target, row, layout=layout).index
        return [index.get(i) for i in ids]

    def indexed_ids(self, target: Target, row: dict, layout: tuple | None = None) -> list:
        """Every id this shard holds in index ``row``."""
        return self._get(target, row, layout=layout).index.ids()

    def snapshot(self, target: Target, row: dict, layout: tuple | None = None) -> dict:
        """Save a snapshot of the index now (loading it first if needed); return what was written."""
        loaded = self._get(target, row, layout=layout)
        self._save_snapshot(index_key(target, row))
        return dict(loaded.last_snapshot or {})

    def neighbours(self, target: Target, row: dict, ids: list | None, n: int, layout: tuple | None = None) -> dict:
        """``{id: [the n nearest other ids]}`` for ``ids`` (None: every indexed id), within this shard."""
        index = self._get(target, row, layout=layout).index
        ids = index.ids() if ids is None else [i for i in ids if i in index]
        out = {}
        for _id in ids:
            found, _ = index.search(index.get(_id), n + 1)
            out[_id] = [i for i in found if i != _id][:n]
        return out

    def reload(self, target: Target, row: dict, layout: tuple | None = None) -> dict:
        """Drop the index and load it again from MongoDB (not from a snapshot); return its stats."""
        self.drop(target, row)
        return self._stats(self._get(target, row, use_snapshot=False, layout=layout))

    def watch(self, target: Target) -> None:
        """Sweep this collection every ``reconcile.interval`` seconds of its config (see :mod:`.sweeper`)."""
        if self._sweeper is not None:
            self._sweeper.watch(target, Context(target).config.reconcile.interval)

    def reconciler(self) -> dict:
        """The sweeper's watched collections and their last passes (empty without a sweeper)."""
        return self._sweeper.stats() if self._sweeper is not None else {}

    def drop(self, target: Target, row: dict, forget: bool = False) -> bool:
        """Forget the index in memory (``forget``: its snapshots too, every shard's). Whether it was loaded."""
        with self._lock:
            dropped = self._indexes.pop(index_key(target, row), None) is not None
        if forget:
            snapshots.delete(Context(target).artifacts, row)
        return dropped

    def rebuild(self, target: Target, row: dict, wait: bool = True, timeout: float = 600.0,
                layout: tuple | None = None) -> dict:
        """Build the graph now (``wait``: until it is swapped in)."""
        loaded = self._get(target, row, layout=layout)
        loaded.index.rebuild(wait=wait, timeout=timeout)
        return self._stats(loaded)

    def stats(self) -> list[dict]:
        with self._lock:
            return [self._stats(loaded) for loaded in self._indexes.values()]

    def _stats(self, loaded: _Loaded) -> dict:
        t = loaded.target
        # Stats are returned by index jobs, whose records store them: the URI is shown redacted.
        return {"index": loaded.row["name"], "collection": f"{t.database}.{t.collection}", "uri": redact(t.uri),
                "load_seconds": loaded.load_seconds, "source": loaded.source, "catch_up": loaded.catch_up,
                "snapshot": loaded.last_snapshot, "changes_since_snapshot": loaded.changes,
                "graph_enabled": loaded.index.graph_enabled, "shard": self.shard, "shards": self.shards,
                "epoch": loaded.epoch, "worker": self.worker,
                "partitions": PARTITIONS if loaded.partitions is None else len(loaded.partitions),
                "warm": self._warm is None or not self._warm.is_alive(), **loaded.index.stats()}


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


def _npy_vector(value: Any) -> Any:
    """A stored 1-D ``array``/``tensor`` value as a float32 vector, or None (use the type registry)."""
    content = value.get("_content") if isinstance(value, dict) and len(value) == 1 else None
    if not isinstance(content, dict) or content.get("type") not in ("array", "tensor"):
        return None
    data = content.get("bytes")
    if not isinstance(data, bytes) or npy.header_length(data) is None:
        return None
    try:
        array = npy.loads(data, writable=False)
    except ValueError:
        return None
    if array.ndim != 1 or array.dtype.hasobject or array.dtype.fields is not None:
        return None
    return array.astype("float32")


def _as_vector(value: Any) -> Any:
    import numpy as np

    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    vector = np.asarray(value, dtype=np.float32)
    if vector.ndim != 1:
        raise SemanticIndexError(f"Indexed outputs must be 1-D vectors, got shape {vector.shape}.")
    return vector

