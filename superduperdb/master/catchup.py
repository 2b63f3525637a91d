"""Catch-up: bring a loaded index up to date from a write position, in time proportional to what changed.

Given an index loaded from a snapshot that includes the writes up to position
``p`` (:mod:`superduperdb.store.positions`) and the partitions it covers,
:func:`catch_up` reads only

* the documents whose ``_sdb.seq`` is above ``p`` (one indexed range read,
  their indexed output and fingerprint): those with an output are upserted
  (the vector as read), those without one are removed;
* the tombstones above ``p``: the ids deleted since, removed unless they exist
  again.

When the position cannot be trusted (:func:`~superduperdb.store.positions.lost_reason`:
the sequence was started again, tombstones were trimmed past it, the snapshot
has none) it falls back to the full resync: the id and fingerprint of every
document with an output (no vectors) are compared with the index's. Writes by
other programs carry no position; they are found by the digests
(:func:`verify_digests`), in the background, after the index answers.

:class:`~superduperdb.store.positions.SafePosition` keeps which position a
later snapshot may record; :func:`tail` is the same range read from the index's
safe position, run before each snapshot so that the index does not depend on
every index job having reached it.

The functions take the shard's pieces explicitly (``apply(docs, gone)``:
upsert or remove; ``held``: the index's fingerprints) and the partitions it
``covers``: a shard reads the documents and tombstones of its own partitions
only (both carry ``part``), and checks the digests of those only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..store import digests
from ..store.digests import Digests
from ..store.layout import MISSING, get_path
from ..store.partitions import PARTITIONS
from ..store.positions import PART, Position, Positions, SafePosition, lost_reason
from ..store.semantic_indexes import IndexView

logger = logging.getLogger(__name__)


def paths(row: dict) -> tuple[str, str]:
    """``(output path, fingerprint path)`` of the indexed outputs of index ``row``."""
    view = IndexView.of(row)
    return view.path, view.fingerprint_path


def _partitions(covered: Iterable[int] | None) -> list[int] | None:
    parts = None if covered is None else sorted(set(covered))
    return None if parts is None or len(parts) == PARTITIONS else parts


def changes(collection: Any, row: dict, since: int, covered: Iterable[int] | None = None) -> tuple[list[dict], list]:
    """``(documents written after since, with their indexed output and fingerprint; ids deleted after since)``."""
    return Positions(collection).changed_since(since, IndexView.of(row).reads, _partitions(covered))


def apply_changes(collection: Any, row: dict, docs: list[dict], gone: list, held: dict,
                  apply: Callable[[list[dict], list], dict]) -> dict:
    """Hand ``apply(upserts, removals)`` the documents read (written since the position: their vectors are
    taken as read, whatever their fingerprint says) and the ids whose output or document is gone among
    those ``held`` (``{id: fingerprint}``). Returns its counts."""
    path, fp_path = paths(row)
    seen = {d["_id"] for d in docs}
    back = [i for i in dict.fromkeys(gone) if i not in seen]
    if back:  # deleted since, but maybe inserted again: read what is there now
        docs = docs + list(collection.find({"_id": {"$in": back}}, IndexView.of(row).reads))
    present = {d["_id"] for d in docs}
    upserts, removals = [], [i for i in back if i not in present and i in held]
    for doc in docs:
        if get_path(doc, path) is MISSING:
            if doc["_id"] in held:
                removals.append(doc["_id"])
        else:  # written since the position: its output may have changed with its fingerprint the same
            upserts.append(doc)
    if not upserts and not removals:
        return {"upserted": 0, "removed": 0}
    return apply(upserts, removals)


def catch_up(collection: Any, row: dict, since: Position | None, held: dict,
             apply: Callable[[list[dict], list], dict], full: Callable[[], dict],
             safe: SafePosition, covered: Iterable[int] | None = None) -> dict:
    """Bring an index loaded at position ``since`` up to date; return the report (``as_of`` included).

    ``full()``: the full resync, run when the position is lost.
    """
    start = time.perf_counter()
    now = Positions(collection).current()
    safe.observe(now)
    began = time.monotonic()
    reason = lost_reason(since, now)
    if reason is not None:
        logger.warning("index %r: catching up from the documents (no usable write position: %s)", row["name"], reason)
        counts = full()
        safe.reset(None)
        safe.observe(now)
        report = {"mode": "full", "reason": reason, **counts}
    else:
        assert since is not None
        docs, gone = changes(collection, row, since.seq, covered)
        counts = apply_changes(collection, row, docs, gone, held, apply)
        report = {"mode": "position", "from": since.seq, "read": len(docs), "tombstones": len(gone), **counts}
    safe.read_completed(began)
    report.update(to=now.seq, seconds=time.perf_counter() - start,
                  as_of={"position": since.seq if since is not None else None, "now": now.seq, "behind":
                         (now.seq - since.seq) if since is not None and reason is None else None})
    return report


def tail(collection: Any, row: dict, held: dict, apply: Callable[[list[dict], list], dict],
         full: Callable[[], dict], safe: SafePosition, covered: Iterable[int] | None = None) -> dict:
    """Apply what was written since the index's safe position (before a snapshot); return the counts.

    An index loaded from the documents has no safe position until a read that began ``lag`` seconds after
    its load has completed: the first tail after that runs ``full()`` (ids and fingerprints, no vectors)
    once; before that it only observes the sequence.
    """
    base = safe.safe()
    now = Positions(collection).current()
    safe.observe(now)
    began = time.monotonic()
    if base is None or lost_reason(base, now) is not None:
        if not safe.ripe(began):
            return {"upserted": 0, "removed": 0, "skipped": "no safe position yet"}
        counts = full()
    else:
        docs, gone = changes(collection, row, base.seq, covered)
        counts = apply_changes(collection, row, docs, gone, held, apply)
    safe.read_completed(began)
    return counts


def verify_digests(collection: Any, row: dict, before: Digests | None,
                   sync: Callable[[list, list, list[int] | None], dict], covered: Iterable[int] | None = None) -> dict:
    """Compare the collection's digests with ``before`` (a snapshot's) over the ``covered`` partitions (a
    shard's; None: all); ``sync(ids, fingerprints, partitions)`` the documents with an output in the
    partitions that differ, then those no library write stamped (``partitions`` None: nothing to remove
    among them; ``sync`` keeps the ids its shard owns). Returns what it read and changed.

    The snapshot's digests were computed *before* its rows were taken, so a write they include is in the
    snapshot or after its position; a write by another program that they include but the snapshot missed
    is in the reconciler's own digests, which it compares with its last pass (:mod:`superduperdb.tasks.reconcile`).
    """
    path, fp_path = paths(row)
    now = digests.compute(collection)
    scope = _partitions(covered)
    dirty = now.differ(before)
    if scope is not None:
        dirty = sorted(set(dirty) & set(scope))
    report = {"source": now.source, "partitions": len(dirty), "dirty": list(dirty), "unstamped": now.unstamped,
              "digest_documents_read": now.documents_read, "read": 0, "upserted": 0, "removed": 0}

    def run(query: dict, parts: list[int] | None) -> None:
        found = list(collection.find({**query, path: {"$exists": True}}, {fp_path: 1}))
        report["read"] += len(found)
        fps = [get_path(d, fp_path) for d in found]
        counts = sync([d["_id"] for d in found], [None if fp is MISSING else fp for fp in fps], parts)
        report["upserted"] += counts["upserted"]
        report["removed"] += counts["removed"]

    if scope is None and len(dirty) == PARTITIONS:
        run({}, list(range(PARTITIONS)))
        return report
    if dirty:
        run({PART: {"$in": dirty}}, dirty)
    if now.unstamped:
        ids = now.unstamped_ids
        run({"_id": {"$in": ids}} if ids is not None else {PART: {"$exists": False}}, None)
    return report
