"""Batching helpers shared by the model adapters: chunking, and splitting a
batched output back into one output per input.

Nothing here imports torch, numpy or scipy: objects are recognised by the
modules that are already loaded (an object cannot be a ``torch.Tensor`` unless
torch is imported).

Splitting rules (:func:`split_batch`), for a batch of ``n`` inputs:

* a tensor or array with a leading dimension ``n`` -> its rows (torch rows are
  cloned, numpy rows copied, so that each item owns its memory: a torch view
  would otherwise pickle the whole batch's storage); rows of a 1-D numpy array
  become Python scalars (``numpy.int64(1)`` -> ``1``), rows of a 1-D tensor stay
  0-d tensors;
* a scipy sparse matrix or a pandas DataFrame -> dense numpy rows;
* a dict of batches -> one dict per item;
* a tuple -> fields, when every element is itself a batch of ``n`` (``(logits,
  hidden)`` -> ``[(logits[0], hidden[0]), ...]``); otherwise the items;
* a list -> the items, when it has ``n`` elements; otherwise fields, when every
  element is a batch of ``n``.

Anything else, or a batch whose length is not ``n``, raises :class:`ModelError`
naming the model and both lengths.

Examples
--------
>>> split_batch({"a": [1, 2], "b": ["x", "y"]}, 2, model="demo")
[{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'y'}]
>>> split_batch([1, 2, 3], 2, model="demo")
Traceback (most recent call last):
...
superduperdb.errors.ModelError: Model 'demo' returned 3 outputs for a batch of 2 inputs; a batched call must return exactly one output per input.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from ..errors import ModelError

__all__ = ["chunks", "split_batch", "batch_len", "is_tensor", "is_ndarray", "isolate", "Isolated"]


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Yield consecutive slices of ``items`` of length ``size`` (the last may be shorter).

    >>> [list(c) for c in chunks([1, 2, 3, 4, 5], 2)]
    [[1, 2], [3, 4], [5]]
    """
    for start in range(0, len(items), size):
        yield items[start : start + size]


def is_tensor(x: Any) -> bool:
    """True if ``x`` is a ``torch.Tensor`` (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def is_ndarray(x: Any) -> bool:
    """True if ``x`` is a ``numpy.ndarray`` (without importing numpy)."""
    np = sys.modules.get("numpy")
    return np is not None and isinstance(x, np.ndarray)


def _is_sparse(x: Any) -> bool:
    return "scipy.sparse" in sys.modules and hasattr(x, "tocsr") and hasattr(x, "shape")


def _is_dataframe(x: Any) -> bool:
    return "pandas" in sys.modules and hasattr(x, "iloc") and hasattr(x, "to_numpy")


def _dense(x: Any) -> Any:
    if _is_sparse(x):
        return x.toarray()
    if _is_dataframe(x):
        return x.to_numpy()
    return x


def batch_len(x: Any) -> int | None:
    """The leading (batch) length of ``x``, or None if ``x`` is not a batch.

    >>> batch_len([1, 2, 3]), batch_len({"a": [1, 2], "b": [3, 4]}), batch_len(5)
    (3, 2, None)
    """
    x = _dense(x)
    if is_tensor(x) or is_ndarray(x):
        return int(x.shape[0]) if x.ndim >= 1 else None
    if isinstance(x, Mapping):
        lengths = {batch_len(v) for v in x.values()}
        return lengths.pop() if len(lengths) == 1 else None
    if isinstance(x, tuple):
        lengths = {batch_len(v) for v in x}
        if len(lengths) == 1 and None not in lengths:
            return lengths.pop()
        return len(x)
    if isinstance(x, list):
        return len(x)
    return None


def _length_error(model: str, got: Any, n: int, what: str = "outputs") -> ModelError:
    return ModelError(
        f"Model {model!r} returned {got} {what} for a batch of {n} inputs; a batched call "
        f"must return exactly one output per input.",
        model=model,
        expected=n,
        got=got,
    )


def _rows(x: Any, n: int, model: str) -> list[Any]:
    if x.ndim == 0:
        raise _length_error(model, "a scalar (0-d) value instead of", n, "a batch")
    if x.shape[0] != n:
        raise _length_error(model, int(x.shape[0]), n)
    if is_tensor(x):
        return [row.clone() for row in x.unbind(0)]
    if x.ndim == 1:
        return [v.item() if hasattr(v, "item") else v for v in x]
    return [row.copy() for row in x]


def split_batch(out: Any, n: int, *, model: str) -> list[Any]:
    """Split the output of one batched call on ``n`` inputs into ``n`` outputs.

    Parameters
    ----------
    out : Any
        What the batched call returned (tensor, array, dict, tuple or list of those).
    n : int
        How many inputs the batch had.
    model : str
        The model's name, used in error messages.

    Returns
    -------
    list
        ``n`` outputs, in input order.

    Raises
    ------
    ModelError
        If ``out`` does not hold exactly ``n`` outputs.

    Examples
    --------
    >>> split_batch(([1, 2], ["a", "b"]), 2, model="demo")
    [(1, 'a'), (2, 'b')]
    >>> split_batch(("a", "b"), 2, model="demo")
    ['a', 'b']
    """
    out = _dense(out)
    if is_tensor(out) or is_ndarray(out):
        return _rows(out, n, model)
    if isinstance(out, Mapping):
        parts = {k: split_batch(v, n, model=model) for k, v in out.items()}
        return [{k: v[i] for k, v in parts.items()} for i in range(n)]
    if isinstance(out, (tuple, list)):
        fields = len(out) > 0 and all(batch_len(e) == n for e in out)
        as_fields = fields if isinstance(out, tuple) else (fields and len(out) != n)
        if as_fields:
            columns = [split_batch(e, n, model=model) for e in out]
            rows = list(zip(*columns))
            if isinstance(out, tuple) and hasattr(out, "_fields"):  # namedtuple
                return [type(out)(*r) for r in rows]
            return [type(out)(r) for r in rows]
        if len(out) == n:
            return list(out)
        raise _length_error(model, len(out), n)
    raise ModelError(
        f"Model {model!r} returned a value of type {type(out).__name__!r} for a batch of {n} inputs; "
        f"a batched call must return a list, tuple, dict, array or tensor with one "
        f"entry per input.",
        model=model,
        expected=n,
        got=type(out).__name__,
    )


# How much of a failing item's traceback :func:`isolate` keeps (characters, from the end).
TRACEBACK_EXCERPT = 4000


class Isolated(NamedTuple):
    """What :func:`isolate` found: one output per item (None where it failed), and the failures.

    ``failures`` maps an item's position to ``(exception, traceback excerpt)``.
    """

    outputs: list[Any]
    failures: dict[int, tuple[BaseException, str]]


def isolate(call: Callable[[Sequence[Any]], Sequence[Any]], items: Sequence[Any], *,
            reraise: tuple[type[BaseException], ...] = ()) -> Isolated:
    """Apply a batched ``call`` to ``items``, splitting a batch that raises until the failing items are found.

    ``call(batch)`` must return one output per item. When it raises an
    :class:`Exception` for a batch of several items, each half is tried on its
    own (so one bad item among ``n`` costs about ``2 log2(n)`` extra calls, and
    every good item still gets its output); an item that fails alone is a
    failure. Exceptions of the ``reraise`` types (a lost database, a cancelled
    job) and those that are not :class:`Exception` s (``KeyboardInterrupt``,
    ``SystemExit``) propagate at once.

    Parameters
    ----------
    call : callable
        ``call(batch) -> outputs``, ``len(outputs) == len(batch)``.
    items : sequence
        The inputs.
    reraise : tuple of exception types
        Never isolated: they stop everything.

    Returns
    -------
    Isolated
        ``outputs`` (None at failed positions) and ``failures`` (position -> (exception, traceback excerpt)).

    Examples
    --------
    >>> found = isolate(lambda batch: [len(x) for x in batch], ["ab", 5, "cde"])
    >>> found.outputs
    [2, None, 3]
    >>> {i: type(e).__name__ for i, (e, _) in found.failures.items()}
    {1: 'TypeError'}
    """
    items = list(items)
    outputs: list[Any] = [None] * len(items)
    failures: dict[int, tuple[BaseException, str]] = {}
    pending = [(0, len(items))] if items else []
    while pending:
        lo, hi = pending.pop()
        try:
            out = list(call(items[lo:hi]))
        except reraise:
            raise
        except Exception as exc:  # noqa: BLE001 - isolated: the failing items are recorded, the rest go on
            if hi - lo == 1:
                failures[lo] = (exc, _excerpt(exc))
            else:
                mid = (lo + hi) // 2
                pending += [(mid, hi), (lo, mid)]  # the first half next: outputs come in order
            continue
        if len(out) != hi - lo:
            raise ModelError(f"A batched call returned {len(out)} outputs for {hi - lo} inputs.",
                             expected=hi - lo, got=len(out))
        outputs[lo:hi] = out
    return Isolated(outputs, failures)


def _excerpt(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return text if len(text) <= TRACEBACK_EXCERPT else "...\n" + text[-TRACEBACK_EXCERPT:]
