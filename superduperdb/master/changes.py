"""Change streams: the reconciler hears of other programs' writes at once, where the server can tell.

MongoDB replica sets and sharded clusters offer change streams
(``collection.watch()``); standalone servers, the in-process stand-in and
the wire test server do not. A :class:`ChangeFeed` follows one collection's
stream in a thread and hands the ids written to ``on_ids`` in batches, a
short while (``GRACE``) after the write, so that writes made through
superduperdb, whose own jobs are then done, cost the pass no work. Updates
that touch only derived fields (outputs, fingerprints, neighbour lists) are
the jobs' own writes and are ignored. Where the server has no change
streams, the feed says so (:attr:`ChangeFeed.state`) and ends: the periodic
sweep is then the only trigger.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..store.context import Context
from ..store.layout import DERIVED

logger = logging.getLogger(__name__)

GRACE = 2.0  # seconds between a write and the pass over it
BATCH = 1000  # ids per pass at most
OPERATIONS = ["insert", "update", "replace", "delete"]


def only_derived(change: dict) -> bool:
    """Whether an update event changed derived fields only (a job's own write)."""
    description = change.get("updateDescription") or {}
    fields = [*(description.get("updatedFields") or {}), *(description.get("removedFields") or [])]
    return bool(fields) and all(str(f).split(".")[0] in DERIVED for f in fields)


class ChangeFeed:
    """Follows the change stream of ``target``'s collection; calls ``on_ids(ids)`` for what was written."""

    def __init__(self, target: Any, on_ids: Callable[[list], None], stop: threading.Event,
                 collection: Any = None) -> None:
        self.target = target
        self._collection = collection  # default: the target's collection, opened in the thread
        self.on_ids = on_ids
        self.state = "starting"
        self._stop = stop
        self._thread = threading.Thread(target=self._run, name="superduperdb-change-feed", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            collection = self._collection if self._collection is not None else Context(self.target).collection
            stream = collection.watch(
                [{"$match": {"operationType": {"$in": OPERATIONS}}}], max_await_time_ms=500)
        except Exception as exc:  # no change streams here: the periodic sweep remains
            self.state = f"unavailable ({type(exc).__name__}); periodic sweep only"
            logger.info("no change stream on %s.%s (%s): the periodic sweep repairs other programs' writes",
                        self.target.database, self.target.collection, exc)
            return
        self.state = "following"
        pending: dict[Any, float] = {}
        try:
            with stream:
                while not self._stop.is_set() and stream.alive:
                    change = stream.try_next()
                    if change is not None and not (change["operationType"] == "update" and only_derived(change)):
                        pending.setdefault(change["documentKey"]["_id"], time.monotonic())
                    ready = [i for i, at in pending.items() if time.monotonic() - at >= GRACE][:BATCH]
                    if ready:
                        for i in ready:
                            del pending[i]
                        self.on_ids(ready)
        except Exception as exc:  # the stream broke (server away ...): the sweep goes on
            self.state = f"stopped ({type(exc).__name__}: {exc}); periodic sweep only"
            logger.warning("change stream on %s.%s stopped: %s", self.target.database, self.target.collection, exc)
