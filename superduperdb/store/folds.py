"""Training folds (``_fold``: ``'train'`` or ``'valid'``), given when training first needs them.

The original SuperDuperDB gave every inserted document a ``_fold``. Here a
collection that nothing trains on keeps its documents as written: other
applications reading the same MongoDB see no ``_fold``. The first time a
training job, a validation or a validation set needs the split,
:func:`assign_missing` gives every document without a ``_fold`` one
(``'valid'`` with probability ``data.valid_probability``), and does so again for
the documents written since, each time the split is needed. A document's fold,
once given, never changes (a replacement keeps it), so a document that was
validation data stays validation data. A document without a ``_fold`` counts as
training data (``{'_fold': {'$ne': 'valid'}}``). ``data.assign_folds: false``
never writes a fold.

Examples
--------
>>> from superduperdb.store.embedded import EmbeddedClient
>>> docs = EmbeddedClient().db.docs
>>> _ = docs.insert_many([{"x": i} for i in range(100)])
>>> assign_missing(docs, 0.2, seed=0)
100
>>> docs.count_documents({"_fold": "valid"}), docs.count_documents({"_fold": {"$exists": True}})
(10, 100)
>>> assign_missing(docs, 0.2)        # kept: nothing changes
0
"""

from __future__ import annotations

import random
from typing import Any

from .layout import FOLD

BATCH = 1000


def assign_missing(collection: Any, valid_probability: float, *, seed: int | None = None) -> int:
    """Give each document of ``collection`` without a ``_fold`` one; return how many got one."""
    ids = [d["_id"] for d in collection.find({FOLD: {"$exists": False}}, {"_id": 1})]
    if not ids:
        return 0
    rng = random.Random(seed)
    folds: dict[str, list] = {"train": [], "valid": []}
    for _id in ids:
        folds["valid" if rng.random() < valid_probability else "train"].append(_id)
    for fold, members in folds.items():
        for start in range(0, len(members), BATCH):
            # Only where there is still none: a fold given meanwhile (another job) is kept.
            collection.update_many({"_id": {"$in": members[start:start + BATCH]}, FOLD: {"$exists": False}},
                                   {"$set": {FOLD: fold}})
    return len(ids)


def ensure(collection: Any, config: Any) -> int:
    """:func:`assign_missing` with the config's ``data`` settings (nothing when ``data.assign_folds`` is off)."""
    if not config.data.assign_folds:
        return 0
    return assign_missing(collection, config.data.valid_probability)
