"""Segments: the storage units of a :class:`~superduperdb.index.vector_index.VectorIndex`.

An index is one **growing** segment (new vectors are appended to it and
searched exactly, so an insert is searchable at once) plus a few **sealed**
segments. A sealed segment's rows never change (only their alive flags flip
when a vector is removed or replaced), so a graph built over them stays valid
for the segment's life: building one needs no lock, and queries go on using
the segment meanwhile (exactly, until its graph is attached).

Rows ``< n`` of a segment are immutable even for the growing one (appends go
past ``n``), which is what lets a query capture ``(segment, n)`` pairs under the
index lock and search them without it (see :mod:`superduperdb.index.search`).

>>> import numpy as np
>>> s = Segment.empty(2, capacity=4)
>>> s.append(np.ones((3, 2), np.float32), ["a", "b", "c"])
0
>>> s.n, s.live
(3, 3)
>>> s.kill(1); s.live
2
"""

from __future__ import annotations

from itertools import count
from typing import Any

import numpy as np

from superduperdb.index.measures import sqnorms
from superduperdb.index.search import View

_IDS = count(1)


class Segment:
    """Rows of vectors with their ids, squared norms and alive flags, and maybe a graph over them.

    Parameters
    ----------
    vectors : ndarray (capacity, dim), float32
    sq : ndarray (capacity,), float32
    ids : ndarray (capacity,), object
    alive : ndarray (capacity,), bool
    n : int
        Rows in use (the first ``n``).
    """

    def __init__(self, vectors: np.ndarray, sq: np.ndarray, ids: np.ndarray, alive: np.ndarray, n: int) -> None:
        self.uid = next(_IDS)
        self.vectors, self.sq, self.ids, self.alive, self.n = vectors, sq, ids, alive, n
        self.dead = int(n - np.count_nonzero(alive[:n]))
        self.graph: Any = None
        self.pending: Any = None  # a restored graph not attached yet (pickled bytes, or a Graph)

    @classmethod
    def empty(cls, dim: int, capacity: int = 1024) -> Segment:
        return cls(np.empty((capacity, dim), np.float32), np.empty(capacity, np.float32),
                   np.empty(capacity, object), np.zeros(capacity, bool), 0)

    @classmethod
    def of(cls, vectors: np.ndarray, ids: Any, alive: np.ndarray | None = None,
           sq: np.ndarray | None = None) -> Segment:
        """A sealed segment over exactly these rows (arrays are used as given, not copied)."""
        n = len(vectors)
        id_array = ids if isinstance(ids, np.ndarray) and ids.dtype == object else np.empty(n, object)
        if id_array is not ids:
            id_array[:] = list(ids)
        return cls(np.ascontiguousarray(vectors, np.float32), sqnorms(vectors) if sq is None else sq, id_array,
                   np.ones(n, bool) if alive is None else np.asarray(alive, bool), n)

    @property
    def capacity(self) -> int:
        return len(self.sq)

    @property
    def live(self) -> int:
        return self.n - self.dead

    def append(self, X: np.ndarray, ids: list) -> int:
        """Append rows (growing segments only; grows the arrays); return the first new row."""
        start, k = self.n, len(ids)
        if start + k > self.capacity:
            new = max(start + k, 2 * self.capacity, 1024)
            for name in ("vectors", "sq", "ids", "alive"):
                old = getattr(self, name)
                arr = (np.zeros if name == "alive" else np.empty)((new,) + old.shape[1:], old.dtype)
                arr[:start] = old[:start]
                setattr(self, name, arr)
        self.vectors[start:start + k] = X
        self.sq[start:start + k] = sqnorms(X)
        self.ids[start:start + k] = ids
        self.alive[start:start + k] = True
        self.n = start + k
        return start

    def kill(self, row: int) -> None:
        if self.alive[row]:
            self.alive[row] = False
            self.dead += 1

    def view(self, measure: Any, epsilon: float, n: int | None = None) -> View:
        """A :class:`View` of the first ``n`` rows (default: all), for the search functions."""
        n = self.n if n is None else n
        graph = self.graph
        dead = n - int(np.count_nonzero(self.alive[:n]))
        return View(self.vectors, self.sq, self.ids, self.alive, n, n - dead,
                    graph, n if graph is not None else 0, dead if graph is not None else 0, measure, epsilon)

    def nbytes(self) -> int:
        """Bytes held by the rows in use (vectors, norms, flags; ids and graph not counted)."""
        return int(self.n * (self.vectors.shape[1] * 4 + 4 + 1))

    def __repr__(self) -> str:
        return f"Segment(n={self.n}, live={self.live}, graph={self.graph is not None})"
