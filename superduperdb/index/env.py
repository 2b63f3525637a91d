"""Process set-up for the vector index: numba environment and JIT warm-up.

pynndescent is compiled by numba the first time it is used in a process. That
costs ~45 s with a warm on-disk numba cache and ~165 s with an empty one
(measured on 2 cores; ``bench/search.py`` reports the JIT time of its runs), so a process that will hold an index should:

1. call :func:`configure_numba_env` **before numba or pynndescent is imported**
   (numba reads ``NUMBA_CACHE_DIR`` at import time, and the OpenMP runtime
   reads ``OMP_WAIT_POLICY`` when it starts its threads);
2. call :func:`warm_up` once at start, so the JIT cost is paid before the first
   query rather than inside it.

Nothing in this module imports numba or pynndescent at import time.

Examples
--------
>>> from superduperdb.index.env import configure_numba_env
>>> settings = configure_numba_env()
>>> sorted(settings)
['NUMBA_CACHE_DIR', 'OMP_WAIT_POLICY']
"""

from __future__ import annotations

import logging
import os
import sys
import time

logger = logging.getLogger(__name__)

DEFAULT_NUMBA_CACHE_DIR = os.path.join("~", ".cache", "superduperdb", "numba")

_WARMED_UP = False


def _default_cache_dirs() -> list[str]:
    """Per-user places for numba's cache, best first: ``$XDG_CACHE_HOME`` or ``~/.cache``, then the temp dir."""
    import tempfile

    xdg = os.environ.get("XDG_CACHE_HOME")
    first = os.path.join(xdg, "superduperdb", "numba") if xdg else DEFAULT_NUMBA_CACHE_DIR
    user = getattr(os, "getuid", lambda: "user")()
    return [first, os.path.join(tempfile.gettempdir(), f"superduperdb-{user}", "numba")]


def configure_numba_env(cache_dir: str | None = None) -> dict[str, str]:
    """Set the environment variables an index process needs, where unset.

    Sets ``OMP_WAIT_POLICY=PASSIVE`` (otherwise numba's OpenMP threads spin
    and slow numpy/BLAS down several-fold) and a persistent ``NUMBA_CACHE_DIR``
    (so compiled functions survive the process). Values already present in the
    environment are respected. Must be called before ``numba`` or
    ``pynndescent`` is imported; if it has to set a variable after numba was
    imported, a warning is logged because the setting may not take effect.

    Parameters
    ----------
    cache_dir : str, optional
        Directory for numba's cache, used only when ``NUMBA_CACHE_DIR`` is not
        already set. Default: per user, ``$XDG_CACHE_HOME/superduperdb/numba``
        or ``~/.cache/superduperdb/numba`` (a temp dir of the user's if neither
        can be created), so the compiled code is shared by every process of the
        user on the machine and survives them.

    Returns
    -------
    dict
        The effective values of ``OMP_WAIT_POLICY`` and ``NUMBA_CACHE_DIR``.

    Examples
    --------
    >>> import os
    >>> from superduperdb.index.env import configure_numba_env
    >>> configure_numba_env()["OMP_WAIT_POLICY"] == os.environ["OMP_WAIT_POLICY"]
    True
    """
    unset = [k for k in ("OMP_WAIT_POLICY", "NUMBA_CACHE_DIR") if not os.environ.get(k)]
    if unset and "numba" in sys.modules:
        logger.warning(
            "configure_numba_env() set %s after numba was imported; it may not take effect "
            "in this process. Call it before importing numba or pynndescent.",
            " and ".join(unset),
        )
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if not os.environ.get("NUMBA_CACHE_DIR"):
        for path in ([cache_dir] if cache_dir else _default_cache_dirs()):
            path = os.path.expanduser(path)
            try:
                os.makedirs(path, exist_ok=True)
            except OSError as exc:  # read-only home: try the next place, else numba uses __pycache__
                logger.warning("Cannot create numba cache dir %s: %s", path, exc)
            else:
                os.environ["NUMBA_CACHE_DIR"] = path
                break
    return {
        "OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"],
        "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", ""),
    }


def warm_up(n_neighbors: int = 30, leaf_budget: int = 8, force: bool = False, builder=None) -> float:
    """Pay pynndescent's JIT cost now: build a tiny graph and query it.

    Exercises exactly the code path :class:`~superduperdb.index.VectorIndex`
    uses (``metric='euclidean'`` on C-contiguous float32 data, tree init,
    ``prepare()``, the cached search function), so later builds and queries
    compile nothing. ``NNDescent.update`` is not warmed: the index never calls
    it (it rebuilds instead). Calls :func:`configure_numba_env` first.

    Parameters
    ----------
    n_neighbors, leaf_budget : int
        Graph options to warm up with; use the index's.
    force : bool
        Run again even if this process already warmed up.
    builder : callable, optional
        Build the tiny graph with it (e.g. a :class:`~superduperdb.index.builder.ProcessBuilder`,
        whose process then compiles the build functions) and only query it here.

    Returns
    -------
    float
        Seconds taken (about 0 when already warm in this process).

    Examples
    --------
    >>> from superduperdb.index.env import warm_up
    >>> seconds = warm_up()  # doctest: +SKIP
    """
    global _WARMED_UP
    if _WARMED_UP and not force:
        return 0.0
    configure_numba_env()
    import numpy as np

    from superduperdb.index.graph import build_graph

    start = time.perf_counter()
    rng = np.random.default_rng(0)
    data = rng.standard_normal((512, 16)).astype(np.float32)
    graph = (builder or build_graph)(data, "l2", n_neighbors=n_neighbors, random_state=0, leaf_budget=leaf_budget)
    graph.query(data[0], 5, epsilon=0.2)
    seconds = time.perf_counter() - start
    _WARMED_UP = True
    logger.info("pynndescent JIT warm-up took %.1f s", seconds)
    return seconds
