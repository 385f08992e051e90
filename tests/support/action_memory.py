"""A dict-backed ActionMemory for tests of actions (the real one lives in the state store).

``restart()`` gives a new memory over the same records, as a daemon restart would see them."""

from __future__ import annotations

import copy
import json
from typing import Any


class DictActionMemory:
    def __init__(self, records: dict[tuple[str, str], str] | None = None) -> None:
        # Values are kept as JSON text, as a store would, so nothing mutable is shared with the caller.
        self.records: dict[tuple[str, str], str] = records if records is not None else {}

    async def get(self, namespace: str, key: str) -> dict[str, Any] | None:
        raw = self.records.get((namespace, key))
        return None if raw is None else dict(json.loads(raw))

    async def put(self, namespace: str, key: str, value: dict[str, Any]) -> None:
        self.records[(namespace, key)] = json.dumps(value)

    async def delete(self, namespace: str, key: str) -> None:
        self.records.pop((namespace, key), None)

    async def items(self, namespace: str) -> dict[str, dict[str, Any]]:
        return {k: json.loads(v) for (ns, k), v in self.records.items() if ns == namespace}

    def restart(self) -> DictActionMemory:
        """The records a freshly started daemon would read back."""
        return DictActionMemory(copy.deepcopy(self.records))
