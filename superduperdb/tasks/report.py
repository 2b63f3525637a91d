"""What a Dask process says about itself (run on every worker by ``superduperdb info``)."""

from __future__ import annotations

import os
import sys
from typing import Any


def process_report() -> dict[str, Any]:
    """superduperdb's version, whether the preload prepared this process, and its index environment.

    Imports nothing heavy, so that asking a bare worker does not change it.
    """
    from ..version import __version__

    preload = sys.modules.get("superduperdb.cluster.preload")
    setup = dict(getattr(preload, "SETUP", {}) or {})
    return {
        "superduperdb": __version__,
        "pid": os.getpid(),
        "preload": bool(setup),
        "role": setup.get("role"),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR"),
        "numba imported": "numba" in sys.modules,
    }
