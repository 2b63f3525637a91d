"""``isolate``: a batched call that raises is split until the failing items are found."""

from __future__ import annotations

import pytest

from superduperdb.errors import ModelError
from superduperdb.models.batching import isolate


def lengths(calls: list):
    def call(batch):
        calls.append(len(batch))
        return [len(x) for x in batch]
    return call


def test_one_bad_item_among_many_costs_a_few_calls_and_spares_the_rest():
    items = ["x" * (i % 5 + 1) for i in range(1000)]
    items[617] = 5
    calls: list = []
    found = isolate(lengths(calls), items)
    assert list(found.failures) == [617]
    exc, tb = found.failures[617]
    assert isinstance(exc, TypeError) and "has no len()" in tb
    assert [y for i, y in enumerate(found.outputs) if i != 617] == [len(x) for i, x in enumerate(items) if i != 617]
    assert found.outputs[617] is None
    assert len(calls) <= 2 * 10 + 1  # about 2 log2(n) extra calls


def test_every_item_failing_is_found_and_nothing_else_is_lost():
    items = [1, "a", 2, "bb", None]
    found = isolate(lengths([]), items)
    assert sorted(found.failures) == [0, 2, 4]
    assert found.outputs == [None, 1, None, 2, None]
    assert isolate(lengths([]), []) == ([], {})


def test_what_must_stop_everything_is_not_isolated():
    class Lost(Exception):
        pass

    def lost(batch):
        raise Lost("the database went away")

    with pytest.raises(Lost):
        isolate(lost, [1, 2, 3], reraise=(Lost,))

    def interrupted(batch):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        isolate(interrupted, [1, 2])


def test_a_call_returning_the_wrong_number_of_outputs_is_a_model_error():
    with pytest.raises(ModelError, match="2 outputs for 3 inputs"):
        isolate(lambda batch: [1, 2], [1, 2, 3])
