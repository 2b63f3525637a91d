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

    # -- writes: every change of a stored document passes here (or through reindex) --
    def __setitem__(self, key: Any, doc: dict) -> None:
        with self._rwlock.writer():
            self._documents[key] = doc
            if key not in self._order:
                self._order[key] = self._next
                self._next += 1
            for index in self._fields.values():
                index.add(key, doc)

    def __delitem__(self, key: Any) -> None:
        with self._rwlock.writer():
            del self._documents[key]
            self._order.pop(key, None)
            for index in self._fields.values():
                index.remove(key)

    def reindex(self, doc: dict) -> None:
        """Index again a stored document that was changed in place (mongomock's updates)."""
        key = store_key(doc.get("_id"))
        with self._rwlock.writer():
            if self._documents.get(key) is not doc:
                return
            for index in self._fields.values():
                index.add(key, doc)

    def drop(self) -> None:
        with self._rwlock.writer():
            super().drop()
            self._fields = {}
            self._order = {}

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
    def matching(self, filter: Any) -> list[dict] | None:
        """The stored documents that may match ``filter``, in natural order; None: scan them all."""
        self._remove_expired_documents()
        with self._rwlock.reader():
            keys = candidates(filter, self._id_keys, self._fields, len(self._documents))
            if keys is None:
                return None
            order = self._order
            return [self._documents[key] for key in sorted(keys, key=order.__getitem__)]

    def _id_keys(self, condition: Any) -> set | None:
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
        return {v for v in values if v in documents}


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
