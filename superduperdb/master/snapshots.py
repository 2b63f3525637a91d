"""Index snapshots: what a new shard actor loads instead of decoding every document.

Each shard keeps its own snapshot of each semantic index: one GridFS file in
the collection's artifact bucket (``<collection>._artifacts``), named
``snapshot/<index name>/<index uid>`` when it covers every partition (one
shard) and ``snapshot/<index name>/<index uid>/partitions-<p,...>`` for a
shard's partitions (:func:`snapshot_name`), in the format of
:mod:`superduperdb.index.snapfile`: plain data with a checksum per part, no
pickle but for the pynndescent graphs, whose objects have no data-only form
(their bytes are checksummed and unpickled only off the query path). Parts:

* ``vectors`` (float32, rows x dim: every segment's rows one after the other),
  ``sq`` (their squared norms), ``alive`` (bool per row), ``ids`` (see
  :func:`~superduperdb.index.persist.encode_ids`), ``fingerprints`` (JSON, per
  row: what each output was computed from), ``id_hashes`` (uint64 per row:
  :func:`~superduperdb.store.partitions.id_hash`), ``filter_fields`` (an index with
  filter fields: one BSON document per row, the values of those fields, see
  :mod:`.filters`), and ``graph-<k>``: the graph of sealed segment ``k``, if it has one;
* the manifest: the index's name, uid and measure, its **segments** (rows,
  growing or sealed, which part holds the graph), the **shard** that wrote it
  (``shard``, ``shards``, ``epoch`` of its lease, partition table
  ``version``, ``owner``), the **write position** it includes (``{"epoch",
  "seq"}``, see :mod:`superduperdb.store.positions`), which **partitions** it
  covers (the shard's), per partition the **digest** of the rows it holds
  (``[count, sum of id hashes mod 2**64]``), and the collection's digests as the
  store computed them when it was taken (``store_digests``, see
  :mod:`superduperdb.store.digests`), and the change stream's resume token
  where the server has one.

On load every part's checksum is verified and the parts are checked against
each other and the manifest (:func:`parse`): rows, ids, flags and norms agree in
number, segments add up to the rows, every row lies in the covered
partitions, the per-partition counts and hash sums match. A snapshot that
fails is ignored, logged, reported in the index's stats
(``snapshot_rejected``) and replaced: the shard loads from the documents and
saves a new snapshot at once.

A new snapshot is written as a new version of the file (its GridFS file
document records the position, partitions and epoch); the older versions are
deleted only once it is complete, so a shard that starts meanwhile loads the
old one or the new one, never a torn one. Only the lease's holder writes (it
confirms its lease first, see :mod:`.fencing`). The shard also
keeps the bytes on its worker's disk (:mod:`.localcopy`) and memory-maps them
on the next load.

A shard that loads a snapshot then *catches up* from the snapshot's position
over its own partitions (:mod:`.catchup`): it reads the documents and
tombstones written since.

:class:`Snapshotter` refreshes snapshots in a background thread of the shard
actor: an index that changed is saved again after ``master.snapshot_interval``
seconds, or sooner once ``master.snapshot_changes`` vectors changed; an index
loaded from the database without a snapshot is saved as soon as it has a safe
position (``master.position_lag``).
``master.snapshot_interval: 0`` turns snapshots off (none written or read).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bson
import numpy as np

from ..errors import ArtifactIntegrityError
from ..index import snapfile
from ..index.persist import FORMAT as PERSIST_FORMAT
from ..index.persist import decode_ids, encode_ids
from ..index.snapfile import SnapshotCorrupt
from ..store.partitions import PARTITIONS, id_hash
from . import localcopy

logger = logging.getLogger(__name__)

FORMAT = 3  # 2: one graph (before segments); 1: a pickle
TICK = 1.0  # seconds between looks at which indexes are due
MIN_GAP = 2.0  # seconds between two snapshots of one index, however many changes
ALL_PARTITIONS = list(range(PARTITIONS))
_MASK = (1 << 64) - 1


def snapshot_name(row: dict, partitions: Any = None) -> str:
    """The GridFS file name of the snapshots of semantic index ``row`` (of a shard's ``partitions``, if not all).

    >>> snapshot_name({"name": "ix", "uid": "u"}), snapshot_name({"name": "ix", "uid": "u"}, [3, 1])
    ('snapshot/ix/u', 'snapshot/ix/u/partitions-1,3')
    """
    base = f"snapshot/{row['name']}/{row['uid']}"
    if partitions is None or len(set(partitions)) >= PARTITIONS:
        return base
    return f"{base}/partitions-{','.join(str(p) for p in sorted(partitions))}"


def row_digests(hashes: np.ndarray) -> dict[str, list[int]]:
    """``{partition: [count, sum of hashes mod 2**64]}`` of rows with these id hashes (uint64).

    >>> row_digests(np.array([64, 128, 1], dtype=np.uint64))
    {'0': [2, 192], '1': [1, 1]}
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    parts = (hashes % np.uint64(PARTITIONS)).astype(np.int64)
    counts = np.bincount(parts, minlength=PARTITIONS)
    sums = np.zeros(PARTITIONS, dtype=np.uint64)
    np.add.at(sums, parts, hashes)  # wraps modulo 2**64
    return {str(p): [int(counts[p]), int(sums[p])] for p in range(PARTITIONS) if counts[p]}


def dumps(index: Any, fingerprints: dict, row: dict, *, position: dict | None, hashes: dict,
          store_digests: dict | None = None, partitions: Any = None, shard: dict | None = None,
          resume_token: Any = None, fields: Any = None) -> bytes:
    """The bytes of a snapshot of ``index`` with these ``fingerprints`` (see the module docstring).

    Take ``fingerprints`` (a copy) *before* calling: a vector newer than its
    fingerprint is re-read at catch-up, whereas the reverse would be missed.
    ``hashes``: ``{id: id_hash(id)}`` known already (others are computed and added).
    ``partitions``: those the shard owns (None: all); ``shard``: who wrote it
    (``{shard, shards, epoch, version, owner}``). ``fields``: the index's
    :class:`~superduperdb.master.filters.FilterFields` (None: it has none).
    """
    state = index.export_state()
    n = int(state["n"])
    ids = state["ids"]
    alive = np.asarray(state["alive"], bool)
    id_hashes = np.zeros(n, dtype=np.uint64)
    fps: list = [None] * n
    for r in np.flatnonzero(alive).tolist():
        i = ids[r]
        h = hashes.get(i)
        if h is None:
            h = hashes[i] = id_hash(i)
        id_hashes[r] = h
        fps[r] = fingerprints.get(i)
    kind, encoded_ids = encode_ids(ids)
    parts: dict[str, Any] = {
        "vectors": np.asarray(state["vectors"], np.float32).reshape(n, -1) if n else np.zeros((0, 0), np.float32),
        "sq": np.asarray(state["sq"], np.float32), "alive": alive, "ids": encoded_ids,
        "fingerprints": fps, "id_hashes": id_hashes,
    }
    if fields is not None:  # one BSON document per row (empty for dead rows): plain data
        parts["filter_fields"] = b"".join(
            bson.encode((fields.get(ids[r]) or {}) if alive[r] else {}) for r in range(n))
    segments = []
    for k, seg in enumerate(state["segments"]):
        graph = None
        if seg["graph"] is not None:
            graph = f"graph-{k}"
            parts[graph] = seg["graph"]
        segments.append({"n": int(seg["n"]), "growing": bool(seg["growing"]), "graph": graph})
    manifest = {
        "format": FORMAT, "taken_at": time.time(), "index": row["name"], "uid": row["uid"],
        "measure": state["measure"], "dim": state["dim"], "n": n, "deleted": state["deleted"], "ids": kind,
        "segments": segments, "shard": shard or {}, "position": position, "resume_token": resume_token,
        "partitions": ALL_PARTITIONS if partitions is None else sorted(partitions),
        "digests": row_digests(id_hashes[alive]), "store_digests": store_digests,
        "filter_fields": None if fields is None else list(fields.fields),
    }
    return snapfile.write(manifest, parts)


@dataclass
class Restored:
    """A checked snapshot: the index state to restore, and what the shard keeps beside it."""

    manifest: dict
    state: dict
    fingerprints: dict
    hashes: dict
    source: str = "gridfs"  # or "local"
    size: int = 0
    read_s: float = 0.0
    info: dict = field(default_factory=dict)
    fields: dict = field(default_factory=dict)  # id -> its filter fields' values (an index with filter fields)


def parse(buffer: Any, row: dict, partitions: Any = None) -> Restored:
    """Check a snapshot file (every part's checksum, then the parts against each other and against the
    ``partitions`` expected: None, all); raise :class:`~superduperdb.index.snapfile.SnapshotCorrupt` saying
    what failed."""
    snap = snapfile.read(buffer)
    m, p = snap.manifest, snap.parts
    if m.get("format") != FORMAT or m.get("uid") != row["uid"] or m.get("index") != row["name"]:
        raise SnapshotCorrupt(f"a snapshot in another format or of another index ({m.get('format')}, "
                              f"{m.get('index')!r})", part="manifest")
    covered = ALL_PARTITIONS if partitions is None else sorted(partitions)
    if m.get("partitions") != covered:
        raise SnapshotCorrupt(f"a snapshot of other partitions ({len(m.get('partitions') or [])} of them, "
                              f"{len(covered)} expected)", part="manifest")
    missing = sorted({"vectors", "sq", "alive", "ids", "fingerprints", "id_hashes"} - set(p))
    if missing:
        raise SnapshotCorrupt(f"parts {missing} are missing", part=missing[0])
    n = int(m["n"])
    try:
        ids = decode_ids(m["ids"], p["ids"])
    except Exception as exc:  # noqa: BLE001 - any decoding failure means the same: not this snapshot
        raise SnapshotCorrupt(f"the ids cannot be decoded: {exc}", part="ids") from None
    lengths = {"ids": len(ids), "alive": len(p["alive"]), "sq": len(p["sq"]), "vectors": len(p["vectors"]),
               "fingerprints": len(p["fingerprints"]), "id_hashes": len(p["id_hashes"])}
    wrong = {k: v for k, v in lengths.items() if v != n}
    if wrong:
        raise SnapshotCorrupt(f"parts disagree on the number of rows ({n} in the manifest): {wrong}",
                              part=sorted(wrong)[0])
    segments = m.get("segments")
    if not isinstance(segments, list) or sum(int(s["n"]) for s in segments) != n \
            or any(s.get("graph") is not None and s["graph"] not in p for s in segments):
        raise SnapshotCorrupt(f"the segments do not add up to the {n} rows, or a graph is missing", part="manifest")
    alive = np.asarray(p["alive"], bool)
    if n and (p["vectors"].ndim != 2 or p["vectors"].shape[1] != m["dim"]):
        raise SnapshotCorrupt(f"vectors of shape {p['vectors'].shape}, dimension {m['dim']}", part="vectors")
    digests = row_digests(p["id_hashes"][alive])
    if digests != m.get("digests"):
        raise SnapshotCorrupt("the rows' partitions do not match the manifest's digests", part="id_hashes")
    if not {int(k) for k in digests} <= set(covered):
        raise SnapshotCorrupt("rows of partitions the snapshot does not cover", part="id_hashes")
    rows = np.flatnonzero(alive)
    live = ids[rows].tolist()
    wanted = list(row.get("filter_fields") or []) or None
    if m.get("filter_fields") != wanted:
        raise SnapshotCorrupt(f"a snapshot with filter fields {m.get('filter_fields')}, the index has {wanted}",
                              part="manifest")
    values: dict = {}
    if wanted is not None:
        try:
            docs = bson.decode_all(bytes(p["filter_fields"]))
        except Exception as exc:  # noqa: BLE001 - any decoding failure means the same: not this snapshot
            raise SnapshotCorrupt(f"the filter fields cannot be decoded: {exc}", part="filter_fields") from None
        if len(docs) != n:
            raise SnapshotCorrupt(f"{len(docs)} filter-field documents for {n} rows", part="filter_fields")
        values = dict(zip(live, (docs[r] for r in rows.tolist())))
    fps = p["fingerprints"]
    state = {"format": PERSIST_FORMAT, "measure": m["measure"], "dim": m["dim"], "n": n, "vectors": p["vectors"],
             "sq": p["sq"], "ids": ids, "alive": alive, "deleted": m["deleted"],
             "segments": [{"n": int(s["n"]), "growing": bool(s.get("growing")),
                           "graph": bytes(p[s["graph"]]) if s.get("graph") is not None else None} for s in segments]}
    return Restored(m, state, dict(zip(live, (fps[r] for r in rows.tolist()))),
                    dict(zip(live, p["id_hashes"][rows].tolist())), size=snap.size, fields=values)


def save(artifacts: Any, row: dict, data: bytes, partitions: Any = None, local: Path | None = None,
         **info: Any) -> Any:
    """Write ``data`` as the newest snapshot of ``row`` (a shard's ``partitions``), then delete the older ones;
    return its id. ``local``: also keep the bytes there (:mod:`.localcopy`)."""
    name = snapshot_name(row, partitions)
    file_id = artifacts.put_named(name, data, **info)
    artifacts.prune_named(name, keep=file_id)
    if local is not None:
        localcopy.write(local, data, artifacts.info_named(name) or {"_id": file_id, "length": len(data)})
    return file_id


def _rejected(where: str, exc: Exception) -> dict:
    logger.warning("ignoring the %s snapshot: %s", where, exc)
    return {"where": where, "part": getattr(exc, "part", None), "reason": str(exc), "at": time.time()}


def load(artifacts: Any, row: dict, partitions: Any = None, local: Path | None = None
         ) -> tuple[Restored | None, list[dict]]:
    """The newest snapshot of ``row`` (a shard's ``partitions``), checked: from the local copy when it is
    GridFS's newest, else from GridFS (then kept locally). Returns ``(restored or None, what was rejected
    and why)``."""
    name = snapshot_name(row, partitions)
    info = artifacts.info_named(name)
    if info is None:
        return None, []
    rejected: list[dict] = []
    start = time.perf_counter()
    if local is not None:
        mapped = localcopy.read(local, info)
        if mapped is not None:
            try:
                artifacts.check_named(name, mapped, info)  # with an artifact key: signed as GridFS's file is
                restored = parse(mapped, row, partitions)
                restored.source, restored.read_s, restored.info = "local", time.perf_counter() - start, info
                return restored, rejected
            except (SnapshotCorrupt, ArtifactIntegrityError) as exc:
                rejected.append(_rejected("local copy of the", exc))
                localcopy.discard(local)
    start = time.perf_counter()
    try:
        try:
            found = artifacts.get_named(name)
        except Exception:  # noqa: BLE001 - a version pruned while read (a newer one was saved): read the newest
            found = artifacts.get_named(name)
        if found is None:
            return None, rejected
        data, info = found
        restored = parse(data, row, partitions)
    except Exception as exc:  # noqa: BLE001 - corrupt, or the database away ...: the index loads from the documents
        rejected.append(_rejected("GridFS", exc))
        return None, rejected
    restored.source, restored.read_s, restored.info = "gridfs", time.perf_counter() - start, info
    if local is not None:  # in the background: the index answers meanwhile
        threading.Thread(target=localcopy.write, args=(local, data, info), daemon=True,
                         name="superduperdb-snapshot-copy").start()
    return restored, rejected


def positions_of(artifacts: Any, row: dict, layout: dict | None) -> list[Any] | None:
    """The ``position`` recorded by the newest snapshot of each shard of ``row`` under the partition table
    ``layout`` (``{shards, table}``; None: one shard); None if a shard has no snapshot yet."""
    from ..store.shards import partitions_of_shard

    if layout is None or int(layout.get("shards", 1)) <= 1:
        names = [snapshot_name(row)]
    else:
        names = [snapshot_name(row, partitions_of_shard(list(layout["table"]), s)) for s in range(int(layout["shards"]))]
    out = []
    for name in names:
        info = artifacts.info_named(name)
        if info is None:
            return None
        out.append(info.get("position"))
    return out


def delete(artifacts: Any, row: dict) -> int:
    """Delete every snapshot of ``row`` (every shard's); return how many files."""
    return sum(artifacts.prune_named(name, keep=None) for name in artifacts.names_like(snapshot_name(row)))


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
