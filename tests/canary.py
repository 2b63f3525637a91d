"""A pickle that leaves a trace when it is loaded: what an attacker would store in place of a model.

``canary_pickle(path)`` unpickles by calling ``os.mkdir(path)``; a test stores it where an
artifact was and checks that ``path`` never appears (the bytes were refused before loading).
"""

from __future__ import annotations

import os
import pickle


class _Canary:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def canary_pickle(path: str) -> bytes:
    data = pickle.dumps(_Canary(str(path)))
    assert b"mkdir" in data
    return data


def plant(coll, data: bytes, serializer: str = "pickle") -> dict:
    """What someone with write access to the database (and no key) can do: store bytes in the
    collection's artifact bucket. Returns the reference that names them."""
    import hashlib

    import gridfs

    digest = hashlib.sha256(data).hexdigest()
    fs = gridfs.GridFS(coll.raw.database, collection=f"{coll.name}._artifacts")
    if not fs.exists(filename=digest):
        fs.put(data, filename=digest)
    return {"hash": digest, "serializer": serializer, "size": len(data)}


def point_model_at(coll, model: str, ref: dict) -> None:
    """Point model ``model`` (its serving version) at the artifact ``ref``, as a raw database write."""
    models = coll.raw.database[f"{coll.name}._models"]
    row = models.find_one({"name": model})
    versions = [{**v, "artifact": ref} if v["version"] == row["version"] else v for v in row["versions"]]
    models.update_one({"name": model}, {"$set": {"artifact": ref, "versions": versions}})
