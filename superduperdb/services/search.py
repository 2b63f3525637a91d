"""Semantic search on the client side: ``find(filter, like=..., n=...)``.

1. The ``like`` document becomes a vector: the stored vector of ``{'_id': x}``,
   or the output of the index's model whose key is a field of ``like``.
2. The master answers. Default (filter first): the filter's matching ids are
   the candidates, so up to ``n`` correct results come back whenever ``n``
   documents match. ``similar_first=True``: the ``n`` most similar, then the
   filter (the original API's alternative order; may return fewer than ``n``).
3. The documents are read from MongoDB and returned in similarity order, each
   with ``_score`` (higher is more similar).

Index and model rows are kept for :data:`CACHE_TTL` seconds instead of being
read from the metadata on every query; any metadata write in this process
(registering or deleting a model or an index, a new model version) drops them
at once, writes by other processes after at most ``CACHE_TTL``.
:meth:`SearchService.find_like_many` answers several ``like`` documents with
one call to the master and one read of the documents.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from bson.binary import Binary

from ..config.secrets import redact_url
from ..errors import DecodingError, SemanticIndexError
from ..master.filters import answerable
from ..store.downloads import download_settings
from ..store.downloads import fetch as fetch_url
from ..store.layout import CONTENT, LIKE
from ..store.metadata import generation
from ..store.models import load_model
from .query_encoding import encode_query

if TYPE_CHECKING:
    from .indexes import IndexService
    from .scope import Scope


CACHE_TTL = 2.0  # seconds an index or model row read for a query is reused


class _Recent:
    """Values kept for ``ttl`` seconds, and only while this process wrote no metadata."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._items: dict[Any, tuple[float, int, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, load: Callable[[], Any]) -> Any:
        now, current = time.monotonic(), generation()
        with self._lock:
            hit = self._items.get(key)
        if hit is not None and hit[0] > now and hit[1] == current:
            return hit[2]
        value = load()  # errors (an unknown name) are not cached
        with self._lock:
            self._items[key] = (now + self.ttl, current, value)
        return value


class SearchService:
    """``find(like=...)``: query vectors, the master's answer, the documents in order."""

    def __init__(self, scope: Scope, indexes: IndexService) -> None:
        self.scope = scope
        self.indexes = indexes
        self._recent = _Recent(CACHE_TTL)

    def index_row(self, name: str | None) -> dict:
        """The row of semantic index ``name`` (None: the default), from the last seconds' reads."""
        return self._recent.get(("index", name), lambda: self.indexes.get(name))

    def model(self, name: str) -> Any:
        """The loaded model ``name`` (its current version), from the last seconds' reads."""
        return self._recent.get(("model", name), lambda: load_model(self.scope.metadata, self.scope.artifacts, name))

    def row(self, kind: str, name: str) -> dict | None:
        """Metadata row ``name`` of ``kind`` (None: none), from the last seconds' reads."""
        return self._recent.get((kind, name), lambda: self.scope.metadata.find_one(kind, name))

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
                return encode_query(self.scope, model, key, like, source=self)  # follows the features chain
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
                    settings = download_settings(self.scope.metadata, self.scope.config)  # the collection's
                    data = fetch_url(url, settings.timeout, settings.headers)
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
                  similar_first: bool, allow_partial: bool = False,
                  explain: dict | None = None) -> tuple[list[dict], str]:
        """The raw documents most similar to ``like`` (each with ``_score``), best first, and the index's name.

        ``explain`` (a dict) is filled as :meth:`Cursor.explain` shows it: the index, the filter's
        candidates and, per shard, how it answered (see :mod:`superduperdb.master.fanout`).
        """
        start = time.perf_counter()
        _check_n(n)
        if isinstance(like, list):
            raise SemanticIndexError("like= takes one document; for several, use "
                                     "collection.search_many([{...}, {...}], n=...).")
        row = self.index_row(semantic_index)
        vector = self.query_vector(row, like)
        found, name = self._search(row, [vector], filter, projection, n, similar_first, allow_partial, explain, start)
        return found[0], name

    def _search(self, row: dict, vectors: list, filter: dict, projection: Any, n: int, similar_first: bool,
                allow_partial: bool, explain: dict | None, start: float) -> tuple[list[list[dict]], str]:
        """The documents of each of ``vectors``: the filter resolved (in the index, or as ids from the store), the
        shards asked, the documents read; ``explain`` filled with the plan and where the time went."""
        timer = _Timer(start)
        encoded = self.scope.types.encode(filter, "filter", mark=False)
        in_index = bool(encoded) and not similar_first and filter_in_index(row, encoded)
        with timer.store():
            candidates = None if in_index else self._candidates(encoded, similar_first)
        plan = _explained(explain, row, n, candidates, similar_first)
        if candidates is not None and not candidates:
            found: list = [([], []) for _ in vectors]
        else:
            with timer.master():
                found = self.indexes.master.search_many(self.scope.target, row, vectors, n, candidates,
                                                        allow_partial=allow_partial, explain=plan,
                                                        filter=encoded if in_index else None)
        with timer.store():
            docs = self._fetch(found, encoded, projection)
        if plan is not None:
            timer.report(plan, filter_in_index=in_index)
        return docs, row["name"]

    def find_like_many(self, filter: dict, likes: Sequence[Mapping], *, projection: Any, n: int,
                       semantic_index: str | None, similar_first: bool, allow_partial: bool = False,
                       explain: dict | None = None) -> tuple[list[list[dict]], str]:
        """:meth:`find_like` for each of ``likes``: one call to the master, one read of the documents."""
        start = time.perf_counter()
        _check_n(n)
        if isinstance(likes, (Mapping, str, bytes)) or not isinstance(likes, Sequence):
            raise SemanticIndexError(f"likes must be a list of documents such as [{{'text': 'a query'}}], not {likes!r}.")
        if not likes:
            return [], self.index_row(semantic_index)["name"]
        row = self.index_row(semantic_index)
        vectors = self.query_vectors(row, likes)
        return self._search(row, vectors, filter, projection, n, similar_first, allow_partial, explain, start)

    def query_vectors(self, row: dict, likes: Sequence[Mapping]) -> list:
        """:meth:`query_vector` of each of ``likes`` (the ``{'_id': x}`` ones with one call to the master)."""
        by_id = [i for i, like in enumerate(likes) if isinstance(like, Mapping) and "_id" in like]
        stored = self.indexes.master.vectors_of(self.scope.target, row, [likes[i]["_id"] for i in by_id]) \
            if by_id else []
        vectors: list = [None] * len(likes)
        for i, vector in zip(by_id, stored):
            if vector is None:
                raise SemanticIndexError(
                    f"Document {likes[i]['_id']!r} has no vector in index {row['name']!r} (missing, or its outputs "
                    "are not computed yet: wait on the insert's jobs).", index=row["name"])
            vectors[i] = vector
        for i, like in enumerate(likes):
            if vectors[i] is None:
                vectors[i] = self.query_vector(row, like)
        return vectors

    def _candidates(self, encoded: dict, similar_first: bool) -> list | None:
        """The ids matching the filter, searched among (None: no filter, or similar first)."""
        if encoded and not similar_first:
            return [d["_id"] for d in self.scope.raw.find(encoded, {"_id": 1})]
        return None

    def _fetch(self, found: list[tuple[list, list]], encoded: dict, projection: Any) -> list[list[dict]]:
        """The documents of each ``(ids, scores)`` in that order, with ``_score`` (one read for all)."""
        wanted = list(dict.fromkeys(i for ids, _ in found for i in ids))
        query: dict = {"_id": {"$in": wanted}}
        if encoded:
            query = {"$and": [encoded, query]}
        fetch, drop_id = _with_id(projection)
        docs = {d["_id"]: d for d in self.scope.raw.find(query, fetch)} if wanted else {}
        out = []
        for ids, scores in found:
            hits = [{**docs[i], "_score": s} for i, s in zip(ids, scores) if i in docs]
            if drop_id:
                hits = [{k: v for k, v in d.items() if k != "_id"} for d in hits]
            out.append(hits)
        return out

    def join_neighbourhood(self, name: str, transform: Callable[[dict], Any], *, raw: bool = False,
                           decode_errors: str = "raise") -> Callable[[dict], Any]:
        """Wrap ``transform`` so that ``_like.<name>`` holds documents instead of ids (decoded as
        the documents themselves: not with ``raw``; ``decode_errors`` as in ``find``)."""
        self.scope.metadata.get("neighbourhoods", name)
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


def filter_in_index(row: dict, encoded: dict) -> bool:
    """Whether the shards of index ``row`` answer the (encoded) filter from its filter fields."""
    fields = row.get("filter_fields")
    return bool(fields) and answerable(encoded, fields)


class _Timer:
    """Where a search's time went: the store (the filter's ids, the documents), the master (the shards, the
    merge), the caller (the rest: the query vector, encoding, assembling)."""

    def __init__(self, start: float) -> None:
        self.start, self.store_s, self.master_s = start, 0.0, 0.0

    @contextmanager
    def store(self) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.store_s += time.perf_counter() - t

    @contextmanager
    def master(self) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.master_s += time.perf_counter() - t

    def report(self, plan: dict, **more: Any) -> None:
        total = time.perf_counter() - self.start
        size = plan.get("size")
        filtered = plan.get("filtered")
        selectivity = None if filtered is None else 0.0 if not filtered else min(1.0, filtered / size) if size \
            else None
        plan.update(more, selectivity=selectivity,
                    store_ms=self.store_s * 1000, master_ms=self.master_s * 1000,
                    caller_ms=max(0.0, total - self.store_s - self.master_s) * 1000, total_ms=total * 1000)
        plan.setdefault("plan", None)


def _explained(explain: dict | None, row: dict, n: int, candidates: list | None, similar_first: bool) -> dict | None:
    """Fill ``explain`` with what is known before the shards answer; the dict they add to (None: no explain)."""
    if explain is None:
        return None
    explain.update(index=row["name"], n=n, similar_first=similar_first,
                   filtered=None if candidates is None else len(candidates), shards=[], partial=False,
                   filter_fields=list(row.get("filter_fields") or []))
    return explain


def _check_n(n: Any) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise SemanticIndexError(f"n must be a positive integer, not {n!r}.")


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
