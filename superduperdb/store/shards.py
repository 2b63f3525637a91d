"""Which shard owns which partitions, and who owns each shard: kept in MongoDB, beside the collection.

A collection's semantic indexes are split over ``N`` shards (``master.shards``)
by :mod:`~superduperdb.store.partitions`: each document's ``_id`` falls in one
of 64 virtual partitions, and ``<collection>._shards`` holds

* the **partition table**, ``{_id: 'partitions', shards: N, table: [shard of
  partition 0, ..., shard of partition 63], version}``: made on first use as
  ``p % N``; when ``N`` changes, :func:`rebalance` moves as few partitions as it
  can (never rehashing), and ``version`` grows so that shards holding the old
  layout reload;
* one **lease** per shard, ``{_id: 'lease/<i>', shard, epoch, owner, worker,
  renewed_at}``. A shard actor takes its lease with a compare-and-set on the
  epoch (:func:`take_lease`): only when it is free, already its own, held by
  the actor it replaces, held by a worker that has left the cluster, or not
  renewed for ``ttl`` seconds; every take adds one to the epoch. Answers and
  snapshots carry the epoch; a caller drops an answer whose epoch is older
  than one it has seen, and an owner whose renewal fails (:func:`renew_lease`)
  has lost the shard and stops answering. So with several clients, a lost
  worker or a restarted scheduler, each shard has one live owner.

The leases live in MongoDB, not in the Dask scheduler, because the scheduler
is what may restart.

>>> rebalance([0, 1, 0, 1], 3)   # a third shard takes one partition, the others keep theirs
[0, 1, 0, 2]
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from pymongo import ReturnDocument

from .metadata import utcnow
from .partitions import PARTITIONS, partition_of

logger = logging.getLogger(__name__)

SUFFIX = "_shards"
TABLE_ID = "partitions"


def shards_table(database: Any, collection: str) -> Any:
    """The raw ``<collection>._shards`` collection."""
    return database[f"{collection}.{SUFFIX}"]


# -- the partition table -----------------------------------------------------------------------
def rebalance(table: list[int], shards: int) -> list[int]:
    """``table`` remapped onto ``shards`` shards, moving as few partitions as possible.

    Each shard ends with ``len(table) // shards`` or one more partitions; a
    partition stays where it is unless its shard is gone or over its share.
    """
    quota = [len(table) // shards + (1 if i < len(table) % shards else 0) for i in range(shards)]
    out, count, loose = list(table), [0] * shards, []
    for p, s in enumerate(table):
        if 0 <= s < shards and count[s] < quota[s]:
            count[s] += 1
        else:
            loose.append(p)
    for p in loose:
        s = min(range(shards), key=lambda i: (count[i] - quota[i], i))
        out[p] = s
        count[s] += 1
    return out


def partition_table(coll: Any, shards: int) -> dict:
    """The partition table for ``shards`` shards (``{shards, table, version}``), made or rebalanced if needed."""
    for _ in range(10):
        doc = coll.find_one({"_id": TABLE_ID})
        if doc is None:
            fresh = {"shards": shards, "table": [p % shards for p in range(PARTITIONS)], "version": 1}
            doc = coll.find_one_and_update({"_id": TABLE_ID}, {"$setOnInsert": fresh}, upsert=True,
                                           return_document=ReturnDocument.AFTER)
        if doc["shards"] == shards:
            return {"shards": doc["shards"], "table": list(doc["table"]), "version": doc["version"]}
        moved = rebalance(list(doc["table"]), shards)
        changed = sum(a != b for a, b in zip(moved, doc["table"]))
        updated = coll.find_one_and_update({"_id": TABLE_ID, "version": doc["version"]},
                                           {"$set": {"shards": shards, "table": moved, "version": doc["version"] + 1}},
                                           return_document=ReturnDocument.AFTER)
        if updated is not None:
            logger.info("partition table of %s: %d -> %d shards, %d partitions moved", coll.name, doc["shards"],
                        shards, changed)
            return {"shards": shards, "table": list(updated["table"]), "version": updated["version"]}
    raise RuntimeError(f"could not update the partition table of {coll.name}: it keeps changing")  # pragma: no cover


def partitions_of_shard(table: list[int], shard: int) -> list[int]:
    """The partitions shard ``shard`` owns."""
    return [p for p, s in enumerate(table) if s == shard]


def route(ids: Iterable[Any], table: list[int]) -> dict[int, list]:
    """``{shard: [ids it owns]}`` (in the order given), for the shards that own any.

    >>> sorted(route(["a", "b", "c"], [0] * 64))
    [0]
    """
    out: dict[int, list] = {}
    for i in ids:
        out.setdefault(table[partition_of(i)], []).append(i)
    return out


# -- leases -------------------------------------------------------------------------------------
def lease_id(shard: int) -> str:
    return f"lease/{shard}"


def take_lease(coll: Any, shard: int, owner: str, worker: str | None, ttl: float, *, replaces: str | None = None,
               gone: Any = lambda worker: False) -> dict | None:
    """Take shard ``shard``'s lease for ``owner``; the lease (with its new ``epoch``), or None if another holds it.

    ``gone(worker)`` says whether the holder's worker has left the cluster (its lease is then free).
    """
    key = lease_id(shard)
    coll.update_one({"_id": key}, {"$setOnInsert": {"shard": shard, "epoch": 0, "owner": None}}, upsert=True)
    doc = coll.find_one({"_id": key})
    now = utcnow()
    if doc.get("owner") == owner:
        renewed = coll.find_one_and_update({"_id": key, "owner": owner, "epoch": doc["epoch"]},
                                           {"$set": {"renewed_at": now}}, return_document=ReturnDocument.AFTER)
        return renewed
    renewed_at = doc.get("renewed_at")
    free = (doc.get("owner") is None or doc.get("owner") == replaces
            or renewed_at is None or (now - renewed_at).total_seconds() > ttl or gone(doc.get("worker")))
    if not free:
        return None
    taken = coll.find_one_and_update({"_id": key, "epoch": doc["epoch"]},
                                     {"$set": {"epoch": doc["epoch"] + 1, "owner": owner, "worker": worker,
                                               "renewed_at": now, "taken_at": now}},
                                     return_document=ReturnDocument.AFTER)
    if taken is not None:
        logger.info("took the lease of shard %d of %s (epoch %d, from %s)", shard, coll.name, taken["epoch"],
                    doc.get("owner"))
    return taken


def renew_lease(coll: Any, shard: int, owner: str, epoch: int) -> bool:
    """Whether ``owner`` still holds the lease at ``epoch`` (and it is renewed now)."""
    result = coll.update_one({"_id": lease_id(shard), "owner": owner, "epoch": epoch}, {"$set": {"renewed_at": utcnow()}})
    return result.matched_count == 1


def release_lease(coll: Any, shard: int, owner: str, epoch: int) -> bool:
    """Give the lease up (it stays at ``epoch``; the next owner takes ``epoch + 1``)."""
    result = coll.update_one({"_id": lease_id(shard), "owner": owner, "epoch": epoch}, {"$set": {"owner": None}})
    return result.matched_count == 1


def epochs(coll: Any) -> dict[int, int]:
    """``{shard: epoch}`` of every lease."""
    return {d["shard"]: d["epoch"] for d in coll.find({"shard": {"$exists": True}}, {"shard": 1, "epoch": 1})}
