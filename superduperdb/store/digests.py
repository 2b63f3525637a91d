"""Per-partition digests of a collection: how other programs' writes are found without reading everything.

A digest of partition ``p`` is ``(count, hash sum)`` over the documents stamped
``_sdb.part == p`` (:mod:`.positions`): the number of documents and the sum,
modulo ``2**62``, of a hash of each whole document. Any insert, delete or
update in ``p`` changes it. Documents that no library write has stamped
(inserted by another program) are counted apart (``unstamped``). Comparing two
digests of one collection says which partitions changed in between
(:meth:`Digests.differ`), so a reader re-reads those partitions only; where
nothing changed, nothing is read.

Who computes them (:func:`compute`), cheapest first:

* **the embedded store** (``mongomock://``) keeps them itself, incrementally:
  every write marks its document, and a digest re-hashes only the documents
  written since the last one (the first digest of a process hashes all). No
  document is copied or read through a cursor;
* **a MongoDB server** (7.0+) computes them in one aggregation, grouping by
  ``_sdb.part`` and summing ``$toHashedIndexKey`` of each document: the
  client reads 65 rows. (Written to MongoDB's documentation; the servers
  installed here cannot run it, so it is tried once per client and, if
  refused, the next way is used);
* **any other server** (CongoDB, older MongoDB): the client streams every
  document and hashes it (``documents_read`` says so). Correct, but as costly
  as reading the collection.

Digests of different sources (``source``) never compare equal: each source
hashes differently.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import bson

from .layout import RESERVED
from .partitions import PARTITIONS

logger = logging.getLogger(__name__)

MOD = 1 << 62  # hash sums stay below BSON's int64
LAST_PASS = "reconcile.digests"  # the digests at the reconciler's last full pass (a row of <collection>._meta)


def forget_last_pass(metadata: Any) -> None:
    """Have the reconciler's next full pass check every partition (as a first pass does): for changes the
    digests cannot see, such as failure records cleared (``clear_errors``), whose documents did not change."""
    metadata.table("meta").delete_one({"name": LAST_PASS})
_REFUSED: set[int] = set()  # clients whose server refused the aggregation
_REFUSED_LOCK = threading.Lock()


def doc_hash(doc: dict) -> int:
    """A 62-bit hash of a whole document (its BSON encoding)."""
    return int.from_bytes(hashlib.blake2b(bson.encode(doc), digest_size=8).digest(), "little") % MOD


def stamped_part(doc: Any) -> int | None:
    """The partition a document is stamped with (None: unstamped)."""
    reserved = doc.get(RESERVED) if isinstance(doc, dict) else None
    part = reserved.get("part") if isinstance(reserved, dict) else None
    return part if isinstance(part, int) and not isinstance(part, bool) and 0 <= part < PARTITIONS else None


@dataclass
class Digests:
    """Digests of one collection at one moment.

    ``buckets``: ``{partition: [count, hash sum]}`` of stamped documents; ``unstamped``: how many
    documents carry no partition (``unstamped_ids``: which, when the store can say cheaply).
    """

    source: str
    buckets: dict[int, list[int]] = field(default_factory=dict)
    unstamped: int = 0
    unstamped_ids: list | None = None
    documents_read: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """Plain data (partitions as strings: BSON and JSON keys)."""
        return {"source": self.source, "buckets": {str(p): list(v) for p, v in sorted(self.buckets.items())},
                "unstamped": self.unstamped}

    @classmethod
    def from_dict(cls, data: Any) -> Digests | None:
        if not isinstance(data, dict) or not isinstance(data.get("buckets"), dict):
            return None
        return cls(str(data.get("source")), {int(p): [int(v[0]), int(v[1])] for p, v in data["buckets"].items()},
                   int(data.get("unstamped") or 0))

    def differ(self, before: Digests | None) -> list[int]:
        """The partitions whose digest differs from ``before`` (all when there is none to compare with).

        >>> a = Digests("x", {1: [2, 5]}); b = Digests("x", {1: [2, 5], 3: [1, 9]})
        >>> b.differ(a), a.differ(a), len(a.differ(None))
        ([3], [], 64)
        """
        if before is None or before.source != self.source:
            return list(range(PARTITIONS))
        return [p for p in range(PARTITIONS) if self.buckets.get(p) != before.buckets.get(p)]


def _server_digests(collection: Any) -> Digests:
    pipeline = [{"$group": {"_id": f"${RESERVED}.part", "n": {"$sum": 1},
                            "h": {"$sum": {"$abs": {"$mod": [{"$toHashedIndexKey": "$$ROOT"}, 2 ** 31 - 1]}}}}}]
    out = Digests("aggregate")
    for row in collection.aggregate(pipeline):
        part = row["_id"]
        if isinstance(part, int) and 0 <= part < PARTITIONS:
            out.buckets[part] = [int(row["n"]), int(row["h"]) % MOD]
        else:
            out.unstamped += int(row["n"])
    return out


def _streamed_digests(collection: Any) -> Digests:
    out = Digests("stream", unstamped_ids=[])
    for doc in collection.find({}).batch_size(1000):
        out.documents_read += 1
        part = stamped_part(doc)
        if part is None:
            out.unstamped += 1
            out.unstamped_ids.append(doc.get("_id"))
            continue
        count, total = out.buckets.get(part, (0, 0))
        out.buckets[part] = [count + 1, (total + doc_hash(doc)) % MOD]
    return out


def compute(collection: Any) -> Digests:
    """The digests of ``collection`` now, by the cheapest way its store offers (see the module docstring)."""
    start = time.perf_counter()
    store = getattr(collection, "_store", None)
    if hasattr(store, "digests"):  # the embedded store keeps them
        out = store.digests()
    else:
        client = id(collection.database.client)
        out = None
        if client not in _REFUSED:
            try:
                out = _server_digests(collection)
            except Exception as exc:  # noqa: BLE001 - an older server, or a stand-in: stream instead
                logger.info("the server cannot compute digests (%s: %s); computing them from the documents",
                            type(exc).__name__, exc)
                with _REFUSED_LOCK:
                    _REFUSED.add(client)
        if out is None:
            out = _streamed_digests(collection)
    out.seconds = time.perf_counter() - start
    return out


class DigestTracker:
    """Digests kept by a store that sees every write (the embedded store): re-hashes only what changed.

    The store calls :meth:`touched` with each written (or deleted) key; :meth:`digests` folds them in.
    """

    def __init__(self) -> None:
        self._ready = False
        self._dirty: set = set()
        self._entries: dict[Any, tuple[int | None, int]] = {}  # key -> (partition or None, hash)
        self._buckets: dict[int, list[int]] = {}
        self._unstamped: set = set()
        self._lock = threading.Lock()

    def touched(self, key: Any) -> None:
        if self._ready:
            self._dirty.add(key)

    def reset(self) -> None:
        with self._lock:
            self._ready, self._dirty, self._entries, self._buckets, self._unstamped = False, set(), {}, {}, set()

    def digests(self, documents: dict) -> Digests:
        """Fold in the writes since the last call (``documents``: the store's key -> document map)."""
        with self._lock:
            if not self._ready:
                self._ready = True
                keys: Any = list(documents)
            else:
                keys, self._dirty = self._dirty, set()
            for key in keys:
                old = self._entries.pop(key, None)
                if old is not None:
                    self._fold(old, -1, key)
                doc = documents.get(key)
                if doc is not None:
                    entry = (stamped_part(doc), doc_hash(doc))
                    self._entries[key] = entry
                    self._fold(entry, 1, key)
            return Digests("embedded", {p: list(v) for p, v in self._buckets.items() if v[0]},
                           len(self._unstamped), [documents[k].get("_id") for k in self._unstamped if k in documents])

    def _fold(self, entry: tuple[int | None, int], sign: int, key: Any) -> None:
        part, h = entry
        if part is None:
            (self._unstamped.add if sign > 0 else self._unstamped.discard)(key)
            return
        bucket = self._buckets.setdefault(part, [0, 0])
        bucket[0] += sign
        bucket[1] = (bucket[1] + sign * h) % MOD
