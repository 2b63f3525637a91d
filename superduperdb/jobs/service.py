"""Turns writes into jobs: which watchers a write concerns, and submitting them."""

from __future__ import annotations

from typing import Any


class JobService:
    """Submits the jobs a write implies (none while no watcher exists)."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection

    def on_insert(self, ids: list) -> Any:
        return None

    def before_update(self, filter: dict, update: Any, many: bool) -> Any:
        return None

    def after_update(self, plan: Any, upserted_id: Any) -> Any:
        return None

    def before_delete(self, filter: dict, many: bool) -> Any:
        return None

    def after_delete(self, plan: Any) -> Any:
        return None

    def before_bulk(self, ops: list) -> Any:
        return None

    def after_bulk(self, plan: Any, bulk_api: dict) -> Any:
        return None
