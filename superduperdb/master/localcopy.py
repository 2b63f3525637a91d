"""The local copy of a snapshot: the same bytes as in GridFS, on the master worker's disk, memory-mapped.

A shard actor that writes or loads a snapshot keeps its bytes in ``master.snapshot_dir``
(default ``~/.cache/superduperdb/snapshots``) as ``<key>/<index>[-p<partitions>]-<uid>.snap``,
with a sidecar ``.json`` naming the GridFS file it copies (its ``_id``, length
and file document fields such as a signature). A new master on the same
machine uses the local copy only when GridFS's newest snapshot is that very
file (one small read of its file document), and maps it instead of reading it
from the database: the arrays are used where they lie (see
:mod:`superduperdb.index.snapfile`). A copy that fails a check is deleted and
reported; GridFS is then read as usual. Files are written to a temporary name
and renamed, so a reader sees a whole copy or none.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mmap
import os
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_DIR = os.path.join("~", ".cache", "superduperdb", "snapshots")


def folder(setting: str | None) -> Path | None:
    """The local copies' folder for ``master.snapshot_dir`` (None: local copies are off)."""
    if setting == "":
        return None
    path = Path(os.path.expanduser(setting or DEFAULT_DIR))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        logger.warning("cannot create the snapshot folder %s (%s): no local copies", path, exc)
        return None
    return path


def path_for(base: Path, target: Any, row: dict, partitions: Any = None) -> Path:
    """Where the local copy of index ``row`` of ``target``'s collection lies (a shard's ``partitions``: its own)."""
    from ..store.partitions import PARTITIONS

    key = hashlib.sha256(target.key.encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(row["name"]))
    if partitions is not None and len(set(partitions)) < PARTITIONS:
        covered = ",".join(str(p) for p in sorted(partitions))
        safe += "-p" + hashlib.sha256(covered.encode()).hexdigest()[:12]
    return base / key / f"{safe}-{row['uid']}.snap"


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def write(path: Path, data: bytes, info: dict) -> None:
    """Keep ``data`` (the GridFS file described by ``info``) at ``path``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for target, content in ((path, data), (_sidecar(path), json.dumps(
                {k: _plain(v) for k, v in info.items() if k not in ("chunkSize",)}).encode())):
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            os.replace(tmp, target)
    except OSError as exc:  # a full or read-only disk: GridFS remains
        logger.warning("cannot keep a local copy of a snapshot at %s: %s", path, exc)


def read(path: Path, expected: dict) -> Any | None:
    """A read-only memory map of the local copy, if it copies the GridFS file ``expected`` (else None)."""
    try:
        info = json.loads(_sidecar(path).read_text())
        if str(info.get("_id")) != str(expected.get("_id")) or info.get("length") != expected.get("length"):
            return None
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size != expected.get("length"):
                return None
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None


def discard(path: Path) -> None:
    for p in (path, _sidecar(path)):
        with contextlib.suppress(OSError):
            p.unlink()
