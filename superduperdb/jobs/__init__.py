"""Jobs, client side: submission to Dask (:mod:`.service`), handles to wait on them (:mod:`.handles`).

Their records live in the store floor (:mod:`superduperdb.store.records`).
"""

from .handles import Job, JobGroup

__all__ = ["Job", "JobGroup"]
