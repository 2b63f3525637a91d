"""Code that runs ON the cluster (Dask workers), from plain data: names, ids, config.

Nothing here receives a Collection: each job opens its own database handle
from the config snapshot it was sent (:mod:`superduperdb.tasks.context`).
"""
