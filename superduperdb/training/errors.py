"""Errors raised by training (candidates for :mod:`superduperdb.errors`).

Both derive from the library's errors, so ``except ModelError`` and
``except JobCancelledError`` catch them; both are picklable (they cross from
workers to the client).
"""

from __future__ import annotations

from ..errors import JobCancelledError, ModelError


class TrainingError(ModelError):
    """A training run is misconfigured or cannot proceed (no data, unknown metric ...)."""


class TrainingCancelled(JobCancelledError):
    """A training or version-switch job saw its record say ``cancelled`` and stopped."""


__all__ = ["TrainingCancelled", "TrainingError"]
