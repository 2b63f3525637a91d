"""Change-stream resume tokens: where the server offers change streams, a snapshot also resumes from one.

MongoDB replica sets and sharded clusters keep an oplog; a change stream opened with
``resume_after=<token>`` replays every write since the token, by anyone. A snapshot records the
token current when it was taken (:func:`current_token`); a new master replays the stream from it
(:func:`changed_since`) and re-reads the documents it names, which catches other programs' writes
at once instead of at the digest check. When the oplog has rolled past the token, the server
answers ``ChangeStreamHistoryLost`` (code 286): the token is dropped, and the digests find those
writes instead. Stores without change streams (the embedded store, CongoDB, a standalone server)
give no token, and nothing here runs.

The servers that run here have no change streams: these functions are exercised against
objects with pymongo's change-stream interface in the unit tests.
"""

from __future__ import annotations

import logging
from typing import Any

from pymongo.errors import OperationFailure

logger = logging.getLogger(__name__)

HISTORY_LOST = (286, 280)  # ChangeStreamHistoryLost, ChangeStreamFatalError
MAX_REPLAY = 100_000  # changes replayed at most; past that the digests are cheaper
OPERATIONS = ["insert", "update", "replace", "delete"]


def current_token(collection: Any) -> Any:
    """The collection's change-stream resume token now (None: the store has no change streams)."""
    try:
        with collection.watch(max_await_time_ms=1) as stream:
            stream.try_next()
            return stream.resume_token
    except Exception:  # noqa: BLE001 - no change streams here (NotImplementedError, OperationFailure ...)
        return None


def changed_since(collection: Any, token: Any) -> tuple[list | None, str | None]:
    """``(ids written since token, None)``, or ``(None, why not)`` when the history is lost or too long."""
    ids: list = []
    try:
        with collection.watch([{"$match": {"operationType": {"$in": OPERATIONS}}}], resume_after=token,
                              max_await_time_ms=1) as stream:
            while stream.alive and len(ids) <= MAX_REPLAY:
                change = stream.try_next()
                if change is None:
                    break
                ids.append(change["documentKey"]["_id"])
    except OperationFailure as exc:
        if exc.code in HISTORY_LOST:
            logger.warning("the change stream's history is lost (%s): the digests find what changed", exc)
            return None, f"history lost: {exc}"
        return None, f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - the server away ...: the digests remain
        return None, f"{type(exc).__name__}: {exc}"
    if len(ids) > MAX_REPLAY:
        return None, f"more than {MAX_REPLAY} changes since the token"
    return list(dict.fromkeys(ids)), None
