"""Pure-compute model adapters: apply torch modules, scikit-learn estimators,
object methods and callables to lists of inputs, and (de)serialize them.

Nothing here touches MongoDB or Dask, and importing this package imports
neither torch, numpy, scikit-learn nor sentence-transformers.

>>> from superduperdb.models import Model
>>> Model(lambda x: x + 1).predict([1, 2])
[2, 3]

Floor: pure compute (with ``types``, ``index``, ``training``, ``datasets``). May import its own
floor and the leaves (``errors``, ``config``); no MongoDB, no Dask.
"""

from .base import KINDS, Model
from .serialize import SERIALIZERS, default_serializer, dumps, loads
from .text import MINILM_DIMENSION, load_minilm, minilm_path

__all__ = [
    "KINDS",
    "MINILM_DIMENSION",
    "Model",
    "SERIALIZERS",
    "default_serializer",
    "dumps",
    "load_minilm",
    "loads",
    "minilm_path",
]
