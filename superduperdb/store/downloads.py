"""Fetching ``{'_content': {'url': ...}}`` fields, with a collection's download settings (both sides).

As in the original SuperDuperDB, each collection may set in its ``_meta``
(``coll.set_meta(key, value)``):

* ``n_download_workers``: URLs fetched at once (default ``downloads.n_workers``, 8);
* ``download_timeout``: seconds allowed per URL (default ``downloads.timeout``, 30);
* ``headers``: HTTP headers sent with every request (default none).

The ``download`` job (after writes) and ``find(..., download=True)`` (on read)
both fetch through :func:`fetch_all` and store through :func:`store_fetched`:
the bytes go to ``<field>._content.bytes``, a failure to ``<field>._content.error``.
"""

from __future__ import annotations

import logging
import numbers
import urllib.request
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bson.binary import Binary

from ..config.secrets import redact_url
from ..errors import ConfigError

logger = logging.getLogger(__name__)

N_WORKERS, TIMEOUT, HEADERS = "n_download_workers", "download_timeout", "headers"
SETTINGS = (N_WORKERS, TIMEOUT, HEADERS)


@dataclass(frozen=True)
class DownloadSettings:
    """How one collection downloads: concurrency, timeout per URL, HTTP headers."""

    n_workers: int = 8
    timeout: float = 30.0
    headers: dict = field(default_factory=dict)


def check_setting(key: str, value: Any) -> Any:
    """``value`` if it is valid for the download setting ``key`` (None: back to the default), else ConfigError."""
    if value is None:
        return None
    if key == N_WORKERS and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise ConfigError(f"{N_WORKERS} must be a positive integer (URLs fetched at once), not {value!r}.", key=key)
    if key == TIMEOUT and not (isinstance(value, numbers.Real) and not isinstance(value, bool) and value > 0):
        raise ConfigError(f"{TIMEOUT} must be a positive number of seconds, not {value!r}.", key=key)
    if key == HEADERS and not (isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, str)
                                                                  for k, v in value.items())):
        raise ConfigError(f"headers must be a dict of str to str such as {{'User-Agent': 'me'}}, not {value!r}.",
                          key=key)
    return dict(value) if key == HEADERS else value


def download_settings(metadata: Any, config: Any) -> DownloadSettings:
    """The collection's settings from its ``_meta``, with the config's defaults."""
    n = metadata.get_setting(N_WORKERS)
    timeout = metadata.get_setting(TIMEOUT)
    headers = metadata.get_setting(HEADERS)
    return DownloadSettings(n_workers=int(n or config.downloads.n_workers),
                            timeout=float(timeout or config.downloads.timeout), headers=dict(headers or {}))


def fetch(url: str, timeout: float = 30.0, headers: Mapping[str, str] | None = None) -> bytes:
    """The bytes at ``url`` (``http://``, ``https://`` or ``file://``); errors never quote its credentials."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://", "file://")):
        raise ValueError(f"unsupported URL {redact_url(url)!r} (use http://, https:// or file://)")
    request = urllib.request.Request(url, headers=dict(headers or {}))
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - schemes checked above
        return response.read()


def fetch_all(tasks: Iterable[tuple[Any, str, str]], settings: DownloadSettings) -> list[tuple]:
    """``(id, path, url, bytes | None, error | None)`` for each ``(id, path, url)``, fetched concurrently."""

    def one(task: tuple) -> tuple:
        _id, path, url = task
        try:
            return _id, path, url, fetch(url, settings.timeout, settings.headers), None
        except Exception as exc:  # recorded per document; the others go on
            return _id, path, url, None, redact_url(f"{type(exc).__name__}: {exc}")

    tasks = list(tasks)
    if not tasks:
        return []
    with ThreadPoolExecutor(max_workers=min(settings.n_workers, len(tasks))) as pool:
        return list(pool.map(one, tasks))


def store_fetched(collection: Any, results: list[tuple]) -> list[dict]:
    """``$set`` each result's bytes (or error) in its document; return the errors."""
    errors = []
    for _id, path, url, data, error in results:
        if error is None:
            collection.update_one({"_id": _id}, {"$set": {f"{path}.bytes": Binary(data)}})
        else:
            logger.warning("could not download %s: %s", redact_url(url), error)
            collection.update_one({"_id": _id}, {"$set": {f"{path}.error": error}})
            errors.append({"_id": str(_id), "url": redact_url(url), "error": error})
    return errors


def set_in(doc: Any, path: str, key: str, value: Any) -> None:
    """``doc[<path>][key] = value`` for a dotted path (numeric parts index lists), in place."""
    target = doc
    for part in path.split("."):
        target = target[int(part)] if isinstance(target, list) else target[part]
    target[key] = value
