"""Python objects stored in GridFS, addressed by the SHA-256 of their bytes.

Saving the same bytes twice stores them once. Loaded objects are cached per
process (bounded LRU), so a worker loads a model once, not once per job.

A *composite* reference (``serializer: 'composite'``: an attribute model, or
a model assembled from registered parts, see :mod:`superduperdb.models.composite`)
is resolved from the artifacts it names.

Trust model: loading an artifact unpickles it (pickle, dill, or ``torch.load``
of a whole module), which runs code. With an artifact key
(``security.artifact_key``) every artifact is signed when it is stored and
checked before it is loaded (:mod:`superduperdb.store.signing`): a reference
without a valid signature for its identity, or bytes that differ from the
digest it names, raise :class:`~superduperdb.errors.ArtifactIntegrityError`
before any byte is unpickled. A composite reference is signed over its whole
content (the digests of its parts included), so its parts need only match
their digests. Without a key, nothing is checked: connect only to databases
you trust.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import gridfs

from ..errors import ArtifactError, ArtifactIntegrityError
from . import signing

logger = logging.getLogger(__name__)

# (digest, serializer) -> (object, whether its bytes were checked against the digest)
_CACHE: OrderedDict[tuple[str, str], tuple[Any, bool]] = OrderedDict()
_CACHE_LOCK = threading.Lock()
CACHE_SIZE = 32


def _cache_get(key: tuple[str, str], *, checked: bool) -> Any:
    """The cached object (None if absent; with ``checked``, only one whose bytes matched their digest)."""
    with _CACHE_LOCK:
        if key in _CACHE:
            obj, was_checked = _CACHE[key]
            if was_checked or not checked:
                _CACHE.move_to_end(key)
                return obj
    return None


def _cache_put(key: tuple[str, str], obj: Any, *, checked: bool) -> None:
    with _CACHE_LOCK:
        _CACHE[key] = (obj, checked)
        _CACHE.move_to_end(key)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)


def identity_name(kind: str, name: str) -> str:
    """The name an artifact is signed as: the metadata table and the row's name.

    >>> identity_name("models", "encoder")
    'models/encoder'
    """
    return f"{kind}/{name}"


class ArtifactStore:
    """GridFS bucket ``<collection>._artifacts`` in the collection's database.

    Parameters
    ----------
    database : pymongo or mongomock Database
    collection : str
        Name of the data collection the artifacts belong to.
    key : str, optional
        ``security.artifact_key``: sign what is stored, check what is loaded.
    """

    def __init__(self, database: Any, collection: str, *, key: str | None = None) -> None:
        self.database = database
        self.collection = collection
        self.prefix = f"{collection}._artifacts"
        self._fs = gridfs.GridFS(database, collection=self.prefix)
        self._key = key or None

    @property
    def signed(self) -> bool:
        """Whether artifacts are signed and checked (a key is set)."""
        return self._key is not None

    def __repr__(self) -> str:  # never the key
        return f"ArtifactStore({self.prefix!r}, signed={self.signed})"

    def put_bytes(self, data: bytes, **info: Any) -> str:
        """Store ``data`` (once) and return its SHA-256 hex digest."""
        digest = hashlib.sha256(data).hexdigest()
        # The digest is the file name, not the _id: some MongoDB-wire servers only take ObjectId file ids.
        if not self._fs.exists(filename=digest):
            self._fs.put(data, filename=digest, **info)
        return digest

    def get_bytes(self, digest: str) -> bytes:
        """The bytes stored under ``digest`` (with a key: refused unless they still have that digest)."""
        try:
            data = self._fs.get_last_version(filename=digest).read()
        except gridfs.errors.NoFile:
            raise ArtifactError(
                f"Artifact {digest} is missing from GridFS bucket {self.prefix!r}; the metadata "
                "that points to it is stale. Re-register the object.",
                digest=digest,
            ) from None
        if self.signed and hashlib.sha256(data).hexdigest() != digest:
            raise ArtifactIntegrityError(
                f"The bytes of artifact {digest[:12]} in GridFS bucket {self.prefix!r} were changed (their SHA-256 "
                f"is no longer {digest[:12]}...): they were not loaded. {signing.SIGN_HINT}",
                collection=self.collection, digest=digest)
        return data

    def put(self, obj: Any, serializer: str | None = None, *, name: str, version: int | None = None) -> dict:
        """Serialise and store ``obj`` as ``name`` (``version``), e.g. ``"models/encoder"``, 1.

        Returns the reference to keep in the metadata row: ``{'hash', 'serializer', 'size'}``
        and, with a key, its ``signature`` (see :func:`identity_name`).
        """
        from ..models.serialize import dumps

        data, serializer = dumps(obj, serializer)
        digest = self.put_bytes(data, serializer=serializer)
        _cache_put((digest, serializer), obj, checked=True)
        return self.sign({"hash": digest, "serializer": serializer, "size": len(data)}, name=name, version=version)

    def sign(self, ref: Mapping, *, name: str, version: int | None = None) -> dict:
        """``ref`` signed as ``name``/``version`` (unchanged without a key).

        Trusts that ``ref['hash']`` is the digest of bytes this process stored (or, for a
        composite reference, of its content); :meth:`verify` checks that on every load.
        """
        ref = {k: v for k, v in ref.items() if k != "signature"}
        if not self.signed:
            return ref
        return signing.signed_ref(ref, self._key, collection=self.collection, name=name, version=version)

    def verify(self, ref: Mapping, expect: tuple[str, int | None] | None = None) -> None:
        """Check the signature of reference ``ref`` (without a key: nothing to check).

        ``expect``: the ``(name, version)`` the loader knows the artifact as (the row it read
        it from); a reference signed as anything else is refused.

        Raises
        ------
        ArtifactIntegrityError
            The signature is missing or wrong, it names another identity, or a composite
            reference's content does not match its digest.
        """
        if not self.signed:
            return
        from ..models.composite import content_digest, is_composite

        digest = ref.get("hash")
        signed_as = signing.signed_as(ref)
        name, version = signed_as or expect or (f"artifact {str(digest)[:12]}", None)
        if signed_as is not None and expect is not None and tuple(signed_as) != tuple(expect):
            raise ArtifactIntegrityError(
                f"Artifact {signing.describe(self.collection, *expect)} points to an artifact signed as "
                f"{signing.describe(self.collection, *signed_as)}: it was not loaded (a reference copied from "
                f"elsewhere). {signing.SIGN_HINT}", collection=self.collection, name=expect[0], version=expect[1],
                digest=digest)
        if is_composite(ref) and content_digest(ref) != digest:
            raise ArtifactIntegrityError(
                f"Composite artifact {signing.describe(self.collection, name, version)} was changed (its content no "
                f"longer has its digest): it was not loaded. {signing.SIGN_HINT}", collection=self.collection,
                name=name, version=version, digest=digest)
        signing.check_digest(self._key, str(digest), (ref.get("signature") or {}).get("hmac"),
                             collection=self.collection, name=name, version=version)

    def get(self, ref: Mapping, expect: tuple[str, int | None] | None = None) -> Any:
        """Load the object an artifact reference (from :meth:`put`) points to.

        With a key, the reference is :meth:`verify`-ed first (as ``expect``, the
        ``(name, version)`` of the row it comes from, when given) and the bytes are checked
        against its digest, all before anything is unpickled.
        """
        self.verify(ref, expect)
        return self._load(ref)

    def load_fresh(self, ref: Mapping, expect: tuple[str, int | None] | None = None) -> Any:
        """A private copy of the object ``ref`` points to (unpickled again, never cached), verified as :meth:`get`."""
        from ..models.composite import is_composite
        from ..models.serialize import loads

        self.verify(ref, expect)
        if is_composite(ref):
            raise ArtifactError(f"Artifact {ref['hash'][:12]} is a composite model; load its parts instead.",
                                digest=ref["hash"])
        return self._unpickle(self.get_bytes(ref["hash"]), ref, loads)

    def _load(self, ref: Mapping) -> Any:
        """The object of ``ref`` (cached), its signature already checked; composite parts by digest only."""
        from ..models.composite import build, is_composite
        from ..models.serialize import loads

        key = (ref["hash"], ref["serializer"])
        obj = _cache_get(key, checked=self.signed)
        if obj is None and is_composite(ref):  # built from other artifacts, each loaded once

            obj = build(ref, self._load)
            _cache_put(key, obj, checked=self.signed)
        elif obj is None:
            obj = self._unpickle(self.get_bytes(ref["hash"]), ref, loads)
            _cache_put(key, obj, checked=self.signed)
        return obj

    @staticmethod
    def _unpickle(data: bytes, ref: Mapping, loads: Any) -> Any:
        try:
            return loads(data, ref["serializer"])
        except Exception as exc:
            raise ArtifactError(
                f"Could not load artifact {ref['hash'][:12]} with {ref['serializer']!r}: {exc}. "
                "The code it needs may be missing in this process (install it on every worker).",
                digest=ref["hash"],
            ) from exc

    # -- named files (latest version wins) -----------------------------------------------
    def put_named(self, name: str, data: bytes, **info: Any) -> Any:
        """Store ``data`` as a new version of the file ``name``; return its GridFS id.

        The previous versions stay until :meth:`prune_named`: GridFS writes the
        chunks first and the file document last, so a reader sees the old
        version or the new one whole, never part of the new one. With a key, the
        file document carries the signature of ``data`` as ``name``
        (:func:`~superduperdb.store.signing.signature`).
        """
        if self.signed:
            info["signature"] = {"name": name, "version": None,
                                 "hmac": signing.signature(self._key, data, collection=self.collection, name=name)}
        return self._fs.put(data, filename=name, **info)

    def get_named(self, name: str) -> tuple[bytes, dict] | None:
        """The newest complete version of ``name`` and its file document (None if there is none).

        Raises
        ------
        ArtifactIntegrityError
            With a key: the file is not signed, or not with this key as ``name``
            (checked before the bytes are returned, so before anyone loads them).
        """
        try:
            grid_out = self._fs.get_last_version(filename=name)
        except gridfs.errors.NoFile:
            return None
        data, doc = grid_out.read(), dict(getattr(grid_out, "_file", {}) or {})
        self.check_named(name, data, doc)
        return data, doc

    def check_named(self, name: str, data: Any, doc: Mapping) -> None:
        """With a key: :class:`ArtifactIntegrityError` unless ``data`` (bytes, or a buffer such as a snapshot's
        local copy) is what the file document ``doc`` of ``name`` signs. Without a key: nothing is checked."""
        if self.signed:
            signing.verify(self._key, data, (doc.get("signature") or {}).get("hmac"), collection=self.collection,
                           name=name)

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
