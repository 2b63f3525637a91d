"""pymongo's write results, plus the jobs each write submitted (``.jobs``)."""

from __future__ import annotations

from typing import Any

from pymongo import results as _r


def _empty_jobs():
    from .jobs.handles import JobGroup

    return JobGroup([])


class _WithJobs:
    jobs: Any

    def _set_jobs(self, jobs: Any) -> None:
        self.jobs = jobs if jobs is not None else _empty_jobs()


class InsertOneResult(_r.InsertOneResult, _WithJobs):
    """:class:`pymongo.results.InsertOneResult` with ``.jobs`` (a :class:`JobGroup`)."""

    def __init__(self, inserted_id: Any, acknowledged: bool, jobs: Any = None) -> None:
        super().__init__(inserted_id, acknowledged)
        self._set_jobs(jobs)


class InsertManyResult(_r.InsertManyResult, _WithJobs):
    """:class:`pymongo.results.InsertManyResult` with ``.jobs``."""

    def __init__(self, inserted_ids: list, acknowledged: bool, jobs: Any = None) -> None:
        super().__init__(inserted_ids, acknowledged)
        self._set_jobs(jobs)


class UpdateResult(_r.UpdateResult, _WithJobs):
    """:class:`pymongo.results.UpdateResult` with ``.jobs``."""

    def __init__(self, raw_result: dict, acknowledged: bool, jobs: Any = None) -> None:
        super().__init__(raw_result, acknowledged)
        self._set_jobs(jobs)


class DeleteResult(_r.DeleteResult, _WithJobs):
    """:class:`pymongo.results.DeleteResult` with ``.jobs``."""

    def __init__(self, raw_result: dict, acknowledged: bool, jobs: Any = None) -> None:
        super().__init__(raw_result, acknowledged)
        self._set_jobs(jobs)


class BulkWriteResult(_r.BulkWriteResult, _WithJobs):
    """:class:`pymongo.results.BulkWriteResult` with ``.jobs``."""

    def __init__(self, bulk_api_result: dict, acknowledged: bool, jobs: Any = None) -> None:
        super().__init__(bulk_api_result, acknowledged)
        self._set_jobs(jobs)


def update_raw(result: Any) -> dict:
    """The ``raw_result`` of an update result from pymongo or mongomock."""
    raw = dict(getattr(result, "raw_result", None) or {})
    raw.setdefault("n", result.matched_count + (1 if result.upserted_id is not None else 0))
    raw.setdefault("nModified", result.modified_count)
    if result.upserted_id is not None:
        raw.setdefault("upserted", result.upserted_id)
    raw.setdefault("ok", 1.0)
    raw.setdefault("updatedExisting", result.matched_count > 0)
    return raw
