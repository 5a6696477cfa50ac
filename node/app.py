"""The app factory: `create_app(config)` builds the node; every resource and background loop is
opened and closed in `cleanup_ctx`, in dependency order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import AsyncConnectionPool

from contingency import state as cstate
from contingency.journal import Journal
from contingency.keycache import CachedAccount, KeyCache
from contingency.runtime import ContingencyRuntime
from failover.controller import FailoverController
from failover.decision import ControllerConfig
from failover.etcd_placement import EtcdPlacement
from failover.role import RoleDecision, RoleWatcher
from kernel.errors import RedisUnavailable
from monitoring.metrics import NodeMetrics
from node import appkeys, migrate
from node.api import (
    bundles,
    consignments,
    contingency,
    health,
    itfs,
    lbcp,
    openapi,
    registrations,
    risk_rules,
)
from node.api.common import utc_now
from node.config import NodeConfig
from node.problems import problem_middleware
from node.redis_client import RedisClient
from replication.etcd_gateway import EtcdGateway
from replication.patroni_rest import PatroniRest

log = logging.getLogger("rocars.node")


async def _http_ctx(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as session:
        app[appkeys.HTTP] = session
        app[appkeys.ETCD] = EtcdGateway(session, app[appkeys.CONFIG].etcd_urls)
        app[appkeys.PATRONI] = PatroniRest(session)
        yield


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    """The Redis client (through Sentinel) and its probe. Nothing waits for Redis here: a node
    starts and serves without it (rate limits then fail open)."""
    cfg = app[appkeys.CONFIG]
    metrics = app[appkeys.METRICS]
    bus = RedisClient(
        cfg.redis_sentinels,
        cfg.redis_master_name,
        name=f"node-{cfg.site}",
        timeout_s=cfg.redis_timeout_s,
        on_error=lambda _exc: metrics.redis_errors.inc(),
    )
    app[appkeys.REDIS] = bus
    task = asyncio.create_task(bus.run(cfg.redis_probe_interval_s), name="redis-probe")
    yield
    bus.stop()
    task.cancel()
    # Bounded: the probe ends within one probe deadline even if the cancel were lost.
    await asyncio.wait({task}, timeout=cfg.redis_probe_interval_s + bus.probe_deadline_s + 1)
    try:
        async with asyncio.timeout(2.0):
            await bus.aclose()
    except (TimeoutError, RedisUnavailable) as exc:
        log.warning("closing the Redis client: %r", exc)


async def _role_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[appkeys.CONFIG]
    metrics = app[appkeys.METRICS]

    def changed(new: RoleDecision, old: RoleDecision | None) -> None:
        metrics.set_role(cfg.site, new.role)
        metrics.role_changes.inc()

    watcher = RoleWatcher(
        patroni=app[appkeys.PATRONI],
        patroni_url=cfg.patroni_url,
        etcd=app[appkeys.ETCD],
        leader_key=cfg.leader_key,
        my_member=cfg.patroni_member,
        interval_s=cfg.role_interval_s,
        on_change=changed,
    )
    app[appkeys.ROLE] = watcher
    metrics.set_role(cfg.site, watcher.role)
    task = asyncio.create_task(watcher.run(), name="role-watcher")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _controller_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[appkeys.CONFIG]
    controller = FailoverController(
        site=cfg.site,
        sites=cfg.peers,
        session=app[appkeys.HTTP],
        patroni=app[appkeys.PATRONI],
        patroni_url=cfg.patroni_url,
        etcd=app[appkeys.ETCD],
        role=app[appkeys.ROLE],
        config=ControllerConfig(
            grace_period_s=cfg.failover_grace_s, min_interval_s=cfg.failover_min_interval_s
        ),
    )
    app[appkeys.CONTROLLER] = controller
    tasks = [asyncio.create_task(controller.run(), name="failover-controller")]
    if cfg.etcd_witness_url is not None:
        placement = EtcdPlacement(
            etcd=app[appkeys.ETCD], role=app[appkeys.ROLE], witness_url=cfg.etcd_witness_url
        )
        tasks.append(asyncio.create_task(placement.run(), name="etcd-placement"))
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _contingency_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[appkeys.CONFIG]
    folder = cfg.state_dir / "contingency"
    folder.mkdir(parents=True, exist_ok=True)
    runtime = ContingencyRuntime(
        etcd=app[appkeys.ETCD],
        override_path=folder / f"override-{cfg.site}.json",
        recommend_after_s=cfg.manual_recommend_after_s,
        auto_activate=cfg.manual_auto_activate,
    )

    def changed(new: cstate.ContingencyState, old: cstate.ContingencyState) -> None:
        log.warning("contingency mode %s -> %s (%s: %s)", old.mode, new.mode, new.actor, new.reason)

    runtime.on_change = changed
    app[appkeys.CONTINGENCY] = runtime
    app[appkeys.JOURNAL] = Journal(folder / f"journal-{cfg.site}.sqlite")
    app[appkeys.KEYCACHE] = KeyCache(folder / f"keycache-{cfg.site}.json")
    with contextlib.suppress(Exception):
        await runtime.refresh()
    tasks = [
        asyncio.create_task(runtime.run(), name="contingency"),
        asyncio.create_task(_keycache_loop(app), name="keycache"),
        asyncio.create_task(_write_probe_loop(app), name="write-probe"),
    ]
    yield
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    app[appkeys.JOURNAL].close()


async def _keycache_loop(app: web.Application) -> None:
    """Keep an on-disk copy of every account's key hash, so officers can still be verified
    (and switch manual mode on) when both database members are down."""
    while True:
        try:
            async with app[appkeys.POOL].connection(timeout=2) as conn:
                cur = await conn.execute(
                    "SELECT key_prefix, key_hash, kind, id, name, status FROM accounts"
                )
                rows = await cur.fetchall()
            entries = [
                CachedAccount(
                    key_id=r[0],
                    key_sha256=r[1],
                    role=r[2],
                    account_id=str(r[3]),
                    name=r[4],
                    status=r[5],
                )
                for r in rows
            ]
            await asyncio.to_thread(app[appkeys.KEYCACHE].refresh, entries)
            await asyncio.sleep(app[appkeys.CONFIG].keycache_refresh_s)
        except Exception as exc:  # database down or moving: keep the last good cache
            log.debug("key cache refresh skipped: %s", exc)
            await asyncio.sleep(2.0)


async def _write_probe_loop(app: web.Application) -> None:
    """On the active node, prove every 2 s that the database accepts writes; the heartbeat
    in etcd is what "no node could write for 60 s" is judged by."""
    while True:
        await asyncio.sleep(2.0)
        if app[appkeys.ROLE].role != "active":
            continue
        try:
            async with app[appkeys.POOL].connection(timeout=2) as conn:
                await conn.execute("SELECT txid_current()")
                await conn.rollback()
            await app[appkeys.CONTINGENCY].note_write_ok()
        except Exception as exc:
            log.debug("write probe failed: %s", exc)


async def _pool_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[appkeys.CONFIG]
    pool: AsyncConnectionPool = AsyncConnectionPool(
        cfg.database.conninfo(application_name=f"rocars-node-{cfg.site}"),
        min_size=1,
        max_size=10,
        open=False,
        timeout=5.0,
        check=AsyncConnectionPool.check_connection,
        name=f"node-{cfg.site}",
    )
    # Do not wait for the database here: a node must start (and answer /health/live and the
    # contingency endpoints) while PostgreSQL is down.
    await pool.open(wait=False)
    app[appkeys.POOL] = pool
    yield
    await pool.close(timeout=2.0)


async def _migrate_loop(app: web.Application) -> None:
    """Apply pending migrations whenever this node is active (idempotent, advisory-locked)."""
    done_on: str | None = None
    while True:
        watcher = app[appkeys.ROLE]
        if watcher.role == "active" and done_on != watcher.facts_leader:
            try:
                async with app[appkeys.POOL].connection() as conn:
                    applied = await migrate.migrate(conn)
                if applied:
                    log.info("applied migrations: %s", ", ".join(applied))
                done_on = watcher.facts_leader
            except Exception as exc:  # retried on the next tick; the database may be moving
                log.warning("migration attempt failed: %s", exc)
        await asyncio.sleep(1.0)


async def _migrate_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_migrate_loop(app), name="migrator")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def metrics_handler(request: web.Request) -> web.Response:
    m = request.app[appkeys.METRICS]
    watcher = request.app[appkeys.ROLE]
    if watcher.last_cycle_at is not None:
        m.role_cycle_age.set(time.monotonic() - watcher.last_cycle_at)
    facts = watcher.facts
    m.leader_known.set(1 if facts and facts.leader_known else 0)
    rt = request.app[appkeys.CONTINGENCY]
    m.manual_mode.set(1 if rt.any_manual else 0)
    m.manual_recommended.set(1 if rt.recommendation().recommended else 0)
    m.since_last_write.set(max(0.0, time.time() - rt.last_write_ok_at))
    bus = request.app[appkeys.REDIS]
    m.set_redis(up=bool(bus.ok), primary=bus.primary)
    counts = await asyncio.to_thread(request.app[appkeys.JOURNAL].counts)
    m.journal_pending.set(counts.clearances_pending)
    return web.Response(
        body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def _stamp_node(request: web.Request, response: web.StreamResponse) -> None:
    # Lets clients, drills and tests see which node answered through HAProxy.
    cfg = request.app[appkeys.CONFIG]
    response.headers["X-Rocars-Node"] = cfg.site
    response.headers["X-Rocars-Role"] = request.app[appkeys.ROLE].role
    if appkeys.CONTINGENCY in request.app:
        manual = request.app[appkeys.CONTINGENCY].any_manual
        response.headers["X-Rocars-Mode"] = "manual" if manual else "normal"


def create_app(config: NodeConfig) -> web.Application:
    # Batch submission takes up to 32 MiB; every other route enforces 1 MiB itself.
    app = web.Application(middlewares=[problem_middleware], client_max_size=32 * 1024**2)
    app[appkeys.CONFIG] = config
    app[appkeys.CLOCK] = utc_now
    app[appkeys.ACCOUNT_CACHE] = {}
    app[appkeys.METRICS] = NodeMetrics()
    app[appkeys.STARTED_AT] = time.monotonic()
    app.cleanup_ctx.append(_http_ctx)
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(_role_ctx)
    app.cleanup_ctx.append(_controller_ctx)
    app.cleanup_ctx.append(_pool_ctx)
    app.cleanup_ctx.append(_migrate_ctx)
    app.cleanup_ctx.append(_contingency_ctx)
    app.on_response_prepare.append(_stamp_node)
    health.add_routes(app)
    app.router.add_get("/metrics", metrics_handler)
    modules = (registrations, consignments, bundles, lbcp, risk_rules, itfs, openapi, contingency)
    for module in modules:
        module.add_routes(app)
    return app
