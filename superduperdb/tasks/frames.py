"""The partitions of ``Collection.to_dask`` and ``Collection.from_dask``, on the workers.

Each function here is a Dask task: it gets plain data (a
:class:`~superduperdb.store.context.Target`, a query, a pandas partition), opens
its own database handle, and converts rows with :mod:`superduperdb.store.frames`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..store.context import Context
from ..store.frames import conform, decode_raw, frame_documents, to_frame
from ..store.layout import find_urls
from ..store.positions import stamp_new
from ..store.writes import prepare_new

if TYPE_CHECKING:
    import pandas as pd

    from ..store.context import Target


def read_partition(target: Target, query: dict, projection: Any, options: dict, meta: pd.DataFrame) -> pd.DataFrame:
    """One partition of :meth:`Collection.to_dask`: read, decode and shape its documents (on a worker)."""
    ctx = Context(target)
    docs = (decode_raw(ctx.types, d) for d in ctx.collection.find(query, projection))
    frame = to_frame(docs, models=ctx.metadata.names("models"), **options)
    return conform(frame, meta)


def insert_partition(target: Target, frame: pd.DataFrame) -> dict:
    """Insert one partition of a Dask DataFrame (on a worker); ``{'ids', 'urls'}`` for the client's jobs.

    Its documents are made as the write door makes new documents
    (:func:`~superduperdb.store.writes.prepare_new`), then encoded, stamped with the write position
    (:func:`~superduperdb.store.positions.stamp_new`: a number taken when the partition is written) and inserted.
    """
    if len(frame) == 0:
        return {"ids": [], "urls": False}
    ctx = Context(target)
    documents = frame_documents(frame)
    for i, doc in enumerate(documents):
        prepare_new(doc, f"rows[{i}]")  # the write door's rule for new documents (an _id, no _fold)
    encoded = stamp_new(ctx.collection, ctx.types.encode_many(documents), ctx.config.master.position_lag)
    ctx.collection.insert_many(encoded, ordered=True)
    return {"ids": [d["_id"] for d in encoded], "urls": any(find_urls(d) for d in encoded)}
