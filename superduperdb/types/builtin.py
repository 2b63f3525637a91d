"""Built-in types: numpy arrays, torch tensors, PIL images, and opt-in pickle.

A *type* is any object with ``encode(x) -> bytes``, ``decode(bytes) -> x`` and
a ``types`` tuple of the Python classes it stores. Heavy libraries (torch,
PIL) are only imported when a value of theirs is actually met.
"""

from __future__ import annotations

import io
import pickle
import sys
from typing import Any

from . import npy


class ArrayType:
    """numpy arrays, stored in the ``.npy`` format (dtype and shape kept).

    Examples
    --------
    >>> import numpy as np
    >>> t = ArrayType()
    >>> t.decode(t.encode(np.arange(6, dtype="int16").reshape(2, 3))).dtype
    dtype('int16')
    """

    name = "array"

    @property
    def types(self) -> tuple:
        import numpy

        return (numpy.ndarray,)

    def encode(self, x: Any) -> bytes:
        return npy.dumps(x)

    def decode(self, data: bytes) -> Any:
        return npy.loads(data)

    def __repr__(self) -> str:
        return "ArrayType()"


class TensorType:
    """torch tensors. Stored as ``.npy`` where numpy has the dtype, else with
    ``torch.save`` (e.g. bfloat16); both load without running code."""

    name = "tensor"

    @property
    def types(self) -> tuple:
        torch = sys.modules.get("torch")
        return (torch.Tensor,) if torch is not None else ()

    def encode(self, x: Any) -> bytes:
        import torch

        x = x.detach().cpu()
        try:
            return ArrayType().encode(x.numpy())
        except (TypeError, RuntimeError):
            buf = io.BytesIO()
            torch.save(x, buf)
            return buf.getvalue()

    def decode(self, data: bytes) -> Any:
        import torch

        if data[:6] == b"\x93NUMPY":
            return torch.from_numpy(ArrayType().decode(data))
        return torch.load(io.BytesIO(data), weights_only=True)

    def __repr__(self) -> str:
        return "TensorType()"


class ImageType:
    """PIL images, stored as PNG (lossless; mode and size kept)."""

    name = "image"

    @property
    def types(self) -> tuple:
        if "PIL.Image" not in sys.modules:
            return ()
        return (sys.modules["PIL.Image"].Image,)

    def encode(self, x: Any) -> bytes:
        buf = io.BytesIO()
        x.save(buf, format="PNG")
        return buf.getvalue()

    def decode(self, data: bytes) -> Any:
        from PIL import Image

        image = Image.open(io.BytesIO(data))
        image.load()
        return image

    def __repr__(self) -> str:
        return "ImageType()"


class PickleType:
    """Any picklable object. Never chosen automatically: only used when
    ``types.pickle_fallback`` is on. Unpickling runs code: trust the database."""

    name = "pickle"
    types: tuple = ()

    def encode(self, x: Any) -> bytes:
        return pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, data: bytes) -> Any:
        return pickle.loads(data)

    def __repr__(self) -> str:
        return "PickleType()"


class BytesType:
    """Raw bytes, as downloaded (``{'_content': {'url': ..., 'type': 'bytes'}}``).

    Never chosen automatically (plain ``bytes`` are BSON already)."""

    name = "bytes"
    types: tuple = ()

    def encode(self, x: Any) -> bytes:
        return bytes(x)

    def decode(self, data: bytes) -> Any:
        return data

    def __repr__(self) -> str:
        return "BytesType()"


BUILTIN_TYPES: dict[str, Any] = {
    t.name: t for t in (ArrayType(), TensorType(), ImageType(), PickleType(), BytesType())
}
