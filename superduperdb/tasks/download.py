"""The ``download`` job: fetch ``{'_content': {'url': ...}}`` fields into bytes.

URLs (``http(s)://`` and ``file://``) are fetched with the collection's
download settings (``n_download_workers``, ``download_timeout``, ``headers``
in its ``_meta``; see :mod:`superduperdb.store.downloads`); the bytes go to ``<field>._content.bytes``. A URL that fails records
its error at ``<field>._content.error`` and in the job's result; the other
documents still complete. URLs are shown (logs, errors, the job's result) with their
credentials redacted (:func:`~superduperdb.config.secrets.redact_url`).
"""

from __future__ import annotations

import logging

from ..store.context import Context
from ..store.downloads import download_settings, fetch_all, store_fetched
from ..store.layout import find_urls
from .kinds import job_kind

logger = logging.getLogger(__name__)


@job_kind("download")
def download(ctx: Context, job_id: str, ids: list | None = None) -> dict:
    query = {"_id": {"$in": list(ids)}} if ids is not None else {}
    tasks = [(doc["_id"], path, url) for doc in ctx.collection.find(query) for path, url in find_urls(doc)]
    settings = download_settings(ctx.metadata, ctx.config)  # the collection's _meta, the config's defaults
    errors = store_fetched(ctx.collection, fetch_all(tasks, settings))
    return {"downloaded": len(tasks) - len(errors), "errors": errors}
