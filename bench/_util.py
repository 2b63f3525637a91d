"""Shared helpers of the benchmark scripts (not part of the library).

* percentiles, timers and JSON output under ``bench/results/``;
* environment facts recorded with every result (CPU count, load, versions).

The benchmarks measure the library as users run it: nothing here changes the store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
logger = logging.getLogger("bench")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    quiet_libraries()


def quiet_libraries() -> None:
    """Silence chatty libraries (call again after importing distributed: it configures its loggers)."""
    import warnings

    warnings.filterwarnings("ignore", message=".*Port .* is already in use.*")
    for noisy in ("distributed", "tornado", "sentence_transformers", "transformers", "numba", "pynndescent",
                  "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def pct(values: list[float] | np.ndarray, q: float) -> float | None:
    """The ``q``-th percentile (0..100) of ``values`` in the same unit, None if empty."""
    values = np.asarray(values, dtype=float)
    return None if values.size == 0 else float(np.percentile(values, q))


def summary_ms(seconds: list[float]) -> dict[str, Any]:
    """p50/p95/p99/mean/max in milliseconds of a list of durations in seconds."""
    ms = np.asarray(seconds, dtype=float) * 1000
    if ms.size == 0:
        return {"n": 0}
    return {"n": int(ms.size), "p50_ms": pct(ms, 50), "p95_ms": pct(ms, 95), "p99_ms": pct(ms, 99),
            "mean_ms": float(ms.mean()), "max_ms": float(ms.max())}


def ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else float(a) / float(b)


@contextlib.contextmanager
def timer(store: dict, key: str) -> Iterator[None]:
    """Add the block's wall time (seconds) to ``store[key]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        store[key] = store.get(key, 0.0) + time.perf_counter() - start


def environment() -> dict[str, Any]:
    """Facts that make a result interpretable later (the machines are small and shared)."""
    import distributed
    import pymongo

    env: dict[str, Any] = {
        "python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
        "numpy": np.__version__, "distributed": distributed.__version__, "pymongo": pymongo.__version__,
    }
    with contextlib.suppress(OSError):
        env["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    from importlib import metadata

    for name in ("torch", "pynndescent", "numba", "mongomock", "sentence-transformers"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            env[name] = metadata.version(name)
    return env


def write_result(name: str, result: dict) -> Path:
    """Write ``bench/results/<name>.json`` (pretty, stable key order) and return the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        result.setdefault("environment", {})["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value}{unit}"


def find_one_probe(raw: Any, samples: int = 20, stride: int = 50) -> dict:
    """What one single-document read by ``_id`` costs on this store at this size (ms summary)."""
    ids = [d["_id"] for d in raw.find({}, {"_id": 1}).limit(samples * stride)][::stride][:samples]
    times = []
    for _id in ids:
        t0 = time.perf_counter()
        raw.find_one({"_id": _id}, {"_id": 1})
        times.append(time.perf_counter() - t0)
    return summary_ms(times)
