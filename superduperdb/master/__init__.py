"""The master: the long-lived vector-search process (a Dask actor) and its handle.

The master is a cache: every vector it holds is rebuilt from the outputs in
MongoDB whenever it is (re)created.

Floor: the cluster side (with ``tasks``, which it never imports: jobs call the master, not the
other way round). May import ``store``, pure compute and the leaves; never the client side.
"""

from .handle import MasterHandle

__all__ = ["MasterHandle"]
