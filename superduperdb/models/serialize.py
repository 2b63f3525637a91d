"""Turning model objects into bytes and back (for GridFS artifacts and Dask).

Serializers:

``dill`` (default for everything but torch objects)
    Handles what plain pickle cannot: lambdas, closures, and functions and
    classes defined in a notebook (``__main__``) or inside a function, which
    it stores by value. Used with ``recurse=True``, so a notebook function
    carries only the globals it actually uses (not the whole notebook).
    Objects of classes that live in an importable module are still stored by
    reference: that module must be importable where the bytes are loaded.
``pickle``
    The standard library's, highest protocol. Everything must be importable
    by reference where the bytes are loaded.
``torch`` (default for ``torch.nn.Module``, tensors and state dicts)
    ``torch.save`` into bytes. Loading uses ``torch.load(...,
    map_location="cpu")``: first with ``weights_only=True``, which can only
    rebuild tensors and containers of them (safe on untrusted bytes); if the
    bytes hold more than that (a whole module), again with
    ``weights_only=False``, which runs arbitrary code from the bytes and needs
    the module's class importable, exactly like pickle. Pass
    ``weights_only=True`` to :func:`loads` to refuse the fallback.

All three execute code from the bytes when loading (torch only in its
fallback): only load bytes from a database you trust.

Examples
--------
>>> data, serializer = dumps(lambda x: x + 1)
>>> serializer
'dill'
>>> loads(data, serializer)(1)
2
>>> loads(data, "json")
Traceback (most recent call last):
...
superduperdb.errors.ModelError: Unknown serializer 'json'. Valid serializers: dill, pickle, torch.
"""

from __future__ import annotations

import io
import logging
import pickle
import sys
from collections.abc import Mapping
from typing import Any

from ..errors import ModelError, unknown_name

logger = logging.getLogger(__name__)

__all__ = ["SERIALIZERS", "dumps", "loads", "default_serializer"]

#: Names accepted by :func:`dumps` and :func:`loads`.
SERIALIZERS = ("dill", "pickle", "torch")


def _check(serializer: str) -> None:
    if serializer not in SERIALIZERS:
        raise ModelError(
            unknown_name("serializer", serializer, SERIALIZERS),
            serializer=serializer,
            valid=list(SERIALIZERS),
        )


def _is_torch_object(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    if isinstance(obj, (torch.nn.Module, torch.Tensor)):
        return True
    return (
        isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def default_serializer(obj: Any) -> str:
    """``'torch'`` for a torch module, tensor or state dict, else ``'dill'``.

    >>> default_serializer({"a": 1})
    'dill'
    """
    return "torch" if _is_torch_object(obj) else "dill"


def dumps(obj: Any, serializer: str | None = None) -> tuple[bytes, str]:
    """Serialize ``obj``; return the bytes and the serializer used.

    Parameters
    ----------
    obj : Any
        A model object, a hook function, a tensor ...
    serializer : {'dill', 'pickle', 'torch'}, optional
        Default: :func:`default_serializer`.

    Returns
    -------
    data : bytes
    serializer : str
        Store it beside the bytes: :func:`loads` needs it.

    Raises
    ------
    ModelError
        If the serializer is unknown or missing, or cannot serialize ``obj``
        (the message suggests ``'dill'`` when plain pickle fails).
    """
    serializer = serializer or default_serializer(obj)
    _check(serializer)
    try:
        if serializer == "pickle":
            data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        elif serializer == "dill":
            data = _dill().dumps(obj, protocol=pickle.HIGHEST_PROTOCOL, recurse=True)
        else:
            torch = _torch()
            buffer = io.BytesIO()
            torch.save(obj, buffer)
            data = buffer.getvalue()
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        hint = (
            " Try serializer='dill', which can store lambdas and notebook-defined code."
            if serializer != "dill"
            else ""
        )
        raise ModelError(
            f"Could not serialize {type(obj).__name__} with {serializer!r}: {exc}.{hint}",
            serializer=serializer,
        ) from exc
    logger.debug("serialized %s with %s: %d bytes", type(obj).__name__, serializer, len(data))
    return data, serializer


def loads(data: bytes, serializer: str, *, weights_only: bool | None = None) -> Any:
    """Rebuild an object from :func:`dumps` output.

    Parameters
    ----------
    data : bytes
    serializer : {'dill', 'pickle', 'torch'}
        The name :func:`dumps` returned.
    weights_only : bool, optional
        ``'torch'`` only. None (default): try ``weights_only=True`` and fall
        back to ``False`` for whole modules. True: tensors and containers of
        them only. False: anything (runs code from the bytes).

    Returns
    -------
    Any
        The object; torch tensors and modules are loaded onto the CPU.

    Raises
    ------
    ModelError
        If the serializer is unknown or missing, or the bytes need a module
        that is not importable here.
    """
    _check(serializer)
    try:
        if serializer == "pickle":
            return pickle.loads(data)
        if serializer == "dill":
            return _dill().loads(data)
        return _torch_load(data, weights_only)
    except ModuleNotFoundError as exc:
        raise ModelError(
            f"Loading this {serializer!r} object needs the module {exc.name!r}, which is not "
            f"installed or importable here. Install it (on every Dask worker too), or save "
            f"notebook-defined code with serializer='dill'.",
            serializer=serializer,
            missing_module=exc.name,
        ) from exc


def _torch_load(data: bytes, weights_only: bool | None) -> Any:
    torch = _torch()
    if weights_only is not None:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=weights_only)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        logger.debug("torch bytes hold more than tensors; loading with weights_only=False")
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def _dill() -> Any:
    try:
        import dill
    except ImportError as exc:  # pragma: no cover - dill is a dependency
        raise ModelError("The 'dill' serializer needs dill: pip install dill.", serializer="dill") from exc
    return dill


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ModelError(
            "The 'torch' serializer needs PyTorch: pip install -e '.[torch]' in the clone of superduperdb.",
            serializer="torch",
        ) from exc
    return torch
