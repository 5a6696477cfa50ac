"""`rocars cluster status`: one typed picture of the running system (`kernel.cluster`), as JSON
and as a table.

Who leads is decided from a majority view: the leader key read with quorum from etcd, then that
member's own `/cluster` answer (an isolated member's `/cluster` can be stale, DESIGN.md section 6).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import aiohttp
from redis.exceptions import RedisError

from deploy import control_tls, etcd_auth, floating_address, http_client, redis_acl
from deploy.configgen import REDIS_MASTER_NAME
from deploy.process_specs import member_keys
from deploy.state import StateDir, default_state_dir
from deploy.topology import Topology
from kernel.cluster import (
    ClusterStatus,
    Contingency,
    ControllerDecision,
    Entry,
    Etcd,
    EtcdMember,
    FloatingAddress,
    Member,
    Monitoring,
    Node,
    Postgres,
    Redis,
)
from kernel.errors import ComponentUnavailable, RocarsError
from kernel.names import CONTINGENCY_STATE_KEY, leader_key, member_name
from replication.etcd_gateway import EtcdGateway

TIMEOUT = aiohttp.ClientTimeout(total=1.5)


async def _json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url, timeout=TIMEOUT) as r:
        return r.status, await r.json(content_type=None)


async def node_health(
    session: aiohttp.ClientSession, topo: Topology
) -> dict[str, dict[str, Any] | Exception]:
    """Each API node's /health document by site, or the error that kept us from it."""
    out: dict[str, dict[str, Any] | Exception] = {}
    for name in topo.data_sites:
        try:
            _, doc = await _json(session, f"{topo.node_url(name)}/health")
            out[name] = doc if isinstance(doc, dict) else ValueError(f"not a document: {doc!r}")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            out[name] = exc
    return out


def node_from_health(site: str, url: str, doc: dict[str, Any] | Exception) -> Node:
    """A node as its /health document (or the error reading it) describes it."""
    if isinstance(doc, Exception):
        return Node(site=site, url=url, role=None, ready=False, error=repr(doc))
    redis_view = doc.get("redis") or {}
    contingency = doc.get("contingency") or {}
    controller = doc.get("failover_controller") or {}
    return Node(
        site=site,
        url=url,
        role=doc.get("role"),
        ready=bool(doc.get("ready")),
        reason=doc.get("reason"),
        contingency_mode=contingency.get("mode"),
        redis_primary=redis_view.get("primary") if redis_view.get("ok") else None,
        controller=(
            ControllerDecision(str(controller.get("action")), str(controller.get("reason")))
            if controller
            else None
        ),
    )


async def nodes(session: aiohttp.ClientSession, topo: Topology) -> tuple[Node, ...]:
    """Each API node as its own /health document describes it."""
    docs = await node_health(session, topo)
    return tuple(node_from_health(site, topo.node_url(site), doc) for site, doc in docs.items())


async def nodes_redis_primaries(topo: Topology) -> dict[str, str | None]:
    """Each API node's Redis primary (host:port) from its /health, by site: None when the node
    does not answer or its last Redis operation failed."""
    async with http_client.session(topo) as session:
        return {n.site: n.redis_primary for n in await nodes(session, topo)}


async def wait_nodes_follow_redis(
    topo: Topology, *, away_from: str, timeout_s: float = 30.0, interval_s: float = 0.1
) -> str:
    """Wait until every API node works with one and the same Redis primary other than
    `away_from` (the one just killed or demoted); return it. Raises RocarsError on timeout."""
    deadline = time.monotonic() + timeout_s
    views: dict[str, str | None] = {}
    while time.monotonic() < deadline:
        views = await nodes_redis_primaries(topo)
        seen = set(views.values())
        if len(seen) == 1 and None not in seen and away_from not in seen:
            primary = seen.pop()
            assert primary is not None
            return primary
        await asyncio.sleep(interval_s)
    raise RocarsError(
        f"API nodes did not follow the Redis failover away from {away_from} within"
        f" {timeout_s:.0f}s; their views: {views}"
    )


async def _postgres(
    session: aiohttp.ClientSession, topo: Topology, etcd: EtcdGateway, state: StateDir
) -> Postgres:
    rest = control_tls.patroni(session, state)  # TLS with the operator's certificate
    leader: str | None = None
    with contextlib.suppress(ComponentUnavailable):
        kv = await etcd.get(leader_key(topo.name))
        leader = kv.value.decode() if kv else None
    # Ask the leader's Patroni first: its view is the freshest.
    sources = sorted(topo.data_sites, key=lambda s: member_name(s) != leader)
    members: tuple[Member, ...] = ()
    paused = False
    for site in sources:
        try:
            view = await rest.cluster(topo.patroni_url(site))
        except ComponentUnavailable:
            continue
        members, paused = view.members, view.paused
        break
    known = {m.name for m in members}
    # Read replicas (#17 item 5) are listed too: role, state and lag like the main members.
    missing = tuple(
        Member.unreachable(key) for key in member_keys(topo) if member_name(key) not in known
    )
    return Postgres(leader=leader, paused=paused, members=members + missing)


async def _etcd(etcd: EtcdGateway) -> Etcd:
    statuses = await etcd.member_statuses()
    names: dict[str, str] = {}
    with contextlib.suppress(ComponentUnavailable):
        names = await etcd.member_names()
    leader_ids = {s.leader_id for s in statuses if s.healthy}
    leader_id = next(iter(leader_ids)) if len(leader_ids) == 1 else None
    return Etcd(
        members=tuple(
            EtcdMember(names.get(s.member_id or ""), s.url, s.healthy, s.error) for s in statuses
        ),
        leader=names.get(leader_id) if leader_id else None,
    )


async def redis_status(topo: Topology, state: StateDir | None = None) -> Redis:
    """The primary the Sentinels name (confirmed by asking it) and its online replicas, asked
    as the operators' Redis and Sentinel user, its password from `state` (default: the
    default state folder) (#12 item 3)."""
    primary: str | None = None
    replicas: list[str] = []
    state = state or StateDir(default_state_dir())
    try:
        # Over TLS with the operators' certificate (#12 item 2); no state, no Redis to ask.
        redis_acl.login(state, redis_acl.ADMIN)
        redis_acl.operator_tls(state)
    except OSError:  # ssl.SSLError included
        return Redis(primary=None, replicas=())
    for site in topo.sites.values():
        r = redis_acl.connect(
            state, site.host, site.sentinel.port, socket_timeout=1, socket_connect_timeout=1
        )
        try:
            addr = await r.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "get-master-addr-by-name", REDIS_MASTER_NAME
            )
            if addr:
                primary = f"{addr[0].decode()}:{addr[1].decode()}"
                break
        except (RedisError, OSError):
            continue
        finally:
            await r.aclose()
    if primary:
        host, port = primary.rsplit(":", 1)
        r = redis_acl.connect(state, host, int(port), socket_timeout=1, socket_connect_timeout=1)
        try:
            info = await r.info("replication")
            if info.get("role") == "master":
                for k, v in info.items():
                    if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online":
                        replicas.append(f"{v['ip']}:{v['port']}")
            else:
                primary = None
        except (RedisError, OSError):
            primary = None
        finally:
            await r.aclose()
    return Redis(primary=primary, replicas=tuple(replicas))


async def _contingency(etcd: EtcdGateway) -> Contingency:
    try:
        kv = await etcd.get(CONTINGENCY_STATE_KEY)
    except ComponentUnavailable:
        return Contingency("unknown")
    if kv is None:
        return Contingency("normal")
    try:
        doc = json.loads(kv.value)
    except ValueError:
        return Contingency("unknown")
    if not isinstance(doc, dict):
        return Contingency("unknown")
    return Contingency(str(doc.get("mode", "normal")), doc)


async def _floating(topo: Topology) -> FloatingAddress | None:
    if topo.entry.floating is None:
        return None
    held = await asyncio.to_thread(floating_address.holders, topo)
    return FloatingAddress(topo.entry.floating.address, held)


async def _entry(session: aiohttp.ClientSession, topo: Topology) -> Entry:
    url = topo.entry_url()
    floating = await _floating(topo)
    try:
        code, doc = await _json(session, f"{url}/health/ready")
        return Entry(url, routes=code == 200, role=doc.get("role"), floating=floating)
    except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError) as exc:
        return Entry(url, routes=False, error=repr(exc), floating=floating)


_BAD_ANSWER = (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError, AttributeError)


async def monitoring_status(session: aiohttp.ClientSession, topo: Topology) -> Monitoring:
    """Prometheus's view of its scrape targets and Alertmanager's active alerts."""
    prom, am = topo.monitoring_url("prometheus"), topo.monitoring_url("alertmanager")
    prom_up, am_up = False, False
    up: list[str] = []
    down: list[str] = []
    alerts: list[str] = []
    with contextlib.suppress(*_BAD_ANSWER):
        code, doc = await _json(session, f"{prom}/api/v1/targets?state=active")
        prom_up = code == 200
        for t in doc["data"]["activeTargets"]:
            where = f"{t['labels'].get('job')} {t['labels'].get('instance')}"
            (up if t.get("health") == "up" else down).append(where)
    with contextlib.suppress(*_BAD_ANSWER):
        code, doc = await _json(
            session, f"{am}/api/v2/alerts?active=true&silenced=false&inhibited=false"
        )
        am_up = code == 200
        alerts = sorted(
            f"{a['labels'].get('alertname')} ({a['labels'].get('severity', '-')})" for a in doc
        )
    return Monitoring(prom, am, prom_up, am_up, len(up), tuple(sorted(down)), tuple(alerts))


async def collect(topo: Topology, state: StateDir | None = None) -> ClusterStatus:
    """The whole system as it is now; unreachable parts are described, never raised. `state`:
    where the credentials are (default: the default state folder)."""
    async with http_client.session(topo, state) as session:
        etcd = etcd_auth.operator_gateway(session, topo)
        node_list, pg, etcd_view, redis_view, contingency, entry = await asyncio.gather(
            nodes(session, topo),
            _postgres(session, topo, etcd, http_client.state_for(topo, state)),
            _etcd(etcd),
            redis_status(topo, state),
            _contingency(etcd),
            _entry(session, topo),
        )
        monitoring = await monitoring_status(session, topo) if topo.monitored else None
    return ClusterStatus(
        api=topo.entry_url(),
        entry=entry,
        nodes=node_list,
        postgres=pg,
        etcd=etcd_view,
        redis=redis_view,
        contingency=contingency,
        monitoring=monitoring,
        phone=topo.phone_url(),
        ca=str(http_client.state_for(topo, state).ca_bundle),
    )


async def wait_healthy(
    topo: Topology,
    timeout: float = 120.0,
    *,
    interval_s: float = 1.0,
    state: StateDir | None = None,
) -> ClusterStatus:
    """The status once healthy, or the last one seen when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    view = await collect(topo, state)
    while not view.is_healthy and time.monotonic() < deadline:
        await asyncio.sleep(interval_s)
        view = await collect(topo, state)
    return view


def render_table(view: ClusterStatus) -> str:
    lines = [f"API entry: {view.api}  (routes to active node: {view.entry.routes})"]
    if view.entry.floating is not None:
        lines.append(f"Floating address: {view.entry.floating.describe()}")
    lines.append("")
    lines.append(f"{'NODE':<8} {'SITE':<5} {'ROLE':<8} {'READY':<6} URL")
    for n in view.nodes:
        role = n.role or "down"
        lines.append(f"{n.name:<8} {n.site:<5} {role:<8} {n.ready!s:<6} {n.url}")
    pg = view.postgres
    lines += ["", f"PostgreSQL leader: {pg.leader}" + ("  (PAUSED)" if pg.paused else "")]
    width = max(8, *(len(m.name) for m in pg.members))  # pg-B-replica (#17 item 5)
    lines.append(f"{'MEMBER':<{width}} {'ROLE':<13} {'STATE':<12} {'LAG(B)':<8} TL")
    for m in pg.members:
        lag = "-" if m.lag_bytes is None else str(m.lag_bytes)
        role, tl = m.role or "-", m.timeline or "-"
        lines.append(f"{m.name:<{width}} {role:<13} {m.state:<12} {lag:<8} {tl}")
    e = view.etcd
    healthy = sum(1 for m in e.members if m.healthy)
    lines += ["", f"etcd: {healthy}/{len(e.members)} healthy, leader {e.leader}"]
    r = view.redis
    lines.append(f"Redis: primary {r.primary}, replicas {', '.join(r.replicas) or 'none'}")
    lines.append(f"Contingency mode: {view.contingency.mode}")
    mon = view.monitoring
    if mon is not None:
        targets = f"{mon.targets_up} targets up" + (
            f", down: {', '.join(mon.targets_down)}" if mon.targets_down else ""
        )
        lines.append(
            f"Prometheus: {mon.prometheus} ({'up' if mon.prometheus_up else 'DOWN'}, {targets})"
        )
        lines.append(
            f"Alertmanager: {mon.alertmanager} ({'up' if mon.alertmanager_up else 'DOWN'}, "
            f"alerts: {', '.join(mon.alerts) or 'none'})"
        )
    lines.append("")
    problems = view.problems()
    if not problems:
        lines.append("HEALTHY")
    else:
        lines.append("NOT HEALTHY:")
        lines += [f"  - {p}" for p in problems]
    return "\n".join(lines)
