"""Loading a registered model's :class:`~superduperdb.models.base.Model` wrapper (both sides)."""

from __future__ import annotations

from typing import Any

from ..errors import ModelError
from ..models.base import Model


def load_model(metadata: Any, artifacts: Any, name: str, version: int | None = None) -> Model:
    """The :class:`Model` wrapper of ``name`` (current version unless given)."""
    row = metadata.get("models", name, hint="Register it with create_model(name, object).")
    ref = row["artifact"]
    if version is not None:
        match = [v for v in row.get("versions", []) if v["version"] == version]
        if not match:
            raise ModelError(f"Model {name!r} has no version {version}; versions: {[v['version'] for v in row['versions']]}.")
        ref = match[0]["artifact"]
    return artifacts.get(ref)
