"""The SRE's pages (#15 item 6), for accounts of kind `sre`: `/sre`, the cluster as this node
sees it, and `/sre/drills`, the last drill of each scenario with its timeline drawn.

What `/sre` shows and where it comes from (each source is asked at once, with a deadline of
its own, and one that does not answer is shown as unknown, never as an error page: this page
is for when things break):
- each site's API node: its own `/health` document (this node's built in process, the other's
  fetched as `GET /health` from `NodeConfig.peers`, with the monitoring key when the node has
  one): role, readiness, the role rule's reason, the failover controller's last decision;
- the leader: the role loop's quorum read of the leader key (never one member's `/cluster`,
  which may be stale, DESIGN.md section 6); each member's Patroni role, state and lag in
  bytes: the local Patroni's `GET /cluster`; the lag in seconds: what this node's observer
  last sampled for /metrics (only the active node samples it);
- etcd: each member's own status (healthy, the raft leader); Redis: this node's client's view
  (the Sentinels' primary, the last error), as in `/health`;
- writes over the last hour: this node's own ring (monitoring.write_history), so the plot
  draws with Prometheus down or not deployed; it covers the writes this node answered.

Nothing here reads PostgreSQL: the page works with the database down (sign-in then uses the
key cache, like the API).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

import aiohttp
from aiohttp import web

from kernel.cluster import ControllerDecision, EtcdMember, Member, Node
from kernel.domain.lbcp import HK_TZ
from kernel.names import DRILL_RESULTS_KEY, member_name
from monitoring.drill_results import DrillRecord, read_results
from monitoring.health import health_document
from node import appkeys
from node.api import common
from node.api.health import contingency_section, inputs, redis_section
from node.web import charts
from node.web.render import Ctx, page

log = logging.getLogger("rocars.web")
T = TypeVar("T")
# Each source's deadline: the page answers within about this long whatever is down.
SOURCE_TIMEOUT_S: Final = 1.5
# etcd's members are asked one after the other (EtcdGateway.member_statuses, 1 s each at
# most): a member cut off must cost its own second, not hide the two that answer.
ETCD_TIMEOUT_S: Final = 3.5
REFRESH_S: Final = 10
_PEER_TIMEOUT = aiohttp.ClientTimeout(total=SOURCE_TIMEOUT_S)


@dataclass(frozen=True)
class SiteRow:
    """One site on the page: its API node and its PostgreSQL member."""

    site: str
    node: Node
    member: Member | None
    lag_seconds: float | None
    leader: bool  # its member holds the leader key
    here: bool  # the node answering this page


@dataclass(frozen=True)
class Source(Generic[T]):
    """A source's answer, or why there is none."""

    value: T | None
    error: str | None = None


async def _ask(what: str, call: Awaitable[T], timeout_s: float = SOURCE_TIMEOUT_S) -> Source[T]:
    try:
        async with asyncio.timeout(timeout_s):
            return Source(await call)
    except Exception as exc:  # any failure of one source is shown, never raised
        log.debug("SRE page: %s did not answer: %r", what, exc)
        return Source(None, f"{type(exc).__name__}: {exc}"[:200])


def node_of(site: str, url: str, doc: dict[str, Any] | None, error: str | None) -> Node:
    """A node as its `/health` document describes it (deploy.status reads it the same way)."""
    if doc is None:
        return Node(site=site, url=url, role=None, ready=False, error=error or "no answer")
    redis_view = doc.get("redis") or {}
    controller = doc.get("failover_controller") or {}
    return Node(
        site=site,
        url=url,
        role=doc.get("role") if isinstance(doc.get("role"), str) else None,
        ready=doc.get("ready") is True,
        reason=str(doc["reason"]) if doc.get("reason") is not None else None,
        contingency_mode=(doc.get("contingency") or {}).get("mode"),
        redis_primary=redis_view.get("primary") if redis_view.get("ok") else None,
        controller=(
            ControllerDecision(str(controller.get("action")), str(controller.get("reason")))
            if isinstance(controller, dict) and controller
            else None
        ),
    )


def _monitoring_key(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


async def _peer_health(app: web.Application, url: str) -> dict[str, Any]:
    key = _monitoring_key(app[appkeys.CONFIG].monitoring_key_file)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with app[appkeys.HTTP].get(
        f"{url.rstrip('/')}/health", headers=headers, timeout=_PEER_TIMEOUT
    ) as r:
        doc = await r.json(content_type=None)
        if r.status == 403 or not isinstance(doc, dict) or "role" not in doc:
            raise ValueError(f"HTTP {r.status}: not a health document")
        return doc


def _lag_seconds(app: web.Application) -> dict[str, float]:
    """The replication lag in seconds per standby member, as the observer last sampled it
    (rocars_replication_lag_seconds; only on the active node)."""
    out: dict[str, float] = {}
    for family in app[appkeys.METRICS].replication.families:
        if family.name == "rocars_replication_lag_seconds":
            for sample in family.samples:
                out[sample.labels["standby"]] = float(sample.value)
    return out


async def _etcd_members(app: web.Application) -> tuple[tuple[EtcdMember, ...], str | None]:
    etcd = app[appkeys.ETCD]
    statuses = await etcd.member_statuses()
    names: dict[str, str] = {}
    if any(s.healthy for s in statuses):
        try:
            names = await etcd.member_names()
        except Exception as exc:  # names are a nicety: show the URLs without them
            log.debug("etcd member names not read: %r", exc)
    leader_ids = {s.leader_id for s in statuses if s.healthy}
    leader_id = next(iter(leader_ids)) if len(leader_ids) == 1 else None
    members = tuple(
        EtcdMember(names.get(s.member_id or ""), s.url, s.healthy, s.error) for s in statuses
    )
    return members, (names.get(leader_id, leader_id) if leader_id else None)


async def _drills(app: web.Application) -> dict[str, DrillRecord]:
    kv = await app[appkeys.ETCD].get(DRILL_RESULTS_KEY)
    return read_results(kv.value if kv is not None else None)


async def _sites(app: web.Application) -> tuple[list[SiteRow], Source[Any]]:
    cfg = app[appkeys.CONFIG]
    facts = app[appkeys.ROLE].facts
    leader = facts.leader_key if facts is not None and facts.leader_known else None
    own = health_document(inputs(app))
    sites = sorted({*cfg.peers, cfg.site})
    others = [s for s in sites if s != cfg.site]
    cluster, *peer_docs = await asyncio.gather(
        _ask("Patroni /cluster", app[appkeys.PATRONI].cluster(cfg.patroni_url)),
        *(_ask(f"node {s}", _peer_health(app, cfg.peers[s])) for s in others),
    )
    docs: dict[str, Source[Any]] = {cfg.site: Source(own)}
    docs.update(zip(others, peer_docs, strict=True))
    members = {m.name: m for m in cluster.value.members} if cluster.value is not None else {}
    lags = _lag_seconds(app)
    rows = []
    for s in sites:
        name = member_name(s)
        doc = docs[s]
        rows.append(
            SiteRow(
                site=s,
                node=node_of(s, cfg.peers.get(s, ""), doc.value, doc.error),
                member=members.get(name),
                lag_seconds=lags.get(name),
                leader=leader == name,
                here=s == cfg.site,
            )
        )
    return rows, cluster


def _hk_clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).astimezone(HK_TZ).strftime("%H:%M")


@page("sre")
async def overview(ctx: Ctx) -> web.StreamResponse:
    app = ctx.request.app
    cfg = app[appkeys.CONFIG]
    (rows, cluster), etcd, drills = await asyncio.gather(
        _sites(app),
        _ask("etcd status", _etcd_members(app), ETCD_TIMEOUT_S),
        _ask("drill results", _drills(app)),
    )
    facts = app[appkeys.ROLE].facts
    buckets = app[appkeys.METRICS].write_history.buckets()
    chart = charts.write_history_chart(
        buckets,
        ctx._,
        title=ctx._("Writes answered by this node over the last hour"),
        time_label=_hk_clock,
        ident="writes",
    )
    return ctx.render(
        "sre_overview.html",
        {
            "rows": rows,
            "leader": facts.leader_key if facts is not None and facts.leader_known else None,
            "leader_known": facts is not None and facts.leader_known,
            "paused": facts.paused if facts is not None else False,
            "cluster_error": cluster.error,
            "etcd": etcd.value[0] if etcd.value is not None else None,
            "etcd_leader": etcd.value[1] if etcd.value is not None else None,
            "etcd_error": etcd.error,
            "redis": redis_section(app),
            "contingency": contingency_section(app),
            "drills": drills.value or {},
            "drills_error": drills.error,
            "chart": chart,
            "site": cfg.site,
            "updated": common.now(ctx.request),
            "refresh_s": REFRESH_S,
        },
    )


@page("sre")
async def drill_reports(ctx: Ctx) -> web.StreamResponse:
    drills = await _ask("drill results", _drills(ctx.request.app))
    reports = []
    drill = ctx._("Drill")
    for name, record in sorted((drills.value or {}).items()):
        chart = None
        if record.timeline is not None:
            chart = charts.drill_chart(
                record.timeline,
                ctx._,
                title=f"{drill} {name} {record.direction}",
                ident=f"drill-{name}",
            )
        finished = datetime.fromtimestamp(record.finished_at, UTC)
        reports.append({"name": name, "record": record, "finished": finished, "chart": chart})
    return ctx.render("sre_drills.html", {"reports": reports, "drills_error": drills.error})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/sre", overview)
    app.router.add_get("/sre/drills", drill_reports)
