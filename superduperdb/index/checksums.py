"""Checksums of vectors, one per row, vectorised: how the master notices a vector that rotted in memory.

A vector's checksum is a weighted sum, modulo ``2**32``, of the 32-bit words of its float32
values, with a fixed odd weight per column: flipping any single bit changes it (an odd weight
times ``2**b`` is not 0 modulo ``2**32`` for ``b < 32``). Computed in chunks, so that a million
rows need no big temporaries.

>>> import numpy as np
>>> X = np.arange(12, dtype="float32").reshape(3, 4)
>>> a = row_checksums(X)
>>> Y = X.copy(); Y.view("uint32")[1, 2] ^= 1 << 23
>>> (row_checksums(Y) != a).tolist()
[False, True, False]
"""

from __future__ import annotations

import numpy as np

CHUNK = 8192


def _weights(dim: int) -> np.ndarray:
    rng = np.random.default_rng(20)
    return (rng.integers(0, 2 ** 31, size=dim, dtype=np.uint64) * 2 + 1).astype(np.uint64)


def row_checksums(X: np.ndarray) -> np.ndarray:
    """One uint32 checksum per row of a float32 matrix."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {X.shape}")
    w = _weights(X.shape[1])
    out = np.empty(len(X), dtype=np.uint32)
    words = X.view(np.uint32)
    for start in range(0, len(X), CHUNK):
        block = words[start:start + CHUNK].astype(np.uint64)
        out[start:start + CHUNK] = ((block * w).sum(axis=1) & 0xFFFFFFFF).astype(np.uint32)
    return out
