"""Downloads on read (``find(..., download=True)``) and the per-collection download settings.

The original ``find(..., download=True)`` fetched URL content as it read. Here:

* each result document whose ``{'_content': {'url': ...}}`` fields are not
  downloaded yet gets them fetched (with the collection's settings, see
  :mod:`superduperdb.store.downloads`), stored in MongoDB at
  ``<field>._content.bytes`` as the download job would, and returned decoded;
* URLs inside the ``like`` document are fetched before it is encoded (not stored).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from bson.binary import Binary

from ..store.downloads import (
    SETTINGS,
    DownloadSettings,
    check_setting,
    download_settings,
    fetch_all,
    set_in,
    store_fetched,
)
from ..store.layout import find_urls

if TYPE_CHECKING:
    from .scope import Scope


class DownloadService:
    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def settings(self) -> DownloadSettings:
        return download_settings(self.scope.metadata, self.scope.config)

    @staticmethod
    def check(key: str, value: Any) -> Any:
        """A ``set_meta`` value, checked when ``key`` is a download setting."""
        return check_setting(key, value) if key in SETTINGS else value

    def _fetch_into(self, doc: dict, store: bool) -> dict:
        urls = find_urls(doc)
        if not urls:
            return doc
        _id = doc.get("_id")
        results = fetch_all([(_id, path, url) for path, url in urls], self.settings())
        if store and _id is not None:
            store_fetched(self.scope.raw, results)
        for _, path, _, data, error in results:
            set_in(doc, path, "bytes" if error is None else "error", Binary(data) if error is None else error)
        return doc

    def on_read(self, transform: Callable[[dict], dict]) -> Callable[[dict], dict]:
        """Wrap a cursor's ``transform``: fetch and store each result's pending URLs before decoding it."""

        def downloaded(doc: dict) -> dict:
            return transform(self._fetch_into(doc, store=True))

        return downloaded

    def like_document(self, like: Mapping) -> dict:
        """A copy of ``like`` with its URLs fetched (a failed URL raises: the query cannot be encoded)."""
        doc = copy.deepcopy(dict(like))
        self._fetch_into(doc, store=False)
        failed = [p for p, _ in find_urls(doc)]
        if failed:
            from ..errors import QueryError

            errors = {p: doc_error(doc, p) for p in failed}
            raise QueryError(f"Could not download the like document's URLs: {errors}.", argument="like")
        return doc


def doc_error(doc: dict, path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value.get("error")
