"""Jobs, client side: submission to Dask (:mod:`.service`), handles to wait on them (:mod:`.handles`).

Their records live in the store floor (:mod:`superduperdb.store.records`).

Floor: client-side jobs (with ``cluster``). May import ``tasks``, ``master``, ``store``, pure
compute and the leaves; never ``services`` or the facade.
"""

from .handles import Job, JobGroup

__all__ = ["Job", "JobGroup"]
