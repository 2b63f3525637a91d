"""Routing calls to the shards that own the ids, fanning queries out to every shard, merging their answers.

Runs in the caller's process (a client, or a job on a worker): no extra hop.
Each shard gets, with every call, its ``layout``: the partition table's
version and the partitions it owns (:mod:`superduperdb.store.shards`; read
from MongoDB and kept :data:`LAYOUT_TTL` seconds). Then:

* **queries** go to every shard at once (``Master.query``); with a filter, each
  shard gets only the filtered ids it owns, and a shard that owns none is not
  asked. Each answers its own top ``n`` with its epoch, size, plan, vectors
  scored and time; the caller keeps the best ``n`` (tens of microseconds) and
  the per-shard entries for ``explain()``. An answer whose epoch is older than
  one this caller has seen comes from a stale owner and is dropped. A lost
  shard is waited for (re-created on another worker) up to ``master.shard_wait``,
  or, with ``allow_partial=True``, left out at once and re-created in the
  background: the answer then says ``partial``. Never silently short.
* **writes** (``refresh``, ``sync``) go only to the shards owning those ids;
* **loads and maintenance** (``ensure``, ``reload``, ``rebuild``, ``snapshot``,
  ``drop``) go to every shard.

>>> merge([[(["a", "c"], [0.9, 0.5])], [(["b"], [0.7])]], 2)
[(['a', 'b'], [0.9, 0.7])]
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import IndexLoadingError, ShardUnavailableError
from ..store.partitions import PARTITIONS
from ..store.shards import partition_table, partitions_of_shard, route, shards_table
from .placement import BALANCE_EVERY

if TYPE_CHECKING:
    from ..store.context import Target
    from .handle import MasterHandle

QUERY_LOAD_WAIT = 0.5  # seconds a shard waits for an index that is loading before a query is told so (and retries)
LAYOUT_TTL = 2.0  # seconds a read of a collection's partition table is reused


class Done:
    """An already-runnable call with a future's ``result(timeout)`` (the in-process shards)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn

    def result(self, timeout: float | None = None) -> Any:
        return self._fn()


class Layouts:
    """The partition table of each collection, read from MongoDB at most every :data:`LAYOUT_TTL` seconds."""

    def __init__(self, shards: int) -> None:
        self.shards = shards
        self._tables: dict[str, tuple[float, dict]] = {}

    def table(self, target: Target) -> dict:
        """``{shards, table, version}`` of ``target``'s collection (made on first use)."""
        key = target.key
        hit = self._tables.get(key)
        now = time.monotonic()
        if hit is None or hit[0] < now:
            from ..store.context import Context

            ctx = Context(target)
            table = partition_table(shards_table(ctx.db, target.collection), self.shards)
            self._tables[key] = hit = (now + LAYOUT_TTL, table)
        return hit[1]

    def get(self, target: Target, shard: int) -> tuple | None:
        """Shard ``shard``'s layout: ``(version, its partitions)`` (None with one shard: every partition)."""
        if self.shards == 1:
            return None
        t = self.table(target)
        return (t["version"], partitions_of_shard(t["table"], shard))


def merge(answers: list[list[tuple[list, list]]], n: int) -> list[tuple[list, list]]:
    """The best ``n`` of each query over the shards' ``[(ids, scores) per query]`` (higher scores first)."""
    out = []
    for per_query in zip(*answers):
        best = heapq.nlargest(n, ((s, k, i) for k, (ids, scores) in enumerate(per_query) for i, s in zip(ids, scores)),
                              key=lambda t: (t[0], -t[1]))
        out.append(([i for _, _, i in best], [s for s, _, _ in best]))
    return out


def _gather(h: MasterHandle, target: Target, calls: dict[int, tuple], *, allow_partial: bool = False,
            row: dict | None = None, check_epoch: bool = False, timeout: float | None = None,
            loading: str = "retry", loading_wait: float | None = None,
            ) -> tuple[dict[int, Any], list[int], dict[int, dict]]:
    """Run ``{shard: (method, *args)}`` concurrently; ``({shard: result}, [shards left out], {shard: loading})``.

    A lost shard is re-created and asked again (up to ``master.shard_wait``), or left out with ``allow_partial``.
    A shard still loading the index (:class:`~superduperdb.errors.IndexLoadingError`) is asked again until
    ``loading_wait`` seconds from now (default ``cluster.timeout``), then the error is raised (``loading``
    ``'retry'``); with ``allow_partial`` it is left out at once, its progress in the third item; ``'skip'``:
    left out at once (the caller deals with it).
    """
    start = time.monotonic()
    limit = h.timeout if timeout is None else timeout
    until = start + (h.timeout if loading_wait is None else loading_wait)
    alive = set(h.dask_client.nthreads()) if h.dask_client is not None else None
    futures: dict[int, Any] = {}
    asked: dict[int, Any] = {}  # the actor each shard was asked (a lost one is replaced only if still current)
    for i, (method, *args) in calls.items():
        state = h._shards[i]
        asked[i] = state.actor
        if alive is not None and state.actor is not None and (state.actor._address not in alive
                                                             or state.actor._address in h._dead):
            futures[i] = None  # its worker is gone: lost
            continue
        try:
            futures[i] = h.submit(i, method, *args)
            asked[i] = h._shards[i].actor
        except Exception as exc:  # creating the actor failed, or (inline) the call's own error
            futures[i] = exc
    results: dict[int, Any] = {}
    missing: list[int] = []
    loads: dict[int, dict] = {}
    for i, fut in futures.items():
        method, *args = calls[i]
        try:
            try:
                if fut is None or isinstance(fut, Exception):
                    raise fut or ShardUnavailableError(f"shard {i}'s worker left the cluster", shards=[i])
                result = h.result(i, fut, limit, asked[i])
            except IndexLoadingError as exc:
                if allow_partial or loading == "skip":
                    missing.append(i)
                    loads[i] = {k: getattr(exc, k, None) for k in ("phase", "done", "total", "elapsed")}
                    continue
                result = h.call_shard(i, method, *args, timeout=limit,
                                      loading_wait=max(0.0, until - time.monotonic()))
            if check_epoch and not h.seen_epoch(target, i, result["epoch"]):
                raise ShardUnavailableError(f"shard {i} answered from a stale epoch {result['epoch']}", shards=[i])
        except IndexLoadingError:
            raise
        except Exception as exc:
            if not (isinstance(exc, ShardUnavailableError) or h._lost(i, exc)):
                raise
            if allow_partial:
                missing.append(i)
                h.recover(i, target, row)
                continue
            if h.dask_client is not None and (fut is None or isinstance(exc, ShardUnavailableError)):
                h._switch(i, lost=None if asked[i] is None else asked[i].key)
            result = h.call_shard(i, method, *args, wait=h.shard_wait, timeout=limit,
                                  loading_wait=max(0.0, until - time.monotonic()))
            if check_epoch and not h.seen_epoch(target, i, result["epoch"]):
                raise ShardUnavailableError(f"Shard {i} keeps answering from a stale epoch; retry.", shards=[i]) \
                    from exc
        results[i] = result
    return results, missing, loads


def search(h: MasterHandle, target: Target, row: dict, vectors: list, n: int, candidates: list | None,
           allow_partial: bool, explain: dict | None, filter: dict | None = None) -> list[tuple[list, list]]:
    """Fan a query out to the shards, merge their answers (see the module docstring); ``filter``: one on
    the index's filter fields, sent to every shard (each evaluates it over what it holds)."""
    start = time.perf_counter()
    h.used(target, row)
    if h.shards > 1 and h.dask_client is not None and time.monotonic() - h._balanced_at >= BALANCE_EVERY:
        h._balanced_at = time.monotonic()
        threading.Thread(target=h.balance, kwargs={"force": True}, name="superduperdb-balance-shards",
                         daemon=True).start()
    if candidates is not None and h.shards > 1:
        owned = route(candidates, h._layouts.table(target)["table"])
    else:
        owned = {i: candidates for i in range(h.shards)}
    wait = 0.0 if allow_partial else QUERY_LOAD_WAIT  # how long each shard waits for a load before saying so
    calls = {i: ("query", target, row, vectors, n, owned[i], h._layouts.get(target, i), wait,
                 *((filter,) if filter is not None else ())) for i in sorted(owned)}
    answers, missing, loads = _gather(h, target, calls, allow_partial=allow_partial, row=row, check_epoch=True)
    found = merge([answers[i]["results"] for i in sorted(answers)], n) if answers else [([], []) for _ in vectors]
    if explain is not None:
        shards = [{k: answers[i].get(k) for k in SHARD_FIELDS} for i in sorted(answers)]
        shards += [{"shard": i, "missing": True, **({"loading": loads[i]} if i in loads else {})} for i in missing]
        answered = [answers[i] for i in sorted(answers)]
        explain.update(shards=sorted(shards, key=lambda s: s["shard"]), partial=bool(missing), missing=missing,
                       asked=len(calls), n=n, ms=(time.perf_counter() - start) * 1000,
                       plan=overall_plan([a.get("plan") for a in answered]),
                       candidates=sum(a.get("candidates") or 0 for a in answered),
                       retries=sum(a.get("retries") or 0 for a in answered),
                       size=sum(a.get("size") or 0 for a in answered))
        if filter is not None:
            explain["filtered"] = sum(a.get("matched") or 0 for a in answered)
    return found


#: The fields of each shard's entry in ``explain()["shards"]`` (see ``Master.query``).
SHARD_FIELDS = ("shard", "worker", "epoch", "size", "plan", "candidates", "retries", "fetch", "selectivity",
                "matched", "filter_ms", "ms", "as_of", "source")


def overall_plan(plans: list) -> str | None:
    """The costliest of the shards' plans (``explain()["plan"]``); None when no shard answered.

    >>> overall_plan(["exact", "graph+retry", "graph"])
    'graph+retry'
    """
    from ..index.search import PLANS

    known = [p for p in plans if p in PLANS]
    return max(known, key=PLANS.index) if known else None


def every(h: MasterHandle, target: Target, method: str, row: dict, *args: Any, layout: bool = True,
          timeout: float | None = None, loading_wait: float | None = None) -> list:
    """``method(target, row, *args, layout)`` on every shard, concurrently; the results in shard order
    (each waited for up to ``timeout`` seconds, default ``cluster.timeout``, and while the index loads up
    to ``loading_wait``, default the same)."""
    calls = {i: (method, target, row, *args, *((h._layouts.get(target, i),) if layout else ()))
             for i in range(h.shards)}
    results, _, _ = _gather(h, target, calls, row=row, timeout=timeout, loading_wait=loading_wait)
    return [results[i] for i in range(h.shards)]


def reload(h: MasterHandle, target: Target, row: dict, wait: float | None) -> list:
    """``reload`` on every shard; a shard whose reload is still loading is then waited for (``ensure``, up to
    ``wait`` seconds), never asked to reload again (that would start its load over)."""
    calls = {i: ("reload", target, row, h._layouts.get(target, i)) for i in range(h.shards)}
    results, _, loads = _gather(h, target, calls, row=row, loading="skip")
    if loads:
        more = {i: ("ensure", target, row, h._layouts.get(target, i)) for i in loads}
        results.update(_gather(h, target, more, row=row, loading_wait=wait)[0])
    return [results[i] for i in range(h.shards)]


def snapshot(h: MasterHandle, target: Target, row: dict) -> list:
    """A snapshot on every shard that includes every write made before this call (each shard answers
    ``pending`` until the collection's position read at the first call is safe: asked again meanwhile)."""
    results = every(h, target, "snapshot", row)
    pending = {i: r for i, r in enumerate(results) if r.get("pending")}
    deadline = time.monotonic() + max([r["retry_in"] for r in pending.values()] or [0.0]) + h.timeout
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"Shards {sorted(pending)} did not save their snapshot within {h.timeout:g} s "
                               "(cluster.timeout) after master.position_lag. Retry, or check the master's log.")
        time.sleep(min(0.5, max(0.05, min(r["retry_in"] for r in pending.values()))))
        calls = {i: ("snapshot", target, row, h._layouts.get(target, i), r["after"]) for i, r in pending.items()}
        done, _, _ = _gather(h, target, calls, row=row)
        for i, r in done.items():
            results[i] = r
        pending = {i: r for i, r in done.items() if r.get("pending")}
    return results


def combine(results: list) -> Any:
    """One shard's result as it is; several shards' stats summed, each shard's kept under ``shards``."""
    if len(results) == 1:
        return results[0]
    out = dict(results[0])
    for key in ("size", "tail", "deleted", "graph_size", "changes_since_snapshot", "upserted", "removed", "vectors",
                "bytes", "checked", "rotted", "repaired"):
        values = [r.get(key) for r in results if isinstance(r, dict)]
        if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = sum(values)
    out["shards"] = results
    return out


def refresh(h: MasterHandle, target: Target, row: dict, ids: list, wait: float | None = None) -> dict:
    """Re-read ``ids`` on the shards that own them (a job touches no other shard); a shard still loading the
    index is waited for up to ``wait`` seconds."""
    owned = _owned(h, target, ids)
    calls = {i: ("refresh", target, row, part, h._layouts.get(target, i)) for i, part in owned.items()}
    results, _, _ = _gather(h, target, calls, row=row, loading_wait=wait)
    return {"upserted": sum(r["upserted"] for r in results.values()),
            "removed": sum(r["removed"] for r in results.values()), "shards": sorted(results)}


def _owned(h: MasterHandle, target: Target, ids: list) -> dict[int, list]:
    if h.shards == 1:
        return {0: ids} if ids else {}
    return route(ids, h._layouts.table(target)["table"])


def sync(h: MasterHandle, target: Target, row: dict, ids: list, fingerprints: list, within: list | None,
         partitions: list | None = None) -> dict:
    """Each shard made to hold exactly its share of ``ids`` (``Master.sync``); ``within``: the ids the caller
    looked at, ``partitions``: the partitions it looked at (each shard removes only among those)."""
    if h.shards == 1:
        return h.call_shard(0, "sync", target, row, ids, fingerprints, within, partitions, None, wait=h.shard_wait)
    table = h._layouts.table(target)["table"]
    fps = dict(zip(ids, fingerprints))
    owned, scope = route(ids, table), None if within is None else route(within, table)
    if partitions is not None:  # the shards that own one of them may hold ids to remove
        touched = set(owned) | set(scope or {}) | {table[p] for p in partitions}
    else:
        touched = set(range(h.shards)) if within is None else set(owned) | set(scope or {})
    calls = {i: ("sync", target, row, owned.get(i, []), [fps[x] for x in owned.get(i, [])],
                 None if scope is None else scope.get(i, []),
                 None if partitions is None else [p for p in partitions if table[p] == i],
                 h._layouts.get(target, i)) for i in sorted(touched)}
    results, _, _ = _gather(h, target, calls, row=row)
    return {"upserted": sum(r["upserted"] for r in results.values()),
            "removed": sum(r["removed"] for r in results.values()),
            "changed": [x for i in sorted(results) for x in results[i]["changed"]]}


def vectors_of(h: MasterHandle, target: Target, row: dict, ids: list) -> list:
    """The vector of each of ``ids`` from the shard that owns it (None where there is none)."""
    owned = _owned(h, target, ids)
    calls = {i: ("vectors_of", target, row, part, h._layouts.get(target, i)) for i, part in owned.items()}
    results, _, _ = _gather(h, target, calls, row=row)
    found = {}
    for i, part in owned.items():
        found.update(zip(part, results[i]))
    return [found.get(x) for x in ids]


def neighbours(h: MasterHandle, target: Target, row: dict, ids: list | None, n: int) -> dict:
    """``{id: [the n nearest other ids over every shard]}``."""
    if h.shards == 1:
        return h.call_shard(0, "neighbours", target, row, ids, n, None, wait=h.shard_wait)
    if ids is None:
        ids = [x for part in every(h, target, "indexed_ids", row) for x in part]
    vectors = vectors_of(h, target, row, ids)
    have = [(x, v) for x, v in zip(ids, vectors) if v is not None]
    if not have:
        return {}
    found = search(h, target, row, [v for _, v in have], n + 1, None, False, None)
    return {x: [i for i in hits if i != x][:n] for (x, _), (hits, _) in zip(have, found)}


__all__ = ["PARTITIONS", "Done", "Layouts", "combine", "every", "merge", "neighbours", "refresh", "search", "sync",
           "vectors_of"]
