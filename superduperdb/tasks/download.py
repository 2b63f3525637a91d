"""The ``download`` job: fetch ``{'_content': {'url': ...}}`` fields into bytes.

URLs (``http(s)://`` and ``file://``) are fetched with bounded concurrency and
a timeout; the bytes go to ``<field>._content.bytes``. A URL that fails records
its error at ``<field>._content.error`` and in the job's result; the other
documents still complete. URLs are shown (logs, errors, the job's result) with their
credentials redacted (:func:`~superduperdb.config.secrets.redact_url`).
"""

from __future__ import annotations

import logging
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from bson.binary import Binary

from ..config.secrets import redact_url
from ..store.context import Context
from ..store.layout import find_urls
from .kinds import job_kind

logger = logging.getLogger(__name__)
MAX_WORKERS = 8
TIMEOUT = 30.0


def fetch(url: str, timeout: float = TIMEOUT) -> bytes:
    """The bytes at ``url`` (``http(s)://`` or ``file://``); errors never quote the URL's credentials."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://", "file://")):
        raise ValueError(f"unsupported URL {redact_url(url)!r} (use http://, https:// or file://)")
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - schemes checked above
        return response.read()


@job_kind("download")
def download(ctx: Context, job_id: str, ids: list | None = None) -> dict:
    query = {"_id": {"$in": list(ids)}} if ids is not None else {}
    tasks = [(doc["_id"], path, url) for doc in ctx.collection.find(query) for path, url in find_urls(doc)]

    def one(task: tuple) -> tuple:
        _id, path, url = task
        try:
            return _id, path, url, fetch(url), None
        except Exception as exc:  # recorded per document, the job goes on
            return _id, path, url, None, redact_url(f"{type(exc).__name__}: {exc}")

    errors = []
    with ThreadPoolExecutor(max_workers=MAX_WORKERS) as pool:
        for _id, path, url, data, error in pool.map(one, tasks):
            if error is None:
                ctx.collection.update_one({"_id": _id}, {"$set": {f"{path}.bytes": Binary(data)}})
            else:
                logger.warning("could not download %s: %s", redact_url(url), error)
                ctx.collection.update_one({"_id": _id}, {"$set": {f"{path}.error": error}})
                errors.append({"_id": str(_id), "url": redact_url(url), "error": error})
    return {"downloaded": len(tasks) - len(errors), "errors": errors}
