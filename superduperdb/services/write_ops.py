"""What a write is made of: :class:`Op`, :class:`Write` and the :class:`WriteRule` interface.

The write door (:mod:`superduperdb.services.writes`) builds a :class:`Write` for
every verb; the rules (:mod:`superduperdb.services.write_rules`) read and
rewrite it before the store write and act on it after.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pymongo import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne
from pymongo.errors import BulkWriteError

from ..errors import QueryError
from ..store import bulk

if TYPE_CHECKING:
    from ..jobs.handles import JobGroup

INSERT, UPDATE, REPLACE, DELETE = "insert", "update", "replace", "delete"
FIND_AND_MODIFY = ("find_one_and_update", "find_one_and_replace", "find_one_and_delete")


@dataclass(eq=False)
class Op:
    """One operation of a write (what pymongo's ``InsertOne``, ``UpdateOne`` ... hold, as plain fields).

    ``document`` is the new document (``insert``), the update (``update``:
    operators or a pipeline) or the replacement (``replace``). ``plan`` is what
    the jobs rule planned for it; ``upsert_id`` the ``_id`` an upsert will
    give the document it inserts, where it is known before the write.
    """

    kind: str
    filter: Any = None
    document: Any = None
    many: bool = False
    upsert: bool = False
    sort: Any = None
    options: dict = field(default_factory=dict)  # bulk operations: collation, hint, array_filters
    path: str = ""  # for errors: an insert's argument ('documents[3]'), a bulk operation's ('requests[3]')
    plan: Any = None
    upsert_id: Any = None
    existed: bool = True  # whether a document had ``upsert_id`` before the write
    deleting: list | None = None  # a delete written without jobs: the ids it will remove (their tombstones)


@dataclass(eq=False)
class Write:
    """One write: what a verb asks of the store, and, once stored, what the store did.

    Built by a verb of :class:`WriteService`, read and rewritten by the
    :class:`WriteRule` s, carried out by the verb's store call.
    """

    verb: str
    ops: list[Op]
    refresh: bool = True  # False: no jobs now (the reconciler catches up)
    ordered: bool = True
    options: dict = field(default_factory=dict)  # pymongo's keyword arguments of the verb
    position: int | None = None  # the write position stamped on its documents (superduperdb.store.positions)
    # -- what the store did ----------------------------------------------------------------
    executed: set[int] | None = None  # indexes of the operations carried out (None: all)
    upserted: dict[int, Any] = field(default_factory=dict)  # operation index -> the _id it inserted
    found: dict[int, Any] = field(default_factory=dict)  # find-and-modify: index -> _id of the document
    urls: bool = False  # new documents hold URLs to download (stores that hand back ids only)
    result: Any = None  # the store's own result (pymongo's result, bulk_api_result, a document)
    jobs: JobGroup | None = None  # what the jobs rule submitted

    @property
    def find_and_modify(self) -> bool:
        return self.verb in FIND_AND_MODIFY

    def ran(self) -> list[tuple[int, Op]]:
        """``(index, op)`` of the operations the store carried out."""
        return [(i, op) for i, op in enumerate(self.ops) if self.executed is None or i in self.executed]


class WriteRule:
    """A rule every write obeys (see the module's docstring for the order and where to add one)."""

    def before(self, write: Write) -> None:
        """Called before the store write, in rule order: check, rewrite or plan the operations."""

    def after(self, write: Write) -> None:
        """Called after the store write (also after a partial failure), in rule order."""


def written_by(error: BulkWriteError, count: int, ordered: bool) -> set[int]:
    """Indexes of the operations a failed bulk write (or ``insert_many``) did carry out."""
    failed = {e["index"] for e in error.details.get("writeErrors", [])}
    if ordered:
        return set(range(min(failed) if failed else count))
    return {i for i in range(count) if i not in failed}


def op_of(request: Any, path: str) -> Op:
    """A pymongo write operation (``InsertOne``, ``UpdateOne`` ...) as an :class:`Op`."""
    if not isinstance(request, bulk.OPERATIONS):
        raise QueryError(f"{path} is a {type(request).__name__}, not a pymongo write operation.",
                         argument="requests")
    if isinstance(request, InsertOne):
        return Op(INSERT, document=request._doc, path=path)
    options = {name: getattr(request, f"_{name}") for name in ("collation", "hint", "array_filters")
               if getattr(request, f"_{name}", None) is not None}
    if isinstance(request, (DeleteOne, DeleteMany)):
        return Op(DELETE, filter=request._filter, many=isinstance(request, DeleteMany), options=options, path=path)
    kind = REPLACE if isinstance(request, ReplaceOne) else UPDATE
    return Op(kind, filter=request._filter, document=request._doc, many=isinstance(request, UpdateMany),
              upsert=bool(request._upsert), sort=getattr(request, "_sort", None), options=options, path=path)


def pymongo_op(op: Op) -> Any:
    """The pymongo write operation of an :class:`Op` (its sort already pinned by the rules)."""
    if op.kind == INSERT:
        return InsertOne(op.document)
    if op.kind == DELETE:
        return (DeleteMany if op.many else DeleteOne)(op.filter, **op.options)
    if op.kind == REPLACE:
        return ReplaceOne(op.filter, op.document, upsert=op.upsert, **op.options)
    return (UpdateMany if op.many else UpdateOne)(op.filter, op.document, upsert=op.upsert, **op.options)
