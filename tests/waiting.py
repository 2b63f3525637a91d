"""Waiting in tests on a condition with a deadline (never a bare sleep as synchronisation)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def poll(predicate: Callable[[], Any], timeout: float, what: str, interval: float | None = None) -> Any:
    """Call ``predicate`` until it returns something truthy (returned); fail after ``timeout`` s.

    It returns as soon as the condition holds; the pause between calls grows from 10 ms to
    200 ms, or is ``interval`` if given.
    """
    deadline = time.monotonic() + timeout
    delay = interval or 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(delay)  # the polling interval, not a synchronisation
        if interval is None:
            delay = min(delay * 2, 0.2)
