"""Signed artifacts: an HMAC-SHA256 of an artifact's bytes and its identity, checked before loading.

Loading an artifact runs code (pickle, dill, ``torch.load`` of a module), so
with a key (``security.artifact_key``) a database write alone must never be
enough to make a worker run code: every artifact is stored with a signature,
and loading refuses one whose signature is missing or wrong
(:class:`~superduperdb.errors.ArtifactIntegrityError`) *before any byte is
unpickled*. The key lives only in the config (the client's, and the snapshot
each job carries to the workers); it is never shown or stored in the database.

What is signed
    The artifact's *identity* and the SHA-256 of its bytes::

        HMAC-SHA256(key, "superduperdb-artifact-v1\\n" + JSON({"collection", "name", "version", "sha256"}))

    ``collection`` is the data collection the artifact belongs to, ``name``
    says what it is (``"models/encoder"``, ``"types/image"``,
    ``"snapshot/<index>/<uid>"`` ...: the metadata table and the row's name),
    ``version`` the model version (None for everything else). Signing the
    digest rather than the bytes again lets a process check an object it
    already holds in its cache without its bytes; the bytes read from GridFS
    are always hashed and compared with that digest first.
Where the signature is kept
    In the artifact reference that the metadata row holds
    (``{"hash", "serializer", "size", "signature": {"name", "version", "hmac"}}``),
    because the same bytes may be stored once for several identities; for
    named files (index snapshots), in the GridFS file document.
What it protects against
    Someone who can write to the database but does not know the key: new
    bytes, changed bytes, an unsigned reference, a reference copied from
    another collection or to another name or version are all refused. It does
    not protect against someone who holds the key (the config of a client or a
    worker), nor against code that was signed after a careless review.

The two functions other modules use (e.g. a local on-disk copy of a snapshot,
which can carry and check the same signature as its GridFS copy):

>>> sig = signature("k3y", b"bytes", collection="docs", name="snapshot/idx/1")
>>> verify("k3y", b"bytes", sig, collection="docs", name="snapshot/idx/1")
>>> verify("k3y", b"other", sig, collection="docs", name="snapshot/idx/1")
Traceback (most recent call last):
...
superduperdb.errors.ArtifactIntegrityError: Artifact 'snapshot/idx/1' of collection 'docs' has a wrong signature ...
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from ..errors import ArtifactIntegrityError

DOMAIN = b"superduperdb-artifact-v1\n"
SIGN_HINT = ("If you trust it, review it and sign it with `superduperdb sign-artifacts` (docs/security.md); "
             "otherwise delete it and register the object again from a trusted client.")


def _key_bytes(key: str | bytes) -> bytes:
    if isinstance(key, str):
        key = key.encode()
    if not key:
        raise ValueError("an artifact key must not be empty")
    return key


def describe(collection: str, name: str, version: int | None = None) -> str:
    """How errors name an artifact: ``"'models/encoder' version 2 of collection 'docs'"``."""
    return f"{name!r}" + (f" version {version}" if version is not None else "") + f" of collection {collection!r}"


def digest_signature(key: str | bytes, sha256: str, *, collection: str, name: str, version: int | None = None) -> str:
    """The signature (hex) of an artifact whose bytes have the SHA-256 hex digest ``sha256``."""
    identity = {"collection": collection, "name": name, "version": version, "sha256": sha256}
    message = DOMAIN + json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(_key_bytes(key), message, hashlib.sha256).hexdigest()


def signature(key: str | bytes, data: bytes, *, collection: str, name: str, version: int | None = None) -> str:
    """The signature (64 hex digits) of ``data`` stored as ``name`` (``version``) of ``collection``.

    Parameters
    ----------
    key : str or bytes
        ``security.artifact_key``.
    data : bytes
        The artifact's bytes, exactly as stored.
    collection, name, version :
        Its identity (see the module docstring).
    """
    return digest_signature(key, hashlib.sha256(data).hexdigest(), collection=collection, name=name, version=version)


def check_digest(key: str | bytes, sha256: str, given: Any, *, collection: str, name: str,
                 version: int | None = None) -> None:
    """Raise :class:`ArtifactIntegrityError` unless ``given`` is the signature of digest ``sha256``."""
    what = describe(collection, name, version)
    if not given:
        raise ArtifactIntegrityError(f"Artifact {what} is not signed, and this config has an artifact key "
                                     f"(security.artifact_key): it was not loaded. {SIGN_HINT}",
                                     collection=collection, name=name, version=version, digest=sha256)
    expected = digest_signature(key, sha256, collection=collection, name=name, version=version)
    if not isinstance(given, str) or not hmac.compare_digest(expected, given):
        raise ArtifactIntegrityError(f"Artifact {what} has a wrong signature (its bytes or identity changed since "
                                     "it was signed, or it was signed with another key): it was not loaded. "
                                     + SIGN_HINT, collection=collection, name=name, version=version, digest=sha256)


def verify(key: str | bytes, data: bytes, given: Any, *, collection: str, name: str,
           version: int | None = None) -> None:
    """Raise :class:`~superduperdb.errors.ArtifactIntegrityError` unless ``given`` is the
    :func:`signature` of ``data`` as ``name`` (``version``) of ``collection``: call it before
    loading ``data``."""
    check_digest(key, hashlib.sha256(data).hexdigest(), given, collection=collection, name=name, version=version)


def signed_ref(ref: Mapping, key: str | bytes, *, collection: str, name: str, version: int | None = None) -> dict:
    """``ref`` (an artifact reference) with the signature of its ``hash`` as ``name``/``version``."""
    hmac_hex = digest_signature(key, ref["hash"], collection=collection, name=name, version=version)
    return {**ref, "signature": {"name": name, "version": version, "hmac": hmac_hex}}


def signed_as(ref: Mapping) -> tuple[str, int | None] | None:
    """The ``(name, version)`` a reference says it was signed as (None: unsigned)."""
    sig = ref.get("signature")
    if not isinstance(sig, Mapping) or not isinstance(sig.get("name"), str):
        return None
    return sig["name"], sig.get("version")
