"""Types: how Python objects (arrays, tensors, images ...) are stored in documents."""

from .builtin import BUILTIN_TYPES, ArrayType, BytesType, ImageType, PickleType, TensorType
from .registry import TypeRegistry

__all__ = ["BUILTIN_TYPES", "ArrayType", "BytesType", "ImageType", "PickleType", "TensorType", "TypeRegistry"]
