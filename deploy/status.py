"""`rocars cluster status`: one picture of the running system, as JSON and as a table.

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
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from deploy.configgen import PATRONI_NAMESPACE, REDIS_MASTER_NAME, member_name
from deploy.topology import Topology
from kernel.errors import ComponentUnavailable, RocarsError
from replication.etcd_gateway import EtcdGateway
from replication.patroni_rest import PatroniRest

TIMEOUT = aiohttp.ClientTimeout(total=1.5)
CONTINGENCY_KEY = "/rocars/contingency/state"


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


async def _nodes(session: aiohttp.ClientSession, topo: Topology) -> list[dict[str, Any]]:
    out = []
    for name, doc in (await node_health(session, topo)).items():
        item: dict[str, Any] = {"name": f"node-{name}", "site": name, "url": topo.node_url(name)}
        if isinstance(doc, Exception):
            item.update(role=None, ready=False, up=False, error=repr(doc))
        else:
            item.update(role=doc.get("role"), ready=bool(doc.get("ready")), up=True)
            item["reason"] = doc.get("reason")
        out.append(item)
    return out


async def nodes_redis_primaries(topo: Topology) -> dict[str, str | None]:
    """Each API node's Redis primary (host:port) from its /health, by site: None when the node
    does not answer or its last Redis operation failed."""
    async with aiohttp.ClientSession() as session:
        docs = await node_health(session, topo)
    out: dict[str, str | None] = {}
    for site, doc in docs.items():
        redis_view = {} if isinstance(doc, Exception) else doc.get("redis") or {}
        out[site] = redis_view.get("primary") if redis_view.get("ok") else None
    return out


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
    session: aiohttp.ClientSession, topo: Topology, etcd: EtcdGateway
) -> dict[str, Any]:
    rest = PatroniRest(session)
    leader: str | None = None
    try:
        kv = await etcd.get(f"{PATRONI_NAMESPACE}{topo.name}/leader")
        leader = kv.value.decode() if kv else None
    except ComponentUnavailable:
        pass
    sources = [s for s in topo.data_sites if member_name(s) == leader] + [
        s for s in topo.data_sites if member_name(s) != leader
    ]
    members: list[dict[str, Any]] = []
    paused = False
    for site in sources:
        try:
            view = await rest.cluster(topo.patroni_url(site))
        except ComponentUnavailable:
            continue
        paused = view.paused
        members = [
            {
                "name": m.name,
                "site": m.name.removeprefix("pg-"),
                "role": m.role,
                "state": m.state,
                "lag_bytes": m.lag,
                "timeline": m.timeline,
            }
            for m in view.members
        ]
        break
    known = {m["name"] for m in members}
    for site in topo.data_sites:
        if member_name(site) not in known:
            members.append(
                {
                    "name": member_name(site),
                    "site": site,
                    "role": None,
                    "state": "unreachable",
                    "lag_bytes": None,
                    "timeline": None,
                }
            )
    return {"leader": leader, "paused": paused, "members": members}


async def _etcd(etcd: EtcdGateway) -> dict[str, Any]:
    statuses = await etcd.member_statuses()
    names: dict[str, str] = {}
    with contextlib.suppress(ComponentUnavailable):
        names = await etcd.member_names()
    leader_ids = {s.leader_id for s in statuses if s.healthy}
    leader_id = next(iter(leader_ids)) if len(leader_ids) == 1 else None
    leader = names.get(leader_id) if leader_id else None
    members = [
        {
            "name": names.get(s.member_id or "", None),
            "url": s.url,
            "healthy": s.healthy,
            **({"error": s.error} if s.error else {}),
        }
        for s in statuses
    ]
    return {
        "members": members,
        "healthy": all(s.healthy for s in statuses),
        "leader": leader,
    }


async def redis_status(topo: Topology) -> dict[str, Any]:
    primary: str | None = None
    replicas: list[str] = []
    for site in topo.sites.values():
        r = aioredis.Redis(
            host=site.host, port=site.sentinel.port, socket_timeout=1, socket_connect_timeout=1
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
        r = aioredis.Redis(host=host, port=int(port), socket_timeout=1, socket_connect_timeout=1)
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
    return {"primary": primary, "replicas": replicas}


async def _contingency(etcd: EtcdGateway) -> dict[str, Any]:
    try:
        kv = await etcd.get(CONTINGENCY_KEY)
    except ComponentUnavailable:
        return {"mode": "unknown"}
    if kv is None:
        return {"mode": "normal"}
    try:
        doc = json.loads(kv.value)
        return {"mode": str(doc.get("mode", "normal")), **doc}
    except ValueError:
        return {"mode": "unknown"}


async def _entry(session: aiohttp.ClientSession, topo: Topology) -> dict[str, Any]:
    try:
        status, doc = await _json(session, f"{topo.entry_url()}/health/ready")
        return {"url": topo.entry_url(), "routes": status == 200, "role": doc.get("role")}
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return {"url": topo.entry_url(), "routes": False, "error": repr(exc)}


def problems(doc: dict[str, Any]) -> list[str]:
    """Why the system is not healthy; empty when it is."""
    out = []
    if not doc["etcd"]["healthy"]:
        bad = [m["url"] for m in doc["etcd"]["members"] if not m["healthy"]]
        out.append(f"etcd members down: {', '.join(bad)}")
    pg = doc["postgres"]
    if not pg["leader"]:
        out.append("no PostgreSQL leader")
    if not any(m["role"] == "sync_standby" and m["state"] == "streaming" for m in pg["members"]):
        out.append("no streaming synchronous standby")
    ready = [n for n in doc["nodes"] if n["ready"]]
    if len(ready) != 1:
        out.append(f"{len(ready)} API nodes ready (want exactly 1)")
    out.extend(f"{n['name']} is down" for n in doc["nodes"] if not n.get("up"))
    if not doc["entry"]["routes"]:
        out.append("HAProxy does not route to an active node")
    if not doc["redis"]["primary"]:
        out.append("no Redis primary")
    elif not doc["redis"]["replicas"]:
        out.append("Redis primary has no online replica")
    return out


async def collect(topo: Topology) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        etcd = EtcdGateway(session, topo.etcd_urls())
        nodes, pg, etcd_doc, redis_doc, cont, entry = await asyncio.gather(
            _nodes(session, topo),
            _postgres(session, topo, etcd),
            _etcd(etcd),
            redis_status(topo),
            _contingency(etcd),
            _entry(session, topo),
        )
    doc: dict[str, Any] = {
        "api": topo.entry_url(),
        "entry": entry,
        "nodes": nodes,
        "postgres": pg,
        "etcd": etcd_doc,
        "redis": redis_doc,
        "contingency": cont,
    }
    doc["problems"] = problems(doc)
    doc["healthy"] = not doc["problems"]
    return doc


def render_table(doc: dict[str, Any]) -> str:
    lines = [f"API entry: {doc['api']}  (routes to active node: {doc['entry']['routes']})", ""]
    lines.append(f"{'NODE':<8} {'SITE':<5} {'ROLE':<8} {'READY':<6} URL")
    for n in doc["nodes"]:
        role = n["role"] or "down"
        lines.append(f"{n['name']:<8} {n['site']:<5} {role:<8} {n['ready']!s:<6} {n['url']}")
    pg = doc["postgres"]
    lines += ["", f"PostgreSQL leader: {pg['leader']}" + ("  (PAUSED)" if pg["paused"] else "")]
    lines.append(f"{'MEMBER':<8} {'ROLE':<13} {'STATE':<12} {'LAG(B)':<8} TL")
    for m in pg["members"]:
        lines.append(
            f"{m['name']:<8} {m['role'] or '-':<13} {m['state']:<12} "
            f"{m['lag_bytes'] if m['lag_bytes'] is not None else '-'!s:<8} {m['timeline'] or '-'}"
        )
    e = doc["etcd"]
    healthy = sum(1 for m in e["members"] if m["healthy"])
    lines += ["", f"etcd: {healthy}/{len(e['members'])} healthy, leader {e['leader']}"]
    r = doc["redis"]
    lines.append(f"Redis: primary {r['primary']}, replicas {', '.join(r['replicas']) or 'none'}")
    lines.append(f"Contingency mode: {doc['contingency']['mode']}")
    lines.append("")
    if doc["healthy"]:
        lines.append("HEALTHY")
    else:
        lines.append("NOT HEALTHY:")
        lines += [f"  - {p}" for p in doc["problems"]]
    return "\n".join(lines)
