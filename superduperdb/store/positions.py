"""The write position of a collection: a sequence that only grows, stamped on what the library writes.

Every write made through superduperdb (the Collection's write verbs and the
jobs' output writes) takes a number from the collection's sequence and stores
it on each document it writes, under the library's reserved field::

    {"_id": ..., "text": ..., "_sdb": {"seq": 1042, "part": 17}}

``_sdb.seq`` is the sequence of the last library write of the document and
``_sdb.part`` its virtual partition (:func:`~superduperdb.store.partitions.partition_of`),
which lets a server group documents by partition (the digests of
:mod:`.digests`). A delete leaves a *tombstone* in ``<collection>._tombstones``
(``{_id: <the document's id>, seq, part}``). So "what changed since position
``p``" is one indexed range read on ``_sdb.seq`` plus one on the tombstones
(:meth:`Positions.changed_since`), whatever the size of the collection.

Placement (measured in ``bench/positions.py``, see docs/search.md): on the
documents, the number rides along with the write itself (no extra write per
document) and the range read returns the documents directly; an outbox beside
the collection costs one more write per document and a second read to fetch
the documents it names. Only deletes, whose document is gone, need a record
beside the collection: the tombstones.

The counter is one document ``{_id: 'sequence', value, epoch, trimmed}`` in
``<collection>._positions``, advanced with ``$inc``. A process takes a block of
numbers at a time (:class:`SequenceBlock`) and uses it for at most
:data:`BLOCK_SECONDS` (and a quarter of the lag below), so the cost is one round trip per block, not
per write.

In-flight writes. A number is taken before the write it stamps is stored, so
for a moment a higher number may be visible while a lower one is not yet. A
reader therefore treats a counter value ``c`` read at time ``t`` as *safe* (every
write numbered ``<= c`` is stored) only from ``t + lag`` on, where ``lag``
(``master.position_lag``) bounds how long a write may take between taking its
number and being stored (three quarters of it: a number may come from a block taken a quarter
of the lag earlier); :class:`SafePosition` keeps that book. A write slower than that is still
found by the digests.

``epoch`` names one life of the counter: a counter that was deleted and started
again gets a new epoch, so a position of the old one is recognised as lost.
``trimmed``: tombstones up to this number have been deleted (every snapshot has
passed them); a position below it cannot see those deletes and is lost too.

Examples
--------
>>> import mongomock
>>> coll = mongomock.MongoClient().db.docs
>>> positions = Positions(coll)
>>> first = positions.reserve()
>>> doc = stamp_document({"_id": 1, "x": 2}, first.seq)
>>> doc["_sdb"]["seq"] == first.seq and "_sdb" not in {"_id": 1, "x": 2}
True
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, ReturnDocument

from .layout import FINGERPRINTS, OUTPUTS, RESERVED
from .partitions import partition_of

SEQ = f"{RESERVED}.seq"
PART = f"{RESERVED}.part"
COUNTER_ID = "sequence"
BLOCK = 1000  # numbers taken at once by one process
BLOCK_SECONDS = 5.0  # a block is used for at most this long (and at most a quarter of master.position_lag)


def positions_table(collection: Any) -> Any:
    return collection.database[f"{collection.name}._positions"]


def tombstones_table(collection: Any) -> Any:
    return collection.database[f"{collection.name}._tombstones"]


@dataclass(frozen=True)
class Position:
    """A point in a collection's write sequence: ``seq`` of counter life ``epoch``.

    ``trimmed``: tombstones up to this number are gone (positions below it are lost).
    """

    epoch: str | None
    seq: int
    trimmed: int = 0

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "seq": int(self.seq)}

    @classmethod
    def from_dict(cls, data: Any) -> Position | None:
        if not isinstance(data, dict) or not isinstance(data.get("seq"), int):
            return None
        return cls(data.get("epoch"), int(data["seq"]))


def lost_reason(snapshot: Position | None, now: Position) -> str | None:
    """Why the changes since ``snapshot`` cannot be read from the sequence (None: they can).

    >>> lost_reason(Position("a", 5), Position("a", 9, trimmed=3)) is None
    True
    >>> lost_reason(Position("a", 5), Position("b", 9))
    'the write sequence was started again (epoch a -> b)'
    """
    if snapshot is None:
        return "the snapshot holds no write position"
    if snapshot.epoch != now.epoch:
        return f"the write sequence was started again (epoch {snapshot.epoch} -> {now.epoch})"
    if snapshot.seq > now.seq:
        return f"the snapshot's position {snapshot.seq} is ahead of the sequence ({now.seq})"
    if snapshot.seq < now.trimmed:
        return f"tombstones up to {now.trimmed} were trimmed, past the snapshot's position {snapshot.seq}"
    return None


def stamp_document(doc: dict, seq: int) -> dict:
    """A copy of an encoded document to insert (or a replacement) with its position and partition."""
    out = dict(doc)
    reserved = out.get(RESERVED)
    out[RESERVED] = {**(reserved if isinstance(reserved, dict) else {}), "seq": int(seq),
                     **({"part": partition_of(out["_id"])} if "_id" in out else {})}
    return out


def stamp_new(collection: Any, documents: Iterable[dict], lag: float = 30.0) -> list[dict]:
    """Copies of encoded new documents of ``collection`` stamped with a number taken now: the workers of
    ``from_dask`` (:func:`superduperdb.tasks.frames.insert_partition`); every other write is stamped by the
    write door's ``Position`` rule (:mod:`superduperdb.services.write_rules`)."""
    seq = next_seq(collection, lag)
    return [stamp_document(d, seq) for d in documents]


def _top_keys(update: dict) -> set | None:
    keys: set = set()
    for fields in update.values():
        if not isinstance(fields, dict):
            return None
        keys.update(str(k).split(".")[0] for k in fields)
        keys.update(str(v).split(".")[0] for v in fields.values() if isinstance(v, str) and "$rename" in update)
    return keys


def touches_outputs(update: Any) -> bool:
    """Whether an operator update or a replacement writes outputs or fingerprints (what indexes hold)."""
    if not isinstance(update, dict):
        return False
    if not any(str(k).startswith("$") for k in update):
        return OUTPUTS in update or FINGERPRINTS in update
    keys = _top_keys(update)
    return keys is None or bool(keys & {OUTPUTS, FINGERPRINTS})


def stamp_update(update: Any, seq: int) -> Any:
    """An operator update that also stores ``seq`` where it writes outputs (what an index holds).

    Other updates are left as they are, so that an update that changes nothing still reports
    ``modified_count == 0`` as pymongo does: they reach the indexes through the jobs they imply
    (whose output writes are stamped) or, written with ``refresh=False``, through the digests.
    Pipelines are left as they are. A document an upsert creates is stamped after the write
    (:func:`stamp_upserted`): its ``_id`` may be the server's.

    >>> stamp_update({"$set": {"_outputs.x.m": 1}}, 7)
    {'$set': {'_outputs.x.m': 1, '_sdb.seq': 7}}
    >>> stamp_update({"$set": {"a": 1}}, 7)
    {'$set': {'a': 1}}
    """
    if not isinstance(update, dict) or not update or not all(str(k).startswith("$") for k in update):
        return update
    keys = _top_keys(update)
    if keys is not None and RESERVED in keys:
        return update  # the caller manages the reserved field itself
    if not touches_outputs(update):
        return update
    return {**update, "$set": {**(update.get("$set") or {}), SEQ: int(seq)}}


def stamp_upserted(collection: Any, ids: Iterable[Any], seq: int) -> None:
    """Give the documents upserts created their position and partition."""
    for _id in ids:
        if _id is not None:
            collection.update_one({"_id": _id}, {"$set": {SEQ: int(seq), PART: partition_of(_id)}})


def stamp_replacement(replacement: dict, seq: int, old: dict | None, _id: Any = None) -> dict:
    """A replacement document with its bookkeeping: the replaced document's (``old``: its ``_id`` and
    ``_sdb``) unless it writes outputs, else a new position; on an upsert (no ``old``) a new position
    and the partition of ``_id`` (when known).
    """
    if RESERVED in replacement:
        return replacement
    if old is not None and not touches_outputs(replacement):
        return {**replacement, RESERVED: old[RESERVED]} if isinstance(old.get(RESERVED), dict) else replacement
    _id = replacement.get("_id", old.get("_id") if old is not None else _id)
    reserved = {"seq": int(seq), **({"part": partition_of(_id)} if _id is not None else {})}
    return {**replacement, RESERVED: reserved}


def pinned_id(filter: Any) -> Any:
    """The ``_id`` a filter pins by equality (None if it does not)."""
    if isinstance(filter, dict) and "_id" in filter:
        value = filter["_id"]
        if isinstance(value, dict):
            return value.get("$eq") if set(value) == {"$eq"} else None
        return value
    return None


class SequenceBlock:
    """Numbers of one collection's sequence handed out locally, a block per round trip (thread-safe)."""

    def __init__(self, collection: Any, block: int = BLOCK, seconds: float = BLOCK_SECONDS) -> None:
        self.collection = collection
        self.block, self.seconds = int(block), float(seconds)
        self._next = self._end = 0
        self._taken_at = 0.0
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            if self._next > self._end or time.monotonic() - self._taken_at > self.seconds:
                position = Positions(self.collection).reserve(self.block)
                self._next, self._end = position.seq - self.block + 1, position.seq
                self._taken_at = time.monotonic()
            seq = self._next
            self._next += 1
            return seq


_BLOCKS: dict[tuple, SequenceBlock] = {}
_BLOCKS_LOCK = threading.Lock()


def next_seq(collection: Any, lag: float = 30.0) -> int:
    """A new number of ``collection``'s sequence (from this process's current block).

    ``lag``: the readers' ``master.position_lag``; a block is used for at most a quarter of it, so that
    a write that took its number from an old block is still within the lag (see the module docstring).
    """
    db = collection.database
    seconds = min(BLOCK_SECONDS, float(lag) / 4)
    key = (id(db.client), db.name, collection.name, seconds)
    with _BLOCKS_LOCK:
        block = _BLOCKS.get(key)
        if block is None or block.collection.database.client is not db.client:
            block = _BLOCKS[key] = SequenceBlock(collection, seconds=seconds)
    return block.take()


class Positions:
    """The sequence counter and the tombstones of one (raw) collection."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection
        self.table = positions_table(collection)
        self.tombstones = tombstones_table(collection)

    # -- the counter ------------------------------------------------------------------
    def reserve(self, count: int = 1) -> Position:
        """Take ``count`` numbers; the returned position is the highest of them."""
        row = self.table.find_one_and_update(
            {"_id": COUNTER_ID}, {"$inc": {"value": int(count)},
                                  "$setOnInsert": {"epoch": uuid.uuid4().hex, "trimmed": 0}},
            upsert=True, return_document=ReturnDocument.AFTER)
        return Position(row["epoch"], int(row["value"]), int(row.get("trimmed") or 0))

    def current(self) -> Position:
        """The counter now (created if missing: a new epoch)."""
        row = self.table.find_one({"_id": COUNTER_ID})
        if row is None:
            return self.reserve(0)
        return Position(row.get("epoch"), int(row.get("value") or 0), int(row.get("trimmed") or 0))

    def ensure_indexes(self) -> None:
        """Indexes that make the range reads cheap (idempotent)."""
        self.collection.create_index([(SEQ, ASCENDING)], name="_sdb_seq")
        self.collection.create_index([(PART, ASCENDING)], name="_sdb_part")
        self.tombstones.create_index([("seq", ASCENDING)], name="seq")

    # -- tombstones ---------------------------------------------------------------------
    def tombstone(self, ids: Iterable[Any], seq: int) -> int:
        """Record that ``ids`` were deleted at ``seq``."""
        from pymongo import UpdateOne

        from .bulk import bulk_write

        ops = [UpdateOne({"_id": i}, {"$set": {"seq": int(seq), "part": partition_of(i)}}, upsert=True) for i in ids]
        if ops:
            bulk_write(self.tombstones, ops, ordered=False)
        return len(ops)

    def trim(self, upto: int) -> int:
        """Delete the tombstones numbered ``<= upto`` (every reader has passed them); return how many."""
        removed = self.tombstones.delete_many({"seq": {"$lte": int(upto)}}).deleted_count
        self.table.update_one({"_id": COUNTER_ID}, {"$max": {"trimmed": int(upto)}})
        return removed

    # -- range reads ----------------------------------------------------------------------
    def changed_since(self, seq: int, projection: dict | None = None,
                      partitions: Iterable[int] | None = None) -> tuple[list[dict], list[Any]]:
        """``(documents written after seq, ids deleted after seq)``, in the given partitions (None: all)."""
        query: dict = {SEQ: {"$gt": int(seq)}}
        dead: dict = {"seq": {"$gt": int(seq)}}
        if partitions is not None:
            parts = sorted(set(partitions))
            query[PART] = dead["part"] = {"$in": parts}
        docs = list(self.collection.find(query, projection))
        gone = [t["_id"] for t in self.tombstones.find(dead, {"_id": 1})]
        return docs, gone


class SafePosition:
    """Which counter value a reader may call safe, given ``lag`` (see the module docstring).

    Record each value read with :meth:`observe` *before* reading the changes up to it; once a
    read that started ``lag`` seconds or more after an observation has completed, that
    observation is :meth:`safe`.
    """

    def __init__(self, base: Position | None, lag: float) -> None:
        self.lag = float(lag)
        self._safe = base
        self._seen: deque[tuple[float, Position]] = deque()
        self._lock = threading.Lock()

    def observe(self, position: Position) -> None:
        with self._lock:
            if self._seen and self._seen[-1][1] == position:
                return
            self._seen.append((time.monotonic(), position))
            while len(self._seen) > 256:
                self._seen.popleft()

    def read_completed(self, started: float) -> None:
        """A read of the changes that began at monotonic time ``started`` has been applied."""
        with self._lock:
            while self._seen and self._seen[0][0] <= started - self.lag:
                _, position = self._seen.popleft()
                if self._safe is None or position.epoch != self._safe.epoch or position.seq >= self._safe.seq:
                    self._safe = position

    def ripe(self, now: float) -> bool:
        """Whether a read beginning at monotonic time ``now`` would make an observation safe."""
        with self._lock:
            return bool(self._seen) and self._seen[0][0] <= now - self.lag

    def reset(self, base: Position | None) -> None:
        with self._lock:
            self._safe = base
            self._seen.clear()

    def safe(self) -> Position | None:
        with self._lock:
            return self._safe
