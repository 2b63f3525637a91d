"""Saving and restoring a :class:`~superduperdb.index.vector_index.VectorIndex` (warm restarts).

:meth:`PersistMixin.export_state` captures, under the index lock, references to
each segment's rows ``[0, n)`` (immutable, see :mod:`superduperdb.index.search`),
a copy of its alive mask and its graph; the caller pickles it outside the lock.
:meth:`PersistMixin.restore_state` installs such a state into an empty index:
no graph is rebuilt, no vector is decoded.

The graph travels as its own pickle (``state["graph"]`` is bytes): the
pynndescent object pickles as it is, and its ``__setstate__`` re-attaches the
disk-cached search function. Unpickling it imports numba (seconds in a fresh
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

import pickle
from typing import Any

import numpy as np

from superduperdb.errors import SemanticIndexError

FORMAT = 1


class PersistMixin:
    """``export_state`` / ``restore_state`` (state lives on the index).

    The state is flat (every segment's rows one after the other, the first
    segment's graph in ``graph`` over rows ``[0, graph_n)``) and lists the
    segments in ``segments`` (rows, pickled graph or None, and whether it is
    the growing one), so that a restored index has the same segments and
    graphs as the saved one.
    """

    graph_enabled: bool = True

    def export_state(self) -> dict[str, Any]:
        """A picklable snapshot of the index: rows, ids, alive mask, segments (graphs pickled) and counters."""
        with self._lock:
            captured = [(s, s.n, s.alive[:s.n].copy(), s.graph if s.graph is not None else s.pending,
                         s is self._growing) for s in self._segments()]
        segments = []
        for _seg, n, _, graph, growing in captured:  # rows < n are immutable: gathered outside the lock
            if graph is not None and not isinstance(graph, bytes):
                graph = pickle.dumps(graph, protocol=pickle.HIGHEST_PROTOCOL)
            segments.append({"n": n, "graph": graph, "growing": growing})
        n = sum(c[1] for c in captured)
        dim = self.dim or 0
        def cat(parts: list, empty: np.ndarray) -> np.ndarray:
            return np.concatenate(parts) if parts else empty
        first = segments[0] if segments else None
        return {
            "format": FORMAT, "measure": self.measure_name, "dim": self.dim, "n": n,  # a name: never a callable
            "vectors": cat([s.vectors[:k] for s, k, *_ in captured], np.empty((0, dim), np.float32)),
            "sq": cat([s.sq[:k] for s, k, *_ in captured], np.empty(0, np.float32)),
            "ids": [i for s, k, *_ in captured for i in s.ids[:k].tolist()],
            "alive": cat([c[2] for c in captured], np.empty(0, bool)),
            "graph": first["graph"] if first else None,
            "graph_n": first["n"] if first and first["graph"] is not None else 0,
            "graph_dead": 0, "deleted": int(sum(k - int(a.sum()) for _, k, a, *_ in captured)),
            "segments": segments,
        }  # fmt: skip

    def restore_state(self, state: dict[str, Any]) -> int:
        """Install ``state`` (from :meth:`export_state`) into this empty index; return its size.

        Raises
        ------
        SemanticIndexError
            The index is not empty, or the state is of another format or measure.
        """
        from superduperdb.index.segments import Segment

        if state.get("format") != FORMAT:
            raise SemanticIndexError(f"Unknown index state format {state.get('format')!r} (expected {FORMAT}).")
        if state["measure"] != self.measure_name:
            raise SemanticIndexError(f"The state is of a {state['measure']!r} index, this index is "
                                     f"{self.measure_name!r}.")
        n = int(state["n"])
        ids = np.empty(n, object)
        ids[:] = state["ids"]
        alive = np.asarray(state["alive"], bool)
        vectors = np.ascontiguousarray(state["vectors"], np.float32)
        sq = np.asarray(state["sq"], np.float32)
        parts = state.get("segments")
        if parts is None:  # an older state: one graph over the first rows, the rest a tail
            graph_n = int(state["graph_n"]) if state["graph"] is not None else 0
            parts = [p for p in ({"n": graph_n, "graph": state["graph"], "growing": False},
                                 {"n": n - graph_n, "graph": None, "growing": False}) if p["n"]]
        with self._lock:
            if self._where or self._sealed or self._task is not None:
                raise SemanticIndexError("restore_state() needs an empty index.")
            if n == 0:
                return 0
            self.dim = int(state["dim"])
            self._growing = Segment.empty(self.dim)
            start = 0
            for part in parts:
                stop = start + int(part["n"])
                seg = Segment.of(vectors[start:stop], ids[start:stop], alive[start:stop].copy(), sq[start:stop])
                seg.pending = part["graph"]
                if part.get("growing"):
                    self._growing = seg
                else:
                    self._sealed.append(seg)
                rows = np.flatnonzero(seg.alive[:seg.n])
                self._where.update(zip(seg.ids[rows].tolist(), ((seg, int(r)) for r in rows)))
                start = stop
            return len(self._where)

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
