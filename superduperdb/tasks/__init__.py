"""Code that runs ON the cluster (Dask workers), from plain data: names, ids, config.

Nothing here receives a Collection: each job opens its own database handle
from the config snapshot it was sent (:mod:`superduperdb.store.context`). Job kinds register
themselves in :mod:`superduperdb.tasks.kinds`; :func:`superduperdb.tasks.runner.run_job` runs them.

Floor: the cluster side (with ``master``): every function handed to Dask is defined here or in
``master`` (:mod:`superduperdb.store.dispatch` refuses others). May import ``master``, ``store``,
pure compute and the leaves; never the client side (``services``, ``jobs``, ``cluster``, the facade).
"""
