"""Saving a shard's snapshot of an index, and trimming the tombstones every snapshot has passed.

A shard actor's :class:`~superduperdb.master.snapshots.Snapshotter` asks
:func:`due` which of its indexes to save and calls :func:`save` for each. A
save first applies what was written since the index's safe position over the
shard's partitions (:func:`~superduperdb.master.catchup.tail`: the snapshot then
includes that position whatever the index jobs did), checks every vector
against its checksum (memory that rotted is re-read, never saved), and only
then writes the snapshot with the shard's identity (shard, epoch, partitions,
table version). The actor confirms its lease in MongoDB right before
(:meth:`~superduperdb.master.fencing.Fence.confirm`): a stale owner does not write.

Tombstones are trimmed (:func:`trim_tombstones`) up to the lowest position
that the newest snapshot of every shard of every index records: no catch-up
needs them any more.
"""

from __future__ import annotations

import logging
import time

from ..store import digests
from ..store.context import Context
from ..store.positions import Position, Positions
from ..store.shards import TABLE_ID, shards_table
from . import catchup, resume, snapshots
from .loaded import LoadedIndex

logger = logging.getLogger(__name__)


def due(indexes: list[tuple[str, LoadedIndex]]) -> list[str]:
    """The keys of the ``(key, index)`` pairs whose snapshot should be saved now."""
    now = time.monotonic()
    out = []
    for key, loaded in indexes:
        if loaded.snapshot_interval <= 0 or loaded.saving.locked():
            continue
        since = now - loaded.snapshot_attempt
        if since < snapshots.MIN_GAP or not (loaded.changes > 0 or loaded.snapshot_due):
            continue
        if loaded.snapshot_due or since >= loaded.snapshot_interval or loaded.changes >= loaded.snapshot_changes:
            out.append(key)
    return out


def save(loaded: LoadedIndex) -> dict | None:
    """Save the shard's snapshot of ``loaded`` (see the module docstring); what was written, or None (no safe
    position yet, or a newer owner's snapshot exists)."""
    with loaded.saving:
        loaded.snapshot_attempt = time.monotonic()
        start = time.perf_counter()
        ctx = loaded.ctx
        # Apply what was written since the safe position first, so the snapshot holds it whatever
        # index jobs did (or lost): then that position is what the snapshot includes.
        catchup.tail(ctx.collection, loaded.row, loaded.fingerprints, loaded.apply, loaded.full_sync, loaded.safe,
                     loaded.partitions)
        loaded.verify()  # never save a vector that rotted in memory
        token = resume.current_token(ctx.collection)  # before the rows: a replay from it re-reads, never misses
        store_digests = digests.compute(ctx.collection).to_dict()  # before: see catchup.verify_digests
        position = loaded.safe.safe()
        if position is None:
            logger.debug("index %r: no safe write position yet (master.position_lag): snapshot later", loaded.name)
            return None
        with loaded.lock:  # the fingerprints first: see snapshots.dumps
            fingerprints, changes = dict(loaded.fingerprints), loaded.changes
        identity = {**loaded.shard, "epoch": loaded.epoch, "version": loaded.version}
        data = snapshots.dumps(loaded.index, fingerprints, loaded.row, position=position.to_dict(),
                               hashes=loaded.hashes, partitions=loaded.partitions, store_digests=store_digests,
                               shard=identity, resume_token=token, fields=loaded.filter)
        size = len(loaded.index)
        snapshots.save(ctx.artifacts, loaded.row, data, loaded.partitions, local=loaded.local_path, size=size,
                       position=position.to_dict(), epoch=loaded.epoch)
        trim_tombstones(ctx)
        with loaded.lock:
            loaded.changes -= changes
        loaded.snapshot_due = False
        loaded.taken_at = time.time()
        loaded.last_snapshot = {"at": loaded.taken_at, "vectors": size, "bytes": len(data),
                                "seconds": time.perf_counter() - start, "position": position.seq,
                                "epoch": loaded.epoch}
        logger.info("saved a snapshot of index %r (shard %d): %d vectors, %.1f MB in %.2f s", loaded.name,
                    loaded.shard["shard"], size, len(data) / 1e6, loaded.last_snapshot["seconds"])
        return loaded.last_snapshot


def trim_tombstones(ctx: Context) -> None:
    """Delete the tombstones the newest snapshot of every shard of every index has passed."""
    try:
        now = Positions(ctx.collection).current()
        layout = shards_table(ctx.db, ctx.target.collection).find_one({"_id": TABLE_ID})
        seqs: list[int] = []
        for row in ctx.metadata.list("semantic_indexes"):
            found = snapshots.positions_of(ctx.artifacts, row, layout)
            if found is None:
                return  # a shard without a snapshot may still need them all
            for raw in found:
                position = Position.from_dict(raw)
                if position is None or position.epoch != now.epoch:
                    return
                seqs.append(position.seq)
        if seqs and min(seqs) > now.trimmed:
            Positions(ctx.collection).trim(min(seqs))
    except Exception as exc:  # noqa: BLE001 - kept for the next snapshot to trim
        logger.warning("trimming tombstones failed: %s: %s", type(exc).__name__, exc)

