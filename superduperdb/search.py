"""Semantic search on the client side: ``find(filter, like=..., n=...)``.

1. The ``like`` document becomes a vector: the stored vector of ``{'_id': x}``,
   or the output of the index's model whose key is a field of ``like``.
2. The master answers. Default (filter first): the filter's matching ids are
   the candidates, so up to ``n`` correct results come back whenever ``n``
   documents match. ``similar_first=True``: the ``n`` most similar, then the
   filter (the original API's alternative order; may return fewer than ``n``).
3. The documents are read from MongoDB and returned in similarity order, each
   with ``_score`` (higher is more similar).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .cursor import Cursor, ListSource
from .errors import SemanticIndexError
from .tasks.context import Target

if TYPE_CHECKING:
    from .collection import Collection


def query_vector(coll: Collection, row: dict, like: Mapping) -> Any:
    """The vector that represents the ``like`` document in index ``row``."""
    if not isinstance(like, Mapping) or not like:
        raise SemanticIndexError(f"like must be a non-empty document such as {{'text': 'a query'}} or {{'_id': id}}, not {like!r}.")
    if "_id" in like:
        vector = coll._indexes.master.call("vector_of", Target.of(coll), row, like["_id"])
        if vector is None:
            raise SemanticIndexError(
                f"Document {like['_id']!r} has no vector in index {row['name']!r} (missing, or its outputs are "
                "not computed yet: wait on the insert's jobs).", index=row["name"])
        return vector
    for model, key in zip(row["models"], row["keys"]):
        if key == "_base" or key in like:
            value = like if key == "_base" else like[key]
            value = coll._types.decode(value)
            return coll._models.load(model).predict([value])[0]
    raise SemanticIndexError(
        f"No model of index {row['name']!r} reads a field of like={list(like)}: it encodes queries from "
        f"the keys {row['keys']} (models {row['models']}). Use one of those keys, or {{'_id': id}}.",
        index=row["name"], keys=list(row["keys"]))


def find_like(
    coll: Collection, filter: dict, like: Mapping, *, projection: Any, n: int, semantic_index: str | None,
    similar_first: bool, raw: bool, features: Mapping | None, similar_join: str | None,
) -> Cursor:
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise SemanticIndexError(f"n must be a positive integer, not {n!r}.")
    row = coll._indexes.get(semantic_index)
    vector = query_vector(coll, row, like)
    target = Target.of(coll)
    encoded = coll._types.encode(filter, "filter", mark=False)
    master = coll._indexes.master
    if encoded and not similar_first:
        candidates = [d["_id"] for d in coll.raw.find(encoded, {"_id": 1})]
        ids, scores = master.call("search", target, row, vector, n, candidates) if candidates else ([], [])
    else:
        ids, scores = master.call("search", target, row, vector, n, None)
    query = {"_id": {"$in": list(ids)}}
    if encoded:
        query = {"$and": [encoded, query]}
    found = {d["_id"]: d for d in coll.raw.find(query, projection)} if ids else {}
    ordered = [{**found[i], "_score": s} for i, s in zip(ids, scores) if i in found]
    transform = coll._transform(raw=raw, features=features)
    if similar_join:
        transform = join_neighbourhood(coll, similar_join, transform)
    return Cursor(ListSource(ordered), transform, f"{coll.full_name} like={list(like)} n={n} index={row['name']!r}")


def join_neighbourhood(coll: Collection, name: str, transform: Callable[[dict], dict]) -> Callable[[dict], dict]:
    """Wrap ``transform`` so that ``_like.<name>`` holds documents instead of ids."""
    coll._metadata.get("neighbourhoods", name, hint="Create it with create_neighbourhood.")

    def joined(doc: dict) -> dict:
        doc = transform(doc)
        ids = (doc.get("_like") or {}).get(name)
        if ids:
            found = {d["_id"]: d for d in coll.raw.find({"_id": {"$in": ids}})}
            doc["_like"] = {**doc["_like"], name: [coll._types.decode(found[i]) for i in ids if i in found]}
        return doc

    return joined
