"""Where the embedded store keeps its documents: mongomock's stores, with indexes.

mongomock keeps a collection's documents in a dict keyed by ``_id`` (its
:class:`~mongomock.store.CollectionStore`) but never looks anything up in it: every
query scans. :class:`IndexedCollectionStore` keeps that dict and adds what a
MongoDB server has: the ``_id`` map used for lookups, :class:`FieldIndex` es for
the indexes ``create_index`` declares, and the insertion order, so that results
found through an index come back in the same (natural) order as a scan's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from mongomock import helpers
from mongomock.store import CollectionStore, DatabaseStore, ServerStore

from ..digests import Digests, DigestTracker
from .indexes import FieldIndex, candidates, lookup_value


def store_key(_id: Any) -> Any:
    """The key mongomock stores a document under (documents as ``_id`` become hashable)."""
    return helpers.hashdict(_id) if isinstance(_id, dict) else _id


class IndexedCollectionStore(CollectionStore):
    """A mongomock collection store with an ``_id`` map and field indexes."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._fields: dict[str, FieldIndex] = {}
        self._order: dict[Any, int] = {}
        self._next = 0
        # Held while a stored document is changed in place (mongomock's updates) and while a
        # cursor copies stored documents into its results, so neither sees the other half done.
        self.documents_lock = threading.RLock()
        self._digests = DigestTracker()  # per-partition digests, kept as documents change (see store.digests)

    # -- writes: every change of a stored document passes here (or through reindex) --
    def __setitem__(self, key: Any, doc: dict) -> None:
        with self._rwlock.writer():
            self._documents[key] = doc
            if key not in self._order:
                self._order[key] = self._next
                self._next += 1
            for index in self._fields.values():
                index.add(key, doc)
            self._digests.touched(key)

    def __delitem__(self, key: Any) -> None:
        with self._rwlock.writer():
            del self._documents[key]
            self._order.pop(key, None)
            for index in self._fields.values():
                index.remove(key)
            self._digests.touched(key)

    def reindex(self, doc: dict) -> None:
        """Index again a stored document that was changed in place (mongomock's updates)."""
        key = store_key(doc.get("_id"))
        with self._rwlock.writer():
            if self._documents.get(key) is not doc:
                return
            for index in self._fields.values():
                index.add(key, doc)
            self._digests.touched(key)

    def drop(self) -> None:
        with self._rwlock.writer():
            super().drop()
            self._fields = {}
            self._order = {}
            self._digests.reset()

    def digests(self) -> Digests:
        """The collection's per-partition digests, re-hashing only the documents written since the last call."""
        # documents_lock before the store's lock, as cursors and in-place updates take them (else a deadlock)
        with self.documents_lock, self._rwlock.reader():
            return self._digests.digests(self._documents)

    # -- indexes --
    def create_index(self, index_name: str, index_dict: dict) -> None:
        super().create_index(index_name, index_dict)
        field = _leading_field(index_dict)
        if field is None or field == "_id" or field in self._fields:
            return
        index = FieldIndex(field)
        with self._rwlock.writer():
            for key, doc in self._documents.items():
                index.add(key, doc)
            self._fields[field] = index

    def drop_index(self, index_name: str) -> None:
        dropped = _leading_field(self.indexes.get(index_name, {}))
        super().drop_index(index_name)
        still = {_leading_field(spec) for spec in self.indexes.values()}
        if dropped is not None and dropped not in still:
            with self._rwlock.writer():
                self._fields.pop(dropped, None)

    @property
    def indexed_fields(self) -> list[str]:
        """The fields that have an index (besides ``_id``)."""
        return list(self._fields)

    # -- reads --
    def matching(self, filter: Any) -> tuple[list[dict], Any] | None:
        """``(documents, residual)``: the stored documents that may match ``filter``, in natural
        order, and what of the filter they must still be checked against; None: scan them all.

        The residual leaves out an ``_id`` condition the ``_id`` map answered exactly (checking
        ``{'_id': {'$in': ids}}`` again on each document costs ``len(ids)`` per document).
        """
        self._remove_expired_documents()
        exact: list = []

        def ids(condition: Any) -> set | None:
            keys = self._id_keys(condition)
            if keys is not None and keys.exact:
                exact.append(condition)
            return keys

        with self._rwlock.reader():
            keys = candidates(filter, ids, self._fields)
            if keys is None:
                return None
            order = self._order
            docs = [self._documents[key] for key in sorted(keys, key=order.__getitem__)]
        return docs, (without_id(filter, exact[0]) if len(exact) == 1 else filter)

    def _id_keys(self, condition: Any) -> _Keys | None:
        if isinstance(condition, Mapping):
            if set(condition) == {"$eq"}:
                values: Iterable = [condition["$eq"]]
            elif set(condition) == {"$in"} and isinstance(condition["$in"], (list, tuple)):
                values = condition["$in"]
            else:
                return None
        else:
            values = [condition]
        values = list(values)
        if not all(lookup_value(v) for v in values):
            return None
        documents = self._documents
        found = _Keys(v for v in values if v in documents)
        # Exact when each found document's _id is of the kind asked for (Python's 1 == True == 1.0:
        # MongoDB matches 1 and 1.0, not true).
        found.exact = all(_same_kind(documents[v].get("_id"), v) for v in found)
        return found


class _Keys(set):
    """Keys found through the ``_id`` map; ``exact``: they match the condition, no check needed."""

    exact = False


def _same_kind(stored: Any, asked: Any) -> bool:
    if isinstance(stored, bool) or isinstance(asked, bool):
        return type(stored) is type(asked)
    if isinstance(stored, (int, float)) and isinstance(asked, (int, float)):
        return True
    return type(stored) is type(asked)


def without_id(filter: Mapping, condition: Any) -> dict:
    """``filter`` without the ``_id`` condition ``condition`` (at the top level or in a top-level ``$and``)."""
    if filter.get("_id") is condition:
        return {k: v for k, v in filter.items() if k != "_id"}
    rest = dict(filter)
    parts = []
    for part in filter.get("$and") or []:
        if isinstance(part, Mapping) and part.get("_id") is condition:
            part = {k: v for k, v in part.items() if k != "_id"}
            if not part:
                continue
        parts.append(part)
    if parts:
        rest["$and"] = parts
    else:
        rest.pop("$and", None)
    return rest


def _leading_field(index_dict: Mapping) -> str | None:
    keys = index_dict.get("key") or []
    keys = list(keys.items() if isinstance(keys, Mapping) else keys)
    if not keys:
        return None
    field, direction = keys[0]
    # Text, hashed and geo indexes answer other queries: leave those to the scan.
    return field if direction in (1, -1) else None


class IndexedDatabaseStore(DatabaseStore):
    """A mongomock database store whose collections are :class:`IndexedCollectionStore` s."""

    def __getitem__(self, col_name: str) -> IndexedCollectionStore:
        try:
            return self._collections[col_name]
        except KeyError:
            col = self._collections[col_name] = IndexedCollectionStore(col_name)
            return col

    def rename(self, name: str, new_name: str) -> None:
        col = self._collections.pop(name, None) or IndexedCollectionStore(new_name)
        col.name = new_name
        self._collections[new_name] = col


class IndexedServerStore(ServerStore):
    """A mongomock server store whose databases are :class:`IndexedDatabaseStore` s."""

    def __getitem__(self, db_name: str) -> IndexedDatabaseStore:
        try:
            return self._databases[db_name]
        except KeyError:
            db = self._databases[db_name] = IndexedDatabaseStore()
            return db
