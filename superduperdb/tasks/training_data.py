"""Reading training and validation examples from MongoDB, on a worker.

* Training documents: the training's filter, minus the ``valid`` fold
  (``{'_fold': {'$ne': 'valid'}}``), minus the documents copied into the
  validation sets in use. Read in chunks of ``chunk_size`` documents with a
  projection of the fields needed, shuffled within each chunk, so the whole
  collection is never held in memory (when everything fits in one chunk, it
  is read once and kept).
* Validation documents: the frozen copies of the named validation sets
  (``<collection>._validation_data``), else the live ``valid`` fold.

An *example extractor* turns a raw document into ``(input, target)`` (or a
``(query, target)`` pair), or returns ``None`` to skip the document.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from typing import Any

from ..store import folds
from ..store.context import Context
from ..store.layout import MISSING, OUTPUTS, get_path, input_projection, model_input, output_path
from ..store.watchers import and_

logger = logging.getLogger(__name__)

VALIDATION_DATA = "_validation_data"
VALID_FOLD = {"_fold": {"$ne": "valid"}}
Extract = Callable[[dict], Any]


def validation_table(ctx: Context) -> Any:
    return ctx.db[f"{ctx.target.collection}.{VALIDATION_DATA}"]


def target_path(target: Any) -> str:
    """Where a target lives in a raw document: a field, or ``_outputs.<key>.<model>`` for ``{key: model}``."""
    if isinstance(target, dict):
        (key, model), = target.items()
        return output_path(key, model)
    return str(target)


def supervised_extractor(ctx: Context, key: str, features: dict, target: Any) -> tuple[Extract, dict | None]:
    """``(extract, projection)`` for ``(input, target)`` examples."""
    path = target_path(target)

    def extract(doc: dict) -> tuple | None:
        x = model_input(doc, key, features)
        y = get_path(doc, path)
        if x is MISSING or y is MISSING or y is None:
            return None
        return ctx.types.decode(x), ctx.types.decode(y)

    fields = input_projection(key, features)
    projection = None if fields is None else {f: 1 for f in [*fields, path]}
    return extract, projection


def pair_extractor(ctx: Context, query_key: str, target_key: str,
                   splitter: Callable[[dict], tuple[dict, dict]] | None) -> tuple[Extract, dict | None]:
    """``(extract, projection)`` for ``(query, target)`` pairs: two keys of a document, or a splitter's halves."""

    def extract(doc: dict) -> tuple | None:
        if splitter is not None:
            decoded = ctx.types.decode({k: v for k, v in doc.items() if k != OUTPUTS})
            halves = splitter(decoded)
            if halves is None:
                return None
            q_doc, t_doc = halves
            q, t = get_path(q_doc, query_key), get_path(t_doc, target_key)
            return None if q is MISSING or t is MISSING else (q, t)
        q, t = get_path(doc, query_key), get_path(doc, target_key)
        if q is MISSING or t is MISSING:
            return None
        return ctx.types.decode(q), ctx.types.decode(t)

    projection = None if splitter is not None else {query_key: 1, target_key: 1}
    return extract, projection


class Validation:
    """One validation set's examples, in memory (validation sets are samples)."""

    def __init__(self, name: str, examples: list, source_ids: set) -> None:
        self.name, self.examples, self.source_ids = name, examples, source_ids

    def __len__(self) -> int:
        return len(self.examples)


def load_validation(ctx: Context, names: list[str], query: dict, extract: Extract,
                    projection: dict | None) -> list[Validation]:
    """The named validation sets, or (none named) the live ``valid`` fold matching ``query``.

    Training and validation need the split: documents without a ``_fold`` get one now
    (:mod:`superduperdb.store.folds`), and keep it from then on.
    """
    folds.ensure(ctx.collection, ctx.config)
    out = []
    if not names:
        docs = list(ctx.collection.find(and_(query, {"_fold": "valid"}), projection))
        examples = [e for e in map(extract, docs) if e is not None]
        if examples:
            out.append(Validation("valid", examples, {d["_id"] for d in docs}))
        return out
    table = validation_table(ctx)
    for name in names:
        ctx.metadata.get("validation_sets", name)
        docs = list(table.find({"_validation_set": name}))
        examples = [e for e in map(extract, docs) if e is not None]
        if not examples:
            from ..errors import TrainingError

            raise TrainingError(f"Validation set {name!r} has no usable examples for this training "
                                f"({len(docs)} documents; each needs the input and the target fields).")
        out.append(Validation(name, examples, {d.get("_source_id") for d in docs}))
    return out


class TrainingData:
    """Streams training examples from MongoDB in shuffled chunks.

    Parameters
    ----------
    ctx : Context
    query : dict
        Training documents (the ``valid`` fold is excluded here).
    projection : dict or None
    extract : callable
        Raw document -> example, or None to skip it.
    exclude : set
        ``_id`` values to leave out (the validation sets' sources).
    chunk_size : int
        Documents read (and shuffled) at a time.
    seed : int, optional
    """

    def __init__(self, ctx: Context, query: dict, projection: dict | None, extract: Extract, *, exclude: set,
                 chunk_size: int, seed: int | None = 0) -> None:
        self.ctx = ctx
        self.query = and_(query, VALID_FOLD)
        self.projection = projection
        self.extract = extract
        self.exclude = exclude
        self.chunk_size = chunk_size
        self.seed = seed
        self.count = ctx.collection.count_documents(self.query)
        self._cached: list | None = None
        self.skipped = 0

    def _chunks(self) -> Iterator[list]:
        if self._cached is not None:
            yield list(self._cached)
            return
        chunk: list = []
        streamed = False
        cursor = self.ctx.collection.find(self.query, self.projection).batch_size(self.chunk_size)
        for doc in cursor:
            if doc["_id"] in self.exclude:
                continue
            example = self.extract(doc)
            if example is None:
                self.skipped += 1
                continue
            chunk.append(example)
            if len(chunk) >= self.chunk_size:
                streamed = True  # more than one chunk: read again every epoch
                yield chunk
                chunk = []
        if not streamed:
            self._cached = list(chunk)
        if chunk:
            yield chunk

    def batches(self, epoch: int, batch_size: int, drop_last: int = 0) -> Iterator[list]:
        """Shuffled batches of examples for one pass over the data.

        A last batch smaller than ``drop_last`` is left out (contrastive
        training needs at least two pairs per batch).
        """
        rng = random.Random(None if self.seed is None else self.seed + epoch)
        leftover: list = []
        for chunk in self._chunks():
            rng.shuffle(chunk)
            chunk = leftover + chunk
            full = len(chunk) - len(chunk) % batch_size
            for start in range(0, full, batch_size):
                yield chunk[start:start + batch_size]
            leftover = chunk[full:]
        if leftover and len(leftover) >= drop_last:
            yield leftover

    def all(self) -> list:
        """Every example in memory (for estimators that fit in one call)."""
        return [e for chunk in self._chunks() for e in chunk]
