"""numpy's ``.npy`` format, fast for the many small arrays of one shape that documents hold.

``numpy.save``/``numpy.load`` format and parse the header of every array
(``load`` with ``ast.literal_eval``): ~25 us of a small vector's ~30 us. The
arrays of a collection's field share their dtype and shape, so their headers
are alike: :func:`dumps` formats each distinct header once and appends the
raw data; :func:`loads` parses each distinct header once and reads the data
with ``numpy.frombuffer``. Both produce and accept exactly the ``.npy`` bytes
numpy does (anything unusual, such as Fortran order or object dtypes, goes
through numpy itself).

Examples
--------
>>> import numpy as np
>>> data = dumps(np.arange(3, dtype="float32"))
>>> loads(data)
array([0., 1., 2.], dtype=float32)
>>> np.load(__import__("io").BytesIO(data)).tolist()
[0.0, 1.0, 2.0]
"""

from __future__ import annotations

import io
import struct
import threading
from typing import Any

MAGIC = b"\x93NUMPY"
CACHE_SIZE = 64

_DUMP_HEADERS: dict[tuple, bytes] = {}  # (dtype, shape) -> header bytes
_LOAD_HEADERS: dict[bytes, tuple[Any, tuple, int]] = {}  # header bytes -> (dtype, shape, data offset)
_LOCK = threading.Lock()


def _remember(cache: dict, key: Any, value: Any) -> None:
    with _LOCK:
        if len(cache) >= CACHE_SIZE:
            cache.clear()
        cache[key] = value


def dumps(x: Any) -> bytes:
    """``numpy.save(x)``'s bytes (no pickles)."""
    import numpy

    array = numpy.asarray(x)
    if array.dtype.hasobject or not array.flags.c_contiguous or array.dtype.fields is not None:
        buf = io.BytesIO()
        numpy.save(buf, array, allow_pickle=False)
        return buf.getvalue()
    key = (array.dtype.str, array.shape)
    header = _DUMP_HEADERS.get(key)
    if header is None:
        buf = io.BytesIO()
        numpy.save(buf, array, allow_pickle=False)
        data = buf.getvalue()
        _remember(_DUMP_HEADERS, key, data[: len(data) - array.nbytes])
        return data
    return header + array.tobytes()


def header_length(data: bytes) -> int | None:
    """Where the data starts in ``.npy`` bytes (None: not ``.npy``)."""
    if data[:6] != MAGIC or len(data) < 10:
        return None
    if data[6] == 1:
        return 10 + struct.unpack("<H", data[8:10])[0]
    if data[6] in (2, 3) and len(data) >= 12:
        return 12 + struct.unpack("<I", data[8:12])[0]
    return None


def loads(data: bytes, *, writable: bool = True) -> Any:
    """The array in ``.npy`` bytes (pickled object arrays are refused, as ``allow_pickle=False``).

    ``writable=False`` returns a read-only view of ``data`` (no copy).
    """
    import numpy

    offset = header_length(data)
    known = _LOAD_HEADERS.get(bytes(data[:offset])) if offset is not None else None
    if known is None:
        array = numpy.load(io.BytesIO(bytes(data)), allow_pickle=False)
        if offset is not None and not array.dtype.hasobject and array.flags.c_contiguous and array.ndim > 0:
            _remember(_LOAD_HEADERS, bytes(data[:offset]), (array.dtype, array.shape, offset))
        return array
    dtype, shape, offset = known
    count = 1
    for n in shape:
        count *= n
    if len(data) != offset + count * dtype.itemsize:
        return numpy.load(io.BytesIO(bytes(data)), allow_pickle=False)  # numpy says what is wrong
    array = numpy.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)
    return array.copy() if writable else array
