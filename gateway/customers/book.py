"""JSON values over the store's workspace records: what every workspace module reads and writes.

The store keeps ``Record``s (tenant, kind, key, JSON text); this turns them into dicts and back,
with the time of writing from an injected clock (tests move it).
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from ..model import DeleteRecord, PutRecords, Record
from ..store.writer import Store

MAX_LIST = 1000  # the most records one listing reads


def wall_clock() -> float:
    return time.time()


class RecordBook:
    def __init__(self, store: Store, clock: Callable[[], float] = wall_clock) -> None:
        self.store = store
        self.clock = clock

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def get(self, tenant: str, kind: str, key: str) -> dict[str, Any] | None:
        record = await self.store.record(tenant, kind, key)
        return None if record is None else json.loads(record.value)

    async def list(self, tenant: str, kind: str, prefix: str = "", limit: int = MAX_LIST) -> list[tuple[str, dict[str, Any]]]:
        return [(r.key, json.loads(r.value)) for r in await self.store.records(tenant, kind, prefix=prefix, limit=limit)]

    async def put(self, tenant: str, kind: str, key: str, value: dict[str, Any]) -> None:
        await self.put_many(tenant, [(kind, key, value)])

    async def put_many(self, tenant: str, items: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Store every item, all or none (one PutRecords)."""
        at = self.now_ms()
        records = tuple(Record(tenant, kind, key, json.dumps(value, ensure_ascii=False, separators=(",", ":")), at) for kind, key, value in items)
        await self.store.execute(PutRecords(records))

    async def delete(self, tenant: str, kind: str, key: str) -> bool:
        return bool(await self.store.execute(DeleteRecord(tenant, kind, key)))
