"""The examples in the docstrings of the write door's modules and the worker floor's door run."""

from __future__ import annotations

import doctest

import pytest

from superduperdb.services import writes
from superduperdb.store import dispatch, semantic_indexes
from superduperdb.store import writes as store_writes


@pytest.mark.parametrize("module", [writes, store_writes, dispatch, semantic_indexes])
def test_doctests(module) -> None:
    result = doctest.testmod(module)
    assert result.attempted and not result.failed
