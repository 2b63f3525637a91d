"""Where the embedded store keeps its documents: mongomock's stores, with indexes.

mongomock keeps a collection's documents in a dict keyed by ``_id`` (its
:class:`~mongomock.store.CollectionStore`) but never looks anything up in it: every
query scans. :class:`IndexedCollectionStore` keeps that dict and adds what a
MongoDB server has: the ``_id`` map used for lookups, :class:`FieldIndex` es for
the indexes ``create_index`` declares, and the insertion order, so that results
found through an index come back in the same (natural) order as a scan's.

Over a folder (:class:`IndexedServerStore` with a :class:`~.folder.Folder`),
every change also goes to the folder's journal: puts and deletes of
documents, created, dropped and renamed collections, created and dropped
indexes. A change is journaled before it is applied in memory (or, for
mongomock's in-place updates, before the update call returns; a failed
write is undone in memory), so what the journal replays is what callers saw
acknowledged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from mongomock import helpers
from mongomock.store import CollectionStore, DatabaseStore, ServerStore

from ..digests import Digests, DigestTracker
from .indexes import FieldIndex, candidates, lookup_value


def store_key(_id: Any) -> Any:
    """The key mongomock stores a document under (documents as ``_id`` become hashable)."""
    return helpers.hashdict(_id) if isinstance(_id, dict) else _id


Journal = Callable[[dict], None]


def _no_journal(op: dict) -> None:
    return None


class IndexedCollectionStore(CollectionStore):
    """A mongomock collection store with an ``_id`` map and field indexes.

    ``journal(op)`` records each change (a folder store), before it is applied.
    """

    def __init__(self, name: str, journal: Journal = _no_journal) -> None:
        self._journal: Journal = _no_journal  # mongomock's __init__ assigns `indexes`: not a change to record
        super().__init__(name)
        self._journal = journal
        self._fields: dict[str, FieldIndex] = {}
        self._order: dict[Any, int] = {}
        self._next = 0
        # Held while a stored document is changed in place (mongomock's updates) and while a
        # cursor copies stored documents into its results, so neither sees the other half done.
        self.documents_lock = threading.RLock()
        self._digests = DigestTracker()  # per-partition digests, kept as documents change (see store.digests)

    @property
    def indexes(self) -> dict:
        return self._index_specs

    @indexes.setter
    def indexes(self, value: dict) -> None:  # mongomock's __init__, drop and drop_indexes assign {}
        if getattr(self, "_index_specs", None):
            self._journal({"o": "ix", "c": self.name})
        self._index_specs = value

    def create(self) -> None:
        if not self._is_force_created:
            self._journal({"o": "c", "c": self.name})
        super().create()

    # -- writes: every change of a stored document passes here (or through reindex) --
    def __setitem__(self, key: Any, doc: dict) -> None:
        with self._rwlock.writer():
            self._journal({"o": "p", "c": self.name, "doc": doc})
            self.load_put(key, doc)
            self._digests.touched(key)

    def load_put(self, key: Any, doc: dict) -> None:
        """Store ``doc`` while the folder is replayed: nothing else can see the store yet, so
        without the lock (taking it per document was most of the replay's time)."""
        self._documents[key] = doc
        if key not in self._order:
            self._order[key] = self._next
            self._next += 1
        for index in self._fields.values():
            index.add(key, doc)

    def __delitem__(self, key: Any) -> None:
        with self._rwlock.writer():
            if key in self._documents:
                self._journal({"o": "d", "c": self.name, "id": self._documents[key].get("_id", key)})
            del self._documents[key]
            self._order.pop(key, None)
            for index in self._fields.values():
                index.remove(key)
            self._digests.touched(key)

    def journal_update(self, doc: dict) -> None:
        """Journal a stored document that was changed in place (mongomock's updates), if it is stored."""
        key = store_key(doc.get("_id"))
        with self._rwlock.writer():
            if self._documents.get(key) is doc:
                self._journal({"o": "p", "c": self.name, "doc": doc})

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
            if self.is_created:
                self._journal({"o": "x", "c": self.name})
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
        self._journal({"o": "i", "c": self.name, "n": index_name, "s": _plain_spec(index_dict)})
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
        if index_name in self.indexes:
            self._journal({"o": "di", "c": self.name, "n": index_name})
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


def _plain_spec(index_dict: Mapping) -> dict:
    """An index's description as BSON can hold it (its ``key`` may be a ``dict_items`` view)."""
    spec = dict(index_dict)
    keys = spec.get("key")
    if keys is not None:
        keys = keys.items() if isinstance(keys, Mapping) else keys
        spec["key"] = [list(k) for k in keys]
    return spec


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

    def __init__(self, journal: Journal = _no_journal) -> None:
        super().__init__()
        self._journal = journal

    def __getitem__(self, col_name: str) -> IndexedCollectionStore:
        try:
            return self._collections[col_name]
        except KeyError:
            col = self._collections[col_name] = IndexedCollectionStore(col_name, self._journal)
            return col

    def rename(self, name: str, new_name: str) -> None:
        self._journal({"o": "r", "c": name, "to": new_name})
        col = self._collections.pop(name, None) or IndexedCollectionStore(new_name, self._journal)
        col.name = new_name
        self._collections[new_name] = col


class IndexedServerStore(ServerStore):
    """A mongomock server store whose databases are :class:`IndexedDatabaseStore` s.

    With ``folder`` (a :class:`~.folder.Folder`), the store is loaded from the
    folder and every change is journaled there.
    """

    def __init__(self, folder: Any = None) -> None:
        super().__init__()
        self.folder = folder
        self._replaying = False
        if folder is not None:
            self._replaying = True
            try:
                folder.load(self._apply, self._dump)
            finally:
                self._replaying = False

    def __getitem__(self, db_name: str) -> IndexedDatabaseStore:
        try:
            return self._databases[db_name]
        except KeyError:
            journal = _no_journal if self.folder is None else self._journaller(db_name)
            db = self._databases[db_name] = IndexedDatabaseStore(journal)
            return db

    def _journaller(self, db_name: str) -> Journal:
        folder = self.folder

        def journal(op: dict) -> None:
            if not self._replaying:
                folder.append({"d": db_name, **op})
        return journal

    def _apply(self, op: dict) -> None:
        """Apply one journaled change (while loading: nothing is journaled again)."""
        db = self[op["d"]]
        kind = op["o"]
        if kind == "r":
            db.rename(op["c"], op["to"])
            return
        col = db[op["c"]]
        if kind == "p":
            col.load_put(store_key(op["doc"].get("_id")), op["doc"])
        elif kind == "d":
            key = store_key(op["id"])
            if key in col._documents:
                del col[key]
        elif kind == "x":
            col.drop()
        elif kind == "c":
            col.create()
        elif kind == "i":
            spec = dict(op["s"])
            if isinstance(spec.get("key"), list):
                spec["key"] = [tuple(k) if isinstance(k, list) else k for k in spec["key"]]
            col.create_index(op["n"], spec)
        elif kind == "di":
            if op["n"] in col.indexes:
                col.drop_index(op["n"])
        elif kind == "ix":
            col.indexes = {}

    def _dump(self) -> Iterator[dict]:
        """The changes that rebuild this store as it is (a snapshot's records)."""
        for db_name, db in list(self._databases.items()):
            for name, col in list(db._collections.items()):
                if not col.is_created:
                    continue
                if col._is_force_created:
                    yield {"d": db_name, "o": "c", "c": name}
                for index_name, spec in list(col.indexes.items()):
                    yield {"d": db_name, "o": "i", "c": name, "n": index_name, "s": _plain_spec(spec)}
                for doc in list(col._documents.values()):
                    yield {"d": db_name, "o": "p", "c": name, "doc": doc}

    def close(self) -> None:
        """Sync and release the folder (nothing to do in memory)."""
        if self.folder is not None:
            self.folder.close()
