"""The original ``create_model`` options, mapped onto watchers, indexes and neighbourhoods.

The original ``create_model(name, object, ..., key, filter, features, active,
semantic_index=False, process_docs=True, loader_kwargs=None,
max_chunk_size=5000, measure=None, neighbourhoods=[])`` registered a model,
computed its outputs, and could register a semantic index and neighbourhoods
over them, in one call. Here each option maps to:

* ``max_chunk_size``: documents per chunk of the watcher's jobs (its row's ``chunk_size``);
* ``process_docs=False``: the watcher is created without a backfill job (the
  reconciler's periodic sweep still brings existing documents up to date);
* ``loader_kwargs``: ``batch_size`` sets the model's batch size; the torch
  ``DataLoader`` options (``num_workers``, ``pin_memory``, ...) have no
  counterpart (batches are formed in the job; Dask workers give the parallelism)
  and are ignored with a warning;
* ``semantic_index`` (``True``: named after the model, or a name), ``measure``
  and ``neighbourhoods``: ``create_semantic_index(index, [name], [key], measure)``
  then ``create_neighbourhood`` for each, after the backfill.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import AlreadyRegisteredError, ModelError, SemanticIndexError, unknown_name
from ..jobs.handles import JobGroup

if TYPE_CHECKING:
    from ..store import MetadataStore
    from .indexes import IndexService
    from .measures import MeasureService

logger = logging.getLogger(__name__)

# torch DataLoader options of the original's loader_kwargs that have no counterpart here.
LOADER_IGNORED = ("num_workers", "pin_memory", "shuffle", "drop_last", "prefetch_factor", "persistent_workers",
                  "timeout", "collate_fn", "sampler", "worker_init_fn")


def check_watch_options(key: str | None, max_chunk_size: Any, process_docs: bool) -> None:
    """``max_chunk_size`` and ``process_docs`` need a watcher (``key``); the chunk size must be positive."""
    if key is None and (max_chunk_size is not None or not process_docs):
        raise ModelError("max_chunk_size and process_docs apply to the model's watcher: pass key=... too.")
    if max_chunk_size is not None and (isinstance(max_chunk_size, bool) or not isinstance(max_chunk_size, int)
                                       or max_chunk_size < 1):
        raise ModelError(f"max_chunk_size must be a positive integer (documents per chunk), not {max_chunk_size!r}.")


def loader_batch_size(loader_kwargs: Mapping | None, batch_size: int) -> int:
    """The batch size that ``loader_kwargs`` asks for (else ``batch_size``); other options checked."""
    if loader_kwargs is None:
        return batch_size
    if not isinstance(loader_kwargs, Mapping):
        raise ModelError(f"loader_kwargs must be a dict such as {{'batch_size': 64}}, not {loader_kwargs!r}.")
    for key in loader_kwargs:
        if key != "batch_size" and key not in LOADER_IGNORED:
            raise ModelError(unknown_name("loader_kwargs option", key, ("batch_size", *LOADER_IGNORED)))
    ignored = sorted(k for k in loader_kwargs if k in LOADER_IGNORED)
    if ignored:
        logger.warning("loader_kwargs %s have no effect: batches are formed in the job, and Dask workers run "
                       "jobs in parallel", ignored)
    return loader_kwargs.get("batch_size", batch_size)


def neighbourhood_specs(neighbourhoods: Any) -> list[tuple[str, int]]:
    """``[(name, n)]`` from names, ``(name, n)`` pairs or ``{'name': ..., 'n': ...}`` dicts (n defaults to 10)."""
    if isinstance(neighbourhoods, (str, Mapping)):
        neighbourhoods = [neighbourhoods]
    out = []
    for item in neighbourhoods or ():
        if isinstance(item, str):
            out.append((item, 10))
        elif isinstance(item, Mapping) and isinstance(item.get("name"), str):
            out.append((item["name"], item.get("n", 10)))
        elif isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str):
            out.append((item[0], item[1]))
        else:
            raise SemanticIndexError(f"neighbourhoods must be names, (name, n) pairs or {{'name': ..., 'n': ...}} "
                                     f"dicts, not {item!r}.")
    for name, n in out:
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise SemanticIndexError(f"Neighbourhood {name!r}: n must be a positive integer, not {n!r}.")
    return out


def check_index_options(measures: MeasureService, metadata: MetadataStore, name: str, key: str | None,
                        semantic_index: Any, measure: str | None,
                        neighbourhoods: Any) -> tuple[str | None, str, list[tuple[str, int]]]:
    """``(index name or None, measure, neighbourhoods)``, validated before anything is registered."""
    hoods = neighbourhood_specs(neighbourhoods)
    if semantic_index in (None, False):
        if measure is not None or hoods:
            raise SemanticIndexError("measure and neighbourhoods apply to the model's semantic index: pass "
                                     "semantic_index=True (or an index name) and key=... as well.")
        return None, "cosine", []
    if key is None:
        raise SemanticIndexError("semantic_index needs key=...: the field whose outputs are indexed.")
    index = name if semantic_index is True else semantic_index
    if not isinstance(index, str) or not index:
        raise SemanticIndexError(f"semantic_index must be True or an index name, not {semantic_index!r}.")
    measure = measures.check("cosine" if measure is None else measure)
    if metadata.exists("semantic_indexes", index):
        raise AlreadyRegisteredError("semantic index", index)
    for hood, _ in hoods:
        if metadata.exists("neighbourhoods", hood):
            raise AlreadyRegisteredError("neighbourhood", hood)
    return index, measure, hoods


def register_index(indexes: IndexService, model: str, key: str, index: str, measure: str,
                   hoods: list[tuple[str, int]], after: JobGroup) -> JobGroup:
    """The index over ``model``'s outputs on ``key`` and its neighbourhoods (validated by :func:`check_index_options`)."""
    models, keys = indexes.check_new(index, [model], [key], measure)
    jobs = indexes.create(index, models, keys, measure, after=after)
    loaded = JobGroup(list(jobs))
    for hood, n in hoods:
        jobs += indexes.create_neighbourhood(hood, n, index, after=loaded)
    return jobs
