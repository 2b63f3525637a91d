"""Saving and restoring a :class:`~superduperdb.index.vector_index.VectorIndex` (warm restarts).

:meth:`PersistMixin.export_state` captures, under the index lock, references to
the rows ``[0, n)`` (immutable, see :mod:`superduperdb.index.search`), a copy
of the alive mask and the graph; the caller pickles it outside the lock.
:meth:`PersistMixin.restore_state` installs such a state into an empty index:
no graph is rebuilt, no vector is decoded.

The state is plain data: numpy arrays, numbers, the ids as a list (see
:func:`encode_ids` for how a snapshot stores them without pickle). The graph is
the one exception: pynndescent's object has no data-only form, so it travels
as its own pickle (``state["graph"]`` is bytes), which a snapshot checksums and
:meth:`attach_pending_graph` unpickles only off the query path. Unpickling it imports numba (seconds in a fresh
process), so :meth:`restore_state` only keeps the bytes, the index answers
exactly meanwhile, and :meth:`attach_pending_graph` (called off the query path,
in a background thread) unpickles it, runs one query so that nothing is left
to compile, and installs it, unless a rebuild replaced the rows meanwhile.

Examples
--------
>>> import pickle
>>> import numpy as np
>>> from superduperdb.index import VectorIndex
>>> a = VectorIndex(measure="l2")
>>> a.add(["x", "y"], np.eye(2))
2
>>> b = VectorIndex(measure="l2")
>>> b.restore_state(pickle.loads(pickle.dumps(a.export_state())))
2
>>> b.search([0.0, 1.0], n=1)[0]
['y']
"""

from __future__ import annotations

import json
import pickle
from typing import Any

import bson
import numpy as np
from bson import ObjectId

from superduperdb.errors import SemanticIndexError

FORMAT = 1
_INT64 = (-(2 ** 63), 2 ** 63 - 1)


def encode_ids(ids: Any) -> tuple[str, Any]:
    """``(kind, value)``: the ids as plain data: an ``int64`` array, a ``(n, 12)`` uint8 array of ObjectIds,
    a JSON list of strings, or else BSON bytes (``{"ids": [...]}``).

    >>> kind, value = encode_ids([3, 1]); kind, value.tolist()
    ('int64', [3, 1])
    >>> decode_ids(*encode_ids(["a", ObjectId("65a000000000000000000000")])).tolist()
    ['a', ObjectId('65a000000000000000000000')]
    """
    ids = list(ids)
    if all(type(i) is int and _INT64[0] <= i <= _INT64[1] for i in ids):
        return "int64", np.array(ids, dtype=np.int64)
    if all(type(i) is ObjectId for i in ids):
        return "objectid", np.frombuffer(b"".join(i.binary for i in ids), np.uint8).reshape(len(ids), 12)
    if all(type(i) is str for i in ids):
        return "str", json.dumps(ids).encode()
    return "bson", bson.encode({"ids": ids})


def decode_ids(kind: str, value: Any) -> np.ndarray:
    """The object array of ids that :func:`encode_ids` encoded."""
    if kind == "int64":
        items = np.asarray(value, dtype=np.int64).tolist()
    elif kind == "objectid":
        raw = np.asarray(value, dtype=np.uint8).tobytes()
        items = [ObjectId(raw[i:i + 12]) for i in range(0, len(raw), 12)]
    elif kind == "str":
        items = json.loads(bytes(value))
    elif kind == "bson":
        items = bson.decode(bytes(value))["ids"]
    else:
        raise SemanticIndexError(f"Unknown id encoding {kind!r} in an index state.")
    out = np.empty(len(items), object)
    out[:] = items
    return out


class PersistMixin:
    """``export_state`` / ``restore_state`` (state lives on the index)."""

    graph_enabled: bool = True
    _pending_graph: tuple | None = None

    def export_state(self) -> dict[str, Any]:
        """The index as plain data: rows, ids, alive mask, counters, and the graph (pickled bytes, or None)."""
        with self._lock:
            n = self._n
            state = {
                "format": FORMAT, "measure": self.measure_name, "dim": self.dim, "n": n,  # a name: never a callable
                "vectors": self._vectors[:n], "sq": self._sq[:n], "ids": self._ids[:n].tolist(),
                "alive": self._alive[:n].copy(), "graph": self._graph, "graph_n": self._graph_n,
                "graph_dead": self._graph_dead, "deleted": self._deleted,
            }  # fmt: skip
        if state["graph"] is None and self._pending_graph is not None and self._pending_graph[1] is self._vectors:
            state["graph"] = self._pending_graph[0]  # restored, not attached yet: pass it on as it came
        elif state["graph"] is not None:  # immutable: pickled outside the lock
            state["graph"] = pickle.dumps(state["graph"], protocol=pickle.HIGHEST_PROTOCOL)
        else:
            state["graph_n"] = state["graph_dead"] = 0
        return state

    def restore_state(self, state: dict[str, Any]) -> int:
        """Install ``state`` (from :meth:`export_state`) into this empty index; return its size.

        Raises
        ------
        SemanticIndexError
            The index is not empty, or the state is of another format or measure.
        """
        if state.get("format") != FORMAT:
            raise SemanticIndexError(f"Unknown index state format {state.get('format')!r} (expected {FORMAT}).")
        if state["measure"] != self.measure_name:
            raise SemanticIndexError(f"The state is of a {state['measure']!r} index, this index is "
                                     f"{self.measure_name!r}.")
        n = int(state["n"])
        if isinstance(state["ids"], np.ndarray) and state["ids"].dtype == object:
            ids = state["ids"]
        else:
            ids = np.empty(n, object)
            ids[:] = state["ids"]
        alive = np.asarray(state["alive"], bool)
        if not (len(ids) == len(alive) == len(state["sq"]) == len(state["vectors"]) == n):
            raise SemanticIndexError(f"Inconsistent index state: {n} rows, {len(ids)} ids, {len(alive)} flags, "
                                     f"{len(state['sq'])} norms, {len(state['vectors'])} vectors.")
        with self._lock:
            if self._n or self._build is not None:
                raise SemanticIndexError("restore_state() needs an empty index.")
            if n == 0:
                return 0
            vectors = np.ascontiguousarray(state["vectors"], np.float32)  # a memory map stays one
            if vectors.ndim != 2 or vectors.shape[1] != int(state["dim"]):
                raise SemanticIndexError(f"Inconsistent index state: vectors of shape {vectors.shape}, "
                                         f"dimension {state['dim']}.")
            rows = np.flatnonzero(alive)
            row_of = dict(zip(ids[rows].tolist(), rows.tolist()))
            if len(row_of) != len(rows):
                raise SemanticIndexError(f"Inconsistent index state: {len(rows)} live rows hold "
                                         f"{len(row_of)} distinct ids.")
            if not 0 <= int(state["graph_n"]) <= n:
                raise SemanticIndexError(f"Inconsistent index state: a graph over {state['graph_n']} of {n} rows.")
            self.dim = int(state["dim"])
            self._vectors = vectors
            self._sq = np.asarray(state["sq"], np.float32)
            self._ids, self._alive, self._n = ids, alive.copy(), n
            self._row_of = row_of
            self._graph = None
            graph = state["graph"]
            # The counters describe the pending graph's rows: no rebuild is due for them.
            self._graph_n = int(state["graph_n"]) if graph is not None else 0
            self._graph_dead = int(state["graph_dead"]) if graph is not None else 0
            self._pending_graph = (graph, self._vectors) if graph is not None else None
            self._deleted = int(state["deleted"])
            return len(self._row_of)

    @property
    def has_pending_graph(self) -> bool:
        """Whether a restored graph waits for :meth:`attach_pending_graph`."""
        return self._pending_graph is not None

    def attach_pending_graph(self) -> bool:
        """Unpickle the restored graph, query it once, and install it (slow: call it off the query path).

        Returns False if there was none, or a rebuild replaced the rows it was built on (then it is dropped).
        """
        pending = self._pending_graph
        if pending is None:
            return False
        data, rows = pending
        graph = pickle.loads(data) if isinstance(data, bytes) else data
        if len(rows):
            graph.query(rows[0], 1)  # loads (or compiles) the search function here, not in a query
        with self._lock:
            self._pending_graph = None
            if self._vectors is not rows or self._graph is not None:
                return False
            self._graph = graph
            self.graph_enabled = True
            return True
