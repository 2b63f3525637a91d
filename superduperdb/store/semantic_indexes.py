"""A semantic-index row as a small frozen view that names its derived paths (as ``WatcherView`` does).

A semantic-index row in ``<coll>._semantic_indexes``::

    {name, uid, models: [...], keys: [...], measure, watcher, filter_fields: [...]}

The outputs of the first model on the first key are indexed; the other
models encode ``like`` documents from their keys. Which output an index reads,
and where its fingerprints are, is said here once, for the client, the jobs
and the master.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .layout import fingerprint_path, output_path

DEFAULT_KEY = "semantic_index"  # the setting that names the default index of find(like=...)


@dataclass(frozen=True)
class IndexView:
    """What the jobs and the master need of one semantic index.

    Examples
    --------
    >>> view = IndexView.of({"name": "ix", "uid": "u1", "models": ["clip.image", "clip.text"],
    ...                      "keys": ["img", "text"], "measure": "cosine", "watcher": "clip.image/img"})
    >>> view.path, view.fingerprint_path
    ('_outputs.img.clip/image', '_fingerprints.img.clip/image')
    """

    name: str
    uid: str
    model: str  # the model whose outputs are indexed (the row's first)
    key: str  # on this key
    measure: str
    path: str  # where those outputs are: _outputs.<key>.<model>
    fingerprint_path: str  # and what they were computed from
    filter_fields: tuple = ()  # scalar fields the shards keep beside the vectors (superduperdb.master.filters)

    @classmethod
    def of(cls, row: Mapping) -> IndexView:
        model, key = row["models"][0], row["keys"][0]
        return cls(row["name"], row.get("uid", ""), model, key, row.get("measure", "cosine"),
                   output_path(key, model), fingerprint_path(key, model), tuple(row.get("filter_fields") or ()))

    @property
    def reads(self) -> dict:
        """The projection a shard reads documents with: the indexed output, its fingerprint, the filter fields."""
        return {self.path: 1, self.fingerprint_path: 1, **{f: 1 for f in self.filter_fields}}

    @property
    def has_output(self) -> dict:
        """A query for the documents that have an indexed output."""
        return {self.path: {"$exists": True}}


def forget(metadata: Any, name: str) -> None:
    """Remove the registration of index ``name``: its row, its neighbourhoods' rows, and the default
    setting where it named it (the next index, if any, becomes the default).

    The client's ``delete_semantic_index`` and an index job whose first load failed (so the index
    is not left registered, failing every later write's job) both end here.
    """
    for hood in metadata.names("neighbourhoods", {"semantic_index": name}):
        metadata.delete("neighbourhoods", hood)
    metadata.delete("semantic_indexes", name)
    if metadata.get_setting(DEFAULT_KEY) == name:
        remaining = metadata.names("semantic_indexes")
        metadata.set_setting(DEFAULT_KEY, remaining[0] if remaining else None)

