"""Types: how Python objects (arrays, tensors, images ...) are stored in documents.

Floor: pure compute (with ``models``, ``index``, ``training``, ``datasets``). May import its own
floor and the leaves (``errors``, ``config``); no MongoDB, no Dask.
"""

from .builtin import BUILTIN_TYPES, ArrayType, BytesType, ImageType, PickleType, TensorType
from .registry import TypeRegistry

__all__ = ["BUILTIN_TYPES", "ArrayType", "BytesType", "ImageType", "PickleType", "TensorType", "TypeRegistry"]
