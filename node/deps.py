"""What a node depends on, injectable: `create_app(config, deps=NodeDeps(...))`.

Each resource left None is the real one, opened and closed by the app in `cleanup_ctx` (what
production does). A resource given here is used as it is and belongs to the caller, who opens
and closes it: tests pass fakes (a fixed role, a dict of accounts, a pool that is down) and run
the whole HTTP surface in process, without a cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import aiohttp

from contingency.journal import Journal
from contingency.keycache import KeyCache
from contingency.runtime import ContingencyRuntime
from failover.role_rule import Role, RoleDecision, RoleFacts
from node import ratelimit
from node.redis_client import RedisView
from node.stores import AccountStore, ConnectionPool
from replication.etcd_gateway import EtcdGateway
from replication.patroni_rest import PatroniRest


class RoleView(Protocol):
    """The node's role as the handlers read it (failover.role.RoleWatcher in production)."""

    @property
    def role(self) -> Role: ...

    @property
    def decision(self) -> RoleDecision: ...

    @property
    def facts(self) -> RoleFacts | None: ...

    @property
    def last_cycle_at(self) -> float | None: ...

    @property
    def facts_leader(self) -> str | None: ...


class RedisPort(Protocol):
    """What the node asks of Redis (node.redis_client.RedisClient in production)."""

    def view(self) -> RedisView: ...

    async def count_request(
        self, account_id: int, *, limit: int, cost: int = 1, paid: int = 0
    ) -> ratelimit.RateDecision: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class NodeDeps:
    pool: ConnectionPool | None = None
    # None: PostgreSQL through `pool` (node.stores.PgAccountStore).
    accounts: AccountStore | None = None
    # None: the real RoleWatcher over Patroni and etcd.
    role: RoleView | None = None
    http: aiohttp.ClientSession | None = None
    etcd: EtcdGateway | None = None
    patroni: PatroniRest | None = None
    redis: RedisPort | None = None
    contingency: ContingencyRuntime | None = None
    journal: Journal | None = None
    keycache: KeyCache | None = None
    # Wall clock (UTC, aware) the handlers read as "now".
    clock: Callable[[], datetime] = utc_now
    # The node's loops: role watcher, Redis probe, failover controller, etcd placement,
    # contingency refresh, key cache refresh, write probe, migrations. False: nothing runs on
    # its own, the test sets the state it needs.
    background: bool = True

    def __post_init__(self) -> None:
        if self.background and self.role is not None:
            # The failover controller and etcd placement follow the real watcher.
            raise ValueError("background loops need the real role watcher: leave role None")
