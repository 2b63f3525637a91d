"""Pure-compute vector index: exact numpy search plus a pynndescent graph.

Used by the master (a Dask actor); no MongoDB and no Dask here. Importing this
package is cheap: numba and pynndescent are imported only when a graph is
first built (see :mod:`superduperdb.index.env` for what an index process must
call at start).

Examples
--------
>>> import numpy as np
>>> from superduperdb.index import VectorIndex
>>> index = VectorIndex(measure="l2")
>>> index.add([1, 2], np.array([[0.0, 0.0], [3.0, 4.0]]))
2
>>> index.search([3.0, 4.0], n=2)
([2, 1], array([ 0., -5.], dtype=float32))

Floor: pure compute (with ``models``, ``types``, ``training``, ``datasets``). May import its own
floor and the leaves (``errors``, ``config``); no MongoDB, no Dask.
"""

from superduperdb.index.env import configure_numba_env, warm_up
from superduperdb.index.measures import MEASURES, exact_search
from superduperdb.index.vector_index import VectorIndex

__all__ = ["MEASURES", "VectorIndex", "configure_numba_env", "exact_search", "warm_up"]
