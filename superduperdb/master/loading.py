"""Loading one index of one shard: from its snapshot and a catch-up over its partitions, else from the documents.

A shard actor (:mod:`.actor`) loads an index in a background thread
(:class:`LoadJob`): a query meanwhile waits for it within its own timeout, then
gets :class:`~superduperdb.errors.IndexLoadingError` saying how far the load got
(its phase, vectors done). Loading, for the shard's ``(version,
partitions)`` layout and lease epoch:

1. **From the snapshot** (:func:`from_snapshot`): the shard's own snapshot
   (:mod:`.snapshots`, from the worker's local copy when it is GridFS's newest),
   checked part by part; then the catch-up from its write position over the
   shard's partitions (:mod:`.catchup`: the documents and tombstones stamped
   with those partitions after the position), or, where the position is lost,
   a full resync of the shard's ids and fingerprints; then, if the server has
   change streams, a replay from the snapshot's resume token. The index
   answers from here on (exactly, until the restored graphs are attached off
   the query path); in the background the digests of the shard's partitions are
   compared with the snapshot's (:func:`check_digests`: other programs' writes)
   and the vectors' checksums recorded.
2. **From the documents** (:func:`from_documents`): one read of the shard's
   partitions (the documents stamped with them, and the unstamped ones whose
   ``_id`` hashes into them). A snapshot is saved as soon as the position is safe.

Both report in the index's ``catch_up`` stats, ``as_of`` included (the
position it loaded at, the collection's position then, and how far behind
that was), which ``explain()`` shows per shard.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import IndexLoadingError, SemanticIndexError
from ..store.context import Context
from ..store.digests import Digests
from ..store.positions import PART, Position, Positions
from . import catchup, resume, snapshots
from .loaded import LoadedIndex, owned, read

logger = logging.getLogger(__name__)

# The background work after a load (attaching graphs, checking digests, the JIT warm-up) waits this
# long, then for the loads in progress to finish: compiling holds the GIL for long stretches, and a
# 10k-vector load that ran beside it took 9.2 s instead of 3.6 s (bench/search.py).
GRACE = 1.0


class Gate:
    """How many loads are in progress in an actor, so that background work can wait for none."""

    def __init__(self) -> None:
        self._loading = 0
        self._done = threading.Condition()

    def __enter__(self) -> Gate:
        with self._done:
            self._loading += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        with self._done:
            self._loading -= 1
            self._done.notify_all()

    def wait_idle(self, grace: float = GRACE) -> None:
        """Sleep ``grace`` seconds, then wait until no load is in progress."""
        time.sleep(grace)
        with self._done:
            self._done.wait_for(lambda: self._loading == 0)


class LoadJob:
    """An index being loaded in a background thread, and how far it got (see ``IndexLoadingError``)."""

    def __init__(self, name: str, shard: int = 0) -> None:
        self.name, self.shard = name, shard
        self.version: int | None = None  # of the partition table it loads for
        self.started = time.monotonic()
        self.progress: dict = {"phase": "starting", "done": 0, "total": None}
        self.done = threading.Event()
        self.result: LoadedIndex | None = None
        self.error: BaseException | None = None

    def error_now(self) -> IndexLoadingError:
        p, elapsed = dict(self.progress), time.monotonic() - self.started
        total = f" of about {p['total']:,}" if p.get("total") else ""
        return IndexLoadingError(
            f"Index {self.name!r} (shard {self.shard}) is still loading ({p['phase']}: {p['done']:,}{total} "
            f"vectors after {elapsed:.1f} s). The load goes on in the master: retry the query shortly, or raise "
            "cluster.timeout to wait longer.", index=self.name, phase=p["phase"], done=p["done"],
            total=p["total"], elapsed=elapsed, shard=self.shard)

    def run(self, load: Callable[[dict], LoadedIndex]) -> None:
        """``load(progress)``, its result or error kept for every caller waiting (:meth:`wait`)."""
        try:
            self.result = load(self.progress)
        except BaseException as exc:  # noqa: BLE001 - handed to every caller waiting on this load
            self.error = exc
        finally:
            self.done.set()

    def wait(self, seconds: float) -> LoadedIndex:
        """The loaded index, waited for at most ``seconds`` (then :class:`IndexLoadingError`)."""
        if not self.done.wait(seconds):
            raise self.error_now()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def from_documents(ctx: Context, row: dict, index: Any, progress: dict, *, shard: dict,
                   layout: tuple | None, epoch: int, rejected: list[dict]) -> LoadedIndex:
    """The shard's part of index ``row`` read from the documents into the empty ``index``."""
    start = time.perf_counter()
    partitions = owned(layout)
    progress.update(phase="documents", total=ctx.collection.estimated_document_count())
    now = Positions(ctx.collection).current()  # observed before reading: see catchup.tail
    values: list = []
    ids, vectors, fps = read(ctx, row, {}, partitions, progress, values)
    if ids:
        index.add(ids, vectors)
    seconds = time.perf_counter() - start
    logger.info("loaded index %r of %s.%s (shard %d of %d): %d vectors from the documents in %.2f s", row["name"],
                ctx.target.database, ctx.target.collection, shard["shard"], shard["shards"], len(ids), seconds)
    loaded = LoadedIndex(ctx, row, index, seconds, dict(zip(ids, fps)), shard=shard, layout=layout,
                         epoch=epoch)
    loaded.record_sums(ids, vectors, [], start=True)
    if loaded.filter is not None:
        loaded.filter.put_many(ids, values)
    loaded.safe.observe(now)
    loaded.rejected = rejected
    loaded.catch_up = {"mode": "documents", "read": len(ids), "rejected": rejected or None,
                       "as_of": {"position": now.seq, "now": now.seq, "behind": 0}}
    return loaded


def from_snapshot(ctx: Context, row: dict, index: Any, progress: dict, gate: Gate, *, shard: dict,
                  layout: tuple | None, epoch: int) -> tuple[LoadedIndex | None, list[dict]]:
    """The shard's part of index ``row`` from its latest snapshot, caught up from its position over the shard's
    partitions; ``(None, what was rejected)`` when there is no usable snapshot."""
    start = time.perf_counter()
    partitions = owned(layout)
    local = LoadedIndex.local_path_for(ctx, row, partitions)
    restored, rejected = snapshots.load(ctx.artifacts, row, partitions, local)
    if restored is None:
        return None, rejected
    try:
        index.restore_state(restored.state)
    except SemanticIndexError as exc:
        logger.warning("cannot restore the snapshot of index %r: %s; loading from the documents", row["name"], exc)
        return None, [*rejected, {"where": restored.source, "part": "state", "reason": str(exc), "at": time.time()}]
    if index.has_pending_graph:
        threading.Thread(target=attach_graphs, args=(index, row["name"], gate), name="superduperdb-attach-graph",
                         daemon=True).start()
    restored_s = time.perf_counter() - start
    manifest = restored.manifest
    loaded = LoadedIndex(ctx, row, index, restored_s, restored.fingerprints, source="snapshot", shard=shard,
                         layout=layout, epoch=epoch)
    loaded.hashes, loaded.rejected = restored.hashes, rejected
    if loaded.filter is not None:
        loaded.filter.put_many(restored.fields, restored.fields.values())
    since = Position.from_dict(manifest.get("position"))
    loaded.safe.reset(since)
    progress.update(phase="catch-up", done=len(index))
    report = catchup.catch_up(ctx.collection, row, since, loaded.fingerprints, loaded.apply, loaded.full_sync,
                              loaded.safe, loaded.partitions)
    if manifest.get("resume_token") is not None:  # the server's change stream: other programs' writes too
        ids, why = resume.changed_since(ctx.collection, manifest["resume_token"])
        replay = loaded.refresh(ids) if ids else {"upserted": 0, "removed": 0}
        report["change_stream"] = {"replayed": len(ids or []), "upserted": replay["upserted"],
                                   "removed": replay["removed"], "fallback": why}
    written_by = manifest.get("shard") or {}
    loaded.taken_at = manifest["taken_at"]
    loaded.catch_up = {**report, "snapshot_age_s": time.time() - manifest["taken_at"], "restore_s": restored_s,
                       "read_s": restored.read_s, "snapshot_from": restored.source, "rejected": rejected or None,
                       "snapshot_epoch": written_by.get("epoch")}
    loaded.changes = report["upserted"] + report["removed"]
    threading.Thread(target=check_digests, args=(loaded, manifest.get("store_digests"), gate), daemon=True,
                     name="superduperdb-verify-digests").start()
    logger.info("loaded index %r (shard %d of %d) from its %s snapshot (%d vectors, %.0f s old, epoch %s) in %.2f s; "
                "caught up: %s", row["name"], shard["shard"], shard["shards"], restored.source, len(index),
                loaded.catch_up["snapshot_age_s"], written_by.get("epoch"), time.perf_counter() - start, report)
    return loaded, rejected


def load(ctx: Context, row: dict, new_index: Callable[[], Any], progress: dict, gate: Gate, *, shard: dict,
         layout: tuple | None, epoch: int, use_snapshot: bool = True) -> LoadedIndex:
    """The shard's part of index ``row``: from its snapshot if it has a usable one, else from the documents."""
    start = time.perf_counter()
    with gate:
        Positions(ctx.collection).ensure_indexes()
        rejected: list[dict] = []
        if use_snapshot and ctx.config.master.snapshot_interval > 0:
            progress["phase"] = "snapshot"
            loaded, rejected = from_snapshot(ctx, row, new_index(), progress, gate, shard=shard, layout=layout,
                                             epoch=epoch)
            if loaded is not None:
                loaded.load_seconds = time.perf_counter() - start
                return loaded
        return from_documents(ctx, row, new_index(), progress, shard=shard, layout=layout, epoch=epoch,
                              rejected=rejected)


def check_digests(loaded: LoadedIndex, before: dict | None, gate: Gate) -> None:
    """After a restart, in the background: re-read the shard's partitions whose digest differs from the
    snapshot's (other programs' writes while no master watched), and the documents no library write stamped
    that the shard owns; then record the vectors' checksums. Starts once the loads in progress are done."""
    gate.wait_idle()
    start = time.perf_counter()
    try:
        report = catchup.verify_digests(
            loaded.ctx.collection, loaded.row, Digests.from_dict(before),
            lambda ids, fps, parts: loaded.sync(ids, fps, within=[], partitions=parts), loaded.partitions)
    except Exception as exc:  # noqa: BLE001 - the reconciler's next pass will find the same
        logger.warning("index %r: checking the digests after the restart failed: %s", loaded.name, exc)
        report = {"error": f"{type(exc).__name__}: {exc}"}
    if loaded.filter is not None and (report.get("dirty") or report.get("unstamped")):
        try:  # an update that changed only filter fields carries no position: re-read them where digests differ
            report["filter_fields_read"] = loaded.refresh_fields(
                {"$or": [{PART: {"$in": report.get("dirty") or []}}, {PART: {"$exists": False}}]})
        except Exception as exc:  # noqa: BLE001 - the next digest check or index job repairs them
            logger.warning("index %r: re-reading filter fields after the restart failed: %s", loaded.name, exc)
    report["seconds"] = time.perf_counter() - start
    try:
        loaded.verify()  # the checksums of the restored rows, recorded off the query path
    except Exception as exc:  # noqa: BLE001 - recorded at the next verify instead
        logger.warning("index %r: recording vector checksums failed: %s", loaded.name, exc)
    if loaded.catch_up is not None:
        loaded.catch_up["digests"] = report
    loaded.verified.set()


def attach_graphs(index: Any, name: str, gate: Gate) -> None:
    """Install the restored graphs (unpickling imports numba: seconds) once the loads in progress are done, so
    that the first answers (exact meanwhile) do not wait for them."""
    gate.wait_idle()
    start = time.perf_counter()
    try:
        attached = index.attach_pending_graph()
    except Exception:  # noqa: BLE001 - the index answers exactly, and rebuilds as it grows
        logger.exception("cannot attach the restored graphs of index %r", name)
        return
    logger.info("restored graphs of index %r %s in %.2f s", name, "attached" if attached else "dropped",
                time.perf_counter() - start)
