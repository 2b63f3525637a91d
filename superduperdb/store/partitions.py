"""Virtual partitions of a collection: a stable hash of ``_id`` into :data:`PARTITIONS` buckets.

One function says which partition a document belongs to, so that every
process (clients, workers, shard actors, the reconciler) agrees without
talking: shards own sets of partitions, snapshots say which partitions they
cover, and the digests that find other programs' writes are kept per
partition. Moving partitions between shards (never rehashing) is how shards
are added or removed; the number of partitions itself never changes.

The hash is BLAKE2b over a canonical BSON encoding of the ``_id``, so it is
the same across processes, restarts, machines and Python versions (Python's
own ``hash`` of a ``str`` is salted per process). Ids that MongoDB treats as
equal hash alike: an integral ``float`` or ``Int64`` is encoded as the
``int`` it equals (``1``, ``1.0`` and ``Int64(1)`` name one document).

>>> partition_of("a") == partition_of("a")
True
>>> partition_of(1) == partition_of(1.0)
True
>>> 0 <= partition_of(ObjectId("65a000000000000000000000")) < PARTITIONS
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import bson
from bson import ObjectId  # noqa: F401 - used by the doctests

#: How many virtual partitions every collection is split into (fixed: changing it rehashes everything).
PARTITIONS = 64


def _canonical(value: Any) -> Any:
    """``value`` with numbers written one way (what MongoDB compares equal encodes alike)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int):  # Int64 is an int subclass
        return int(value)
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def id_hash(_id: Any) -> int:
    """A stable unsigned 64-bit hash of a document id.

    >>> id_hash("a") == id_hash("a") and id_hash("a") != id_hash("b")
    True
    """
    data = bson.encode({"": _canonical(_id)})
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def partition_of(_id: Any, partitions: int = PARTITIONS) -> int:
    """The partition (``0 <= p < partitions``) document ``_id`` belongs to."""
    return id_hash(_id) % partitions


def partitions_of(ids: Iterable[Any], partitions: int = PARTITIONS) -> list[int]:
    """:func:`partition_of` of each id, in order.

    >>> partitions_of(["a", "a"]) == [partition_of("a")] * 2
    True
    """
    return [partition_of(i, partitions) for i in ids]
