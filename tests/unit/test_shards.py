"""The partition table, leases and fencing of shards (superduperdb.store.shards, master.fencing), and the merge.

Against the embedded store (in-process), no cluster: the cluster paths are in
tests/integration/test_sharded_index.py.
"""

from __future__ import annotations

import datetime
import threading
from collections import Counter

import pytest

from superduperdb.errors import ShardFencedError
from superduperdb.master.fanout import merge
from superduperdb.master.fencing import Fence
from superduperdb.store import shards as store
from superduperdb.store.backends import open_client
from superduperdb.store.partitions import PARTITIONS, partition_of


@pytest.fixture
def table(unique_name):
    from superduperdb.config import resolve_config

    client = open_client(f"mongomock://{unique_name}", resolve_config({}, home="/nonexistent", cwd="/nonexistent",
                                                                    environ={}))
    return store.shards_table(client[unique_name], "docs")


@pytest.mark.parametrize("old,new", [(1, 4), (4, 5), (5, 4), (4, 1), (3, 64)])
def test_rebalance_moves_few_partitions_and_balances(old, new):
    table = [p % old for p in range(PARTITIONS)]
    moved = store.rebalance(table, new)
    counts = Counter(moved)
    assert set(counts) == set(range(new)) and max(counts.values()) - min(counts.values()) <= 1
    # only the partitions of removed shards, and those over a shard's new share, move
    quota = [PARTITIONS // new + (i < PARTITIONS % new) for i in range(new)]
    necessary = sum(c if s >= new else max(0, c - quota[s]) for s, c in Counter(table).items())
    assert sum(a != b for a, b in zip(table, moved)) == necessary
    assert store.rebalance(moved, new) == moved  # stable


def test_partition_table_is_made_once_and_rebalanced_with_a_new_version(table):
    first = store.partition_table(table, 4)
    assert first["version"] == 1 and first["table"] == [p % 4 for p in range(PARTITIONS)]
    assert store.partition_table(table, 4) == first
    grown = store.partition_table(table, 5)
    assert grown["version"] == 2 and grown["shards"] == 5
    assert sum(a != b for a, b in zip(first["table"], grown["table"])) <= 13  # ~1/5 moved, not rehashed
    routed = store.route(["a", 1, "b"], grown["table"])
    assert sorted((x for ids in routed.values() for x in ids), key=str) == sorted(["a", "b", 1], key=str)
    assert all(grown["table"][partition_of(x)] == s for s, ids in routed.items() for x in ids)


def test_leases_one_owner_epochs_grow_and_a_lost_owner_is_fenced(table):
    a = store.take_lease(table, 0, "a", "tcp://w1", ttl=30)
    assert a["epoch"] == 1 and a["owner"] == "a"
    assert store.take_lease(table, 0, "b", "tcp://w2", ttl=30) is None  # a live owner: refused
    assert store.take_lease(table, 0, "a", "tcp://w1", ttl=30)["epoch"] == 1  # its own: renewed, same epoch
    b = store.take_lease(table, 0, "b", "tcp://w2", ttl=30, replaces="a")  # the actor it replaces
    assert b["epoch"] == 2
    assert not store.renew_lease(table, 0, "a", 1)  # a lost it
    c = store.take_lease(table, 0, "c", None, ttl=30, gone=lambda w: w == "tcp://w2")  # b's worker left
    assert c["epoch"] == 3
    table.update_one({"_id": store.lease_id(0)},
                     {"$set": {"renewed_at": datetime.datetime(2000, 1, 1)}})  # c stopped renewing long ago
    assert store.take_lease(table, 0, "d", None, ttl=30)["epoch"] == 4
    assert store.epochs(table) == {0: 4}


def test_racing_takers_get_one_owner_per_epoch(table):
    taken = []

    def take(name):
        lease = store.take_lease(table, 1, name, None, ttl=30, replaces="nobody")
        if lease is not None:
            taken.append((lease["epoch"], lease["owner"]))

    threads = [threading.Thread(target=take, args=(f"o{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    epochs = [e for e, _ in taken]
    assert len(epochs) == len(set(epochs)) >= 1  # never two owners with one epoch


def test_fence_takes_renews_and_fences_on_loss(table):
    lost = []
    fence = Fence(0, "a", None, ttl=30, on_lost=lost.append, published=lambda: True)
    assert fence.epoch("coll", table) == 1 and fence.epoch("coll", table) == 1
    store.take_lease(table, 0, "b", None, ttl=30, replaces="a")  # another actor took the shard
    fence.renew()
    assert lost == ["coll"]
    with pytest.raises(ShardFencedError):
        fence.check("coll")
    with pytest.raises(ShardFencedError):
        fence.epoch("coll", table)


def test_an_owner_confirms_its_lease_before_it_writes_and_a_stale_one_is_fenced_at_once(table):
    lost = []
    fence = Fence(0, "a", None, ttl=30, on_lost=lost.append, published=lambda: True)
    assert not fence.confirm("coll")  # no lease taken yet: not the owner
    fence.epoch("coll", table)
    assert fence.confirm("coll")
    store.take_lease(table, 0, "b", None, ttl=30, replaces="a")  # another actor took the shard meanwhile
    assert not fence.confirm("coll") and lost == ["coll"]  # noticed now, not at the next renewal
    with pytest.raises(ShardFencedError):
        fence.check("coll")
    assert Fence(1, "x", None, ttl=30, enabled=False).confirm("coll")  # an in-process master holds no lease


def test_fence_retires_when_no_longer_published(table):
    published = {"value": True}
    lost = []
    fence = Fence(2, "a", None, ttl=30, on_lost=lost.append, published=lambda: published["value"])
    fence.epoch("coll", table)
    published["value"] = False
    fence.renew()
    assert fence.retired and lost == ["coll"]
    assert table.find_one({"_id": store.lease_id(2)})["owner"] is None  # given up: the next owner takes it at once
    with pytest.raises(ShardFencedError):
        fence.check("other")


def test_a_taker_waits_at_most_the_ttl_for_a_live_owner(table):
    epoch = store.take_lease(table, 0, "a", None, ttl=30)["epoch"]
    stop = threading.Event()

    def live_owner():  # renews its lease all along
        while not stop.wait(0.1):
            assert store.renew_lease(table, 0, "a", epoch)

    renewing = threading.Thread(target=live_owner)
    renewing.start()
    try:
        with pytest.raises(ShardFencedError, match="another live owner"):
            Fence(0, "b", None, ttl=1.0).epoch("coll", table)
    finally:
        stop.set()
        renewing.join(10)
    assert table.find_one({"_id": store.lease_id(0)})["owner"] == "a"


def test_merge_keeps_the_best_n_over_shards():
    answers = [[(["a", "b"], [0.9, 0.1]), ([], [])], [(["c"], [0.5]), (["d"], [-1.0])]]
    assert merge(answers, 2) == [(["a", "c"], [0.9, 0.5]), (["d"], [-1.0])]
