"""Code that runs ON the cluster (Dask workers), from plain data: names, ids, config.

Nothing here receives a Collection: each job opens its own database handle
from the config snapshot it was sent (:mod:`superduperdb.store.context`). Job kinds register
themselves in :mod:`superduperdb.tasks.kinds`; :func:`superduperdb.tasks.runner.run_job` runs them.
"""
