"""Semantic indexes and neighbourhoods of a collection (mixed into ``Collection``)."""

from __future__ import annotations


class SearchMixin:
    """Semantic indexes and neighbourhoods of a collection (mixed into ``Collection``)."""

    # -- semantic search ------------------------------------------------------------
    def create_semantic_index(self, name: str, models: list[str], keys: list[str], measure: str = "cosine"):
        """Index the outputs of ``models[0]`` on ``keys[0]`` for ``find(like=...)``.

        Parameters
        ----------
        name : str
        models, keys : list of str
            The first model/key's outputs are indexed (a watcher is created if
            there is none); the other models encode ``like`` documents from
            their keys, e.g. a text encoder querying an image index.
        measure : {'cosine', 'dot', 'l2'}

        Returns
        -------
        JobGroup
            The backfill (if a watcher was created) and the index load.

        Examples
        --------
        >>> docs.create_model("minilm", load_minilm(), key="text")      # doctest: +SKIP
        >>> docs.create_semantic_index("text", ["minilm"], ["text"]).wait()   # doctest: +SKIP
        >>> docs.find({"lang": "en"}, like={"text": "arrays of numbers"}, n=5)   # doctest: +SKIP
        """
        services = self._services
        models, keys = services.indexes.check_new(name, models, keys, measure)
        watcher = None
        if not self._metadata.exists("watchers", f"{models[0]}/{keys[0]}"):
            watcher = services.watchers.check_new(models[0], keys[0])  # checked before anything is stored
        backfill = services.watchers.register(watcher) if watcher is not None else services.watchers.ensure(
            models[0], keys[0])
        try:
            return backfill + services.indexes.create(name, models, keys, measure, after=backfill)
        except BaseException:  # all of it, or none: the watcher made for this index goes too
            if watcher is not None:
                backfill.cancel()
                services.watchers.delete(watcher["name"], force=True)
            raise

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
