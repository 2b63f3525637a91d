"""superduperdb: bring AI models to the data in MongoDB.

Examples
--------
>>> import superduperdb
>>> docs = superduperdb.connect("mongomock://readme", cluster=None).my_db.documents
>>> docs.insert_one({"title": "hello"}).acknowledged
True
"""

from __future__ import annotations

from .errors import SuperDuperError
from .version import __version__

_LAZY = {
    "SuperDuperClient": ("superduperdb.client", "SuperDuperClient"),
    "Database": ("superduperdb.client", "Database"),
    "connect": ("superduperdb.client", "connect"),
    "Collection": ("superduperdb.collection", "Collection"),
    "Cursor": ("superduperdb.cursor", "Cursor"),
    "Job": ("superduperdb.jobs.handles", "Job"),
    "JobGroup": ("superduperdb.jobs.handles", "JobGroup"),
    "resolve_config": ("superduperdb.config", "resolve_config"),
    "serve": ("superduperdb.server", "serve"),
}


def __getattr__(name: str):
    # Keep `import superduperdb` fast: pymongo, dask and friends load on first use.
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'superduperdb' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["SuperDuperError", "__version__", *_LAZY]
