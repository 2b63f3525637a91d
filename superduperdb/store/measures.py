"""Resolving a semantic index's measure on either side: a built-in name, or a registered callable.

Custom measures are registered with ``create_measure(name, callable)``: a row
``{name, artifact, class}`` in ``<coll>._measures``, the callable an artifact
in GridFS (as the original's ``coll.measures``). The master and the
validation jobs load them here, from plain names in the index's row.
"""

from __future__ import annotations

from typing import Any

from ..index.measures import MEASURES


def load_measure(metadata: Any, artifacts: Any, name: str) -> Any:
    """``name`` itself for a built-in measure, else the registered callable.

    Raises :class:`~superduperdb.errors.NotRegisteredError` for an unknown name.
    """
    if name in MEASURES:
        return name
    row = metadata.get("measures", name)
    return artifacts.get(row["artifact"], (f"measures/{name}", None))
