"""Index snapshots: what a new master loads instead of decoding every document.

A snapshot of one semantic index is one GridFS file in the collection's
artifact bucket (``<collection>._artifacts``), named
``snapshot/<index name>/<index uid>``: a pickle of the index's rows, ids,
alive mask and pynndescent graph (:meth:`VectorIndex.export_state`) and the
output fingerprint of each vector. A new snapshot is written as a new version
of that file; the older versions are deleted only once it is complete, so a
master that starts meanwhile loads the old one or the new one, never a torn one.

A master that loads a snapshot then *catches up*: it reads the id and output
fingerprint of every document that has an indexed output (small fields, no
vectors) and re-reads only the documents whose fingerprint differs from the
snapshot's or is unknown, and removes the ids that are gone
(:meth:`~superduperdb.master.actor.Master.sync`). Writes and deletes made after
the snapshot, by anyone, are therefore in the answer.

:class:`Snapshotter` refreshes snapshots in a background thread of the master:
an index that changed is saved again after ``master.snapshot_interval``
seconds, or sooner once ``master.snapshot_changes`` vectors changed; an index
loaded from the database without a snapshot is saved at once.
``master.snapshot_interval: 0`` turns snapshots off (none written or read).
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

FORMAT = 1
TICK = 1.0  # seconds between looks at which indexes are due
MIN_GAP = 2.0  # seconds between two snapshots of one index, however many changes


def snapshot_name(row: dict, partitions: Any = None) -> str:
    """The GridFS file name of the snapshots of semantic index ``row`` (of a shard's ``partitions``, if given).

    >>> snapshot_name({"name": "ix", "uid": "u"}), snapshot_name({"name": "ix", "uid": "u"}, [3, 1])
    ('snapshot/ix/u', 'snapshot/ix/u/partitions-1,3')
    """
    base = f"snapshot/{row['name']}/{row['uid']}"
    if partitions is None:
        return base
    return f"{base}/partitions-{','.join(str(p) for p in sorted(partitions))}"


def dumps(index: Any, fingerprints: dict, row: dict, partitions: Any = None, epoch: int = 0) -> bytes:
    """The bytes of a snapshot of ``index`` with these ``fingerprints`` (a shard's: its ``partitions``, ``epoch``).

    Take ``fingerprints`` (a copy) *before* calling: a vector newer than its
    fingerprint is re-read at catch-up, whereas the reverse would be missed.
    """
    state = index.export_state()
    held = {i: fp for i, fp in fingerprints.items() if i in index}
    payload = {"format": FORMAT, "taken_at": time.time(), "index": row["name"], "uid": row["uid"],
               "state": state, "fingerprints": held,
               "partitions": None if partitions is None else sorted(partitions), "epoch": epoch}
    return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)


def save(artifacts: Any, row: dict, data: bytes, partitions: Any = None, **info: Any) -> Any:
    """Write ``data`` as the newest snapshot of ``row`` (a shard's ``partitions``), delete the older ones; its id."""
    name = snapshot_name(row, partitions)
    file_id = artifacts.put_named(name, data, **info)
    artifacts.prune_named(name, keep=file_id)
    return file_id


def load(artifacts: Any, row: dict, partitions: Any = None) -> dict | None:
    """The newest snapshot of ``row`` (a shard's ``partitions``): ``{'state', 'fingerprints', 'taken_at', ...}``, or None.

    A snapshot that cannot be read is logged and ignored (the index then loads from the documents).
    """
    try:
        found = artifacts.get_named(snapshot_name(row, partitions))
        if found is None:
            return None
        payload = pickle.loads(found[0])
    except Exception as exc:  # noqa: BLE001 - a bad snapshot must never stop the index from loading
        logger.warning("cannot read the snapshot of index %r (%s: %s); loading from the documents",
                       row["name"], type(exc).__name__, exc)
        return None
    if payload.get("format") != FORMAT or payload.get("uid") != row["uid"]:
        logger.warning("ignoring a snapshot of index %r in another format", row["name"])
        return None
    if payload.get("partitions") != (None if partitions is None else sorted(partitions)):
        logger.warning("ignoring a snapshot of index %r over other partitions", row["name"])
        return None
    return payload


def delete(artifacts: Any, row: dict) -> int:
    """Delete every snapshot of ``row`` (every shard's); return how many files."""
    base = snapshot_name(row)
    return sum(artifacts.prune_named(name, keep=None) for name in artifacts.names_like(base))


class Snapshotter:
    """Saves due indexes in a background thread.

    Parameters
    ----------
    due : callable
        ``due() -> list of keys`` of indexes to save now.
    save : callable
        ``save(key)``: save one (errors are logged, and retried at the next interval).
    gone : callable, optional
        ``gone() -> bool``: the cluster this master served has closed (the thread then ends).
    """

    def __init__(self, due: Callable[[], list], save: Callable[[Any], Any],
                 gone: Callable[[], bool] = lambda: False) -> None:
        self._due, self._save, self._gone = due, save, gone
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="superduperdb-snapshots", daemon=True)
                self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(TICK) and not self._gone():
            for key in self._due():
                try:
                    self._save(key)
                except Exception as exc:  # noqa: BLE001 - the database away, a full disk ...: try again later
                    logger.warning("writing an index snapshot failed: %s: %s", type(exc).__name__, exc)
