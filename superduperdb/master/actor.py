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
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ..config import redact
from ..errors import SemanticIndexError
from ..index.env import configure_numba_env
from ..store.context import Context, Target, worker_dask_client
from ..store.layout import MISSING, get_path
from ..store.measures import load_measure
from ..store.semantic_indexes import IndexView
from ..types import npy
from . import snapshots
from .monitor import Monitor, attach_to_worker, plan_of
from .sweeper import Sweeper

logger = logging.getLogger(__name__)

LOAD_CHUNK = 5000
# The JIT warm-up waits this long after the master starts, then for loads in progress
# to finish: compiling holds the GIL for long stretches, and a 10k-vector load that
# ran beside it took 9.2 s instead of 3.6 s (bench/search.py), delaying the first answer.
WARM_UP_GRACE = 1.0


def index_key(target: Target, row: dict) -> str:
    """``uri|database|collection|name|uid``: one loaded index (a re-created index has a new uid)."""
    return f"{target.key}|{row['name']}|{row['uid']}"


class _Loaded:
    """One index in memory, with the fingerprint of each vector (what its output was computed from).

    It holds the one :class:`Context` of its collection (its database handle and
    resolved config), opened when the index loads and used by every call on it.
    """

    def __init__(self, ctx: Context, row: dict, index: Any, seconds: float, fingerprints: dict,
                 source: str = "database") -> None:
        self.ctx, self.target, self.row, self.index, self.load_seconds = ctx, ctx.target, row, index, seconds
        self.view = IndexView.of(row)
        self.fingerprints = fingerprints
        self.source = source  # "database" or "snapshot"
        self.catch_up: dict | None = None  # what loading from a snapshot re-read
        cfg = ctx.config.master
        self.snapshot_interval = float(cfg.snapshot_interval)
        self.snapshot_changes = int(cfg.snapshot_changes)
        # The JIT warm-up starts once the index holds this many vectors: a graph is built only past
        # exact_threshold, so a small index (searched exactly) never pays ~45 s of compilation.
        self.warm_at = float(cfg.warm_up_at) * int(cfg.exact_threshold)
        self.changes = 0  # vectors upserted or removed since the last snapshot (under the fingerprints lock)
        self.snapshot_due = source == "database"  # loaded the slow way: save one soon
        self.snapshot_attempt = time.monotonic()
        self.last_snapshot: dict | None = None
        self.taken_at: float | None = None  # when the snapshot the index holds was taken (loaded or saved)
        self.saving = threading.Lock()


class Master:
    """Holds the vector indexes of every collection that uses this cluster.

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
        Which master this is in the cluster's history (1, 2 ... after re-creations).
    """

    def __init__(self, warm_up: bool = True, sweep: Any = None, generation: int = 1) -> None:
        configure_numba_env()  # before anything imports numba (pynndescent is imported lazily)
        self.started_at = time.time()
        self.generation = generation
        self._indexes: dict[str, _Loaded] = {}
        self._lock = threading.RLock()
        self._fingerprints_lock = threading.Lock()
        self._loading = 0
        self._loads_done = threading.Condition()
        self._warm_up = warm_up
        self._warm: threading.Thread | None = None
        dask_client = worker_dask_client()
        self._sweeper = Sweeper(sweep, dask_client) if sweep is not None else None
        self._snapshotter = snapshots.Snapshotter(
            self._due_snapshots, self._save_snapshot,
            gone=lambda: dask_client is not None and dask_client.status in ("closing", "closed"))
        self._monitor = Monitor(self._targets, self.stats, self.reconciler, self.info, held=self._held_contexts)
        attach_to_worker(self._monitor)  # the report travels with the worker's heartbeats (see .monitor)

    def _start_warm_up(self) -> None:
        with self._lock:
            if self._warm_up and self._warm is None:
                self._warm = threading.Thread(target=self._warm_up_when_idle, name="superduperdb-jit-warm-up",
                                              daemon=True)
                self._warm.start()

    def _maybe_warm_up(self, loaded: _Loaded) -> None:
        """Start the warm-up once ``loaded`` has grown to ``master.warm_up_at`` of the exact threshold."""
        if self._warm_up and self._warm is None and len(loaded.index) >= loaded.warm_at:
            self._start_warm_up()

    def _warm_up_when_idle(self) -> None:
        """Compile pynndescent's JIT, after the loads that created this master (see WARM_UP_GRACE)."""
        from ..index.env import warm_up

        time.sleep(WARM_UP_GRACE)
        with self._loads_done:
            self._loads_done.wait_for(lambda: self._loading == 0)
        warm_up()

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
    def _read(self, ctx: Context, row: dict, query: dict) -> tuple[list, list, list]:
        """``(ids, vectors, fingerprints)`` of the documents matching ``query`` that have an indexed output."""
        view = IndexView.of(row)
        path, fp_path = view.path, view.fingerprint_path
        ids, vectors, fps = [], [], []
        cursor = ctx.collection.find({"$and": [query, view.has_output]}, {path: 1, fp_path: 1})
        for doc in cursor.batch_size(LOAD_CHUNK):
            value = get_path(doc, path)
            ids.append(doc["_id"])
            fp = get_path(doc, fp_path)
            fps.append(None if fp is MISSING else fp)  # no fingerprint: always re-read
            vector = _npy_vector(value)
            vectors.append(vector if vector is not None else _as_vector(ctx.types.decode(value)))
        return ids, vectors, fps

    def _get(self, target: Target, row: dict, use_snapshot: bool = True) -> _Loaded:
        key = index_key(target, row)
        with self._lock:
            loaded = self._indexes.get(key)
            if loaded is None:
                loaded = self._load(target, row, use_snapshot)
                self._indexes[key] = loaded
                self._snapshotter.start()
                self._maybe_warm_up(loaded)
            return loaded

    def _load(self, target: Target, row: dict, use_snapshot: bool = True) -> _Loaded:
        from ..index import VectorIndex

        start = time.perf_counter()
        ctx = Context(target)
        cfg = ctx.config.master
        with self._loads_done:
            self._loading += 1
        try:
            if use_snapshot and cfg.snapshot_interval > 0:
                loaded = self._load_snapshot(ctx, row)
                if loaded is not None:
                    loaded.load_seconds = time.perf_counter() - start
                    return loaded
            index = VectorIndex(measure=load_measure(ctx.metadata, ctx.artifacts, row["measure"]),  # a custom one: its callable
                                exact_threshold=cfg.exact_threshold, epsilon=cfg.epsilon)
            ids, vectors, fps = self._read(ctx, row, {})
            if ids:
                index.add(ids, vectors)
        finally:
            with self._loads_done:
                self._loading -= 1
                self._loads_done.notify_all()
        seconds = time.perf_counter() - start
        logger.info("loaded index %r of %s.%s: %d vectors in %.2f s", row["name"], target.database,
                    target.collection, len(ids), seconds)
        return _Loaded(ctx, row, index, seconds, dict(zip(ids, fps)))

    def _load_snapshot(self, ctx: Context, row: dict) -> _Loaded | None:
        """The index from its latest snapshot, caught up with the documents (None: no usable snapshot)."""
        from ..errors import SemanticIndexError
        from ..index import VectorIndex

        start = time.perf_counter()
        payload = snapshots.load(ctx.artifacts, row)
        if payload is None:
            return None
        cfg = ctx.config.master
        index = VectorIndex(measure=load_measure(ctx.metadata, ctx.artifacts, row["measure"]),  # a custom one: its callable
                                exact_threshold=cfg.exact_threshold, epsilon=cfg.epsilon)
        try:
            index.restore_state(payload["state"])
        except SemanticIndexError as exc:
            logger.warning("cannot restore the snapshot of index %r: %s; loading from the documents", row["name"], exc)
            return None
        if index.has_pending_graph:
            threading.Thread(target=self._attach_graph_when_idle, args=(index, row["name"]),
                             name="superduperdb-attach-graph", daemon=True).start()
        restored = time.perf_counter() - start
        loaded = _Loaded(ctx, row, index, restored, payload["fingerprints"], source="snapshot")
        loaded.taken_at = payload["taken_at"]
        ids, fps = self._read_fingerprints(ctx, row)
        changed = self._sync(loaded, ids, fps, None)
        loaded.catch_up = {"upserted": changed["upserted"], "removed": changed["removed"],
                           "snapshot_age_s": time.time() - payload["taken_at"], "restore_s": restored,
                           "seconds": time.perf_counter() - start - restored}
        loaded.changes = changed["upserted"] + changed["removed"]
        logger.info("loaded index %r from its snapshot (%d vectors, %.0f s old) in %.2f s; caught up: %s",
                    row["name"], len(index), loaded.catch_up["snapshot_age_s"], time.perf_counter() - start,
                    loaded.catch_up)
        return loaded

    def _read_fingerprints(self, ctx: Context, row: dict) -> tuple[list, list]:
        """``(ids, fingerprints)`` of every document with an indexed output (no vectors read)."""
        view = IndexView.of(row)
        fp_path = view.fingerprint_path
        ids, fps = [], []
        for doc in ctx.collection.find(view.has_output, {fp_path: 1}).batch_size(LOAD_CHUNK):
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
            data = snapshots.dumps(loaded.index, fingerprints, loaded.row)
            size = len(loaded.index)
            snapshots.save(loaded.ctx.artifacts, loaded.row, data, size=size)
            with self._fingerprints_lock:
                loaded.changes -= changes
            loaded.snapshot_due = False
            loaded.taken_at = time.time()
            loaded.last_snapshot = {"at": time.time(), "vectors": size, "bytes": len(data),
                                    "seconds": time.perf_counter() - start}
            logger.info("saved a snapshot of index %r: %d vectors, %.1f MB in %.2f s", loaded.row["name"], size,
                        len(data) / 1e6, loaded.last_snapshot["seconds"])
            return loaded.last_snapshot

    # -- the actor's methods --------------------------------------------------------------
    def ping(self) -> float:
        return self.started_at

    def info(self) -> dict:
        """``started_at`` and ``generation`` of this master."""
        return {"started_at": self.started_at, "generation": self.generation}

    def ensure(self, target: Target, row: dict) -> dict:
        """Load the index (from its snapshot, else from MongoDB) unless loaded; return its stats."""
        return self._stats(self._get(target, row))

    def refresh(self, target: Target, row: dict, ids: list) -> dict:
        """Re-read ``ids``: upsert those with outputs, remove the others."""
        return self._refresh(self._get(target, row), ids)

    def _refresh(self, loaded: _Loaded, ids: list) -> dict:
        found, vectors, fps = self._read(loaded.ctx, loaded.row, {"_id": {"$in": list(ids)}})
        if found:
            loaded.index.add(found, vectors)
            self._maybe_warm_up(loaded)
        present = set(found)
        gone = [i for i in ids if i not in present]
        removed = loaded.index.remove(gone) if gone else 0
        with self._fingerprints_lock:
            loaded.fingerprints.update(zip(found, fps))
            for i in gone:
                loaded.fingerprints.pop(i, None)
            loaded.changes += len(found) + removed
        return {"upserted": len(found), "removed": removed}

    def sync(self, target: Target, row: dict, ids: list, fingerprints: list, within: list | None = None) -> dict:
        """Make the index hold exactly ``ids`` with these output fingerprints (MongoDB's present state).

        Vectors whose fingerprint differs (or is unknown) are re-read; ids the
        index holds but ``ids`` lacks are removed (only among ``within``, when
        the caller looked at those documents only). Returns the counts and the
        ids that changed.
        """
        return self._sync(self._get(target, row), ids, fingerprints, within)

    def _sync(self, loaded: _Loaded, ids: list, fingerprints: list, within: list | None) -> dict:
        wanted = dict(zip(ids, fingerprints))
        with self._fingerprints_lock:
            held = loaded.fingerprints
            stale = [i for i, fp in wanted.items() if i not in held or held[i] != fp or fp is None]
            scope = held.keys() if within is None else (set(within) & held.keys())
            gone = [i for i in scope if i not in wanted]
        changed = self._refresh(loaded, stale + gone) if stale or gone else {"upserted": 0, "removed": 0}
        return {**changed, "changed": stale + gone}

    def search(self, target: Target, row: dict, vector: Any, n: int, candidates: list | None = None) -> tuple[list, list]:
        """The ``n`` nearest ids (restricted to ``candidates`` if given) and their scores."""
        loaded = self._get(target, row)
        plan, start = plan_of(loaded.index, candidates), time.perf_counter()
        ids, scores = loaded.index.search(vector, n, candidates=candidates)
        self._monitor.query(target, row["name"], plan, time.perf_counter() - start)
        return ids, [float(s) for s in scores]

    def search_many(self, target: Target, row: dict, vectors: list, n: int,
                    candidates: list | None = None) -> list[tuple[list, list]]:
        """:meth:`search` for each of ``vectors`` (one call for the batch); ``(ids, scores)`` each."""
        loaded = self._get(target, row)
        if not len(vectors):
            return []
        plan, start = plan_of(loaded.index, candidates), time.perf_counter()
        found = loaded.index.search_batch(vectors, n, candidates=candidates)
        self._monitor.query(target, row["name"], plan, time.perf_counter() - start, len(vectors))
        return [(ids, [float(s) for s in scores]) for ids, scores in found]

    def vector_of(self, target: Target, row: dict, id: Any) -> Any:
        """The stored vector of document ``id`` (None if it has none)."""
        loaded = self._get(target, row)
        return loaded.index.get(id)

    def vectors_of(self, target: Target, row: dict, ids: list) -> list:
        """The stored vector of each of ``ids`` (None where it has none)."""
        index = self._get(target, row).index
        return [index.get(i) for i in ids]

    def snapshot(self, target: Target, row: dict) -> dict:
        """Save a snapshot of the index now (loading it first if needed); return what was written."""
        loaded = self._get(target, row)
        self._save_snapshot(index_key(target, row))
        return dict(loaded.last_snapshot or {})

    def neighbours(self, target: Target, row: dict, ids: list | None, n: int) -> dict:
        """``{id: [the n nearest other ids]}`` for ``ids`` (None: every indexed id)."""
        index = self._get(target, row).index
        ids = index.ids() if ids is None else [i for i in ids if i in index]
        out = {}
        for _id in ids:
            found, _ = index.search(index.get(_id), n + 1)
            out[_id] = [i for i in found if i != _id][:n]
        return out

    def reload(self, target: Target, row: dict) -> dict:
        """Drop the index and load it again from MongoDB (not from a snapshot); return its stats."""
        self.drop(target, row)
        return self._stats(self._get(target, row, use_snapshot=False))

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
        """Forget the index in memory (``forget``: its snapshots too). Whether it was loaded."""
        with self._lock:
            loaded = self._indexes.pop(index_key(target, row), None)
        if forget:
            snapshots.delete((loaded.ctx if loaded is not None else Context(target)).artifacts, row)
        return loaded is not None

    def rebuild(self, target: Target, row: dict, wait: bool = True, timeout: float = 600.0) -> dict:
        """Build the graph now (``wait``: until it is swapped in)."""
        loaded = self._get(target, row)
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
                "snapshot_taken_at": loaded.taken_at,
                "graph_enabled": loaded.index.graph_enabled,
                "warm": self._warm is None or not self._warm.is_alive(), "jit": self._jit_state(),
                **loaded.index.stats()}

    def _jit_state(self) -> str:
        """pynndescent's JIT in this master: ``'not needed yet'`` (no index near the exact threshold),
        ``'compiling'`` (the warm-up runs), ``'compiled'``, or ``'off'`` (``master.warm_up: false``)."""
        if not self._warm_up:
            return "off"
        if self._warm is None:
            return "not needed yet"
        return "compiling" if self._warm.is_alive() else "compiled"


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

