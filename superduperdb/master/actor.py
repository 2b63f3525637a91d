"""The :class:`Master` actor: semantic indexes in memory, fed from MongoDB.

Runs on one Dask worker (resource ``MASTER=1`` or the first worker), or in the
client's process when jobs run inline. It receives plain data only: a
:class:`~superduperdb.store.context.Target` (URI, database, collection,
config) and the index's metadata row; it opens its own database handle.

Per index it holds a :class:`~superduperdb.index.VectorIndex` (exact search +
pynndescent graph rebuilt in the background). ``refresh(ids)`` re-reads those
documents' outputs: present ones are upserted, missing ones removed, so
inserts, updates and deletes all arrive the same way.
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
from ..store.layout import fingerprint_path, get_path, output_path
from ..store.measures import load_measure
from ..types import npy
from .sweeper import Sweeper

logger = logging.getLogger(__name__)

LOAD_CHUNK = 5000
# The JIT warm-up waits this long after the master starts, then for loads in progress
# to finish: compiling holds the GIL for long stretches, and a 10k-vector load that
# ran beside it took 9.2 s instead of 3.6 s (bench/search.py), delaying the first answer.
WARM_UP_GRACE = 1.0


def index_key(target: Target, row: dict) -> str:
    return f"{target.uri}|{target.database}|{target.collection}|{row['name']}|{row['uid']}"


def indexed_path(row: dict) -> str:
    """Where the indexed outputs of semantic index ``row`` are stored."""
    return output_path(row["keys"][0], row["models"][0])


class _Loaded:
    """One index in memory, with the fingerprint of each vector (what its output was computed from)."""

    def __init__(self, target: Target, row: dict, index: Any, seconds: float, fingerprints: dict) -> None:
        self.target, self.row, self.index, self.load_seconds = target, row, index, seconds
        self.fingerprints = fingerprints


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
        self._sweeper = Sweeper(sweep, worker_dask_client()) if sweep is not None else None

    def _start_warm_up(self) -> None:
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
        warm_up()

    # -- loading ----------------------------------------------------------------------
    def _read(self, ctx: Context, row: dict, query: dict) -> tuple[list, list, list]:
        """``(ids, vectors, fingerprints)`` of the documents matching ``query`` that have an indexed output."""
        path, fp_path = indexed_path(row), fingerprint_path(row["keys"][0], row["models"][0])
        ids, vectors, fps = [], [], []
        cursor = ctx.collection.find({"$and": [query, {path: {"$exists": True}}]}, {path: 1, fp_path: 1})
        for doc in cursor.batch_size(LOAD_CHUNK):
            value = get_path(doc, path)
            ids.append(doc["_id"])
            fps.append(get_path(doc, fp_path))
            vector = _npy_vector(value)
            vectors.append(vector if vector is not None else _as_vector(ctx.types.decode(value)))
        return ids, vectors, fps

    def _get(self, target: Target, row: dict) -> _Loaded:
        key = index_key(target, row)
        with self._lock:
            loaded = self._indexes.get(key)
            if loaded is None:
                loaded = self._load(target, row)
                self._indexes[key] = loaded
            return loaded

    def _load(self, target: Target, row: dict) -> _Loaded:
        from ..index import VectorIndex

        self._start_warm_up()
        start = time.perf_counter()
        ctx = Context(target)
        cfg = ctx.config.master
        measure = load_measure(ctx.metadata, ctx.artifacts, row["measure"])  # a custom one: its callable
        index = VectorIndex(measure=measure, exact_threshold=cfg.exact_threshold, epsilon=cfg.epsilon)
        with self._loads_done:
            self._loading += 1
        try:
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
        return _Loaded(target, row, index, seconds, dict(zip(ids, fps)))

    # -- the actor's methods --------------------------------------------------------------
    def ping(self) -> float:
        return self.started_at

    def info(self) -> dict:
        """``started_at`` and ``generation`` of this master."""
        return {"started_at": self.started_at, "generation": self.generation}

    def ensure(self, target: Target, row: dict) -> dict:
        """Load the index (from MongoDB) unless loaded; return its stats."""
        return self._stats(self._get(target, row))

    def refresh(self, target: Target, row: dict, ids: list) -> dict:
        """Re-read ``ids``: upsert those with outputs, remove the others."""
        loaded = self._get(target, row)
        ctx = Context(target)
        found, vectors, fps = self._read(ctx, row, {"_id": {"$in": list(ids)}})
        if found:
            loaded.index.add(found, vectors)
        present = set(found)
        gone = [i for i in ids if i not in present]
        removed = loaded.index.remove(gone) if gone else 0
        with self._fingerprints_lock:
            loaded.fingerprints.update(zip(found, fps))
            for i in gone:
                loaded.fingerprints.pop(i, None)
        return {"upserted": len(found), "removed": removed}

    def sync(self, target: Target, row: dict, ids: list, fingerprints: list, within: list | None = None) -> dict:
        """Make the index hold exactly ``ids`` with these output fingerprints (MongoDB's present state).

        Vectors whose fingerprint differs (or is unknown) are re-read; ids the
        index holds but ``ids`` lacks are removed (only among ``within``, when
        the caller looked at those documents only). Returns the counts and the
        ids that changed.
        """
        loaded = self._get(target, row)
        wanted = dict(zip(ids, fingerprints))
        with self._fingerprints_lock:
            held = loaded.fingerprints
            stale = [i for i, fp in wanted.items() if i not in held or held[i] != fp or fp is None]
            scope = held.keys() if within is None else (set(within) & held.keys())
            gone = [i for i in scope if i not in wanted]
        changed = self.refresh(target, row, stale + gone) if stale or gone else {"upserted": 0, "removed": 0}
        return {**changed, "changed": stale + gone}

    def search(self, target: Target, row: dict, vector: Any, n: int, candidates: list | None = None) -> tuple[list, list]:
        """The ``n`` nearest ids (restricted to ``candidates`` if given) and their scores."""
        loaded = self._get(target, row)
        ids, scores = loaded.index.search(vector, n, candidates=candidates)
        return ids, [float(s) for s in scores]

    def vector_of(self, target: Target, row: dict, id: Any) -> Any:
        """The stored vector of document ``id`` (None if it has none)."""
        loaded = self._get(target, row)
        return loaded.index.get(id)

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
        """Drop the index and load it again from MongoDB; return its stats."""
        self.drop(target, row)
        return self.ensure(target, row)

    def watch(self, target: Target) -> None:
        """Sweep this collection every ``reconcile.interval`` seconds of its config (see :mod:`.sweeper`)."""
        if self._sweeper is not None:
            self._sweeper.watch(target, Context(target).config.reconcile.interval)

    def reconciler(self) -> dict:
        """The sweeper's watched collections and their last passes (empty without a sweeper)."""
        return self._sweeper.stats() if self._sweeper is not None else {}

    def drop(self, target: Target, row: dict) -> bool:
        with self._lock:
            return self._indexes.pop(index_key(target, row), None) is not None

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
                "load_seconds": loaded.load_seconds,
                "warm": self._warm is None or not self._warm.is_alive(), **loaded.index.stats()}


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

