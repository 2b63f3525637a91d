"""Loading a registered model's :class:`~superduperdb.models.base.Model` wrapper (both sides)."""

from __future__ import annotations

from typing import Any

from ..errors import ModelError
from ..models.base import Model


def load_model(metadata: Any, artifacts: Any, name: str, version: int | None = None) -> Model:
    """The :class:`Model` wrapper of ``name`` (current version unless given)."""
    row = metadata.get("models", name)
    ref, expect = row["artifact"], model_identity(row)
    if version is not None:
        match = [v for v in row.get("versions", []) if v["version"] == version]
        if not match:
            raise ModelError(f"Model {name!r} has no version {version}; versions: {[v['version'] for v in row['versions']]}.")
        ref, expect = match[0]["artifact"], (f"models/{name}", version)
    return artifacts.get(ref, expect)


def model_identity(row: dict) -> tuple[str, int | None]:
    """What the serving artifact of model row ``row`` is signed as: ``("models/<name>", <version>)``."""
    return f"models/{row['name']}", row.get("version", 1)


def follow_parent(metadata: Any, parent: str, version: int, ref: dict, *, artifacts: Any = None) -> list[str]:
    """Point the attribute models of ``parent`` (``parent.attr``) at its serving ``version``/``ref``.

    Their fingerprints name the version, so their outputs computed from the
    previous one read as stale (the reconciler and the jobs after a promotion
    recompute them). Returns their names.
    """
    from ..models.composite import composite_ref

    names = []
    for row in metadata.list("models", {"parent": parent}):
        old = row["artifact"]
        new = composite_ref(forward=ref, attribute=old.get("attribute"), preprocess=old.get("preprocess"),
                            postprocess=old.get("postprocess"), options=old.get("options"), name=row["name"])
        if artifacts is not None:  # signed as the attribute model's new version (with a key)
            new = artifacts.sign(new, name=f"models/{row['name']}", version=version)
        metadata.update("models", row["name"], {"$set": {"version": version, "artifact": new},
                                                "$push": {"versions": {"version": version, "artifact": new,
                                                                       "metrics": {}}}})
        names.append(row["name"])
    return names
