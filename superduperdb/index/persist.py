"""Saving and restoring a :class:`~superduperdb.index.vector_index.VectorIndex` (warm restarts).

:meth:`PersistMixin.export_state` captures, under the index lock, references to
the rows ``[0, n)`` (immutable, see :mod:`superduperdb.index.search`), a copy
of the alive mask and the graph; the caller pickles it outside the lock.
:meth:`PersistMixin.restore_state` installs such a state into an empty index:
no graph is rebuilt, no vector is decoded. The pynndescent graph pickles as it
is (its ``__setstate__`` re-attaches the disk-cached search function, which
loaded faster than rebuilding the search structures from the graph arrays).

A restored graph is only queried once :attr:`graph_enabled` is true: the
master keeps it off until the numba JIT is warm, so the first queries are
answered exactly instead of compiling on the query path.

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

from typing import Any

import numpy as np

from superduperdb.errors import SemanticIndexError

FORMAT = 1


class PersistMixin:
    """``export_state`` / ``restore_state`` (state lives on the index)."""

    graph_enabled: bool = True

    def export_state(self) -> dict[str, Any]:
        """A picklable snapshot of the index: rows, ids, alive mask, graph and counters."""
        with self._lock:
            n = self._n
            return {
                "format": FORMAT, "measure": self.measure, "dim": self.dim, "n": n,
                "vectors": self._vectors[:n], "sq": self._sq[:n], "ids": self._ids[:n].tolist(),
                "alive": self._alive[:n].copy(), "graph": self._graph, "graph_n": self._graph_n,
                "graph_dead": self._graph_dead, "deleted": self._deleted,
            }  # fmt: skip

    def restore_state(self, state: dict[str, Any]) -> int:
        """Install ``state`` (from :meth:`export_state`) into this empty index; return its size.

        Raises
        ------
        SemanticIndexError
            The index is not empty, or the state is of another format or measure.
        """
        if state.get("format") != FORMAT:
            raise SemanticIndexError(f"Unknown index state format {state.get('format')!r} (expected {FORMAT}).")
        if state["measure"] != self.measure:
            raise SemanticIndexError(f"The state is of a {state['measure']!r} index, this index is {self.measure!r}.")
        n = int(state["n"])
        ids = np.empty(n, object)
        ids[:] = state["ids"]
        alive = np.asarray(state["alive"], bool)
        with self._lock:
            if self._n or self._build is not None:
                raise SemanticIndexError("restore_state() needs an empty index.")
            if n == 0:
                return 0
            self.dim = int(state["dim"])
            self._vectors = np.ascontiguousarray(state["vectors"], np.float32)
            self._sq = np.asarray(state["sq"], np.float32)
            self._ids, self._alive, self._n = ids, alive.copy(), n
            rows = np.flatnonzero(alive)
            self._row_of = dict(zip(ids[rows].tolist(), rows.tolist()))
            self._graph = state["graph"]
            self._graph_n = int(state["graph_n"]) if self._graph is not None else 0
            self._graph_dead = int(state["graph_dead"]) if self._graph is not None else 0
            self._deleted = int(state["deleted"])
            return len(self._row_of)

    @property
    def has_graph(self) -> bool:
        """Whether a graph is installed (queried only while :attr:`graph_enabled`)."""
        return self._graph is not None
