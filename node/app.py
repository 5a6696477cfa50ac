"""The app factory: `create_app(config, deps)` builds the node. Every resource is opened and
closed in `cleanup_ctx`, in dependency order, unless `deps` (node.deps) hands one in; the
background loops (node.background, failover, contingency) start there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web

from contingency import state as cstate
from contingency.journal import Journal
from contingency.keycache import KeyCache
from contingency.runtime import ContingencyRuntime
from failover.controller import FailoverController
from failover.decision import ControllerConfig
from failover.etcd_placement import EtcdPlacement
from failover.role import RoleWatcher
from failover.role_rule import RoleDecision
from kernel.errors import RedisUnavailable
from monitoring import logs
from monitoring.metrics import NodeMetrics
from node import appkeys, background, tls_reload
from node.admission import admission_middleware
from node.api import (
    bundles,
    consignments,
    contingency,
    health,
    itfs,
    lbcp,
    metrics,
    openapi,
    phone_pin,
    registrations,
    risk_rules,
)
from node.config import NodeConfig
from node.control_access import ControlAccess, control_access_middleware
from node.deps import NodeDeps
from node.pg_probe import PrimaryProbe
from node.phone.agi_server import phone_ctx
from node.problems import PROBLEM_JSON, problem_middleware
from node.redis_client import RedisClient
from node.stores import PgAccountStore, open_pool
from node.web import setup_web
from replication.etcd_gateway import EtcdCredentials, EtcdGateway
from replication.patroni_rest import PatroniRest, read_credentials

log = logging.getLogger("rocars.node")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The route label of requests that matched no route (404, 405): one series, not one per path.
UNMATCHED_ROUTE = "unmatched"


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _http_ctx(app: web.Application) -> AsyncIterator[None]:
    deps, cfg = app[appkeys.DEPS], app[appkeys.CONFIG]
    async with contextlib.AsyncExitStack() as stack:
        session = deps.http
        # One client context for etcd, Patroni and the peers: TLS checked against the
        # system's CA, with the node's client certificate (#12 item 2).
        client_tls = None if cfg.tls is None else tls_reload.client_context(cfg.tls)
        if session is None:
            connector = None if client_tls is None else aiohttp.TCPConnector(ssl=client_tls)
            session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        app[appkeys.HTTP] = session
        etcd, patroni = deps.etcd, deps.patroni
        if etcd is None:
            creds = None  # #12 item 3: the node's own etcd user, its password read from a file
            if cfg.etcd_user is not None and cfg.etcd_password_file is not None:
                creds = EtcdCredentials.from_file(cfg.etcd_user, cfg.etcd_password_file)
            etcd_tls = None if cfg.tls is None else tls_reload.etcd_context(cfg.tls)
            etcd = EtcdGateway(session, cfg.etcd_urls, credentials=creds, ssl=etcd_tls)
        app[appkeys.ETCD] = etcd
        if patroni is None:
            # #12 item 3: the failover controller's switchover is an unsafe method.
            path = cfg.patroni_auth_file
            auth = None if path is None else read_credentials(path)
            patroni = PatroniRest(session, auth=auth, ssl=client_tls)
        app[appkeys.PATRONI] = patroni
        yield


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    """The Redis client (through Sentinel) and its probe. Nothing waits for Redis here: a node
    starts and serves without it (rate limits then fail open)."""
    deps, cfg = app[appkeys.DEPS], app[appkeys.CONFIG]
    if deps.redis is not None:
        app[appkeys.REDIS] = deps.redis
        yield
        return
    metrics_ = app[appkeys.METRICS]
    client = RedisClient(
        cfg.redis_sentinels,
        cfg.redis_master_name,
        name=f"node-{cfg.site}",
        timeout_s=cfg.redis_timeout_s,
        on_error=lambda _exc: metrics_.redis_errors.inc(),
        auth=cfg.redis_auth,
        tls_settings=cfg.redis_tls,
    )
    app[appkeys.REDIS] = client
    tasks = []
    if deps.background:
        tasks.append(asyncio.create_task(client.run(cfg.redis_probe_interval_s), name="redis"))
    yield
    client.stop()
    for task in tasks:
        task.cancel()
    if tasks:
        # Bounded: the probe ends within one probe deadline even if the cancel were lost.
        await asyncio.wait(tasks, timeout=cfg.redis_probe_interval_s + client.probe_deadline_s + 1)
    try:
        async with asyncio.timeout(2.0):
            await client.aclose()
    except (TimeoutError, RedisUnavailable) as exc:
        log.warning("closing the Redis client: %r", exc)


async def _role_ctx(app: web.Application) -> AsyncIterator[None]:
    deps, cfg = app[appkeys.DEPS], app[appkeys.CONFIG]
    metrics_ = app[appkeys.METRICS]
    if deps.role is not None:
        app[appkeys.ROLE] = deps.role
        metrics_.set_role(cfg.site, deps.role.role)
        yield
        return

    def changed(new: RoleDecision, old: RoleDecision | None) -> None:
        metrics_.set_role(cfg.site, new.role)
        metrics_.role_changes.inc()

    probe = PrimaryProbe(cfg, timeout_s=max(0.5, cfg.role_interval_s))
    watcher = RoleWatcher(
        patroni=app[appkeys.PATRONI],
        patroni_url=cfg.patroni_url,
        etcd=app[appkeys.ETCD],
        leader_key=cfg.leader_key,
        my_member=cfg.patroni_member,
        interval_s=cfg.role_interval_s,
        on_change=changed,
        pg_primary=probe,
    )
    app[appkeys.ROLE] = watcher
    metrics_.set_role(cfg.site, watcher.role)
    tasks = []
    if deps.background:
        tasks.append(asyncio.create_task(watcher.run(), name="role-watcher"))
        tasks.extend(_failover_tasks(app, watcher))
    yield
    await _stop(tasks)
    await probe.close()


def _failover_tasks(app: web.Application, watcher: RoleWatcher) -> list[asyncio.Task[None]]:
    """The failover controller and, with a witness, etcd's leader placement: both follow the
    real role watcher."""
    cfg = app[appkeys.CONFIG]
    controller = FailoverController(
        site=cfg.site,
        sites=cfg.peers,
        session=app[appkeys.HTTP],
        patroni=app[appkeys.PATRONI],
        patroni_url=cfg.patroni_url,
        etcd=app[appkeys.ETCD],
        role=watcher,
        config=ControllerConfig(
            grace_period_s=cfg.failover_grace_s, min_interval_s=cfg.failover_min_interval_s
        ),
    )
    app[appkeys.CONTROLLER] = controller
    tasks = [asyncio.create_task(controller.run(), name="failover-controller")]
    if cfg.etcd_witness_url is not None:
        placement = EtcdPlacement(
            etcd=app[appkeys.ETCD], role=watcher, witness_url=cfg.etcd_witness_url
        )
        tasks.append(asyncio.create_task(placement.run(), name="etcd-placement"))
    return tasks


async def _pool_ctx(app: web.Application) -> AsyncIterator[None]:
    """The database pool and the account store over it, and the active node's check that the
    schema has every migration of its code. A given pool is not opened or closed here."""
    deps, cfg = app[appkeys.DEPS], app[appkeys.CONFIG]
    own, pool = None, deps.pool
    if pool is None:
        pool = own = open_pool(cfg)
        # Do not wait for the database here: a node must start (and answer /health/live and
        # the contingency endpoints) while PostgreSQL is down.
        await own.open(wait=False)
    app[appkeys.POOL] = pool
    app[appkeys.SUBMISSIONS] = submissions = consignments.submission_group(
        pool, app[appkeys.METRICS]
    )
    app[appkeys.ACCOUNTS] = PgAccountStore(pool) if deps.accounts is None else deps.accounts
    tasks = []
    if deps.background:
        role = app[appkeys.ROLE]
        tasks.append(
            asyncio.create_task(
                background.check_schema_loop(pool, role, app[appkeys.METRICS]), name="schema"
            )
        )
        tasks.append(
            asyncio.create_task(
                background.idempotency_expiry_loop(pool, role), name="idempotency-expiry"
            )
        )
    yield
    await _stop(tasks)
    await submissions.close()
    if own is not None:
        await own.close(timeout=2.0)


async def _contingency_ctx(app: web.Application) -> AsyncIterator[None]:
    deps, cfg = app[appkeys.DEPS], app[appkeys.CONFIG]
    folder = cfg.state_dir / "contingency"
    folder.mkdir(parents=True, exist_ok=True)
    runtime = deps.contingency
    tasks = []
    if runtime is None:
        runtime = ContingencyRuntime(
            etcd=app[appkeys.ETCD],
            override_path=folder / f"override-{cfg.site}.json",
            recommend_after_s=cfg.manual_recommend_after_s,
            auto_activate=cfg.manual_auto_activate,
        )

        def changed(new: cstate.ContingencyState, old: cstate.ContingencyState) -> None:
            log.warning(
                "contingency mode %s -> %s (%s: %s)",
                old.mode,
                new.mode,
                new.actor,
                new.reason,
                extra={"event": "contingency_mode_changed"},
            )

        runtime.on_change = changed
        if deps.background:
            with contextlib.suppress(Exception):
                await runtime.refresh()
            tasks.append(asyncio.create_task(runtime.run(), name="contingency"))
    journal, keycache = deps.journal, deps.keycache
    if journal is None:
        journal = Journal(folder / f"journal-{cfg.site}.sqlite")
    if keycache is None:
        keycache = KeyCache(folder / f"keycache-{cfg.site}.json")
    app[appkeys.CONTINGENCY] = runtime
    app[appkeys.JOURNAL] = journal
    app[appkeys.KEYCACHE] = keycache
    if deps.background:
        pool, role = app[appkeys.POOL], app[appkeys.ROLE]
        every_s = cfg.keycache_refresh_s
        tasks += [
            asyncio.create_task(
                background.keycache_loop(app[appkeys.ACCOUNTS], keycache, every_s=every_s),
                name="keycache",
            ),
            asyncio.create_task(
                background.write_probe_loop(pool, role, runtime, app[appkeys.METRICS]),
                name="write-probe",
            ),
            asyncio.create_task(background.Observer.of(app).run(), name="observer"),
        ]
    yield
    await _stop(tasks)
    if deps.journal is None:
        journal.close()


# The request's id (monitoring.logs.request_id), for the response header.
REQUEST_ID = web.RequestKey("rocars.request_id", str)


@web.middleware
async def request_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request by method, route template and status, time it by route, and write
    its one access line (logger `rocars.access`, monitoring.logs). The template
    (`/v1/consignments/{ccrn}`), never the path, keeps the series few and keeps what a client
    put in the path out of the logs. The request's id (its X-Request-Id when sane) is on every
    line logged while it is handled, and on its answer (`_stamp_node`)."""
    started = time.perf_counter()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else UNMATCHED_ROUTE
    rid = logs.request_id(request.headers.get(logs.REQUEST_ID_HEADER))
    request[REQUEST_ID] = rid
    # Not undone: aiohttp runs each request in a task of its own, whose context ends with it,
    # so what it logs about the request after this middleware (a failed write) keeps the id.
    logs.bind_request(rid)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away (nginx's convention); nothing was answered
        raise
    finally:
        elapsed = time.perf_counter() - started
        method = request.method
        request.app[appkeys.METRICS].observe_request(method, route, status, elapsed)
        logs.ACCESS.info(
            "%s %s %d",
            method,
            route,
            status,
            extra={
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(elapsed * 1000, 3),
            },
        )


# What every answer says about the server, instead of aiohttp's "Python/x aiohttp/y" (which
# aiohttp adds only when the header is absent, after on_response_prepare has run).
SERVER_BANNER = "rocars"


async def _stamp_node(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_BANNER
    rid = request.get(REQUEST_ID)
    if rid is not None:
        response.headers[logs.REQUEST_ID_HEADER] = rid
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Every authenticated route is under /v1, and a problem may quote what was sent: neither
    # may be kept by a browser or a proxy. /health, /metrics and /openapi.json may be.
    if request.path.startswith("/v1/") or response.content_type == PROBLEM_JSON:
        response.headers["Cache-Control"] = "no-store"
    # Lets clients, drills and tests see which node answered through HAProxy.
    cfg = request.app[appkeys.CONFIG]
    response.headers["X-Rocars-Node"] = cfg.site
    response.headers["X-Rocars-Role"] = request.app[appkeys.ROLE].role
    if appkeys.CONTINGENCY in request.app:
        manual = request.app[appkeys.CONTINGENCY].any_manual
        response.headers["X-Rocars-Mode"] = "manual" if manual else "normal"


async def _log_started(app: web.Application) -> None:
    cfg = app[appkeys.CONFIG]
    log.info(
        "node %s starting to serve on %s:%d",
        cfg.site,
        cfg.listen_host,
        cfg.listen_port,
        extra={"event": "node_started"},
    )


async def _log_stopping(app: web.Application) -> None:
    log.info("node %s stopping", app[appkeys.CONFIG].site, extra={"event": "node_stopping"})


async def _log_stopped(app: web.Application) -> None:
    log.info("node %s stopped", app[appkeys.CONFIG].site, extra={"event": "node_stopped"})


def _control_access(config: NodeConfig) -> ControlAccess:
    key_file = config.monitoring_key_file
    key = key_file.read_text().strip() if key_file is not None else None
    return ControlAccess.of(config.monitoring_networks, key)


def create_app(config: NodeConfig, deps: NodeDeps | None = None) -> web.Application:
    """The node. `deps` None: every resource real, every loop running (production)."""
    # Metrics outermost, so they see the status the problem middleware answered.
    # Every request.read() stops at 1 MiB (node.validation.MAX_BODY); the batch route streams
    # its body itself under its own 10 MiB cap (node.validation.read_body).
    # Admission next, so a request past the node's limit costs nothing more (node.admission).
    app = web.Application(
        middlewares=[
            request_metrics,
            admission_middleware(config.max_in_flight),
            problem_middleware,
            control_access_middleware(_control_access(config)),
        ],
        client_max_size=1024**2,
    )
    if deps is None:
        deps = NodeDeps()
    app[appkeys.CONFIG] = config
    app[appkeys.DEPS] = deps
    app[appkeys.CLOCK] = deps.clock
    app[appkeys.ACCOUNT_CACHE] = {}
    app[appkeys.MISSED_KEYS] = OrderedDict()
    app[appkeys.METRICS] = NodeMetrics()
    app[appkeys.BATCH_SLOTS] = asyncio.Semaphore(consignments.BATCH_SLOTS)
    app[appkeys.STARTED_AT] = time.monotonic()
    app.cleanup_ctx.append(_http_ctx)
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(_role_ctx)
    app.cleanup_ctx.append(_pool_ctx)
    app.cleanup_ctx.append(_contingency_ctx)
    app.cleanup_ctx.append(phone_ctx)
    app.on_response_prepare.append(_stamp_node)
    # After cleanup_ctx's own steps (aiohttp runs those first): started once every resource is
    # open, stopped once every one is closed.
    app.on_startup.append(_log_started)
    app.on_shutdown.append(_log_stopping)
    app.on_cleanup.append(_log_stopped)
    modules = (
        health,
        metrics,
        registrations,
        consignments,
        bundles,
        lbcp,
        risk_rules,
        itfs,
        openapi,
        contingency,
        phone_pin,
    )
    for module in modules:
        module.add_routes(app)
    setup_web(app)
    return app
