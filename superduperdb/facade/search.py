"""Semantic indexes and neighbourhoods of a collection (mixed into ``Collection``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class SearchMixin:
    """Semantic indexes and neighbourhoods of a collection (mixed into ``Collection``)."""

    # -- semantic search ------------------------------------------------------------
    def create_semantic_index(self, name: str, models: list[str], keys: list[str], measure: str = "cosine",
                              filter_fields: list[str] | None = None):
        """Index the outputs of ``models[0]`` on ``keys[0]`` for ``find(like=...)``.

        Parameters
        ----------
        name : str
        models, keys : list of str
            The first model/key's outputs are indexed (a watcher is created if
            there is none); the other models encode ``like`` documents from
            their keys, e.g. a text encoder querying an image index.
        measure : str
            ``'cosine'`` (default), ``'dot'``, ``'l2'``, or a measure
            registered with :meth:`create_measure` (searched exactly).
        filter_fields : list of str, optional
            Scalar fields (dotted for nested ones) each shard keeps beside the
            vectors, kept fresh by the index jobs and saved in its snapshots. A
            filter made only of equality, ``$in``, ranges, ``$exists``,
            ``$and`` and ``$or`` on them (and ``_id``) is answered inside the
            master, with no round trip to the store for the filter's ids
            (``explain()["filter_in_index"]``); any other filter goes through
            the store. See docs/search.md.

        Returns
        -------
        JobGroup
            The backfill (if a watcher was created) and the index load.

        Examples
        --------
        >>> docs.create_model("minilm", load_minilm(), key="text")      # doctest: +SKIP
        >>> docs.create_semantic_index("text", ["minilm"], ["text"]).wait()   # doctest: +SKIP
        >>> docs.find({"lang": "en"}, like={"text": "arrays of numbers"}, n=5)   # doctest: +SKIP
        >>> docs.create_semantic_index("text2", ["minilm"], ["text"], filter_fields=["lang"])  # doctest: +SKIP
        """
        return self._services.registrations.create_semantic_index(name, models, keys, measure,
                                                                  filter_fields=filter_fields)

    def search_many(self, likes: list, filter: dict | None = None, *, n: int = 10, projection: Any = None,
                    semantic_index: str | None = None, similar_first: bool = False, raw: bool = False,
                    features: dict | None = None, allow_partial: bool = False,
                    explain: dict | None = None) -> list[list[dict]]:
        """``find(filter, like=like, n=n)`` for each of ``likes``, in one round trip to the master.

        The query vectors are computed here, the master answers them all in one
        call (``{'_id': x}`` likes are looked up in one call too) and the
        result documents are read with one query, so a batch costs about as
        much as one ``find(like=...)`` plus the search itself.

        Parameters
        ----------
        likes : list of dict
            Documents to search with, as for ``find(like=...)``.
        filter, projection, n, semantic_index, similar_first, raw, features, allow_partial
            As in :meth:`find` (the filter applies to every query).
        explain : dict, optional
            Filled as ``find(like=...).explain()`` returns it, for the whole batch.

        Returns
        -------
        list of list of dict
            For each like, in order, its documents, most similar first, each with ``_score``.

        Examples
        --------
        >>> hits = docs.search_many([{"text": "arrays"}, {"text": "plots"}], n=3)   # doctest: +SKIP
        >>> [[d["text"] for d in found] for found in hits]   # doctest: +SKIP
        """
        from ..services.checks import check_filter

        filter = check_filter(filter)
        found, _ = self._services.search.find_like_many(filter, likes, projection=projection, n=n,
                                                        semantic_index=semantic_index, similar_first=similar_first,
                                                        allow_partial=allow_partial, explain=explain)
        transform = self._transform(raw=raw, features=features)
        return [[transform(doc) for doc in docs] for docs in found]

    def list_semantic_indexes(self) -> list[str]:
        return self._metadata.names("semantic_indexes")

    def delete_semantic_index(self, name: str, force: bool = False) -> None:
        """Delete an index (refused while neighbourhoods use it, unless ``force``)."""
        self._services.indexes.delete(name, force=force)

    @property
    def semantic_index(self) -> str | None:
        """The default index of ``find(like=...)`` (the first one created, unless set)."""
        return self._metadata.get_setting("semantic_index")

    @semantic_index.setter
    def semantic_index(self, name: str) -> None:
        self._services.indexes.set_default(name)

    def create_neighbourhood(self, name: str, n: int = 10, semantic_index: str | None = None):
        """Store each document's ``n`` nearest neighbours' ids at ``_like.<name>``, kept current
        as documents arrive; ``find(..., similar_join=name)`` replaces the ids by the documents."""
        return self._services.indexes.create_neighbourhood(name, n, semantic_index)

    def list_neighbourhoods(self) -> list[str]:
        return self._metadata.names("neighbourhoods")

    def delete_neighbourhood(self, name: str, force: bool = False) -> None:
        self._services.indexes.delete_neighbourhood(name, force=force)

    # -- measures -------------------------------------------------------------------
    def create_measure(self, name: str, object: Any, *, serializer: str | None = None) -> dict:
        """Register a similarity measure ``object(Q, X) -> scores`` for semantic indexes.

        ``Q`` (``(n, d)``) and ``X`` (``(m, d)``) are float32 numpy arrays; the
        result is ``(n, m)`` similarities, **higher meaning more similar** (a
        torch tensor is accepted). The callable is stored in GridFS and loaded
        by the master. Indexes with a custom measure are searched exactly
        (every stored vector is scored per query): pynndescent graphs take
        numba-compiled metrics only.

        Examples
        --------
        >>> import numpy as np
        >>> def neg_l1(Q, X):
        ...     return -np.abs(Q[:, None, :] - X[None, :, :]).sum(-1)
        >>> docs.create_measure("neg_l1", neg_l1)   # doctest: +SKIP
        >>> docs.create_semantic_index("l1", ["enc"], ["x"], measure="neg_l1")   # doctest: +SKIP
        """
        return self._services.measures.create(name, object, serializer)

    def list_measures(self) -> list[str]:
        """Built-in (``cosine``, ``dot``, ``l2``) and registered measure names."""
        return self._services.measures.names()

    def delete_measure(self, name: str, force: bool = False) -> None:
        """Delete a registered measure (refused while a semantic index uses it; ``force`` deletes those indexes too)."""
        self._services.measures.delete(name, force=force)

    @property
    def measures(self) -> Mapping[str, Any]:
        """``{name: measure callable}``, loaded lazily (built-ins as :class:`~superduperdb.index.measures.BuiltinMeasure`)."""
        from .views import LazyMapping

        service = self._services.measures
        return LazyMapping(service.names, service.load)
