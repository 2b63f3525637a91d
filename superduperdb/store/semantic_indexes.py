"""A semantic-index row as a small frozen view that names its derived paths (as ``WatcherView`` does).

A semantic-index row in ``<coll>._semantic_indexes``::

    {name, uid, models: [...], keys: [...], measure, watcher}

The outputs of the first model on the first key are indexed; the other
models encode ``like`` documents from their keys. Which output an index reads,
and where its fingerprints are, is said here once, for the client, the jobs
and the master.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .layout import fingerprint_path, output_path


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

    @classmethod
    def of(cls, row: Mapping) -> IndexView:
        model, key = row["models"][0], row["keys"][0]
        return cls(row["name"], row.get("uid", ""), model, key, row.get("measure", "cosine"),
                   output_path(key, model), fingerprint_path(key, model))

    @property
    def has_output(self) -> dict:
        """A query for the documents that have an indexed output."""
        return {self.path: {"$exists": True}}
