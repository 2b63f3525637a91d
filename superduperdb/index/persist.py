"""Saving and restoring a :class:`~superduperdb.index.vector_index.VectorIndex` (warm restarts).

:meth:`PersistMixin.export_state` captures, under the index lock, references to
each segment's rows ``[0, n)`` (immutable, see :mod:`superduperdb.index.search`),
a copy of its alive mask and its graph. :meth:`PersistMixin.restore_state`
installs such a state into an empty index: the same segments, no graph
rebuilt, no vector decoded.

The state is plain data: numpy arrays (every segment's rows one after the
other), numbers, the ids as a list (see :func:`encode_ids` for how a snapshot
stores them without pickle) and ``segments``, one entry per segment (its rows,
its graph, whether it is the growing one). The graphs are the one exception:
pynndescent's object has no data-only form, so each sealed segment's graph
travels as its own pickle (bytes), which a snapshot checksums
(:mod:`superduperdb.index.snapfile`) and :meth:`attach_pending_graph` unpickles
only off the query path. Unpickling imports numba (seconds in a fresh
process), so :meth:`restore_state` only keeps the bytes, the index answers
exactly meanwhile, and :meth:`attach_pending_graph` (called in a background
thread) unpickles each graph, runs one query so that nothing is left to
compile, and installs it, unless a merge or compaction replaced its segment
meanwhile.

Examples
--------
>>> import numpy as np
>>> from superduperdb.index import VectorIndex
>>> a = VectorIndex(measure="l2")
>>> a.add(["x", "y"], np.eye(2))
2
>>> b = VectorIndex(measure="l2")
>>> b.restore_state(a.export_state())
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

FORMAT = 2  # 1: one graph over the first rows (before segments)
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
    """``export_state`` / ``restore_state`` (state lives on the index).

    The state is flat (every segment's rows one after the other) and lists
    the segments in ``segments`` (``n`` rows, ``graph``: pickled bytes or
    None, and whether it is the ``growing`` one), so that a restored index has
    the same segments and graphs as the saved one.
    """

    graph_enabled: bool = True

    def export_state(self) -> dict[str, Any]:
        """The index as plain data: rows, ids, alive mask, segments (each graph pickled, or None), counters."""
        with self._lock:
            captured = [(s, s.n, s.alive[:s.n].copy(), s.graph if s.graph is not None else s.pending,
                         s is self._growing) for s in self._segments()]
        segments = []
        for _seg, n, _, graph, growing in captured:  # rows < n are immutable: gathered outside the lock
            if graph is not None and not isinstance(graph, bytes):
                graph = bytes(graph) if isinstance(graph, memoryview) else \
                    pickle.dumps(graph, protocol=pickle.HIGHEST_PROTOCOL)
            segments.append({"n": n, "graph": graph, "growing": growing})
        n = sum(c[1] for c in captured)
        dim = self.dim or 0

        def cat(parts: list, empty: np.ndarray) -> np.ndarray:
            return np.concatenate(parts) if parts else empty

        return {
            "format": FORMAT, "measure": self.measure_name, "dim": self.dim, "n": n,  # a name: never a callable
            "vectors": cat([s.vectors[:k] for s, k, *_ in captured], np.empty((0, dim), np.float32)),
            "sq": cat([s.sq[:k] for s, k, *_ in captured], np.empty(0, np.float32)),
            "ids": [i for s, k, *_ in captured for i in s.ids[:k].tolist()],
            "alive": cat([c[2] for c in captured], np.empty(0, bool)),
            "deleted": int(sum(k - int(a.sum()) for _, k, a, *_ in captured)),
            "segments": segments,
        }  # fmt: skip

    def restore_state(self, state: dict[str, Any]) -> int:
        """Install ``state`` (from :meth:`export_state`) into this empty index; return its size.

        The arrays are used as given where they can be (a memory-mapped snapshot stays mapped: sealed
        segments never write their rows, and the growing one copies them on its first append).

        Raises
        ------
        SemanticIndexError
            The index is not empty, or the state is of another format or measure, or inconsistent.
        """
        from superduperdb.index.segments import Segment

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
        vectors = np.ascontiguousarray(state["vectors"], np.float32)  # a memory map stays one
        sq = np.asarray(state["sq"], np.float32)
        parts = state["segments"]
        if not (len(ids) == len(alive) == len(sq) == len(vectors) == n):
            raise SemanticIndexError(f"Inconsistent index state: {n} rows, {len(ids)} ids, {len(alive)} flags, "
                                     f"{len(sq)} norms, {len(vectors)} vectors.")
        if sum(int(p["n"]) for p in parts) != n or sum(bool(p.get("growing")) for p in parts) > 1:
            raise SemanticIndexError(f"Inconsistent index state: segments of {[p['n'] for p in parts]} rows "
                                     f"for {n} rows.")
        if n and (vectors.ndim != 2 or vectors.shape[1] != int(state["dim"])):
            raise SemanticIndexError(f"Inconsistent index state: vectors of shape {vectors.shape}, "
                                     f"dimension {state['dim']}.")
        with self._lock:
            if self._where or self._sealed or self._task is not None:
                raise SemanticIndexError("restore_state() needs an empty index.")
            if n == 0:
                return 0
            self.dim = int(state["dim"])
            growing, sealed, where = Segment.empty(self.dim), [], {}
            start = 0
            for part in parts:
                stop = start + int(part["n"])
                seg = Segment.of(vectors[start:stop], ids[start:stop], alive[start:stop].copy(), sq[start:stop])
                seg.pending = part["graph"]
                if part.get("growing"):
                    growing = seg
                else:
                    sealed.append(seg)
                rows = np.flatnonzero(seg.alive[:seg.n])
                where.update(zip(seg.ids[rows].tolist(), ((seg, int(r)) for r in rows)))
                start = stop
            live = int(np.count_nonzero(alive))
            if len(where) != live:
                raise SemanticIndexError(f"Inconsistent index state: {live} live rows hold {len(where)} distinct ids.")
            self._growing, self._sealed, self._where = growing, sealed, where
            return len(where)

    @property
    def has_pending_graph(self) -> bool:
        """Whether a restored graph waits for :meth:`attach_pending_graph`."""
        with self._lock:
            return any(s.pending is not None for s in self._segments())

    def attach_pending_graph(self) -> bool:
        """Unpickle the restored graphs, query each once, and install them (slow: call it off the query path).

        Returns False if there was none, or rebuilds replaced the segments they were built on (then they
        are dropped).
        """
        with self._lock:
            pending = [(s, s.pending) for s in self._segments() if s.pending is not None]
        attached = False
        for seg, data in pending:
            graph = pickle.loads(data) if isinstance(data, bytes) else data
            if seg.n:
                graph.query(seg.vectors[0], 1)  # loads (or compiles) the search function here, not in a query
            with self._lock:
                if seg.pending is data and any(s is seg for s in self._segments()) and seg.graph is None:
                    seg.graph, seg.pending = graph, None
                    attached = True
                else:
                    seg.pending = None
        return attached
