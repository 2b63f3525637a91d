"""Every artifact of a database, its signature's state, and signing them after review.

What ``superduperdb sign-artifacts`` runs: a database written without an
artifact key (or with another one) has artifacts that a client or worker with
``security.artifact_key`` refuses to load. :func:`inventory` lists each stored
reference (the metadata row that points at it, its identity, serializer, size,
digest and the class the row names) with its state, so that someone can
review them; :func:`sign` then signs those that are unsigned (and, if asked,
those whose signature is wrong, e.g. after changing the key).

States:

``signed``     the signature is right for its identity under this key
``unsigned``   no signature (written without a key)
``invalid``    a signature that this key does not confirm for this identity: another key, or a
               reference copied or altered. Signed again only with ``replace_invalid``.
``changed``    the bytes in GridFS no longer have the digest the reference names (or a composite's
               content no longer has its digest): someone changed them. Never signed: register
               the object again from a trusted client.
``missing``    the bytes are gone from GridFS. Never signed.

Examples
--------
>>> import mongomock, superduperdb
>>> from superduperdb.store.backends import register_mongomock
>>> db = mongomock.MongoClient()["shop"]
>>> coll = superduperdb.connect(register_mongomock(db.client), cluster=None).shop.docs
>>> _ = coll.create_model("double", lambda x: 2 * x)
>>> [(e.identity, e.state) for e in inventory(db, "k3y")]
[('models/double v1', 'unsigned'), ('models/double v1', 'unsigned')]
>>> sign(db, "k3y", inventory(db, "k3y"))
2
>>> sorted({e.state for e in inventory(db, "k3y")})
['signed']
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ArtifactError, ArtifactIntegrityError
from . import signing
from .artifacts import ArtifactStore, identity_name

#: Metadata tables whose rows hold an artifact reference in ``artifact`` (models also in ``versions``).
ARTIFACT_TABLES = ("models", "types", "measures", "preprocessors", "forwards", "postprocessors", "metrics",
                   "losses", "splitters")
BUCKET_SUFFIX = "._artifacts.files"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")

SIGNED, UNSIGNED, INVALID, CHANGED, MISSING = "signed", "unsigned", "invalid", "changed", "missing"
SIGNABLE = (UNSIGNED, INVALID)


@dataclass(frozen=True)
class ArtifactEntry:
    """One stored artifact reference (or one version of a named file such as an index snapshot)."""

    collection: str
    kind: str  # the metadata table, or "file" for a named GridFS file
    name: str  # the identity name it is (or would be) signed as: "models/encoder"
    version: int | None
    field: str  # where the reference is: "artifact", "versions.1.artifact", "trainer", "file"
    serializer: str | None
    size: int | None
    digest: str | None
    detail: str
    state: str
    row_id: Any = field(default=None, repr=False, compare=False)

    @property
    def identity(self) -> str:
        return self.name + (f" v{self.version}" if self.version is not None else "")

    def as_dict(self) -> dict:
        return {"collection": self.collection, "kind": self.kind, "identity": self.identity, "name": self.name,
                "version": self.version, "field": self.field, "serializer": self.serializer, "size": self.size,
                "sha256": self.digest, "detail": self.detail, "state": self.state}


def artifact_collections(database: Any) -> list[str]:
    """The data collections of ``database`` that have an artifact bucket."""
    return sorted(n[: -len(BUCKET_SUFFIX)] for n in database.list_collection_names() if n.endswith(BUCKET_SUFFIX))


def inventory(database: Any, key: str, collections: Iterable[str] | None = None) -> list[ArtifactEntry]:
    """Every artifact reference of ``database`` (or of ``collections``), with its state under ``key``."""
    names = list(collections) if collections is not None else artifact_collections(database)
    out: list[ArtifactEntry] = []
    for collection in names:
        store = ArtifactStore(database, collection, key=key)
        out += _references(database, collection, store, key)
        out += _named_files(database, collection, key)
    return out


def sign(database: Any, key: str, entries: Iterable[ArtifactEntry], *, replace_invalid: bool = False) -> int:
    """Sign the ``unsigned`` entries (and ``invalid`` ones with ``replace_invalid``); return how many.

    Each row is updated only if the reference is still the one that was reviewed (a row
    changed meanwhile is left as it is, and not counted).
    """
    states = SIGNABLE if replace_invalid else (UNSIGNED,)
    done = 0
    for entry in entries:
        if entry.state not in states:
            continue
        store = ArtifactStore(database, entry.collection, key=key)
        if entry.kind == "file":
            done += _sign_file(database, entry, key)
            continue
        table = database[f"{entry.collection}._{entry.kind}"]
        row = table.find_one({"_id": entry.row_id})
        if row is None:
            continue
        ref = _get(row, entry.field)
        if not isinstance(ref, Mapping) or ref.get("hash") != entry.digest:
            continue
        top = entry.field.split(".")[0]
        new_top = _set(row[top], entry.field.split(".")[1:],
                       store.sign(ref, name=entry.name, version=entry.version))
        done += table.update_one({"_id": entry.row_id, top: row[top]}, {"$set": {top: new_top}}).modified_count
    return done


# -- references in metadata rows -----------------------------------------------------------------
def _references(database: Any, collection: str, store: ArtifactStore, key: str) -> Iterator[ArtifactEntry]:
    for kind in (*ARTIFACT_TABLES, "learning_tasks"):
        for row in database[f"{collection}._{kind}"].find({}):
            name = identity_name(kind, row.get("name", "?"))
            detail = str(row.get("class") or "")
            if kind == "learning_tasks":
                if isinstance(row.get("trainer"), Mapping) and row["trainer"].get("hash"):
                    yield _entry(store, collection, kind, name, None, "trainer", row["trainer"], "trainer", row["_id"])
                continue
            if kind == "models":
                version = row.get("version", 1)
                if isinstance(row.get("artifact"), Mapping):
                    yield _entry(store, collection, kind, name, version, "artifact", row["artifact"], detail, row["_id"])
                for i, v in enumerate(row.get("versions") or []):
                    if isinstance(v, Mapping) and isinstance(v.get("artifact"), Mapping):
                        yield _entry(store, collection, kind, name, v.get("version"), f"versions.{i}.artifact",
                                     v["artifact"], detail, row["_id"])
            elif isinstance(row.get("artifact"), Mapping):
                yield _entry(store, collection, kind, name, None, "artifact", row["artifact"], detail, row["_id"])


def _entry(store: ArtifactStore, collection: str, kind: str, name: str, version: int | None, where: str,
           ref: Mapping, detail: str, row_id: Any) -> ArtifactEntry:
    from ..models.composite import content_digest, is_composite, parts_of

    digest = ref.get("hash")
    state = _bytes_state(store, digest) if not is_composite(ref) else None
    if is_composite(ref):
        parts = parts_of(ref)
        detail = f"composite of {', '.join(p['hash'][:12] for p in parts)}" + (f" ({detail})" if detail else "")
        bad = [s for s in (_bytes_state(store, p.get("hash")) for p in parts) if s is not None]
        state = CHANGED if content_digest(ref) != digest else (bad[0] if bad else None)
    if state is None:
        state = _signature_state(store, ref, name, version)
    return ArtifactEntry(collection, kind, name, version, where, ref.get("serializer"), ref.get("size"), digest,
                         detail, state, row_id)


def _bytes_state(store: ArtifactStore, digest: Any) -> str | None:
    """``missing`` or ``changed`` when the bytes of ``digest`` are not there as they were; else None."""
    try:
        store.get_bytes(str(digest))
    except ArtifactIntegrityError:
        return CHANGED
    except ArtifactError:
        return MISSING
    return None


def _signature_state(store: ArtifactStore, ref: Mapping, name: str, version: int | None) -> str:
    if signing.signed_as(ref) is None:
        return UNSIGNED
    try:
        store.verify(ref, (name, version))
    except ArtifactIntegrityError:
        return INVALID
    return SIGNED


def _get(row: Mapping, path: str) -> Any:
    value: Any = row
    for part in path.split("."):
        value = value[int(part)] if isinstance(value, list) else value.get(part) if isinstance(value, Mapping) else None
    return value


def _set(value: Any, path: list[str], new: Any) -> Any:
    """A copy of ``value`` with ``new`` at ``path`` (list indexes as digits)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, list):
        copy = list(value)
        copy[int(head)] = _set(copy[int(head)], rest, new)
        return copy
    return {**value, head: _set(value[head], rest, new)}


# -- named files (index snapshots) -----------------------------------------------------------------
def _named_files(database: Any, collection: str, key: str) -> Iterator[ArtifactEntry]:
    import gridfs

    fs = gridfs.GridFS(database, collection=f"{collection}._artifacts")
    for doc in database[f"{collection}{BUCKET_SUFFIX}"].find({}):
        filename = doc.get("filename") or ""
        if _DIGEST.match(filename):
            continue  # content-addressed bytes: listed through the rows that point at them
        data = fs.get(doc["_id"]).read()
        given = (doc.get("signature") or {}).get("hmac")
        if not given:
            state = UNSIGNED
        else:
            try:
                signing.verify(key, data, given, collection=collection, name=filename)
                state = SIGNED
            except ArtifactIntegrityError:
                state = INVALID
        yield ArtifactEntry(collection, "file", filename, None, "file", "snapshot" if filename.startswith("snapshot/")
                            else None, len(data), hashlib.sha256(data).hexdigest(), str(doc.get("uploadDate") or ""),
                            state, doc["_id"])


def _sign_file(database: Any, entry: ArtifactEntry, key: str) -> int:
    import gridfs

    fs = gridfs.GridFS(database, collection=f"{entry.collection}._artifacts")
    data = fs.get(entry.row_id).read()
    if hashlib.sha256(data).hexdigest() != entry.digest:
        return 0  # changed since it was reviewed
    hmac_hex = signing.signature(key, data, collection=entry.collection, name=entry.name)
    files = database[f"{entry.collection}{BUCKET_SUFFIX}"]
    return files.update_one({"_id": entry.row_id},
                            {"$set": {"signature": {"name": entry.name, "version": None, "hmac": hmac_hex}}}).modified_count
