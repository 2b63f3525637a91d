"""The superduperdb exception hierarchy.

Every error raised by superduperdb derives from :class:`SuperDuperError`, and
also from the builtin exception a user would naturally catch (``KeyError`` for
an unknown name, ``TimeoutError`` for a wait that ran out ...). Data travels on
attributes, never only in the message. Every error is picklable, because errors
raised on Dask workers cross back to the client.

pymongo's own errors are never wrapped: they pass through unchanged.

Examples
--------
>>> from superduperdb.errors import NotRegisteredError
>>> err = NotRegisteredError("type", "tensr", available=["tensor", "array"])
>>> isinstance(err, KeyError)
True
>>> print(err)
No type named 'tensr' is registered. Did you mean 'tensor'? Registered types: array, tensor.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


def _rebuild(cls: type, args: tuple, state: dict) -> BaseException:
    # Allocate with the builtin that decides the instance layout: `cls.__new__` may be
    # RuntimeError's, which refuses a class that is also a TimeoutError (an OSError).
    base = cls
    while base.__module__ != "builtins":
        base = base.__base__
    err = base.__new__(cls)
    BaseException.__init__(err, *args)
    err.__dict__.update(state)
    return err


def suggest(name: str, candidates: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest candidate, or ``""``.

    Case is ignored when comparing (``"Adm"`` suggests ``"adam"``).
    """
    by_lower: dict[str, str] = {}
    for candidate in candidates:
        by_lower.setdefault(str(candidate).lower(), str(candidate))
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1)
    return f" Did you mean {by_lower[close[0]]!r}?" if close else ""


def _plural(what: str) -> str:
    if what.endswith(("s", "x", "ch", "sh")):
        return what + "es"
    if what.endswith("y") and what[-2:-1] not in ("a", "e", "i", "o", "u"):
        return what[:-1] + "ies"
    return what + "s"


def unknown_name(
    what: str,
    name: Any,
    valid: Iterable[Any],
    hint: str = "",
    *,
    where: str = "",
    plural: str | None = None,
    limit: int | None = None,
) -> str:
    """The message for a name that is not one of ``valid``.

    ``"Unknown <what> <name!r>[ <where>]. Did you mean 'x'? Valid <whats>: a, b, c.[ <hint>]"``,
    the one shape of every "unknown name" error in superduperdb.

    Parameters
    ----------
    what : str
        What the name names (``"measure"``, ``"config key"`` ...).
    name : object
        The name that was given.
    valid : iterable
        The names that would have worked; listed sorted.
    hint : str, optional
        A sentence appended to the message (what to do next).
    where : str, optional
        Words after the name, such as ``"in keyword arguments"``.
    plural : str, optional
        The plural of ``what`` (default: English rules).
    limit : int, optional
        List at most this many valid names (``0``: none). Default: all.

    Returns
    -------
    str

    Examples
    --------
    >>> unknown_name("measure", "cosin", ["l2", "dot", "cosine"])
    "Unknown measure 'cosin'. Did you mean 'cosine'? Valid measures: cosine, dot, l2."
    >>> unknown_name("method", "fitt", ["fit", "predict"], where="on KMeans", limit=0)
    "Unknown method 'fitt' on KMeans. Did you mean 'fit'?"
    """
    names = sorted({str(v) for v in valid})
    message = f"Unknown {what} {name!r}{' ' + where if where else ''}.{suggest(str(name), names)}"
    if limit is None or limit > 0:
        shown = names if limit is None else names[:limit]
        more = f" (and {len(names) - len(shown)} more)" if len(shown) < len(names) else ""
        message += f" Valid {plural or _plural(what)}: {', '.join(shown) if shown else 'none'}{more}."
    if hint:
        message += f" {hint}"
    return message


class SuperDuperError(Exception):
    """Root of every superduperdb error.

    Parameters
    ----------
    message : str
        What went wrong and what to do next.
    **attrs
        Structured data about the error, set as attributes.
    """

    def __init__(self, message: str = "", **attrs: Any) -> None:
        super().__init__(message)
        self.__dict__.update(attrs)

    def __str__(self) -> str:
        # KeyError quotes its message; we want the message as written.
        return str(self.args[0]) if self.args else ""

    def __reduce__(self):
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class ConfigError(SuperDuperError, ValueError):
    """A configuration value or key is invalid (``key``, ``valid`` attributes)."""


class InvalidURIError(ConfigError):
    """A MongoDB URI has a scheme superduperdb cannot connect to."""


class ConnectionFailure(SuperDuperError, ConnectionError):
    """The database (or cluster) could not be reached within the timeout."""


class StoreFolderError(ConnectionFailure):
    """A folder store (``superduperdb.connect("./my-data")``) cannot be opened (``path`` attribute)."""


class StoreLockedError(StoreFolderError):
    """The store folder is open in another process (one process at a time; ``path`` attribute)."""


#: How to register each kind of thing, by the kind's name in messages: the hint of every
#: "not registered" error, written once here.
HOW_TO_REGISTER = {
    "type": "Register it with create_type(name, obj).",
    "model": "Register it with create_model(name, object).",
    "watcher": "Create it with create_watcher(model, key).",
    "semantic index": "Create it with create_semantic_index(name, models, keys).",
    "metric": "Register it with create_metric(name, callable).",
    "loss": "Register it with create_loss(name, callable).",
    "splitter": "Register it with create_splitter(name, callable).",
    "validation set": "Create it with create_validation_set(name, ...).",
    "neighbourhood": "Create it with create_neighbourhood(name, n).",
    "preprocessor": "Register it with create_preprocessor(name, callable).",
    "forward": "Register it with create_forward(name, module).",
    "postprocessor": "Register it with create_postprocessor(name, callable).",
    "learning task": "Create it with create_learning_task(...).",
    "measure": "Register it with create_measure(name, callable).",
    "imputation": "Create it with create_imputation(name, model, key, target).",
}


class NotRegisteredError(SuperDuperError, KeyError):
    """A name (type, model, watcher, index ...) is not registered.

    Parameters
    ----------
    kind : str
        What was looked up: ``"type"``, ``"model"`` ...
    name : str
        The name that was not found.
    available : iterable of str
        The names that are registered, listed in the message.
    hint : str, optional
        What to do; default: how to register a ``kind`` (:data:`HOW_TO_REGISTER`).
    """

    def __init__(self, kind: str, name: str, available: Iterable[str] = (), hint: str | None = None) -> None:
        if hint is None:
            hint = HOW_TO_REGISTER.get(kind, "")
        available = sorted(str(a) for a in available)
        listing = ", ".join(available) if available else "none"
        plural = _plural(kind)
        msg = (
            f"No {kind} named {name!r} is registered.{suggest(name, available)} "
            f"Registered {plural}: {listing}."
        )
        if hint:
            msg += f" {hint}"
        super().__init__(msg, kind=kind, name=name, available=available)


class AlreadyRegisteredError(SuperDuperError, ValueError):
    """A name is already taken; delete it first or choose another name."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(
            f"A {kind} named {name!r} already exists. Delete it first with "
            f"delete_{kind.replace(' ', '_')}({name!r}) or pick another name.",
            kind=kind,
            name=name,
        )


class InUseError(SuperDuperError, ValueError):
    """Refused to delete something that others still use (``users`` attribute)."""

    def __init__(self, kind: str, name: str, users: Iterable[str]) -> None:
        users = list(users)
        super().__init__(
            f"The {kind} {name!r} is still in use by: {', '.join(users)}. Delete those "
            f"first, or pass force=True to delete it anyway.",
            kind=kind,
            name=name,
            users=users,
        )


class EncodingError(SuperDuperError, TypeError):
    """A value in a document cannot be stored (``path``, ``value_type`` attributes)."""


class DecodingError(SuperDuperError, ValueError):
    """Stored bytes could not be decoded back into a Python object.

    Raised when the document is read, naming it: ``document_id`` (its ``_id``),
    ``field`` (the dotted path of the value) and ``type`` (the stored type's
    name) are attributes. ``find(..., decode_errors='skip' or 'raw')`` reads
    past such documents.
    """


class UnregisteredTypeError(NotRegisteredError, DecodingError):
    """A stored value names a type that is not registered: a :class:`NotRegisteredError` (a
    ``KeyError``) and a :class:`DecodingError` (a ``ValueError``), so either ``except`` catches it."""


DECODE_ERRORS = ("raise", "skip", "raw")


class ArtifactError(SuperDuperError, ValueError):
    """An artifact could not be saved or loaded."""


class ArtifactIntegrityError(ArtifactError):
    """An artifact's signature is missing or wrong (``security.artifact_key`` is set): it was not
    loaded, so none of its code ran. Attributes: ``collection``, ``name``, ``version``, ``digest``."""


class ModelError(SuperDuperError, ValueError):
    """A model is misconfigured or cannot be applied to its inputs."""


class CycleError(ModelError):
    """A watcher would make the model graph cyclic (``cycle`` attribute)."""


class TrainingError(ModelError):
    """A training run is misconfigured or cannot proceed (no data, unknown metric ...)."""


class JobError(SuperDuperError, RuntimeError):
    """Base class of job errors (``job_id`` attribute)."""


class JobFailedError(JobError):
    """A job failed on a worker.

    ``job_id``, ``error`` (the remote message) and ``remote_traceback`` (the
    worker's formatted traceback) are attributes; the traceback is also part
    of the message.
    """


class JobCancelledError(JobError):
    """A job was cancelled before it finished."""


class TrainingCancelled(JobCancelledError):
    """A training or version-switch job saw its record say ``cancelled`` and stopped."""


class JobNotFoundError(SuperDuperError, KeyError):
    """No job record has this id (``job_id`` attribute): never submitted here, or its record was deleted."""


class JobTimeoutError(JobError, TimeoutError):
    """Waiting on a job ran past its timeout; the job itself may still finish."""


class ClusterError(SuperDuperError, RuntimeError):
    """The Dask cluster is unreachable or misconfigured."""


class SemanticIndexError(SuperDuperError, ValueError):
    """A semantic-search query or index definition is invalid."""


class DimensionMismatchError(SemanticIndexError):
    """A vector has a different dimension than the index (``expected``, ``got``)."""


class IndexLoadingError(SuperDuperError, TimeoutError):
    """A semantic index is still loading (a new shard actor reads its snapshot or its documents).

    ``index``, ``shard``, ``phase`` (``'snapshot'``, ``'catch-up'``, ``'documents'``), ``done`` and ``total``
    (vectors read so far, of about how many) and ``elapsed`` (seconds) say how far it got. The
    load goes on: retry the query, or wait longer (``cluster.timeout``).
    """


class MasterUnavailableError(SuperDuperError, RuntimeError):
    """The master (vector-search actor) could not be reached or re-created."""


class ShardUnavailableError(MasterUnavailableError):
    """A shard of a semantic index did not answer within ``master.shard_wait`` (``shards``: which).

    ``find(..., allow_partial=True)`` answers from the other shards instead (``explain()["partial"]``).
    """


class ShardFencedError(MasterUnavailableError):
    """A shard actor was asked about a shard it no longer owns (``shard``); the caller retries with the owner."""


class AuthenticationError(SuperDuperError, PermissionError):
    """A server (the model server) refused the credentials (HTTP 401)."""


class QueryError(SuperDuperError, TypeError):
    """A filter, update or query argument has the wrong shape."""


class MissingColumnError(SuperDuperError, KeyError):
    """A DataFrame has no column of that name (``.column``, ``.columns``)."""


__all__ = [name for name, obj in list(globals().items()) if isinstance(obj, type) and issubclass(obj, BaseException)] + [
    "suggest", "unknown_name", "DECODE_ERRORS"]
