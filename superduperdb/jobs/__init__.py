"""Jobs: records in ``<collection>._jobs``, handles to wait on them, and submission to Dask."""

from .handles import Job, JobGroup

__all__ = ["Job", "JobGroup"]
