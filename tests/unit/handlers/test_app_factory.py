"""create_app(config, deps): what it opens itself, what it is given, and what it closes."""

from __future__ import annotations

import asyncio

import pytest
from handler_fakes import Fakes, FixedRole
from problem_checks import AiohttpClient
from psycopg_pool import AsyncConnectionPool
from tenacity import AsyncRetrying, stop_after_delay, wait_fixed

from contingency.journal import Journal
from failover.role import RoleWatcher
from kernel.errors import JournalError
from node import appkeys
from node.app import create_app
from node.deps import NodeDeps
from node.redis_client import RedisClient
from node.stores import PgAccountStore


def test_a_fixed_role_with_background_loops_is_refused() -> None:
    """The failover controller follows the real role watcher: a fixed role goes only with
    background=False, and saying otherwise fails at once, not at start-up."""
    with pytest.raises(ValueError, match="real role watcher"):
        NodeDeps(role=FixedRole())


async def test_without_deps_the_node_opens_the_real_resources_and_closes_them(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """Nothing injected (loops off, so no cluster is needed): the app opens psycopg's pool
    (without waiting for the database), the PostgreSQL account store, the role watcher and the
    Redis client; it starts without any of them reachable and closes the pool and the journal
    on shutdown."""
    app = create_app(fakes.config(), NodeDeps(background=False))
    client = await aiohttp_client(app)
    pool = app[appkeys.POOL]
    assert isinstance(pool, AsyncConnectionPool)
    assert isinstance(app[appkeys.ACCOUNTS], PgAccountStore)
    assert isinstance(app[appkeys.ROLE], RoleWatcher)
    assert isinstance(app[appkeys.REDIS], RedisClient)
    assert appkeys.CONTROLLER not in app
    async with client.get("/health/live") as resp:
        assert resp.status == 200
    async with client.get("/health") as resp:
        doc = await resp.json(content_type=None)
    assert doc["failover_controller"]["action"] == "none"
    assert doc["role"] == "standby"  # the watcher has not observed anything (loops off)
    journal = app[appkeys.JOURNAL]
    await client.close()
    assert pool.closed
    with pytest.raises(JournalError, match="closed"):
        journal.counts()


async def test_given_resources_are_used_and_left_open(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """A resource handed in belongs to the caller: the app uses it and does not close it."""
    journal = Journal(fakes.state_dir / "given.sqlite")
    deps = NodeDeps(
        pool=fakes.pool,
        accounts=fakes.accounts,
        role=fakes.role,
        redis=fakes.redis,
        contingency=fakes.contingency,
        journal=journal,
        background=False,
    )
    app = create_app(fakes.config(), deps)
    client = await aiohttp_client(app)
    assert app[appkeys.POOL] is fakes.pool
    assert app[appkeys.ACCOUNTS] is fakes.accounts
    assert app[appkeys.ROLE] is fakes.role
    assert app[appkeys.REDIS] is fakes.redis
    assert app[appkeys.CONTINGENCY] is fakes.contingency
    assert app[appkeys.JOURNAL] is journal
    await client.close()
    assert journal.counts().clearances_pending == 0  # still open
    journal.close()


async def test_the_production_wiring_starts_and_stops_without_a_cluster(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """create_app(config) as production runs it, with nothing listening on the configured
    ports: every loop starts, the role watcher concludes 'standby' because etcd gives no quorum
    answer for the leader key (nor does Patroni answer), the node stays live, and shutdown ends
    every loop promptly."""
    app = create_app(fakes.config(etcd_witness_url="http://127.0.0.1:1"))
    client = await aiohttp_client(app)
    watcher = app[appkeys.ROLE]
    assert isinstance(watcher, RoleWatcher)
    async for attempt in AsyncRetrying(stop=stop_after_delay(10), wait=wait_fixed(0.05)):
        with attempt:
            assert watcher.last_cycle_at is not None  # one role cycle completed
    assert watcher.role == "standby"
    assert "no quorum answer" in watcher.decision.reason
    assert appkeys.CONTROLLER in app
    async with client.get("/health/live") as resp:
        assert resp.status == 200
    async with client.get("/health/ready") as resp:
        assert resp.status == 503
    pool = app[appkeys.POOL]
    async with asyncio.timeout(10):
        await client.close()
    assert isinstance(pool, AsyncConnectionPool)
    assert pool.closed
