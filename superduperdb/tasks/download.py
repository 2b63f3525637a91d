"""The ``download`` job: fetch ``{'_content': {'url': ...}}`` fields into bytes.

URLs (``http(s)://`` and ``file://``) are fetched with bounded concurrency and
a timeout; the bytes go to ``<field>._content.bytes``. A URL that fails records
its error at ``<field>._content.error`` and in the job's result; the other
documents still complete.
"""

from __future__ import annotations

import logging
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from bson.binary import Binary

from ..store.context import Context
from ..store.layout import find_urls
from .kinds import job_kind

logger = logging.getLogger(__name__)
MAX_WORKERS = 8
TIMEOUT = 30.0


def fetch(url: str, timeout: float = TIMEOUT) -> bytes:
    if not url.startswith(("http://", "https://", "file://")):
        raise ValueError(f"unsupported URL scheme in {url!r} (use http://, https:// or file://)")
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
            return _id, path, url, None, f"{type(exc).__name__}: {exc}"

    errors = []
    with ThreadPoolExecutor(max_workers=MAX_WORKERS) as pool:
        for _id, path, url, data, error in pool.map(one, tasks):
            if error is None:
                ctx.collection.update_one({"_id": _id}, {"$set": {f"{path}.bytes": Binary(data)}})
            else:
                logger.warning("could not download %s: %s", url, error)
                ctx.collection.update_one({"_id": _id}, {"$set": {f"{path}.error": error}})
                errors.append({"_id": str(_id), "url": url, "error": error})
    return {"downloaded": len(tasks) - len(errors), "errors": errors}
