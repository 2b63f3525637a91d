"""The master: the long-lived vector-search process (a Dask actor) and its handle.

The master is a cache: every vector it holds is rebuilt from the outputs in
MongoDB whenever it is (re)created.
"""

from .handle import MasterHandle

__all__ = ["MasterHandle"]
