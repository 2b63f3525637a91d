"""Where derived state lives in a document, and how a watcher reads its input.

* ``_outputs.<key>.<model>``: a model's output on ``key`` (``key='_base'``:
  the whole document), written by ``model`` jobs with ``$set`` keyed by
  ``_id`` (:func:`output_path`);
* ``_fingerprints.<key>.<model>``: what that output was computed from,
  ``'v<model version>:<digest of the input>'`` (:func:`fingerprint`), so
  "is this output current?" is a comparison, without the model;
* ``_like.<neighbourhood>``: the ids of a document's nearest neighbours
  (:func:`neighbourhood_path`);
* ``{'_content': {'url': ...}}``: content still to download (:func:`find_urls`).

The ``<model>`` segment is the model's name, except that an attribute model
``parent.attr`` is stored as ``parent/attr`` (:func:`model_field`): a dot
would nest the output inside ``parent``'s own output on the same key (and
``_outputs.a.b.c`` could not tell key ``a`` + model ``b.c`` from key ``a.b`` +
model ``c``). Model names never contain ``/``, so the encoding is one to one.

Both sides (the client's write planner and the jobs on the workers) use these
helpers, so the layout is written down once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import bson

from ..types.encoding import CONTENT

OUTPUTS = "_outputs"
FINGERPRINTS = "_fingerprints"
LIKE = "_like"
FOLD = "_fold"
# The library's bookkeeping: the write position and partition (superduperdb.store.positions).
RESERVED = "_sdb"
# Fields written by jobs (or the fold assignment): writes to them never trigger jobs.
DERIVED = (OUTPUTS, FINGERPRINTS, LIKE, FOLD, RESERVED)
# Never part of a model's input, even of a whole-document (``_base``) watcher.
NOT_INPUT = (OUTPUTS, FINGERPRINTS, LIKE, RESERVED)
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()


def model_field(model: str) -> str:
    """The field of ``model``'s outputs under ``_outputs.<key>``: its name, with ``.`` written ``/``.

    >>> model_field("clip.text"), model_field("resnet")
    ('clip/text', 'resnet')
    """
    return model.replace(".", "/")


def output_path(key: str, model: str) -> str:
    """``_outputs.<key>.<model>``: where ``model``'s output on ``key`` is stored.

    >>> output_path("text", "clip.text")
    '_outputs.text.clip/text'
    """
    return f"{OUTPUTS}.{key}.{model_field(model)}"


def fingerprint_path(key: str, model: str) -> str:
    """``_fingerprints.<key>.<model>``: what the output at :func:`output_path` was computed from."""
    return f"{FINGERPRINTS}.{key}.{model_field(model)}"


def stored_output(doc: Any, key: str, model: str) -> Any:
    """``model``'s stored output on ``key`` in ``doc`` (:data:`MISSING` if absent)."""
    outputs = doc.get(OUTPUTS) if isinstance(doc, dict) else None
    value = (outputs or {}).get(key)
    if isinstance(value, dict) and model_field(model) in value:
        return value[model_field(model)]
    return get_path(doc, output_path(key, model))


def fingerprint(version: Any, value: Any) -> str:
    """``'v<version>:<digest>'`` of a model's raw input ``value`` (as stored: encoded, not decoded).

    Two inputs with the same BSON encoding have the same digest, so an output
    is current when its stored fingerprint equals the fingerprint of the
    document's present input and the model's serving version.

    Examples
    --------
    >>> fingerprint(1, "hello") == fingerprint(1, "hello") != fingerprint(2, "hello")
    True
    """
    digest = hashlib.blake2b(bson.encode({"v": value}), digest_size=12).hexdigest()
    return f"v{version}:{digest}"


def neighbourhood_path(name: str) -> str:
    """``_like.<name>``: where a neighbourhood's id lists are stored."""
    return f"{LIKE}.{name}"


def get_path(doc: Any, path: str) -> Any:
    """``doc['a']['b']`` for ``'a.b'`` (:data:`MISSING` if absent)."""
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def pending_download(value: Any) -> bool:
    """Whether ``value`` is a ``{'_content': {'url': ...}}`` field not downloaded yet."""
    return isinstance(value, dict) and isinstance(value.get(CONTENT), dict) and "bytes" not in value[CONTENT]


def find_urls(value: Any, path: str = "") -> list[tuple[str, str]]:
    """``(dotted path to the _content field, url)`` for every pending download in ``value``."""
    found: list[tuple[str, str]] = []
    if isinstance(value, Mapping):
        content = value.get(CONTENT)
        if isinstance(content, Mapping) and "url" in content and "bytes" not in content:
            return [(f"{path}.{CONTENT}" if path else CONTENT, content["url"])]
        for k, v in value.items():
            found += find_urls(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += find_urls(v, f"{path}.{i}")
    return found


def model_input(doc: dict, key: str, features: Mapping[str, str]) -> Any:
    """What a watcher feeds its model from ``doc`` (:data:`MISSING` if absent).

    ``features={'x': 'm'}`` reads ``m``'s stored output on ``x`` in place of the
    raw field ``x`` (for ``key='_base'``, inside the whole document).
    """
    outputs = doc.get(OUTPUTS) or {}
    if key == "_base":
        doc = {k: v for k, v in doc.items() if k not in NOT_INPUT}
        for fkey, fmodel in features.items():
            if model_field(fmodel) in (outputs.get(fkey) or {}):
                doc[fkey] = outputs[fkey][model_field(fmodel)]
        return doc
    if key in features:
        return stored_output(doc, key, features[key])
    return get_path(doc, key)


def input_projection(key: str, features: Mapping[str, str]) -> list[str] | None:
    """The fields a watcher's input needs (None: the whole document)."""
    if key == "_base":
        return None
    if key in features:
        return [output_path(key, features[key])]
    return [key]
