"""Python objects stored in GridFS, addressed by the SHA-256 of their bytes.

Saving the same bytes twice stores them once. Loaded objects are cached per
process (bounded LRU), so a worker loads a model once, not once per job.

A *composite* reference (``serializer: 'composite'``: an attribute model, or
a model assembled from registered parts, see :mod:`superduperdb.models.composite`)
is resolved from the artifacts it names.

Trust model: loading an artifact unpickles it (pickle, dill, or ``torch.load``
of a whole module), which runs code. Connect only to databases you trust.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from typing import Any

import gridfs

from ..errors import ArtifactError

logger = logging.getLogger(__name__)

_CACHE: OrderedDict[tuple[str, str], Any] = OrderedDict()
_CACHE_LOCK = threading.Lock()
CACHE_SIZE = 32


def _cache_get(key: tuple[str, str]) -> Any:
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    return None


def _cache_put(key: tuple[str, str], obj: Any) -> None:
    with _CACHE_LOCK:
        _CACHE[key] = obj
        _CACHE.move_to_end(key)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)


class ArtifactStore:
    """GridFS bucket ``<collection>._artifacts`` in the collection's database.

    Parameters
    ----------
    database : pymongo or mongomock Database
    collection : str
        Name of the data collection the artifacts belong to.
    """

    def __init__(self, database: Any, collection: str) -> None:
        self.database = database
        self.prefix = f"{collection}._artifacts"
        self._fs = gridfs.GridFS(database, collection=self.prefix)

    def put_bytes(self, data: bytes, **info: Any) -> str:
        """Store ``data`` (once) and return its SHA-256 hex digest."""
        digest = hashlib.sha256(data).hexdigest()
        # The digest is the file name, not the _id: some MongoDB-wire servers only take ObjectId file ids.
        if not self._fs.exists(filename=digest):
            self._fs.put(data, filename=digest, **info)
        return digest

    def get_bytes(self, digest: str) -> bytes:
        try:
            return self._fs.get_last_version(filename=digest).read()
        except gridfs.errors.NoFile:
            raise ArtifactError(
                f"Artifact {digest} is missing from GridFS bucket {self.prefix!r}; the metadata "
                "that points to it is stale. Re-register the object.",
                digest=digest,
            ) from None

    def put(self, obj: Any, serializer: str | None = None) -> dict:
        """Serialise and store ``obj``; returns ``{'hash', 'serializer', 'size'}``."""
        from ..models.serialize import dumps

        data, serializer = dumps(obj, serializer)
        digest = self.put_bytes(data, serializer=serializer)
        _cache_put((digest, serializer), obj)
        return {"hash": digest, "serializer": serializer, "size": len(data)}

    def get(self, ref: dict) -> Any:
        """Load the object an artifact reference (from :meth:`put`) points to."""
        from ..models.composite import build, is_composite
        from ..models.serialize import loads

        key = (ref["hash"], ref["serializer"])
        obj = _cache_get(key)
        if obj is None and is_composite(ref):  # built from other artifacts, each loaded once
            obj = build(ref, self.get)
            _cache_put(key, obj)
        elif obj is None:
            data = self.get_bytes(ref["hash"])
            try:
                obj = loads(data, ref["serializer"])
            except Exception as exc:
                raise ArtifactError(
                    f"Could not load artifact {ref['hash'][:12]} with {ref['serializer']!r}: {exc}. "
                    "The code it needs may be missing in this process (install it on every worker).",
                    digest=ref["hash"],
                ) from exc
            _cache_put(key, obj)
        return obj

    # -- named files (latest version wins) -----------------------------------------------
    def put_named(self, name: str, data: bytes, **info: Any) -> Any:
        """Store ``data`` as a new version of the file ``name``; return its GridFS id.

        The previous versions stay until :meth:`prune_named`: GridFS writes the
        chunks first and the file document last, so a reader sees the old
        version or the new one whole, never part of the new one.
        """
        return self._fs.put(data, filename=name, **info)

    def get_named(self, name: str) -> tuple[bytes, dict] | None:
        """The newest complete version of ``name`` and its file document (None if there is none)."""
        try:
            grid_out = self._fs.get_last_version(filename=name)
        except gridfs.errors.NoFile:
            return None
        return grid_out.read(), dict(getattr(grid_out, "_file", {}) or {})

    def info_named(self, name: str) -> dict | None:
        """The file document of the newest version of ``name`` (without reading its bytes)."""
        try:
            return dict(self._fs.get_last_version(filename=name)._file)
        except gridfs.errors.NoFile:
            return None

    def names_like(self, base: str) -> list[str]:
        """Names of the named files ``base`` and ``base/...``."""
        names = {f["filename"] for f in self.database[f"{self.prefix}.files"].find({}, {"filename": 1})}
        return sorted(n for n in names if isinstance(n, str) and (n == base or n.startswith(base + "/")))

    def prune_named(self, name: str, keep: Any = None) -> int:
        """Delete the versions of ``name`` other than the one with id ``keep`` (None: all); return how many."""
        removed = 0
        for grid_out in list(self._fs.find({"filename": name})):
            if grid_out._id != keep:
                self._fs.delete(grid_out._id)
                removed += 1
        return removed

    def delete(self, digest: str) -> None:
        for grid_out in self._fs.find({"filename": digest}):
            self._fs.delete(grid_out._id)

    def exists(self, digest: str) -> bool:
        return self._fs.exists(filename=digest)
