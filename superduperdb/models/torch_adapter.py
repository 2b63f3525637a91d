"""Running a ``torch.nn.Module`` on a list of inputs.

Only imported (by :mod:`superduperdb.models.base`) once the wrapped object is
known to be a torch module, so torch is already loaded by then.

Inference on a module takes a per-module lock: switching a module to
``eval()`` and back is not thread-safe, and Dask workers run tasks in
threads. Concurrent predictions on the *same* module in one process are
therefore serialised (torch parallelises each call across cores anyway);
different modules run concurrently.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ..errors import ModelError
from .batching import chunks, split_batch

logger = logging.getLogger(__name__)

_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def is_torch_module(obj: Any) -> bool:
    """True if ``obj`` is a ``torch.nn.Module`` (never imports torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def resolve_device(device: Any = None) -> Any:
    """The device to run on: ``device``, or ``"cuda"`` if available, else ``"cpu"``.

    >>> str(resolve_device("cpu"))
    'cpu'
    """
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _module_lock(module: Any) -> threading.RLock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(module)
        if lock is None:
            lock = _LOCKS[module] = threading.RLock()
        return lock


@contextlib.contextmanager
def inference_mode(module: Any) -> Iterator[None]:
    """Run the block with ``module`` in eval mode under ``torch.no_grad()``.

    The training flag of every submodule is restored afterwards, even on error
    (so a module with, say, a frozen batch-norm in eval mode inside a training
    model keeps that mix).
    """
    import torch

    with _module_lock(module):
        modes = [(m, m.training) for m in module.modules()]
        module.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            for m, training in modes:
                m.training = training


def to_device(x: Any, device: Any) -> Any:
    """Move every tensor inside ``x`` (nested dicts, lists, tuples) to ``device``."""
    import torch

    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, Mapping):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return type(x)(*(to_device(v, device) for v in x))
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    return x


def collate(items: list[Any], model: str) -> Any:
    """``torch.utils.data.default_collate`` with an actionable error message."""
    from torch.utils.data import default_collate

    try:
        return default_collate(items)
    except (RuntimeError, TypeError) as exc:
        raise ModelError(
            f"Could not build a batch for model {model!r} from its preprocessed inputs "
            f"({exc}). Items in a batch must have the same structure and tensor shapes: "
            f"pad or resize them in `preprocess`, or use batch_size=1.",
            model=model,
        ) from exc


def predict_module(
    module: Any,
    inputs: list[Any],
    *,
    preprocess: Callable[[Any], Any] | None,
    postprocess: Callable[[Any], Any] | None,
    batch_size: int,
    device: Any,
    model: str,
    kwargs: dict[str, Any] | None = None,
) -> list[Any]:
    """Batched ``forward`` of a torch module; one output per input, on the CPU.

    Parameters
    ----------
    module : torch.nn.Module
        The module; it is moved to ``device`` (and stays there).
    inputs : list
        The raw inputs.
    preprocess, postprocess : callable or None
        Per-item functions applied before collation and after splitting.
    batch_size : int
        Items per ``forward`` call.
    device : str, torch.device or None
        Where to run; None picks cuda if available, else cpu.
    model : str
        Name used in messages.
    kwargs : dict, optional
        Extra keyword arguments for every ``forward`` call.

    Returns
    -------
    list
        Outputs in input order, tensors on the CPU.
    """
    dev = resolve_device(device)
    module.to(dev)
    outputs: list[Any] = []
    with inference_mode(module):
        for chunk in chunks(inputs, batch_size):
            items = [preprocess(x) for x in chunk] if preprocess is not None else list(chunk)
            batch = to_device(collate(items, model), dev)
            out = to_device(module(batch, **(kwargs or {})), "cpu")
            outputs.extend(split_batch(out, len(chunk), model=model))
            logger.debug("model %s: forward on %d items (device %s)", model, len(chunk), dev)
    if postprocess is not None:
        outputs = [postprocess(y) for y in outputs]
    return outputs
