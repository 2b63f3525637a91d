"""Similarity measures and exact (brute-force) batched search in numpy.

Three measures are supported. Every score follows one convention: **higher
means more similar**, so results from any measure sort the same way.

===========  =============================================  ==================
measure      score                                          range
===========  =============================================  ==================
``cosine``   cosine similarity ``q·x / (‖q‖ ‖x‖)``           [-1, 1]
``dot``      inner product ``q·x``                          (-inf, inf)
``l2``       *negative* Euclidean distance ``-‖q - x‖``     (-inf, 0]
===========  =============================================  ==================

A stored zero vector has cosine similarity 0 with every query; a zero *query*
is refused for ``cosine`` (its similarity is undefined).

A *custom* measure is a callable ``measure(Q, X) -> scores`` taking float32
arrays of shape ``(n, d)`` and ``(m, d)`` and returning ``(n, m)`` similarities
(higher is more similar; a torch tensor is accepted too). It is searched
exactly, by calling it on the query and blocks of stored rows: pynndescent
graphs need numba-compiled metrics, so no graph is built for it.

The search is a matrix product (``Q·Xᵀ``; for ``l2`` the expansion
``‖q - x‖² = ‖q‖² - 2 q·x + ‖x‖²`` with precomputed ``‖x‖²``), then
``argpartition`` for the top k and a sort of those k only.

Examples
--------
>>> import numpy as np
>>> from superduperdb.index.measures import exact_search
>>> X = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
>>> idx, scores = exact_search(np.array([[1, 0.1]], dtype=np.float32), X, 2, "l2")
>>> idx.tolist()
[[0, 2]]
>>> [round(float(s), 3) for s in scores[0]]
[-0.1, -0.9]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from superduperdb.errors import SemanticIndexError, unknown_name

MEASURES: tuple[str, ...] = ("cosine", "dot", "l2")
Measure = str | Callable[[np.ndarray, np.ndarray], Any]

# Largest score matrix (queries x rows) computed at once, in elements (~64 MB).
_MAX_BLOCK = 1 << 24


def check_measure(measure: Measure) -> Measure:
    """Return ``measure`` if it is valid (a built-in name or a callable), else raise :class:`SemanticIndexError`.

    Examples
    --------
    >>> check_measure("l2")
    'l2'
    >>> check_measure("cosin")
    Traceback (most recent call last):
    ...
    superduperdb.errors.SemanticIndexError: Unknown measure 'cosin'. Did you mean 'cosine'? Valid measures: cosine, dot, l2.
    """
    if callable(measure):
        return measure
    if measure not in MEASURES:
        raise SemanticIndexError(
            unknown_name("measure", measure, MEASURES),
            measure=measure,
            valid=list(MEASURES),
        )
    return measure


def sqnorms(X: np.ndarray) -> np.ndarray:
    """Squared L2 norm of each row, as float32.

    Examples
    --------
    >>> sqnorms(np.array([[3, 4], [0, 0]], dtype=np.float32)).tolist()
    [25.0, 0.0]
    """
    X = np.asarray(X, dtype=np.float32)
    return np.einsum("ij,ij->i", X, X).astype(np.float32, copy=False)


def inv_norms(sq: np.ndarray) -> np.ndarray:
    """``1 / sqrt(sq)``, with 0 where ``sq`` is 0 (zero vectors score 0)."""
    sq = np.asarray(sq, dtype=np.float32)
    out = np.zeros_like(sq)
    np.divide(1.0, np.sqrt(sq), out=out, where=sq > 0)
    return out


def normalize(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as a new float32 array.

    Examples
    --------
    >>> normalize(np.array([[3, 4], [0, 0]], dtype=np.float32)).tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    X = np.asarray(X, dtype=np.float32)
    return X * inv_norms(sqnorms(X))[:, None]


def prepare_queries(Q: np.ndarray, measure: str) -> np.ndarray:
    """Return ``Q`` (2-D float32) ready for :func:`partial_scores`.

    For ``cosine`` the queries are normalised; a zero query raises
    :class:`SemanticIndexError`.
    """
    Q = np.ascontiguousarray(Q, dtype=np.float32)
    if callable(measure):
        return Q
    if measure == "cosine":
        sq = sqnorms(Q)
        if np.any(sq == 0):
            raise SemanticIndexError(
                "A query vector has zero norm: cosine similarity is undefined for it. "
                "Use measure='dot' or 'l2', or query with a non-zero vector."
            )
        Q = Q * inv_norms(sq)[:, None]
    return Q


def partial_scores(
    Q: np.ndarray, X: np.ndarray, measure: str, x_sqnorms: np.ndarray | None = None
) -> np.ndarray:
    """Scores of prepared queries ``Q`` against rows ``X``, up to a per-query shift.

    For ``cosine`` and ``dot`` these are the final scores. For ``l2`` this is
    ``2 q·x - ‖x‖²``, which orders rows like ``-‖q - x‖``; turn it into the
    final score with :func:`finalize_scores`. ``x_sqnorms`` (squared row
    norms) is computed when not given. A custom (callable) measure's scores
    are final.
    """
    if callable(measure):
        return custom_scores(measure, Q, X)
    if x_sqnorms is None and measure != "dot":
        x_sqnorms = sqnorms(X)
    s = Q @ X.T
    if measure == "cosine":
        s *= inv_norms(x_sqnorms)[None, :]
    elif measure == "l2":
        s *= 2.0
        s -= x_sqnorms[None, :]
    return s


def finalize_scores(partial: np.ndarray, Q: np.ndarray, measure: str) -> np.ndarray:
    """Turn :func:`partial_scores` output (any shape ``(len(Q), ...)``) into scores."""
    if callable(measure) or measure != "l2":
        return partial
    q_sq = sqnorms(Q).reshape((-1,) + (1,) * (partial.ndim - 1))
    return 0.0 - np.sqrt(np.maximum(q_sq - partial, 0.0))  # 0.0 - x: no "-0.0" scores


def custom_scores(measure: Callable[[np.ndarray, np.ndarray], Any], Q: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``measure(Q, X)`` as a float32 ``(len(Q), len(X))`` array (checked: shape, finite values).

    Examples
    --------
    >>> def neg_l1(q, x):
    ...     return -np.abs(q[:, None, :] - x[None, :, :]).sum(-1)
    >>> custom_scores(neg_l1, np.zeros((1, 2), np.float32), np.eye(2, dtype=np.float32)).tolist()
    [[-1.0, -1.0]]
    """
    Q = np.ascontiguousarray(Q, dtype=np.float32)
    X = np.ascontiguousarray(X, dtype=np.float32)
    if len(X) == 0:
        return np.empty((len(Q), 0), np.float32)
    try:
        out = measure(Q, X)
    except Exception as exc:
        name = getattr(measure, "__name__", type(measure).__name__)
        raise SemanticIndexError(f"Custom measure {name!r} failed on arrays of shapes {Q.shape} and {X.shape}: "
                                 f"{type(exc).__name__}: {exc}. A measure takes (n, d) and (m, d) float32 numpy "
                                 "arrays and returns (n, m) similarities.") from exc
    if hasattr(out, "detach"):
        out = out.detach().cpu().numpy()
    out = np.array(out, dtype=np.float32)  # a copy: callers write into it
    if out.shape != (len(Q), len(X)):
        raise SemanticIndexError(f"A custom measure must return (n, m) = {(len(Q), len(X))} similarities, got "
                                 f"shape {out.shape}.")
    out[np.isnan(out)] = -np.inf
    return out


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``k`` highest scores of each row, best first.

    Examples
    --------
    >>> idx, val = top_k(np.array([[0.1, 0.9, 0.5]]), 2)
    >>> idx.tolist(), val.tolist()
    ([[1, 2]], [[0.9, 0.5]])
    """
    scores = np.atleast_2d(scores)
    n = scores.shape[1]
    k = min(int(k), n)
    if k <= 0:
        return np.empty((scores.shape[0], 0), np.int64), np.empty((scores.shape[0], 0), scores.dtype)
    if k < n:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(scores, part, axis=1)
    else:
        part = np.broadcast_to(np.arange(n), scores.shape)
        vals = scores
    order = np.argsort(-vals, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64, copy=False)
    return idx, np.take_along_axis(vals, order, axis=1)


def exact_search(
    Q: np.ndarray,
    X: np.ndarray,
    k: int,
    measure: Measure = "cosine",
    x_sqnorms: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` rows of ``X`` for each query in ``Q``.

    Parameters
    ----------
    Q : ndarray, shape (n_queries, dim) or (dim,)
        Raw query vectors (normalised here for ``cosine``).
    X : ndarray, shape (n_rows, dim)
        Vectors to search, float32.
    k : int
        Results per query (fewer when ``X`` has fewer rows).
    measure : {'cosine', 'dot', 'l2'} or callable
    x_sqnorms : ndarray, shape (n_rows,), optional
        Precomputed squared norms of ``X`` (saves a pass over ``X``).

    Returns
    -------
    indices : ndarray of int64, shape (n_queries, min(k, n_rows))
        Row numbers into ``X``, best first.
    scores : ndarray of float32, same shape
        Similarity scores, higher is more similar.

    Examples
    --------
    >>> X = np.eye(3, dtype=np.float32)
    >>> exact_search(np.array([0, 2, 1], np.float32), X, 2, "dot")[0].tolist()
    [[1, 2]]
    """
    check_measure(measure)
    Q = prepare_queries(np.atleast_2d(Q), measure)
    X = np.asarray(X, dtype=np.float32)
    if x_sqnorms is None and not callable(measure) and measure != "dot":
        x_sqnorms = sqnorms(X)
    step = max(1, _MAX_BLOCK // max(1, X.shape[0]))
    out_i, out_s = [], []
    for start in range(0, Q.shape[0], step):
        q = Q[start : start + step]
        idx, part = top_k(partial_scores(q, X, measure, x_sqnorms), k)
        out_i.append(idx)
        out_s.append(finalize_scores(part, q, measure).astype(np.float32, copy=False))
    if not out_i:
        return np.empty((0, 0), np.int64), np.empty((0, 0), np.float32)
    return np.concatenate(out_i), np.concatenate(out_s)


class BuiltinMeasure:
    """A built-in measure as a callable ``(Q, X) -> (n, m)`` scores (what ``coll.measures['cosine']`` is).

    Examples
    --------
    >>> BuiltinMeasure("dot")(np.eye(2, dtype=np.float32), np.array([[1, 2]], np.float32)).tolist()
    [[1.0], [2.0]]
    """

    def __init__(self, name: str) -> None:
        self.name = check_measure(name)
        self.__name__ = name

    def __call__(self, Q: Any, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        P = prepare_queries(np.atleast_2d(Q), self.name)
        return finalize_scores(partial_scores(P, X, self.name), P, self.name).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"BuiltinMeasure({self.name!r})"
