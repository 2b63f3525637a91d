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

from collections.abc import Callable, Mapping, Sequence, Set
from typing import TYPE_CHECKING, Any

from bson.binary import Binary

from ..config.secrets import redact_url
from ..errors import DecodingError, SemanticIndexError
from ..store.downloads import fetch as fetch_url
from ..store.layout import CONTENT, LIKE
from .query_encoding import encode_query

if TYPE_CHECKING:
    from .indexes import IndexService
    from .scope import Scope


class SearchService:
    """``find(like=...)``: query vectors, the master's answer, the documents in order."""

    def __init__(self, scope: Scope, indexes: IndexService) -> None:
        self.scope = scope
        self.indexes = indexes

    def query_vector(self, row: dict, like: Mapping) -> Any:
        """The vector that represents the ``like`` document in index ``row``."""
        if not isinstance(like, Mapping) or not like:
            raise SemanticIndexError(f"like must be a non-empty document such as {{'text': 'a query'}} or {{'_id': id}}, not {like!r}.")
        if "_id" in like:
            vector = self.indexes.master.vector_of(self.scope.target, row, like["_id"])
            if vector is None:
                raise SemanticIndexError(
                    f"Document {like['_id']!r} has no vector in index {row['name']!r} (missing, or its outputs are "
                    "not computed yet: wait on the insert's jobs).", index=row["name"])
            return vector
        for model, key in zip(row["models"], row["keys"]):
            if key == "_base" or key in like:
                if key == "_base":
                    like = self._download(like)
                else:
                    like = {**like, key: self._download(like[key])}
                return encode_query(self.scope, model, key, like)  # follows the watcher's features chain
        raise SemanticIndexError(
            f"No model of index {row['name']!r} reads a field of like={list(like)}: it encodes queries from "
            f"the keys {row['keys']} (models {row['models']}). Use one of those keys, or {{'_id': id}}.",
            index=row["name"], keys=list(row["keys"]))

    def _download(self, value: Any) -> Any:
        """``value`` with each ``{'_content': {'url': ..., 'type': ...}}`` fetched now and decoded,
        as an insert's download job would store it (a ``like`` document is not stored)."""
        if isinstance(value, Mapping):
            content = value.get(CONTENT)
            if len(value) == 1 and isinstance(content, Mapping) and "url" in content and "bytes" not in content:
                url, type_name = content["url"], content.get("type", "bytes")
                if not isinstance(type_name, str):
                    raise SemanticIndexError(f"The type of a URL in like must be a type name, not {type_name!r}.")
                try:
                    data = fetch_url(url)
                except Exception as exc:
                    raise SemanticIndexError(
                        f"Could not download {redact_url(str(url))!r} for like=: {redact_url(str(exc))}. Check the "
                        "URL (http://, https:// or file://), or pass the content itself.", url=redact_url(str(url))
                    ) from None
                return {CONTENT: {"bytes": Binary(data), "type": type_name}}
            return {k: self._download(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._download(v) for v in value]
        return value

    def find_like(self, filter: dict, like: Mapping, *, projection: Any, n: int, semantic_index: str | None,
                  similar_first: bool) -> tuple[list[dict], str]:
        """The raw documents most similar to ``like`` (each with ``_score``), best first, and the index's name."""
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            raise SemanticIndexError(f"n must be a positive integer, not {n!r}.")
        row = self.indexes.get(semantic_index)
        vector = self.query_vector(row, like)
        target, raw = self.scope.target, self.scope.raw
        encoded = self.scope.types.encode(filter, "filter", mark=False)
        master = self.indexes.master
        if encoded and not similar_first:
            candidates = [d["_id"] for d in raw.find(encoded, {"_id": 1})]
            ids, scores = master.search(target, row, vector, n, candidates) if candidates else ([], [])
        else:
            ids, scores = master.search(target, row, vector, n, None)
        query = {"_id": {"$in": list(ids)}}
        if encoded:
            query = {"$and": [encoded, query]}
        fetch, drop_id = _with_id(projection)
        found = {d["_id"]: d for d in raw.find(query, fetch)} if ids else {}
        docs = [{**found[i], "_score": s} for i, s in zip(ids, scores) if i in found]
        if drop_id:
            docs = [{k: v for k, v in d.items() if k != "_id"} for d in docs]
        return docs, row["name"]

    def join_neighbourhood(self, name: str, transform: Callable[[dict], Any], *, raw: bool = False,
                           decode_errors: str = "raise") -> Callable[[dict], Any]:
        """Wrap ``transform`` so that ``_like.<name>`` holds documents instead of ids (decoded as
        the documents themselves: not with ``raw``; ``decode_errors`` as in ``find``)."""
        self.scope.metadata.get("neighbourhoods", name, hint="Create it with create_neighbourhood.")
        store, types = self.scope.raw, self.scope.types

        def decoded(doc: dict) -> dict | None:
            if raw:
                return doc
            try:
                return types.decode(doc, errors="raw" if decode_errors == "raw" else "raise")
            except DecodingError:
                if decode_errors == "skip":
                    return None
                raise

        def joined(doc: dict) -> Any:
            doc = transform(doc)
            if not isinstance(doc, dict):  # left out by decode_errors='skip'
                return doc
            likes = doc.get(LIKE)
            ids = likes.get(name) if isinstance(likes, Mapping) else None
            if ids and isinstance(ids, list):
                found = {d["_id"]: d for d in store.find({"_id": {"$in": ids}})}
                neighbours = [decoded(found[i]) for i in ids if i in found]
                doc[LIKE] = {**likes, name: [d for d in neighbours if d is not None]}
            return doc

        return joined


def _with_id(projection: Any) -> tuple[Any, bool]:
    """The projection to fetch with (it keeps ``_id``, which orders the results) and whether
    the caller's projection drops ``_id`` (done after the fetch). Field lists are pymongo's too."""
    if projection is None:
        return None, False
    if not isinstance(projection, Mapping):
        if isinstance(projection, (str, bytes)) or not isinstance(projection, (Sequence, Set)):
            raise TypeError("projection must be a mapping or list of key names")
        if not all(isinstance(field, str) for field in projection):
            raise TypeError("projection must be a list of key names, each an instance of str")
        return dict.fromkeys(projection, 1), False
    drop_id = "_id" in projection and not isinstance(projection["_id"], Mapping) and not projection["_id"]
    fetch = {k: v for k, v in projection.items() if not (drop_id and k == "_id")}
    return (fetch or None), drop_id
