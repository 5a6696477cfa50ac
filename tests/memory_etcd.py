"""An etcd in memory for unit tests: the calls the contingency runtime and the node make (get,
put, compare-and-swap). `down` makes every call fail like an etcd with no member answering;
`races` makes that many compare-and-swaps lose, as if another writer got there first."""

from __future__ import annotations

from kernel.errors import EtcdUnavailable
from replication.etcd_gateway import KeyValue


class MemoryEtcd:
    def __init__(self) -> None:
        self.data: dict[str, KeyValue] = {}
        self.revision = 0
        self.down = False
        self.races = 0

    def _check(self) -> None:
        if self.down:
            raise EtcdUnavailable("no etcd member answered (the test's etcd is down)")

    async def get(self, key: str) -> KeyValue | None:
        self._check()
        return self.data.get(key)

    async def put(self, key: str, value: bytes | str) -> int:
        self._check()
        self.revision += 1
        raw = value.encode() if isinstance(value, str) else value
        self.data[key] = KeyValue(key, raw, self.revision)
        return self.revision

    async def put_if(self, key: str, value: bytes | str, *, mod_revision: int) -> bool:
        self._check()
        current = self.data.get(key)
        if self.races > 0:
            self.races -= 1
            return False
        if (current.mod_revision if current else 0) != mod_revision:
            return False
        await self.put(key, value)
        return True
