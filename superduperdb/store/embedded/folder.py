"""A folder that keeps the embedded store on disk: a snapshot, an append-only journal, a lock.

``superduperdb.connect("./my-data")`` (or ``file:///abs/path``) opens the
embedded store (:mod:`.client`) over a folder. The documents stay in memory,
as with ``mongomock://``; every change is also appended to the folder's
journal, and opening the folder again (a restarted kernel, another program
later) replays it. Documents, metadata, job records and artifacts (GridFS
files are documents too, index snapshots included) all persist this way.

The folder::

    LOCK              held (an OS file lock) by the one process that has the folder open
    owner.json        who holds it (pid, host, since), for the error a second process gets
    snapshot.bson     the whole store as of generation g (absent until the first compaction)
    journal-<g>.log   every change since that snapshot, in order

Each file is a sequence of records: a CRC-32 of the record's BSON, then the
BSON document (``{"o": op, "d": database, "c": collection, ...}``; a put
holds the whole document). Writing a snapshot goes through a temporary file,
``fsync`` and an atomic rename; the journal of the new generation starts
after it, and the old one is deleted.

Crash safety, stated (and tested by killing a writer with SIGKILL):

* every change is written to the journal (``os.write``, no buffer in this
  process) before the call that made it returns: a process that is killed
  loses nothing it had acknowledged;
* the journal is ``fsync``-ed every ``flush_interval`` seconds (1 s by
  default) and when the folder is closed: an operating-system crash or a
  power cut loses at most the writes of the last ``flush_interval`` seconds;
* a record cut short by a crash (or damaged on disk) is detected by its
  length and checksum when the folder is opened: the journal is truncated
  before it (the bytes dropped are logged), never replayed half; everything
  before it is intact;
* a snapshot is replaced only by a complete, synced one (rename), so the
  folder always holds a snapshot and journal that agree.

One process at a time: opening a folder another live process holds raises
:class:`~superduperdb.errors.StoreLockedError` naming that process. The lock
is the operating system's (``filelock``), so it is released when the holder
exits, however it exits.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import bson
from bson.codec_options import CodecOptions

from ...errors import StoreFolderError, StoreLockedError

logger = logging.getLogger(__name__)

FORMAT = 1
SNAPSHOT = "snapshot.bson"
CODEC = CodecOptions(document_class=dict, tz_aware=False)
_HEAD = struct.Struct("<Ii")  # crc32 of the BSON, then the BSON's own int32 length prefix
# A journal larger than this (and than the snapshot) is compacted into a new snapshot when the folder opens.
COMPACT_BYTES = 16 * 1024 * 1024


def frame(op: dict) -> bytes:
    """One record: the CRC-32 of ``op``'s BSON, then the BSON."""
    data = bson.encode(op)
    return struct.pack("<I", zlib.crc32(data)) + data


def read_records(path: Path, apply: Callable[[dict], None]) -> tuple[int, int, int]:
    """``apply(record)`` for each record of a journal or snapshot file, in order;
    returns ``(records, bytes that are whole records, file size)``.

    Reading stops at the first record that is cut short or fails its checksum.
    """
    count = 0
    good = 0
    with open(path, "rb", buffering=1024 * 1024) as f:
        size = os.fstat(f.fileno()).st_size
        while True:
            head = f.read(_HEAD.size)
            if len(head) < _HEAD.size:
                break
            crc, length = _HEAD.unpack(head)
            if length < 5 or good + 4 + length > size:
                break
            data = head[4:] + f.read(length - 4)
            if len(data) != length or zlib.crc32(data) != crc:
                break
            try:
                record = bson.decode(data, codec_options=CODEC)
            except bson.errors.BSONError:
                break
            apply(record)
            count += 1
            good += 4 + length
    return count, good, size


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Folder:
    """The files of one store folder, opened (and locked) by this process.

    Parameters
    ----------
    path : str or Path
        The folder (created if missing).
    flush_interval : float
        Seconds between ``fsync`` s of the journal (0: after every write).
    compact_bytes : int
        When the folder opens, a journal larger than this and than the snapshot is
        compacted into a new snapshot (default :data:`COMPACT_BYTES`).
    """

    def __init__(self, path: str | os.PathLike, flush_interval: float = 1.0,
                 compact_bytes: int = COMPACT_BYTES) -> None:
        import filelock

        self.path = Path(path).expanduser().resolve()
        if self.path.exists() and not self.path.is_dir():
            raise StoreFolderError(f"{str(self.path)!r} is a file, not a folder: give the folder that holds (or "
                                   "will hold) the store, e.g. superduperdb.connect('./my-data').", path=str(self.path))
        self.path.mkdir(parents=True, exist_ok=True)
        self.flush_interval = flush_interval
        self.compact_bytes = compact_bytes
        self._lock = filelock.FileLock(str(self.path / "LOCK"), thread_local=False)
        try:
            self._lock.acquire(timeout=0)
        except filelock.Timeout:
            raise StoreLockedError(
                f"The store folder {str(self.path)!r} is open in another process ({self._owner()}). A folder store "
                "is opened by one process at a time: close the client there (client.close(), or end that "
                "process), or share the data through a MongoDB server (mongodb://...).",
                path=str(self.path)) from None
        (self.path / "owner.json").write_text(json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(),
             "since": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}))
        self.generation = 0
        self._fd: int | None = None
        self._write_lock = threading.Lock()  # appends
        self._sync_lock = threading.Lock()  # fsync and close: the descriptor stays open during a sync
        self._dirty = False
        self._closed = False
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()

    def _owner(self) -> str:
        try:
            owner = json.loads((self.path / "owner.json").read_text())
            return f"pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('since')}"
        except (OSError, ValueError):
            return "owner unknown"

    # -- opening ------------------------------------------------------------------------
    def load(self, apply: Callable[[dict], None], dump: Callable[[], Iterator[dict]]) -> int:
        """Replay the snapshot and the journal through ``apply(op)``; then open the journal for writing.

        ``dump()`` yields the ops that rebuild the whole store (for a compaction,
        when the journal has grown past the snapshot). Returns how many records were replayed.
        """
        snapshot = self.path / SNAPSHOT
        replayed = 0
        snap_size = 0
        if snapshot.exists():
            header: list[dict] = []

            def from_snapshot(op: dict) -> None:
                if not header:
                    header.append(op)
                else:
                    apply(op)

            count, good, snap_size = read_records(snapshot, from_snapshot)
            if not header or header[0].get("o") != "h" or good != snap_size:
                raise StoreFolderError(
                    f"The snapshot {str(snapshot)!r} is damaged ({good} of {snap_size} bytes readable). It is only "
                    "ever replaced whole, so this is damage from outside: restore the folder from a backup.",
                    path=str(self.path))
            if header[0].get("format") != FORMAT:
                raise StoreFolderError(f"The store folder {str(self.path)!r} has format {header[0].get('format')}; "
                                       f"this version of superduperdb reads format {FORMAT}.", path=str(self.path))
            self.generation = int(header[0]["generation"])
            replayed += count - 1
        journal = self._journal(self.generation)
        journal_size = 0
        if journal.exists():
            count, good, journal_size = read_records(journal, apply)
            replayed += count
            if good < journal_size:
                logger.warning("store folder %s: the journal's last %d bytes were an incomplete or damaged record "
                               "(a crash while writing): dropped; the %d records before it were replayed",
                               self.path, journal_size - good, count)
                with open(journal, "r+b") as f:
                    f.truncate(good)
                    os.fsync(f.fileno())
                journal_size = good
        for stale in self.path.glob("journal-*.log"):
            if stale != journal:
                stale.unlink()  # left by a compaction that was interrupted after its rename
        (self.path / f"{SNAPSHOT}.tmp").unlink(missing_ok=True)
        if journal_size > max(self.compact_bytes, snap_size):
            self.compact(dump)
        self._open_journal()
        return replayed

    def _journal(self, generation: int) -> Path:
        return self.path / f"journal-{generation}.log"

    def _open_journal(self) -> None:
        self._fd = os.open(self._journal(self.generation), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if self.flush_interval > 0:
            self._flusher = threading.Thread(target=self._flush_loop, name="superduperdb-store-flush", daemon=True)
            self._flusher.start()

    def compact(self, dump: Callable[[], Iterator[dict]]) -> None:
        """Write the whole store as snapshot ``generation + 1`` and start its (empty) journal.

        Only while nothing writes (the folder is being opened).
        """
        generation = self.generation + 1
        tmp = self.path / f"{SNAPSHOT}.tmp"
        with open(tmp, "wb") as f:
            f.write(frame({"o": "h", "format": FORMAT, "generation": generation}))
            for op in dump():
                f.write(frame(op))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path / SNAPSHOT)
        _fsync_dir(self.path)
        old, self.generation = self._journal(self.generation), generation
        old.unlink(missing_ok=True)
        logger.info("store folder %s: compacted into snapshot generation %d", self.path, generation)

    # -- writing --------------------------------------------------------------------------
    def append(self, op: dict) -> None:
        """Write one change to the journal before returning (see the module's crash-safety notes)."""
        data = frame(op)
        with self._write_lock:
            if self._fd is None:
                raise StoreFolderError(f"The store folder {str(self.path)!r} was closed: connect to it again to "
                                       "write.", path=str(self.path))
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            if self.flush_interval > 0:
                self._dirty = True
            else:
                os.fsync(self._fd)

    def flush(self) -> None:
        """``fsync`` the journal now. Writers go on meanwhile: a sync of a large journal can take a
        while on a busy disk, and appends must not wait for it (only :meth:`close` does)."""
        with self._sync_lock:
            with self._write_lock:
                fd, dirty, self._dirty = self._fd, self._dirty, False
            if fd is not None and dirty:
                os.fsync(fd)

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
            except OSError as exc:  # pragma: no cover - a full or failing disk
                logger.error("store folder %s: cannot sync the journal: %s", self.path, exc)

    def close(self) -> None:
        """Sync and close the journal, and release the folder for other processes."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        with self._sync_lock, self._write_lock:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
        try:
            (self.path / "owner.json").unlink(missing_ok=True)
        finally:
            self._lock.release(force=True)

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"Folder({str(self.path)!r}, generation={self.generation})"

