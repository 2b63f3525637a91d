"""A snapshot file: named parts (arrays, JSON, bytes) with a checksum per part, checked on read.

Layout (little-endian)::

    b"SDBSNAP2" | header length (8 bytes) | header (JSON) | CRC-32 of the header (4 bytes) | parts ...

The header holds the ``manifest`` (plain JSON: what the snapshot is) and, per
part, its offset and length in the file, its kind (``array``: dtype and shape;
``json``; ``bytes``) and one CRC-32 per :data:`CHUNK` bytes. Parts start on 64-byte
boundaries, so an array part of a memory-mapped file is used where it lies
(:func:`read` copies nothing). Nothing in a snapshot file is unpickled here: a
part that holds a pickle (the pynndescent graph, whose object has no
data-only form) is handed back as bytes, checked, for the caller to decide.

:func:`read` raises :class:`SnapshotCorrupt` naming the first part that fails
(bad magic, truncated file, a header that is not JSON, a checksum that does
not match, a part outside the file); checksums of large parts are verified in
threads (``zlib.crc32`` releases the GIL).

Examples
--------
>>> import numpy as np
>>> data = write({"what": "demo"}, {"x": np.arange(3, dtype="int64"), "meta": {"a": 1}, "raw": b"hi"})
>>> snap = read(data)
>>> snap.manifest, snap.parts["x"].tolist(), snap.parts["meta"], bytes(snap.parts["raw"])
({'what': 'demo'}, [0, 1, 2], {'a': 1}, b'hi')
>>> bad = bytearray(data); bad[bad.rindex(b'hi')] ^= 1
>>> read(bytes(bad))
Traceback (most recent call last):
...
superduperdb.index.snapfile.SnapshotCorrupt: part 'raw' fails its checksum (chunk 0)
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from superduperdb.errors import SemanticIndexError

MAGIC = b"SDBSNAP2"
CHUNK = 32 * 1024 * 1024  # bytes per checksum
ALIGN = 64
THREADS = 4


class SnapshotCorrupt(SemanticIndexError):
    """A snapshot failed a check (``part`` attribute: which part, or ``header``)."""


def _pad(n: int) -> int:
    return (-n) % ALIGN


def _checksums(view: memoryview) -> list[int]:
    return [zlib.crc32(view[i:i + CHUNK]) for i in range(0, len(view), CHUNK)] or [zlib.crc32(b"")]


def _encode_part(value: Any) -> tuple[dict, memoryview]:
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        if array.dtype.hasobject:
            raise TypeError("object arrays cannot be stored in a snapshot file")
        view = memoryview(array).cast("B") if array.size else memoryview(b"")  # (an empty array cannot be cast)
        return {"kind": "array", "dtype": array.dtype.str, "shape": list(array.shape)}, view
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"kind": "bytes"}, memoryview(value).cast("B")
    return {"kind": "json"}, memoryview(json.dumps(value, separators=(",", ":")).encode())


def write(manifest: Mapping, parts: Mapping[str, Any]) -> bytes:
    """The bytes of a snapshot file with ``manifest`` and ``parts`` (arrays, bytes, or JSON-able values)."""
    encoded = {name: _encode_part(value) for name, value in parts.items()}
    with ThreadPoolExecutor(THREADS) as pool:
        sums = dict(zip(encoded, pool.map(lambda item: _checksums(item[1]), encoded.values())))
    # Offsets depend on the header's length, which depends on the offsets: fix the header's size first.
    entries = {name: {**meta, "offset": 0, "length": len(view), "chunk": CHUNK, "crc32": sums[name]}
               for name, (meta, view) in encoded.items()}
    width = 20  # digits reserved for each offset
    probe = json.dumps({"manifest": manifest, "parts": {n: {**e, "offset": 10 ** (width - 1)} for n, e in entries.items()}},
                       separators=(",", ":")).encode()
    start = len(MAGIC) + 8 + len(probe) + 4
    offset = start + _pad(start)
    for name, (_, view) in encoded.items():
        entries[name]["offset"] = offset
        offset += len(view) + _pad(len(view))
    header = json.dumps({"manifest": manifest, "parts": entries}, separators=(",", ":")).encode()
    header += b" " * (len(probe) - len(header))  # the same size as the probe: offsets stay right
    head = MAGIC + struct.pack("<Q", len(header)) + header + struct.pack("<I", zlib.crc32(header))
    pieces: list = [head, b"\0" * _pad(len(head))]
    for _, view in encoded.values():
        pieces += [view, b"\0" * _pad(len(view))]
    return b"".join(pieces)  # one copy of the arrays, not two


class Snapshot:
    """A checked snapshot file: its ``manifest`` and its ``parts`` (numpy views, JSON values, bytes views)."""

    def __init__(self, manifest: dict, parts: dict, size: int) -> None:
        self.manifest, self.parts, self.size = manifest, parts, size


def read_header(buffer: Any) -> tuple[dict, dict]:
    """``(manifest, part entries)`` of a snapshot file, its header checked (parts not read)."""
    view = memoryview(buffer).cast("B")
    if len(view) < len(MAGIC) + 12 or bytes(view[:len(MAGIC)]) != MAGIC:
        raise SnapshotCorrupt("not a snapshot file (bad magic, or truncated)", part="header")
    (length,) = struct.unpack("<Q", view[len(MAGIC):len(MAGIC) + 8])
    end = len(MAGIC) + 8 + length
    if end + 4 > len(view):
        raise SnapshotCorrupt("the header runs past the end of the file (truncated)", part="header")
    header = bytes(view[len(MAGIC) + 8:end])
    (crc,) = struct.unpack("<I", view[end:end + 4])
    if zlib.crc32(header) != crc:
        raise SnapshotCorrupt("the header fails its checksum", part="header")
    try:
        decoded = json.loads(header)
        return decoded["manifest"], decoded["parts"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SnapshotCorrupt(f"the header is not a snapshot header: {exc}", part="header") from None


def read(buffer: Any, verify: bool = True) -> Snapshot:
    """Check and open a snapshot file held in ``buffer`` (bytes, or a memory map); see the module docstring."""
    view = memoryview(buffer).cast("B")
    manifest, entries = read_header(view)
    slices = {}
    for name, entry in entries.items():
        start, length = int(entry["offset"]), int(entry["length"])
        if start < 0 or length < 0 or start + length > len(view):
            raise SnapshotCorrupt(f"part {name!r} lies outside the file (truncated)", part=name)
        slices[name] = view[start:start + length]
    if verify:
        with ThreadPoolExecutor(THREADS) as pool:
            jobs = [(name, i, pool.submit(zlib.crc32, part[i * CHUNK:(i + 1) * CHUNK]))
                    for name, part in slices.items() for i in range(max(1, -(-len(part) // CHUNK)))]
            for name, i, job in jobs:
                sums = entries[name].get("crc32") or []
                if i >= len(sums) or job.result() != sums[i]:
                    raise SnapshotCorrupt(f"part {name!r} fails its checksum (chunk {i})", part=name)
    parts: dict[str, Any] = {}
    for name, entry in entries.items():
        part = slices[name]
        try:
            if entry.get("kind") == "array":
                dtype, shape = np.dtype(entry["dtype"]), tuple(int(s) for s in entry["shape"])
                if dtype.hasobject or int(np.prod(shape)) * dtype.itemsize != len(part):
                    raise ValueError(f"{len(part)} bytes do not hold a {entry['dtype']} array of shape {shape}")
                parts[name] = np.frombuffer(part, dtype=dtype).reshape(shape)
            elif entry.get("kind") == "json":
                parts[name] = json.loads(bytes(part))
            else:
                parts[name] = part
        except (ValueError, TypeError, KeyError) as exc:
            raise SnapshotCorrupt(f"part {name!r} cannot be read: {exc}", part=name) from None
    return Snapshot(manifest, parts, len(view))
