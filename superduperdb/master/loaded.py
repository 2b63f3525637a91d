"""One semantic index of one shard, in memory: its vectors, what they were computed from, and how it changes.

A :class:`LoadedIndex` is what a shard actor (:mod:`.actor`) holds per index:
the :class:`~superduperdb.index.VectorIndex` of the shard's partitions, the
fingerprint of each vector (what its output was computed from), its write
position (:class:`~superduperdb.store.positions.SafePosition`: what a snapshot
of it may record), the checksum of each vector as read (memory that rots is
found, never saved), and who it is (shard, partitions, lease epoch, partition
table version).

Every change goes through three doors, all restricted to the shard's own
partitions: :meth:`LoadedIndex.apply` (documents already read, from a catch-up),
:meth:`LoadedIndex.refresh` (ids to re-read) and :meth:`LoadedIndex.sync` (the
collection's present ids and fingerprints, from a full resync, the digests or
the reconciler). Reading documents (:func:`read`, :func:`decode`) is here too:
a shard reads only documents stamped with its partitions (``_sdb.part``),
plus those no library write stamped, which it filters by the hash of their
``_id``.

Threading: any number of callers (the actor's thread, the load and digest
threads, the snapshotter); :attr:`LoadedIndex.lock` guards the fingerprints,
checksums and counters, the index has its own lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from ..config import redact
from ..errors import SemanticIndexError
from ..index.checksums import row_checksums
from ..store.context import Context
from ..store.layout import MISSING, get_path
from ..store.partitions import PARTITIONS, id_hash, partition_of
from ..store.positions import PART, SafePosition
from ..store.semantic_indexes import IndexView
from ..types import npy
from . import localcopy
from .filters import FilterFields, extract
from .filters import projection as fields_projection

logger = logging.getLogger(__name__)

LOAD_CHUNK = 5000
VERIFY_CHUNK = 8192


def owned(layout: tuple | None) -> frozenset | None:
    """The partitions a ``(version, partitions)`` layout gives a shard (None: every one)."""
    if layout is None or len(layout[1]) >= PARTITIONS:
        return None
    return frozenset(layout[1])


def scoped(query: dict, partitions: frozenset | None) -> dict:
    """``query`` restricted to documents stamped with ``partitions`` or not stamped at all (None: unchanged).

    >>> scoped({}, frozenset({2, 1}))
    {'$and': [{}, {'$or': [{'_sdb.part': {'$in': [1, 2]}}, {'_sdb.part': {'$exists': False}}]}]}
    """
    if partitions is None:
        return query
    return {"$and": [query, {"$or": [{PART: {"$in": sorted(partitions)}}, {PART: {"$exists": False}}]}]}


def decode(ctx: Context, row: dict, docs: Iterable[dict], partitions: frozenset | None = None,
           progress: dict | None = None, values: list | None = None) -> tuple[list, list, list]:
    """``(ids, vectors, fingerprints)`` of documents read with their indexed output and fingerprint (those
    whose ``_id`` falls in ``partitions``, if given); ``values``: a list given the filter-field values of each."""
    view = IndexView.of(row)
    path, fp_path = view.path, view.fingerprint_path
    fields = view.filter_fields
    ids, vectors, fps = [], [], []
    for doc in docs:
        if partitions is not None and partition_of(doc["_id"]) not in partitions:
            continue
        value = get_path(doc, path)
        ids.append(doc["_id"])
        fp = get_path(doc, fp_path)
        fps.append(None if fp is MISSING else fp)  # no fingerprint: always re-read
        if values is not None:
            values.append(extract(doc, fields))
        vector = _npy_vector(value)
        vectors.append(vector if vector is not None else _as_vector(ctx.types.decode(value)))
        if progress is not None and len(ids) % LOAD_CHUNK == 0:
            progress["done"] = len(ids)
    return ids, vectors, fps


def read(ctx: Context, row: dict, query: dict, partitions: frozenset | None = None,
         progress: dict | None = None, values: list | None = None) -> tuple[list, list, list]:
    """``(ids, vectors, fingerprints)`` of the documents matching ``query`` that have an indexed output (and
    whose ``_id`` falls in ``partitions``, if given: one read of those partitions and the unstamped documents);
    ``values``: a list given the filter-field values of each."""
    view = IndexView.of(row)
    cursor = ctx.collection.find(scoped({"$and": [query, view.has_output]}, partitions), view.reads)
    return decode(ctx, row, cursor.batch_size(LOAD_CHUNK), partitions, progress, values)


def read_fingerprints(ctx: Context, row: dict, partitions: frozenset | None = None) -> tuple[list, list]:
    """``(ids, fingerprints)`` of every document with an indexed output (in ``partitions``; no vectors read)."""
    view = IndexView.of(row)
    fp_path = view.fingerprint_path
    ids, fps = [], []
    cursor = ctx.collection.find(scoped(view.has_output, partitions), {fp_path: 1})
    for doc in cursor.batch_size(LOAD_CHUNK):
        if partitions is not None and partition_of(doc["_id"]) not in partitions:
            continue
        ids.append(doc["_id"])
        fp = get_path(doc, fp_path)
        fps.append(None if fp is MISSING else fp)
    return ids, fps


class LoadedIndex:
    """One index of one shard in memory (see the module docstring).

    Parameters
    ----------
    ctx : Context
        The one context of the index's collection (its database handle and resolved config), opened when the
        index loads and used by every call on it.
    row : dict
        The index's metadata row.
    index : VectorIndex
    seconds : float
        How long loading took.
    fingerprints : dict
        ``{id: fingerprint}`` of the vectors held.
    source : str
        ``'database'`` or ``'snapshot'``.
    shard : dict
        ``{shard, shards, owner, worker}`` of the actor holding it.
    layout : tuple, optional
        ``(partition table version, the shard's partitions)`` (None: one shard, every partition).
    epoch : int
        The shard's lease epoch when it loaded (0: in-process, no lease).
    """

    def __init__(self, ctx: Context, row: dict, index: Any, seconds: float, fingerprints: dict,
                 source: str = "database", shard: dict | None = None, layout: tuple | None = None,
                 epoch: int = 0) -> None:
        self.ctx, self.target, self.row, self.index, self.load_seconds = ctx, ctx.target, row, index, seconds
        self.view = IndexView.of(row)
        self.fingerprints = fingerprints
        self.shard = dict(shard or {"shard": 0, "shards": 1})
        self.version = layout[0] if layout is not None else None  # of the partition table it was loaded with
        self.partitions = owned(layout)  # None: every partition
        self.epoch = epoch
        self.source = source
        self.catch_up: dict | None = None  # what loading re-read (and, later, what the digests found)
        cfg = ctx.config.master
        self.snapshot_interval = float(cfg.snapshot_interval)
        self.snapshot_changes = int(cfg.snapshot_changes)
        self.lock = threading.Lock()  # fingerprints, sums, changes
        self.changes = 0  # vectors upserted or removed since the last snapshot
        self.snapshot_due = source == "database"  # loaded the slow way: save one soon
        self.snapshot_attempt = time.monotonic()
        self.last_snapshot: dict | None = None
        self.taken_at: float | None = None  # when the snapshot the index holds was taken (loaded or saved)
        self.wanted: dict[int, float] = {}  # positions a snapshot was asked to include -> when (monotonic)
        self.saving = threading.Lock()
        # The write position (superduperdb.store.positions): what a snapshot of this index may record.
        self.safe = SafePosition(None, float(cfg.position_lag))
        self.hashes: dict = {}  # id -> id_hash(id), for the snapshot's partitions and digests
        self.rejected: list[dict] = []  # snapshots that failed a check when this index loaded
        self.local_path = self.local_path_for(ctx, row, self.partitions)
        self.verified = threading.Event()  # set once the digests were checked after a restart
        self.sums: dict | None = None  # id -> checksum of its vector as read (None: not computed yet)
        self.verify_at = 0  # where the next partial verify starts
        # The filter fields' values of each document held (None: the index has none), see .filters.
        self.filter = FilterFields(row["filter_fields"]) if row.get("filter_fields") else None

    @staticmethod
    def local_path_for(ctx: Context, row: dict, partitions: frozenset | None) -> Any:
        """Where this worker keeps its local copy of the shard's snapshot of ``row`` (None: no local copies)."""
        folder = localcopy.folder(ctx.config.master.snapshot_dir)
        return localcopy.path_for(folder, ctx.target, row, partitions) if folder is not None else None

    @property
    def name(self) -> str:
        return self.row["name"]

    # -- ownership ----------------------------------------------------------------------
    def own(self, ids: Iterable) -> list:
        """The ids among ``ids`` whose partition this shard owns."""
        if self.partitions is None:
            return list(ids)
        return [i for i in ids if partition_of(i) in self.partitions]

    def held_in(self, partitions: Iterable[int]) -> list:
        """The ids the index holds in ``partitions`` (their hashes kept for the next snapshot)."""
        wanted, hashes = set(partitions), self.hashes
        with self.lock:
            held = list(self.fingerprints)
        out = []
        for i in held:
            h = hashes.get(i)
            if h is None:
                h = hashes[i] = id_hash(i)
            if h % PARTITIONS in wanted:
                out.append(i)
        return out

    # -- the three doors ------------------------------------------------------------------
    def _changed(self, ids: list, vectors: list, fps: list, gone: list, values: list | None = None) -> dict:
        if ids:
            self.index.add(ids, vectors)
        removed = self.index.remove(gone) if gone else 0
        if self.filter is not None:
            if values is not None:
                self.filter.put_many(ids, values)
            self.filter.remove(gone)
        self.record_sums(ids, vectors, gone)
        with self.lock:
            self.fingerprints.update(zip(ids, fps))
            for i in gone:
                self.fingerprints.pop(i, None)
            self.changes += len(ids) + removed
        return {"upserted": len(ids), "removed": removed, "shard": self.shard["shard"]}

    def apply(self, docs: list[dict], gone: list) -> dict:
        """Upsert the vectors of ``docs`` (read with their output and fingerprint), remove ``gone`` (own only)."""
        values: list | None = [] if self.filter is not None else None
        ids, vectors, fps = decode(self.ctx, self.row, docs, self.partitions, values=values)
        return self._changed(ids, vectors, fps, self.own(gone), values)

    def refresh(self, ids: list) -> dict:
        """Re-read ``ids`` (those this shard owns): upsert those with outputs, remove the others."""
        ids = self.own(ids)
        if not ids:
            return {"upserted": 0, "removed": 0, "shard": self.shard["shard"]}
        values: list | None = [] if self.filter is not None else None
        found, vectors, fps = read(self.ctx, self.row, {"_id": {"$in": list(ids)}}, values=values)
        present = set(found)
        return self._changed(found, vectors, fps, [i for i in ids if i not in present], values)

    def sync(self, ids: list, fingerprints: list, within: list | None = None,
             partitions: Iterable[int] | None = None) -> dict:
        """Make the index hold exactly ``ids`` with these fingerprints (the present state of the documents looked
        at): vectors whose fingerprint differs (or is unknown) are re-read; ids held but missing from ``ids`` are
        removed, only among ``within`` and the ids held in ``partitions`` when the caller looked at those only.
        Only the ids this shard owns are looked at. Returns the counts and the ids that changed."""
        if self.partitions is not None:
            keep = [j for j, i in enumerate(ids) if partition_of(i) in self.partitions]
            ids, fingerprints = [ids[j] for j in keep], [fingerprints[j] for j in keep]
        if partitions is not None:
            within = [*(within or []), *self.held_in(partitions)]
        wanted = dict(zip(ids, fingerprints))
        with self.lock:
            held = self.fingerprints
            stale = [i for i, fp in wanted.items() if i not in held or held[i] != fp or fp is None]
            scope = held.keys() if within is None else (set(within) & held.keys())
            gone = [i for i in scope if i not in wanted]
        changed = self.refresh(stale + gone) if stale or gone else {"upserted": 0, "removed": 0}
        return {**changed, "changed": stale + gone}

    def full_sync(self) -> dict:
        """Compare the id and fingerprint of every document of the shard with an output with the index's."""
        ids, fps = read_fingerprints(self.ctx, self.row, self.partitions)
        changed = self.sync(ids, fps)
        if self.filter is not None:  # the values may have changed with the fingerprints the same
            self.refresh_fields(scoped({}, self.partitions))
        return {"upserted": changed["upserted"], "removed": changed["removed"], "checked": len(ids)}

    def refresh_fields(self, query: dict) -> int:
        """Re-read the filter-field values of the held documents matching ``query`` (updates that changed only
        them carry no new position: the digests find them after a restart). Returns how many were read."""
        if self.filter is None:
            return 0
        fields = self.filter.fields
        held = set(self.fingerprints)
        docs = [d for d in self.ctx.collection.find(query, fields_projection(fields)) if d["_id"] in held]
        self.filter.put_many([d["_id"] for d in docs], [extract(d, fields) for d in docs])
        return len(docs)

    # -- checksums (memory that rots) ------------------------------------------------------------
    def record_sums(self, ids: list, vectors: list, gone: list, start: bool = False) -> None:
        """Keep the checksum of each vector as read from the documents (see :meth:`verify`)."""
        if self.sums is None and not start:
            return  # not computed yet (restored from a snapshot): the first verify takes them all
        import numpy as np

        sums = {} if self.sums is None else self.sums
        for k in range(0, len(ids), VERIFY_CHUNK):
            block = np.stack([np.asarray(v, dtype=np.float32) for v in vectors[k:k + VERIFY_CHUNK]])
            sums.update(zip(ids[k:k + VERIFY_CHUNK], row_checksums(block).tolist()))
        for i in gone:
            sums.pop(i, None)
        self.sums = sums

    def verify(self, limit: int | None = None) -> dict:
        """Check vectors against the checksum they had when read (``limit``: at most that many, taking up where
        the last call stopped); re-read the documents of those that differ (memory that rotted). The first
        call after a restart records the checksums of the rows the snapshot's checksums vouched for."""
        start = time.perf_counter()
        with self.lock:
            ids = list(self.fingerprints)
        first = self.sums is None
        if limit is not None and not first and len(ids) > limit:
            at = self.verify_at % len(ids)
            ids = (ids[at:] + ids[:at])[:limit]
            self.verify_at = at + limit
        sums: dict = {} if first else self.sums
        bad = []
        for k in range(0, len(ids), VERIFY_CHUNK):
            held, vectors = self.index.vectors_of(ids[k:k + VERIFY_CHUNK])
            now = row_checksums(vectors).tolist() if held else []
            if first:
                sums.update(zip(held, now))
            else:
                bad += [i for i, c in zip(held, now) if sums.get(i, c) != c]
        self.sums = sums
        repaired = self.refresh(bad) if bad else {"upserted": 0, "removed": 0}
        if bad:
            logger.warning(
                "index %r (shard %d): %d vectors differed from what was read (memory rot?); re-read them: %s",
                self.name, self.shard["shard"], len(bad), repaired)
        return {"checked": len(ids), "rotted": len(bad), "repaired": repaired["upserted"] + repaired["removed"],
                "recorded": first, "seconds": time.perf_counter() - start, "shard": self.shard["shard"]}

    # -- what it says of itself ----------------------------------------------------------------------
    def stats(self, warm: bool = True) -> dict:
        t = self.target
        # Stats are returned by index jobs, whose records store them: the URI is shown redacted.
        return {"index": self.name, "collection": f"{t.database}.{t.collection}", "uri": redact(t.uri),
                "load_seconds": self.load_seconds, "source": self.source, "catch_up": self.catch_up,
                "as_of": (self.catch_up or {}).get("as_of"), "snapshot_rejected": self.rejected or None,
                "position": getattr(self.safe.safe(), "seq", None),
                "snapshot": self.last_snapshot, "changes_since_snapshot": self.changes,
                "snapshot_age_s": time.time() - self.last_snapshot["at"] if self.last_snapshot else None,
                "snapshot_taken_at": self.taken_at,
                "graph_enabled": self.index.graph_enabled, "filter_fields": self.row.get("filter_fields") or [],
                **self.shard, "epoch": self.epoch,
                "partitions": PARTITIONS if self.partitions is None else len(self.partitions),
                "warm": warm, **self.index.stats()}


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
