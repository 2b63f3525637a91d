"""Running a superduperdb cluster: the Dask preload, the command lines, a local cluster.

* :mod:`superduperdb.cluster.preload`: ``dask scheduler|worker --preload
  superduperdb.cluster.preload`` makes a Dask process superduperdb-ready.
* :mod:`superduperdb.cluster.spec`: which ``dask scheduler`` / ``dask worker``
  command lines a config (``config.json``, ``superduperdb.yaml``) implies.
* :mod:`superduperdb.cluster.local`: a scheduler, job workers and a master
  worker as subprocesses of one command (``superduperdb local-cluster``).
* :mod:`superduperdb.cluster.connection`: the client's handle on the cluster
  (``Cluster``: inline, local or a scheduler; jobs are submitted through it).
* :mod:`superduperdb.cluster.observe` and :mod:`superduperdb.cluster.dashboard`: in the
  scheduler, superduperdb's gauges on Dask's ``/metrics`` and the dashboard's "superduperdb" page.

What a worker says about itself (``superduperdb info``) runs on the workers, so it
lives with the other worker code, in :mod:`superduperdb.tasks.report`.

Nothing here is imported by ``import superduperdb``.

Floor: client-side jobs (with ``jobs``). May import ``tasks``, ``master``, ``store``, pure
compute and the leaves; never ``services`` or the facade.
"""
