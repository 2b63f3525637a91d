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
from ..errors import IndexLoadingError, SemanticIndexError
from ..index.checksums import row_checksums
from ..index.env import configure_numba_env
from ..store import digests
from ..store.context import Context, Target, worker_dask_client
from ..store.digests import Digests
from ..store.layout import MISSING, fingerprint_path, get_path, output_path
from ..store.measures import load_measure
from ..store.partitions import PARTITIONS, id_hash
from ..store.positions import Position, Positions, SafePosition
from ..types import npy
from . import catchup, localcopy, resume, snapshots
from .sweeper import Sweeper

logger = logging.getLogger(__name__)

LOAD_CHUNK = 5000
VERIFY_CHUNK = 8192
LOAD_WAIT = 2.0  # seconds a call waits for an index that is loading, then IndexLoadingError (the caller retries)
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

    def __init__(self, target: Target, row: dict, index: Any, seconds: float, fingerprints: dict,
                 source: str = "database") -> None:
        self.target, self.row, self.index, self.load_seconds = target, row, index, seconds
        self.fingerprints = fingerprints
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
        # The write position (superduperdb.store.positions): what a snapshot of this index may record.
        self.safe = SafePosition(None, float(cfg.position_lag))
        self.hashes: dict = {}  # id -> id_hash(id), for the snapshot's partitions and digests
        self.rejected: list[dict] = []  # snapshots that failed a check when this index loaded
        self.partitions: list[int] | None = None  # None: all (a shard's index covers its own)
        self.local = localcopy.folder(cfg.snapshot_dir)
        self.local_path = localcopy.path_for(self.local, target, row) if self.local is not None else None
        self.verified = threading.Event()  # set once the digests were checked after a restart
        self.sums: dict | None = None  # id -> checksum of its vector as read (None: not computed yet)
        self.verify_at = 0  # where the next partial verify starts


class _LoadJob:
    """An index being loaded in a background thread, and how far it got (see ``IndexLoadingError``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = time.monotonic()
        self.progress = {"phase": "starting", "done": 0, "total": None}
        self.done = threading.Event()
        self.result: _Loaded | None = None
        self.error: BaseException | None = None

    def error_now(self) -> IndexLoadingError:
        p, elapsed = dict(self.progress), time.monotonic() - self.started
        total = f" of about {p['total']:,}" if p.get("total") else ""
        return IndexLoadingError(
            f"Index {self.name!r} is still loading ({p['phase']}: {p['done']:,}{total} vectors after "
            f"{elapsed:.1f} s). The load goes on in the master: retry the query shortly, or raise "
            "cluster.timeout to wait longer.", index=self.name, phase=p["phase"], done=p["done"],
            total=p["total"], elapsed=elapsed)


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
        self._jobs: dict[str, _LoadJob] = {}
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
    def _read(self, ctx: Context, row: dict, query: dict, progress: dict | None = None) -> tuple[list, list, list]:
        """``(ids, vectors, fingerprints)`` of the documents matching ``query`` that have an indexed output."""
        path, fp_path = indexed_path(row), fingerprint_path(row["keys"][0], row["models"][0])
        cursor = ctx.collection.find({"$and": [query, {path: {"$exists": True}}]}, {path: 1, fp_path: 1})
        return self._decode(ctx, row, cursor.batch_size(LOAD_CHUNK), progress)

    @staticmethod
    def _decode(ctx: Context, row: dict, docs: Any, progress: dict | None = None) -> tuple[list, list, list]:
        """``(ids, vectors, fingerprints)`` of documents read with their indexed output and fingerprint."""
        path, fp_path = indexed_path(row), fingerprint_path(row["keys"][0], row["models"][0])
        ids, vectors, fps = [], [], []
        for doc in docs:
            value = get_path(doc, path)
            ids.append(doc["_id"])
            fp = get_path(doc, fp_path)
            fps.append(None if fp is MISSING else fp)  # no fingerprint: always re-read
            vector = _npy_vector(value)
            vectors.append(vector if vector is not None else _as_vector(ctx.types.decode(value)))
            if progress is not None and len(ids) % LOAD_CHUNK == 0:
                progress["done"] = len(ids)
        return ids, vectors, fps

    def _get(self, target: Target, row: dict, use_snapshot: bool = True, wait: float = LOAD_WAIT) -> _Loaded:
        """The loaded index; loading it in a background thread if needed, waited for at most ``wait``
        seconds (then :class:`IndexLoadingError` says how far it got: the actor's thread stays free)."""
        key = index_key(target, row)
        with self._lock:
            loaded = self._indexes.get(key)
            if loaded is not None:
                return loaded
            job = self._jobs.get(key)
            if job is None:
                job = self._jobs[key] = _LoadJob(row["name"])
                threading.Thread(target=self._run_load, args=(key, job, target, row, use_snapshot), daemon=True,
                                 name="superduperdb-index-load").start()
        if not job.done.wait(wait):
            raise job.error_now()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def _run_load(self, key: str, job: _LoadJob, target: Target, row: dict, use_snapshot: bool) -> None:
        try:
            loaded = self._load(target, row, use_snapshot, job.progress)
        except BaseException as exc:  # noqa: BLE001 - handed to every caller waiting on this load
            job.error = exc
            with self._lock:
                self._jobs.pop(key, None)
        else:
            job.result = loaded
            with self._lock:
                self._indexes[key] = loaded
                self._jobs.pop(key, None)
            self._snapshotter.start()
        finally:
            job.done.set()

    def _load(self, target: Target, row: dict, use_snapshot: bool = True, progress: dict | None = None) -> _Loaded:
        from ..index import VectorIndex

        progress = {} if progress is None else progress
        self._start_warm_up()
        start = time.perf_counter()
        ctx = Context(target)
        cfg = ctx.config.master
        with self._loads_done:
            self._loading += 1
        rejected: list[dict] = []
        try:
            Positions(ctx.collection).ensure_indexes()
            if use_snapshot and cfg.snapshot_interval > 0:
                progress["phase"] = "snapshot"
                loaded, rejected = self._load_snapshot(ctx, row, progress)
                if loaded is not None:
                    loaded.load_seconds = time.perf_counter() - start
                    return loaded
            progress.update(phase="documents", total=ctx.collection.estimated_document_count())
            now = Positions(ctx.collection).current()  # observed before reading: see catchup.tail
            index = VectorIndex(measure=load_measure(ctx.metadata, ctx.artifacts, row["measure"]),  # a custom one: its callable
                                exact_threshold=cfg.exact_threshold, epsilon=cfg.epsilon)
            ids, vectors, fps = self._read(ctx, row, {}, progress)
            if ids:
                index.add(ids, vectors)
        finally:
            with self._loads_done:
                self._loading -= 1
                self._loads_done.notify_all()
        seconds = time.perf_counter() - start
        logger.info("loaded index %r of %s.%s: %d vectors in %.2f s", row["name"], target.database,
                    target.collection, len(ids), seconds)
        loaded = _Loaded(target, row, index, seconds, dict(zip(ids, fps)))
        self._record_sums(loaded, ids, vectors, [], start=True)
        loaded.safe.observe(now)
        loaded.rejected = rejected
        loaded.catch_up = {"mode": "documents", "read": len(ids), "rejected": rejected or None,
                           "as_of": {"position": now.seq, "now": now.seq, "behind": 0}}
        return loaded

    def _load_snapshot(self, ctx: Context, row: dict, progress: dict) -> tuple[_Loaded | None, list[dict]]:
        """The index from its latest snapshot, caught up from its position (None: no usable snapshot)."""
        from ..index import VectorIndex

        start = time.perf_counter()
        cfg = ctx.config.master
        folder = localcopy.folder(cfg.snapshot_dir)
        local = localcopy.path_for(folder, ctx.target, row) if folder is not None else None
        restored, rejected = snapshots.load(ctx.artifacts, row, local)
        if restored is None:
            return None, rejected
        index = VectorIndex(measure=load_measure(ctx.metadata, ctx.artifacts, row["measure"]),  # a custom one: its callable
                            exact_threshold=cfg.exact_threshold, epsilon=cfg.epsilon)
        try:
            index.restore_state(restored.state)
        except SemanticIndexError as exc:
            logger.warning("cannot restore the snapshot of index %r: %s; loading from the documents", row["name"], exc)
            return None, [*rejected, {"where": restored.source, "part": "state", "reason": str(exc), "at": time.time()}]
        if index.has_pending_graph:
            threading.Thread(target=self._attach_graph_when_idle, args=(index, row["name"]),
                             name="superduperdb-attach-graph", daemon=True).start()
        restored_s = time.perf_counter() - start
        manifest = restored.manifest
        loaded = _Loaded(ctx.target, row, index, restored_s, restored.fingerprints, source="snapshot")
        loaded.hashes, loaded.rejected = restored.hashes, rejected
        since = Position.from_dict(manifest.get("position"))
        loaded.safe.reset(since)
        progress.update(phase="catch-up", done=len(index))
        report = catchup.catch_up(ctx.collection, row, since, loaded.fingerprints,
                                  lambda docs, gone: self._apply(loaded, ctx, docs, gone),
                                  lambda: self._full_sync(loaded, ctx), loaded.safe, manifest.get("partitions"))
        if manifest.get("resume_token") is not None:  # the server's change stream: other programs' writes too
            ids, why = resume.changed_since(ctx.collection, manifest["resume_token"])
            replay = self._refresh(loaded, ctx, ids) if ids else {"upserted": 0, "removed": 0}
            report["change_stream"] = {"replayed": len(ids or []), **replay, "fallback": why}
        loaded.catch_up = {**report, "snapshot_age_s": time.time() - manifest["taken_at"], "restore_s": restored_s,
                           "read_s": restored.read_s, "snapshot_from": restored.source, "rejected": rejected or None}
        loaded.changes = report["upserted"] + report["removed"]
        threading.Thread(target=self._verify_digests, args=(loaded, ctx, manifest.get("store_digests")), daemon=True,
                         name="superduperdb-verify-digests").start()
        logger.info("loaded index %r from its %s snapshot (%d vectors, %.0f s old) in %.2f s; caught up: %s",
                    row["name"], restored.source, len(index), loaded.catch_up["snapshot_age_s"],
                    time.perf_counter() - start, report)
        return loaded, rejected

    def _apply(self, loaded: _Loaded, ctx: Context, docs: list[dict], gone: list) -> dict:
        """Upsert the vectors of ``docs`` (read with their output and fingerprint), remove ``gone``."""
        ids, vectors, fps = self._decode(ctx, loaded.row, docs)
        if ids:
            loaded.index.add(ids, vectors)
        removed = loaded.index.remove(gone) if gone else 0
        self._record_sums(loaded, ids, vectors, gone)
        with self._fingerprints_lock:
            loaded.fingerprints.update(zip(ids, fps))
            for i in gone:
                loaded.fingerprints.pop(i, None)
            loaded.changes += len(ids) + removed
        return {"upserted": len(ids), "removed": removed}

    def _full_sync(self, loaded: _Loaded, ctx: Context) -> dict:
        """Compare the id and fingerprint of every document with an output with the index's (no vectors read)."""
        ids, fps = self._read_fingerprints(ctx, loaded.row)
        changed = self._sync(loaded, ctx, ids, fps, None)
        return {"upserted": changed["upserted"], "removed": changed["removed"], "checked": len(ids)}

    def _read_fingerprints(self, ctx: Context, row: dict) -> tuple[list, list]:
        """``(ids, fingerprints)`` of every document with an indexed output (no vectors read)."""
        path, fp_path = indexed_path(row), fingerprint_path(row["keys"][0], row["models"][0])
        ids, fps = [], []
        for doc in ctx.collection.find({path: {"$exists": True}}, {fp_path: 1}).batch_size(LOAD_CHUNK):
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
            ctx = Context(loaded.target)
            # Apply what was written since the safe position first, so the snapshot holds it whatever
            # index jobs did (or lost): then that position is what the snapshot includes.
            catchup.tail(ctx.collection, loaded.row, loaded.fingerprints,
                         lambda docs, gone: self._apply(loaded, ctx, docs, gone),
                         lambda: self._full_sync(loaded, ctx), loaded.safe, loaded.partitions)
            self._verify(loaded, ctx)  # never save a vector that rotted in memory
            token = resume.current_token(ctx.collection)  # before the rows: a replay from it re-reads, never misses
            store_digests = digests.compute(ctx.collection).to_dict()  # before: see catchup.verify_digests
            position = loaded.safe.safe()
            if position is None:
                logger.debug("index %r: no safe write position yet (master.position_lag): snapshot later",
                             loaded.row["name"])
                return None
            with self._fingerprints_lock:  # the fingerprints first: see snapshots.dumps
                fingerprints, changes = dict(loaded.fingerprints), loaded.changes
            data = snapshots.dumps(loaded.index, fingerprints, loaded.row, position=position.to_dict(),
                                   hashes=loaded.hashes, partitions=loaded.partitions, store_digests=store_digests,
                                   resume_token=token)
            size = len(loaded.index)
            snapshots.save(ctx.artifacts, loaded.row, data, local=loaded.local_path, size=size,
                           position=position.to_dict())
            self._trim_tombstones(ctx)
            with self._fingerprints_lock:
                loaded.changes -= changes
            loaded.snapshot_due = False
            loaded.last_snapshot = {"at": time.time(), "vectors": size, "bytes": len(data),
                                    "seconds": time.perf_counter() - start, "position": position.seq}
            logger.info("saved a snapshot of index %r: %d vectors, %.1f MB in %.2f s", loaded.row["name"], size,
                        len(data) / 1e6, loaded.last_snapshot["seconds"])
            return loaded.last_snapshot

    @staticmethod
    def _trim_tombstones(ctx: Context) -> None:
        """Delete the tombstones every index's latest snapshot has passed (no catch-up needs them)."""
        try:
            now = Positions(ctx.collection).current()
            seqs = []
            for row in ctx.metadata.list("semantic_indexes"):
                info = ctx.artifacts.info_named(snapshots.snapshot_name(row)) or {}
                position = Position.from_dict(info.get("position"))
                if position is None or position.epoch != now.epoch:
                    return  # an index without a usable snapshot may still need them all
                seqs.append(position.seq)
            if seqs and min(seqs) > now.trimmed:
                Positions(ctx.collection).trim(min(seqs))
        except Exception as exc:  # noqa: BLE001 - kept for the next snapshot to trim
            logger.warning("trimming tombstones failed: %s: %s", type(exc).__name__, exc)

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
        return self._refresh(self._get(target, row), Context(target), ids)

    def _refresh(self, loaded: _Loaded, ctx: Context, ids: list) -> dict:
        found, vectors, fps = self._read(ctx, loaded.row, {"_id": {"$in": list(ids)}})
        if found:
            loaded.index.add(found, vectors)
        present = set(found)
        gone = [i for i in ids if i not in present]
        removed = loaded.index.remove(gone) if gone else 0
        self._record_sums(loaded, found, vectors, gone)
        with self._fingerprints_lock:
            loaded.fingerprints.update(zip(found, fps))
            for i in gone:
                loaded.fingerprints.pop(i, None)
            loaded.changes += len(found) + removed
        return {"upserted": len(found), "removed": removed}

    def sync(self, target: Target, row: dict, ids: list, fingerprints: list, within: list | None = None,
             partitions: list | None = None) -> dict:
        """Make the index hold exactly ``ids`` with these output fingerprints (MongoDB's present state).

        Vectors whose fingerprint differs (or is unknown) are re-read; ids the
        index holds but ``ids`` lacks are removed (only among ``within``, when
        the caller looked at those documents only, or among the ids of
        ``partitions``, when it looked at those partitions only). Returns the
        counts and the ids that changed.
        """
        loaded = self._get(target, row)
        if partitions is not None:
            within = [*(within or []), *self._held_in(loaded, partitions)]
        return self._sync(loaded, Context(target), ids, fingerprints, within)

    def _held_in(self, loaded: _Loaded, partitions: list) -> list:
        """The ids the index holds in ``partitions`` (their hashes kept for the next snapshot)."""
        wanted, hashes = set(partitions), loaded.hashes
        with self._fingerprints_lock:
            held = list(loaded.fingerprints)
        out = []
        for i in held:
            h = hashes.get(i)
            if h is None:
                h = hashes[i] = id_hash(i)
            if h % PARTITIONS in wanted:
                out.append(i)
        return out

    def _record_sums(self, loaded: _Loaded, ids: list, vectors: list, gone: list, start: bool = False) -> None:
        """Keep the checksum of each vector as read from the documents (see :meth:`verify`)."""
        if loaded.sums is None and not start:
            return  # not computed yet (restored from a snapshot): the first verify takes them all
        import numpy as np

        sums = {} if loaded.sums is None else loaded.sums
        for k in range(0, len(ids), VERIFY_CHUNK):
            block = np.stack([np.asarray(v, dtype=np.float32) for v in vectors[k:k + VERIFY_CHUNK]])
            sums.update(zip(ids[k:k + VERIFY_CHUNK], row_checksums(block).tolist()))
        for i in gone:
            sums.pop(i, None)
        loaded.sums = sums

    def _verify(self, loaded: _Loaded, ctx: Context, limit: int | None = None) -> dict:
        """Check vectors against the checksum they had when read (``limit``: at most that many, taking up where
        the last call stopped); re-read the documents of those that differ (memory that rotted). The first
        call after a restart records the checksums of the rows the snapshot's checksums vouched for."""
        start = time.perf_counter()
        with self._fingerprints_lock:
            ids = list(loaded.fingerprints)
        first = loaded.sums is None
        if limit is not None and not first and len(ids) > limit:
            at = loaded.verify_at % len(ids)
            ids = (ids[at:] + ids[:at])[:limit]
            loaded.verify_at = at + limit
        sums: dict = {} if first else loaded.sums
        bad = []
        for k in range(0, len(ids), VERIFY_CHUNK):
            held, vectors = loaded.index.vectors_of(ids[k:k + VERIFY_CHUNK])
            now = row_checksums(vectors).tolist() if held else []
            if first:
                sums.update(zip(held, now))
            else:
                bad += [i for i, c in zip(held, now) if sums.get(i, c) != c]
        loaded.sums = sums
        repaired = self._refresh(loaded, ctx, bad) if bad else {"upserted": 0, "removed": 0}
        if bad:
            logger.warning("index %r: %d vectors differed from what was read (memory rot?); re-read them: %s",
                           loaded.row["name"], len(bad), repaired)
        return {"checked": len(ids), "rotted": len(bad), "repaired": repaired["upserted"] + repaired["removed"],
                "recorded": first, "seconds": time.perf_counter() - start}

    def verify(self, target: Target, row: dict, limit: int | None = None) -> dict:
        """Check the index's vectors (``limit``: that many, in turn) against their checksums and repair those
        that rotted (see :meth:`_verify`)."""
        return self._verify(self._get(target, row), Context(target), limit)

    def _verify_digests(self, loaded: _Loaded, ctx: Context, before: dict | None) -> None:
        """After a restart, in the background: re-read the partitions whose digest differs from the snapshot's
        (other programs' writes while no master watched), and the documents no library write stamped.
        Starts once the loads in progress are done (see WARM_UP_GRACE): the first answers come first."""
        time.sleep(WARM_UP_GRACE)
        with self._loads_done:
            self._loads_done.wait_for(lambda: self._loading == 0)
        start = time.perf_counter()
        try:
            report = catchup.verify_digests(
                ctx.collection, loaded.row, Digests.from_dict(before),
                lambda ids, fps, parts: self._sync(loaded, ctx, ids, fps,
                                                   [] if parts is None else self._held_in(loaded, parts)))
        except Exception as exc:  # noqa: BLE001 - the reconciler's next pass will find the same
            logger.warning("index %r: checking the digests after the restart failed: %s", loaded.row["name"], exc)
            report = {"error": f"{type(exc).__name__}: {exc}"}
        report["seconds"] = time.perf_counter() - start
        try:
            self._verify(loaded, ctx)  # the checksums of the restored rows, recorded off the query path
        except Exception as exc:  # noqa: BLE001 - recorded at the next verify instead
            logger.warning("index %r: recording vector checksums failed: %s", loaded.row["name"], exc)
        if loaded.catch_up is not None:
            loaded.catch_up["digests"] = report
        loaded.verified.set()

    def _sync(self, loaded: _Loaded, ctx: Context, ids: list, fingerprints: list, within: list | None) -> dict:
        wanted = dict(zip(ids, fingerprints))
        with self._fingerprints_lock:
            held = loaded.fingerprints
            stale = [i for i, fp in wanted.items() if i not in held or held[i] != fp or fp is None]
            scope = held.keys() if within is None else (set(within) & held.keys())
            gone = [i for i in scope if i not in wanted]
        changed = self._refresh(loaded, ctx, stale + gone) if stale or gone else {"upserted": 0, "removed": 0}
        return {**changed, "changed": stale + gone}

    def search(self, target: Target, row: dict, vector: Any, n: int, candidates: list | None = None) -> tuple[list, list]:
        """The ``n`` nearest ids (restricted to ``candidates`` if given) and their scores."""
        loaded = self._get(target, row)
        ids, scores = loaded.index.search(vector, n, candidates=candidates)
        return ids, [float(s) for s in scores]

    def search_many(self, target: Target, row: dict, vectors: list, n: int,
                    candidates: list | None = None) -> list[tuple[list, list]]:
        """:meth:`search` for each of ``vectors`` (one call for the batch); ``(ids, scores)`` each."""
        loaded = self._get(target, row)
        if not len(vectors):
            return []
        found = loaded.index.search_batch(vectors, n, candidates=candidates)
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
        """Save a snapshot of the index (loading it first if needed) that includes every write made before
        this call; return what was written. Takes ``master.position_lag`` seconds at least: the writes still
        in flight when it is called must have landed (see :mod:`superduperdb.store.positions`).
        """
        loaded = self._get(target, row)
        ctx = Context(target)
        loaded.safe.observe(Positions(ctx.collection).current())
        # What was written before this call is safe to record ``lag`` seconds from now (see store.positions).
        time.sleep(loaded.safe.lag)
        deadline = time.monotonic() + loaded.safe.lag + 5.0
        while self._save_snapshot(index_key(target, row)) is None and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
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

    def drop(self, target: Target, row: dict, forget: bool = False) -> bool:
        """Forget the index in memory (``forget``: its snapshots too). Whether it was loaded."""
        with self._lock:
            dropped = self._indexes.pop(index_key(target, row), None) is not None
        if forget:
            snapshots.delete(Context(target).artifacts, row)
        return dropped

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
                "as_of": (loaded.catch_up or {}).get("as_of"), "snapshot_rejected": loaded.rejected or None,
                "position": getattr(loaded.safe.safe(), "seq", None),
                "snapshot": loaded.last_snapshot, "changes_since_snapshot": loaded.changes,
                "snapshot_age_s": time.time() - loaded.last_snapshot["at"] if loaded.last_snapshot else None,
                "graph_enabled": loaded.index.graph_enabled,
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

