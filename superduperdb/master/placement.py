"""Where a shard actor runs: picking its worker, creating it there, and moving shards as master workers join.

Each shard actor is pinned to one worker with ``workers=[address]``
(``resources=`` does not keep actors apart): the workers that offer the
``MASTER`` resource (``dask worker --resources MASTER=1``, else every worker),
the one holding the fewest other shards first, so shards spread over distinct
workers (:func:`pick_worker`). A worker this handle saw die, or whose port
refuses connections, is never picked, even while the scheduler still lists it;
with no live worker (all restarting), the pick waits for one up to the
handle's timeout.

:func:`create` starts the actor on that worker and waits for it while probing
the worker (:mod:`.liveness`): a creation pinned to a worker that dies meanwhile
would never run anywhere else (the task waits for that very worker, which comes
back, if at all, under another address), so it is cancelled and the actor is
created on another worker. So the first answer after a kill is bounded by a
few seconds however the kills fall, never by ``cluster.timeout``.

:func:`balance` moves one shard that shares a worker onto a master worker that
holds none: the new actor loads the indexes the handle used (snapshot +
catch-up) before it is published; the old one then retires.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from ..errors import IndexLoadingError, MasterUnavailableError
from .fencing import names
from .liveness import MasterLost, refuses_connections, wait_result

if TYPE_CHECKING:
    from .handle import MasterHandle

logger = logging.getLogger(__name__)

POLL = 0.2  # seconds between looks for a worker to place a shard on
LOADING_RETRY = 0.25  # seconds between two tries of a call while an index loads
BALANCE_EVERY = 30.0  # seconds between two looks, by a querying handle, at whether shards should spread out


def pick_worker(h: MasterHandle, shard: int, deadline: float) -> str:
    """A live worker for ``shard``: offering the resource, holding the fewest other shards (waits for one)."""
    while True:
        workers = h.dask_client.scheduler_info(n_workers=-1)["workers"]
        live = {a: w for a, w in workers.items() if a not in h._dead and not refuses_connections(a)}
        if live:
            break
        if time.monotonic() > deadline:
            raise MasterUnavailableError(
                f"The cluster has had no live workers to run the master on for {h.timeout:g} s (cluster.timeout): "
                "none has connected yet, or they are restarting. Check that the workers are running and can "
                "reach the scheduler (`superduperdb info` lists them), then retry the call.",
                reason="no workers")
        time.sleep(POLL)
    marked = sorted(a for a, w in live.items() if (w.get("resources") or {}).get(h.resource))
    candidates = marked or sorted(live)
    held: dict[str, int] = {}
    for i, state in enumerate(h._shards):
        if i != shard and state.actor is not None:
            held[state.actor._address] = held.get(state.actor._address, 0) + 1
    return min(candidates, key=lambda a: (held.get(a, 0), candidates.index(a)))


def create(h: MasterHandle, shard: int, generation: int, replaces: str | None, worker: str | None = None) -> Any:
    """A new actor of ``shard`` (``generation``, replacing the actor with key ``replaces``): ``(actor, future,
    worker)``, on ``worker`` or a picked one. A picked worker that dies during the creation is left for another."""
    from ..store.dispatch import submit
    from .actor import Master

    deadline = time.monotonic() + h.timeout
    while True:
        where = worker or pick_worker(h, shard, deadline)
        key = f"superduperdb-master-{shard}-{uuid.uuid4().hex}"
        began = time.monotonic()
        future = submit(h.dask_client, Master, h.warm_up, h.sweep if shard == 0 else None, generation, shard,
                        h.shards, key, replaces, h.lease_ttl, actor=True, workers=[where],
                        allow_other_workers=False, key=key, pure=False)
        try:
            with h.dask_client.as_current():
                actor = wait_result(future, deadline, lambda w=where: h.worker_alive(w), f"worker {where}")
        except MasterLost:
            future.cancel()
            h._dead.add(where)
            if worker is not None or time.monotonic() > deadline:
                raise
            logger.warning("worker %s died while shard %d of the master started there; starting it elsewhere",
                           where, shard)
            continue
        except TimeoutError:
            future.cancel()
            raise MasterUnavailableError(f"Shard {shard} of the master did not start on worker {where} within "
                                         f"{h.timeout:g} s (cluster.timeout). Check the worker's log, then retry.",
                                         reason="creation timed out") from None
        logger.info("started shard %d of the master (generation %d) on %s in %.2f s", shard, generation, where,
                    time.monotonic() - began)
        return actor, future, where


def publish(h: MasterHandle, shard: int, actor: Any, future: Any, generation: int) -> None:
    """Make ``actor`` the one every client finds for ``shard`` (the future keeps it alive)."""
    n = names(shard)
    for name in (n.dataset, n.future, n.generation):
        with contextlib.suppress(KeyError):
            h.dask_client.unpublish_dataset(name)
    h.dask_client.publish_dataset(**{n.dataset: actor, n.future: future, n.generation: generation})


def call_loaded(h: MasterHandle, actor: Any, address: str, method: str, *args: Any) -> Any:
    """``method`` on ``actor`` (not published yet), waiting while its indexes load (up to the handle's timeout)."""
    deadline = time.monotonic() + h.timeout
    while True:
        try:
            return wait_result(getattr(actor, method)(*args), deadline, lambda: h.worker_alive(address))
        except IndexLoadingError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(LOADING_RETRY)


def balance(h: MasterHandle, force: bool = False) -> int | None:
    """Move one shard that shares a worker onto a master worker that holds none; the shard moved (or None)."""
    if h.dask_client is None or h.shards == 1:
        return None
    now = time.monotonic()
    if not force and (now - h._balanced_at < BALANCE_EVERY or h._recovering):
        return None
    h._balanced_at = now
    workers = h.dask_client.scheduler_info(n_workers=-1)["workers"]
    marked = sorted(a for a, w in workers.items() if (w.get("resources") or {}).get(h.resource) and a not in h._dead)
    where = {i: st.actor._address for i, st in enumerate(h._shards) if st.actor is not None}
    if len(where) < h.shards or not marked:
        return None
    crowded = [i for i in sorted(where, reverse=True) if list(where.values()).count(where[i]) > 1]
    free = [a for a in marked if a not in where.values()]
    if not crowded or not free:
        return None
    shard = crowded[0]
    move(h, shard, free[0])
    return shard


def move(h: MasterHandle, shard: int, worker: str) -> None:
    """Re-create ``shard`` on ``worker``: loaded before it is published, the old actor retired after."""
    import distributed

    n, state = names(shard), h._shards[shard]
    lock = distributed.Lock(n.dataset, scheduler_rpc=h.dask_client.scheduler, loop=h.dask_client.loop)
    if not lock.acquire(timeout=h.timeout):
        return
    actor = None
    try:
        old, generation, old_key = h._published(shard)
        if state.actor is None or old.key != state.actor.key:
            return  # another client moved or replaced it
        actor, future, _ = create(h, shard, generation + 1, old_key, worker=worker)
        for target, row in list(h._used.values()):  # loaded before any query reaches it
            call_loaded(h, actor, worker, "ensure", target, row, h._layouts.get(target, shard))
        publish(h, shard, actor, future, generation + 1)
        state.actor, state.generation = actor, generation + 1
        with contextlib.suppress(Exception):
            old.retire().result(timeout=h.timeout)
        logger.info("moved shard %d from %s to %s, a master worker that held none", shard, old._address, worker)
    except Exception as exc:  # noqa: BLE001 - the shard stays where it is; tried again later
        logger.warning("moving shard %d to %s failed: %s: %s", shard, worker, type(exc).__name__, exc)
        if actor is not None and state.actor is not actor:  # never published: it gives its leases back
            with contextlib.suppress(Exception):
                actor.retire().result(timeout=h.timeout)
    finally:
        lock.release()
