"""The node's background steps (node.background) and its SQL adapters (node.stores) against
fakes: what each step does on the active node, on the standby and with the database down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from handler_fakes import DownPool, FixedRole, MemoryAccounts, MemoryEtcd, operational_error

from contingency.keycache import KeyCache
from contingency.runtime import ContingencyRuntime
from failover.role_rule import RoleFacts
from kernel.errors import DatabaseUnavailable
from kernel.names import WRITE_HEARTBEAT_KEY
from monitoring.metrics import NodeMetrics
from node import background, stores


class Cursor:
    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    async def execute(self, sql: str, params: Any = None) -> Cursor:
        return self

    async def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    async def fetchall(self) -> list[Any]:
        return self.rows


class Connection:
    """Answers every statement with `rows`, and remembers the statements."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows
        self.sql: list[str] = []
        self.rolled_back = False

    def cursor(self, row_factory: Any = None) -> Cursor:
        return Cursor(self.rows)

    async def execute(self, sql: str, params: Any = None) -> Cursor:
        self.sql.append(sql)
        return Cursor(self.rows)

    async def rollback(self) -> None:
        self.rolled_back = True


class Pool:
    def __init__(self, rows: list[Any] | None = None) -> None:
        self.conn = Connection(rows or [])

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Connection]:
        yield self.conn


def _runtime(tmp_path: Path) -> tuple[ContingencyRuntime, MemoryEtcd]:
    etcd = MemoryEtcd()
    return ContingencyRuntime(etcd=etcd, override_path=tmp_path / "o.json"), etcd  # type: ignore[arg-type]


async def test_the_key_cache_is_refreshed_from_the_account_store(tmp_path: Path) -> None:
    """One refresh copies every account to the key cache file, which then verifies an active
    account's key (and nobody else's)."""
    accounts = MemoryAccounts()
    key, account = accounts.add("officer")
    cache = KeyCache(tmp_path / "keycache.json")
    assert await background.refresh_keycache_once(accounts, cache) == 1
    found = cache.verify(key)
    assert found is not None
    assert found.account_id == str(account.id)
    assert cache.verify(key + "x") is None


async def test_a_failed_key_cache_refresh_keeps_the_last_good_cache(tmp_path: Path) -> None:
    """With the database down the refresh fails and the file written before stays in use."""
    accounts = MemoryAccounts()
    key, _ = accounts.add("officer")
    cache = KeyCache(tmp_path / "keycache.json")
    await background.refresh_keycache_once(accounts, cache)
    accounts.down = True
    with pytest.raises(DatabaseUnavailable):
        await background.refresh_keycache_once(accounts, cache)
    assert cache.verify(key) is not None


async def test_the_write_probe_runs_only_on_the_active_node(tmp_path: Path) -> None:
    """The standby does not probe; the active node proves a write and records the heartbeat
    in etcd that the manual-mode recommendation is judged by."""
    runtime, etcd = _runtime(tmp_path)
    pool = Pool()
    assert await background.write_probe_once(pool, FixedRole("standby"), runtime) is False
    assert pool.conn.sql == []
    assert await background.write_probe_once(pool, FixedRole("active"), runtime) is True
    assert pool.conn.sql == ["SELECT txid_current()"]
    assert pool.conn.rolled_back
    assert WRITE_HEARTBEAT_KEY in etcd.data


async def test_a_failed_write_probe_records_no_heartbeat(tmp_path: Path) -> None:
    """Database down: no heartbeat, so the time since the last write keeps growing."""
    runtime, etcd = _runtime(tmp_path)
    pool = DownPool(operational_error)
    assert await background.write_probe_once(pool, FixedRole("active"), runtime) is False
    assert pool.attempts == 1
    assert WRITE_HEARTBEAT_KEY not in etcd.data


async def test_the_schema_is_checked_once_per_leader_and_only_when_active(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """#12 item 4: the active node, which may not change the schema, reads what migrations of
    its code the database lacks once under each leader (again after a failed read), exports
    the count and logs a `migrations_pending` event naming them; a standby does not look."""
    calls: list[object] = []
    answers: list[list[str] | Exception] = [
        DatabaseUnavailable("moving"),
        ["0005_new.sql"],
        [],
    ]

    async def pending(pool: object) -> list[str]:
        calls.append(pool)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(background, "pending_migrations", pending)
    metrics = NodeMetrics()
    pool = Pool()
    standby = FixedRole("standby")
    assert await background.check_schema_once(pool, standby, metrics, None) is None
    assert calls == []
    on_a = FixedRole("active", RoleFacts("pg-A", "primary", "running", "pg-A", True))
    assert await background.check_schema_once(pool, on_a, metrics, None) is None  # retry
    assert await background.check_schema_once(pool, on_a, metrics, None) == "pg-A"
    assert metrics.migrations_pending._value.get() == 1
    [said] = [r for r in caplog.records if getattr(r, "event", None) == "migrations_pending"]
    assert "0005_new.sql" in said.getMessage()
    assert await background.check_schema_once(pool, on_a, metrics, "pg-A") == "pg-A"
    assert len(calls) == 2
    on_b = FixedRole("active", RoleFacts("pg-B", "primary", "running", "pg-B", True))
    assert await background.check_schema_once(pool, on_b, metrics, "pg-A") == "pg-B"
    assert metrics.migrations_pending._value.get() == 0


async def test_the_account_store_reads_accounts_by_prefix() -> None:
    """PgAccountStore turns the accounts row into the caller and its stored key hash."""
    row = {"id": 7, "kind": "officer", "name": "O", "status": "active", "key_hash": "ab" * 32}
    found = await stores.PgAccountStore(Pool([row])).find("0badcafe")
    assert found is not None
    assert (found.account.id, found.account.kind, found.key_sha256) == (7, "officer", "ab" * 32)
    assert await stores.PgAccountStore(Pool([])).find("0badcafe") is None


async def test_the_account_store_lists_accounts_for_the_key_cache() -> None:
    """Every row becomes a key cache entry (ids as text, as the cache file holds them)."""
    pool = Pool([("0badcafe", "cd" * 32, "trader", 3, "T", "active")])
    (entry,) = await stores.PgAccountStore(pool).all_accounts()
    assert (entry.key_id, entry.account_id, entry.role) == ("0badcafe", "3", "trader")


@pytest.mark.parametrize(
    "call",
    [
        lambda pool: stores.PgAccountStore(pool).find("0badcafe"),
        lambda pool: stores.PgAccountStore(pool).all_accounts(),
        lambda pool: stores.probe_write(pool),
    ],
    ids=["find", "all_accounts", "probe_write"],
)
async def test_the_stores_translate_an_unreachable_database(call: Any) -> None:
    """psycopg's errors do not leave node.stores: callers see DatabaseUnavailable."""
    with pytest.raises(DatabaseUnavailable) as info:
        await call(DownPool(operational_error))
    assert info.value.__cause__ is not None
