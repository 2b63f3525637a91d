"""The partition of an ``_id`` never changes: shards, snapshots and digests rely on it across processes."""

from __future__ import annotations

import doctest
import subprocess
import sys

from bson import Int64, ObjectId

from superduperdb.store import partitions
from superduperdb.store.partitions import PARTITIONS, id_hash, partition_of


def test_doctests() -> None:
    assert doctest.testmod(partitions).failed == 0


def test_known_values_never_change() -> None:
    # Written down once: a change here would move every stored document to another partition.
    assert id_hash("a") == 8984741526857916133
    assert [partition_of(x) for x in ["a", 1, ObjectId("65a000000000000000000000"), "doc-42"]] == [37, 63, 46, 55]


def test_ids_mongodb_compares_equal_share_a_partition() -> None:
    assert partition_of(7) == partition_of(7.0) == partition_of(Int64(7))
    assert partition_of({"a": 1.0}) == partition_of({"a": 1})


def test_same_in_another_process() -> None:
    code = "from superduperdb.store.partitions import id_hash; print(id_hash('x'), id_hash(12345))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [int(v) for v in out] == [id_hash("x"), id_hash(12345)]


def test_spread_over_every_partition() -> None:
    counts = [0] * PARTITIONS
    for _ in range(PARTITIONS * 100):
        counts[partition_of(ObjectId())] += 1
    assert min(counts) > 40 and max(counts) < 180
