"""In-memory stand-ins for what a node opens in cleanup_ctx (node.deps.NodeDeps), so the HTTP
surface runs in process: a fixed role, a dict of accounts, a database that is down, an etcd and
a Redis in memory."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from aiohttp import web
from unit_fakes import MemoryEtcd, node_config

from contingency.keycache import CachedAccount
from contingency.runtime import ContingencyRuntime
from failover.role_rule import Role, RoleDecision, RoleFacts
from kernel.errors import DatabaseUnavailable, RedisUnavailable
from node.account import Account
from node.app import create_app
from node.auth import new_api_key
from node.config import NodeConfig
from node.deps import NodeDeps
from node.ratelimit import RateDecision
from node.redis_client import RedisView
from node.stores import StoredAccount

KINDS = ("trader", "trucker", "officer", "sre")


class FixedRole:
    """The role watcher's read side, pinned by the test; its loop is always fresh."""

    def __init__(self, role: Role = "active", facts: RoleFacts | None = None) -> None:
        self.decision = RoleDecision(role, f"fixed by the test: {role}")
        self.facts = facts

    def set(self, role: Role) -> None:
        self.decision = RoleDecision(role, f"fixed by the test: {role}")

    @property
    def role(self) -> Role:
        return self.decision.role

    @property
    def last_cycle_at(self) -> float:
        return time.monotonic()

    @property
    def facts_leader(self) -> str | None:
        return self.facts.leader_key if self.facts else None


class MemoryAccounts:
    """The account store as a dict; `down` makes it answer like an unreachable database."""

    def __init__(self) -> None:
        self.by_prefix: dict[str, StoredAccount] = {}
        self.down = False
        self.lookups = 0

    def add(self, kind: str, *, status: str = "active") -> tuple[str, Account]:
        key, prefix, digest = new_api_key()
        account = Account(
            len(self.by_prefix) + 1, kind, f"{kind}-{len(self.by_prefix) + 1}", status
        )
        self.by_prefix[prefix] = StoredAccount(account, digest)
        return key, account

    async def find(self, key_prefix: str) -> StoredAccount | None:
        self.lookups += 1
        if self.down:
            raise DatabaseUnavailable("the test's database is down")
        return self.by_prefix.get(key_prefix)

    async def all_accounts(self) -> list[CachedAccount]:
        if self.down:
            raise DatabaseUnavailable("the test's database is down")
        return [
            CachedAccount(
                key_id=prefix,
                key_sha256=s.key_sha256,
                role=s.account.kind,
                account_id=str(s.account.id),
                name=s.account.name,
                status=s.account.status,
            )
            for prefix, s in self.by_prefix.items()
        ]


class DownPool:
    """A database that is down: every connection attempt fails at once with `error()`."""

    def __init__(self, error: Callable[[], BaseException]) -> None:
        self.error = error
        self.attempts = 0

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Any]:
        self.attempts += 1
        raise self.error()
        yield  # pragma: no cover  (makes this an async generator)


def operational_error() -> BaseException:
    return psycopg.OperationalError("connection refused (the test's database is down)")


def pool_timeout() -> BaseException:
    from psycopg_pool import PoolTimeout

    return PoolTimeout("couldn't get a connection after 2.00 sec")


class MemoryRedis:
    """Redis as the node uses it: a count per request, allowed unless `decision` says not;
    `down` makes every count fail (the node then fails open)."""

    def __init__(self) -> None:
        self.down = False
        self.decision = RateDecision(True, 1.0, 1000, 0)
        self.counted: list[int] = []

    def view(self) -> RedisView:
        return RedisView(
            "rocars", None if self.down else "127.0.0.1:6379", not self.down, 0, None, None, None
        )

    async def count_request(
        self, account_id: int, *, limit: int, cost: int = 1, paid: int = 0
    ) -> RateDecision:
        if self.down:
            raise RedisUnavailable("the test's Redis is down")
        self.counted.extend([account_id] * cost)
        return self.decision


NOW = datetime(2030, 1, 7, 8, 0, tzinfo=UTC)


def no_database() -> BaseException:
    # A test that meant to stop before the database and did not sees a 500 from this.
    return RuntimeError("in-process handler tests have no database")


@dataclass
class Fakes:
    """Everything the node would open, as the test controls it."""

    state_dir: Path
    role: FixedRole = field(default_factory=FixedRole)
    accounts: MemoryAccounts = field(default_factory=MemoryAccounts)
    pool: DownPool = field(default_factory=lambda: DownPool(no_database))
    etcd: MemoryEtcd = field(default_factory=MemoryEtcd)
    redis: MemoryRedis = field(default_factory=MemoryRedis)
    keys: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.contingency = ContingencyRuntime(
            etcd=self.etcd,
            override_path=self.state_dir / "override.json",
        )
        for kind in KINDS:
            self.keys[kind], _ = self.accounts.add(kind)

    def config(self, **overrides: object) -> NodeConfig:
        return node_config(self.state_dir, **overrides)

    def deps(self) -> NodeDeps:
        return NodeDeps(
            pool=self.pool,
            accounts=self.accounts,
            role=self.role,
            redis=self.redis,
            contingency=self.contingency,
            clock=lambda: NOW,
            background=False,
        )

    def app(self, **config: object) -> web.Application:
        return create_app(self.config(**config), self.deps())

    def auth(self, kind: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[kind]}"}
