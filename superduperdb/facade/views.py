"""Read-only mapping views such as ``collection.models`` and ``collection.types``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any


class LazyMapping(Mapping):
    """``{name: object}`` whose objects load on first access (``coll.models['m']``)."""

    def __init__(self, names: Callable[[], list[str]], load: Callable[[str], Any]) -> None:
        self._names = names
        self._load = load

    def __getitem__(self, name: str) -> Any:
        return self._load(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __repr__(self) -> str:
        return f"<{', '.join(self._names())}>"
