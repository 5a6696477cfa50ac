"""The SRE's pages (#15 item 6) in process, through the real app factory: both sites with their
roles and the leader, etcd, Redis and the failover controller's decisions on `/sre` (the other
site's node a real HTTP server answering its `/health`), every source that does not answer
shown as unknown, the drill reports' timelines drawn as SVG on `/sre/drills`, the last hour of
writes fed by the write path, only for SRE accounts; and the web channel's own counter,
rocars_web_requests_total{page,status}."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from handler_fakes import Fakes, FixedRole, operational_error
from problem_checks import AiohttpClient, Client
from unit_fakes import MemoryEtcd
from web_signin import sign_in

from deploy.drills.drill import DrillResult
from deploy.drills.publish import publish_to
from failover.role_rule import RoleFacts
from kernel.cluster import Member
from kernel.errors import PatroniUnavailable
from monitoring.drill_results import build_timeline
from node import appkeys
from node.app import create_app
from replication.etcd_gateway import MemberStatus
from replication.patroni_rest import PatroniCluster

AiohttpServer = Callable[[web.Application], Awaitable[TestServer]]
SVG = re.compile(r"<svg .*?</svg>", re.DOTALL)
NS = "{http://www.w3.org/2000/svg}"


class Tags(HTMLParser):
    """Every start tag of a page with its attributes, in order."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))

    def rows(self, attr: str) -> dict[str, dict[str, str | None]]:
        """<tr> elements by the value of their `attr` attribute."""
        return {str(a[attr]): a for t, a in self.found if t == "tr" and attr in a}


class SreEtcd(MemoryEtcd):
    """The node's etcd: keys in memory, and three members' status as the test sets it."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses = [
            MemberStatus("https://etcd-a:2379", True, "1", "3"),
            MemberStatus("https://etcd-b:2379", True, "2", "3"),
            MemberStatus("https://etcd-c:2379", True, "3", "3"),
        ]

    async def member_statuses(self) -> list[MemberStatus]:
        self._check()
        return self.statuses

    async def member_names(self) -> dict[str, str]:
        self._check()
        return {"1": "etcd-A", "2": "etcd-B", "3": "etcd-C"}


class SrePatroni:
    """The local Patroni's `GET /cluster`; `down` makes it not answer."""

    def __init__(self) -> None:
        self.down = False
        self.hang = False
        self.members = (
            Member("pg-A", "leader", "running", 0, 4),
            Member("pg-B", "sync_standby", "streaming", 1234, 4),
        )

    async def cluster(self, base_url: str) -> PatroniCluster:
        if self.down:
            raise PatroniUnavailable(f"{base_url}: the test's Patroni is down")
        if self.hang:
            await asyncio.Event().wait()  # a Patroni that accepted the call and never answers
        return PatroniCluster(self.members, paused=False)


def peer_health(role: str, reason: str, key: str | None = None) -> web.Application:
    """Site B's node as far as `/health` goes; with `key`, it answers only a caller that
    presents it (node.control_access), else 403 problem+json."""

    async def health(request: web.Request) -> web.Response:
        if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
            return web.json_response(
                {"status": 403, "title": "Forbidden", "detail": "/health is monitoring-only"},
                status=403,
                content_type="application/problem+json",
            )
        return web.json_response(
            {
                "status": "pass",
                "site": "B",
                "role": role,
                "ready": role == "active",
                "reason": reason,
                "redis": {"primary": "127.0.0.1:6379", "ok": True},
                "contingency": {"mode": "normal"},
                "failover_controller": {
                    "action": "none",
                    "reason": "site B sees site A healthy: nothing to do.",
                },
            },
            content_type="application/health+json",
        )

    app = web.Application()
    app.router.add_get("/health", health)
    return app


LEADER_A = RoleFacts("pg-A", "primary", "running", "pg-A", True)


@pytest.fixture
def etcd() -> SreEtcd:
    return SreEtcd()


@pytest.fixture
def patroni() -> SrePatroni:
    return SrePatroni()


@pytest.fixture
async def sre_client(
    fakes: Fakes,
    etcd: SreEtcd,
    patroni: SrePatroni,
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
) -> Client:
    """A node of site A (active, leader) whose peer B is a live HTTP server (standby)."""
    peer = await aiohttp_server(peer_health("standby", "the leader key is held by pg-A"))
    fakes.role = FixedRole("active", LEADER_A)
    deps = dataclasses.replace(fakes.deps(), etcd=etcd, patroni=patroni)  # type: ignore[arg-type]
    peers = {"A": "http://127.0.0.1:1", "B": str(peer.make_url("")).rstrip("/")}
    return await aiohttp_client(create_app(fakes.config(peers=peers), deps))


async def page(client: Client, path: str) -> tuple[int, str]:
    r = await client.get(path)
    return r.status, await r.text()


async def test_sre_page_shows_both_sites_their_roles_and_the_leader(
    sre_client: Client, fakes: Fakes
) -> None:
    """#15 item 6: site A is active and holds the leader key (the role loop's quorum read), site
    B is standby (its node's own /health, fetched over HTTP); each member's Patroni role, the
    standby's lag, both controllers' last decisions, etcd's members with the raft leader, and
    Redis's primary. An SRE lands here after signing in."""
    assert await sign_in(sre_client, fakes, "sre") == "/sre"
    status, text = await page(sre_client, "/sre")
    assert status == 200, text
    rows = Tags(text).rows("data-site")
    assert rows["A"]["data-role"] == "active"
    assert rows["A"]["data-leader"] == "yes"
    assert rows["A"]["data-member-role"] == "leader"
    assert rows["B"]["data-role"] == "standby"
    assert rows["B"]["data-leader"] == "no"
    assert rows["B"]["data-member-role"] == "sync_standby"
    assert 'data-leader="pg-A"' in text
    assert "1234 B" in text  # pg-B's lag from Patroni's /cluster
    assert "the leader key is held by pg-A" in text  # B's own reason
    assert "site B sees site A healthy" in text  # B's controller
    assert "the failover controller does not run on this node" in text  # A's (no loops here)
    etcd_rows = Tags(text).rows("data-healthy")
    assert set(etcd_rows) == {"yes"}
    assert "etcd-C" in text
    assert "raft leader" in text
    assert "127.0.0.1:6379" in text  # the node's Redis view
    assert "Answered by node A" in text


async def test_the_page_follows_a_role_change(
    sre_client: Client, fakes: Fakes, aiohttp_server: AiohttpServer
) -> None:
    """#15 item 6: when the leader key moves to pg-B and this node turns standby, the next
    page shows A standby and not leading, and names pg-B the leader."""
    await sign_in(sre_client, fakes, "sre")
    fakes.role.facts = RoleFacts("pg-A", "replica", "streaming", "pg-B", True)
    fakes.role.set("standby")
    _, text = await page(sre_client, "/sre")
    rows = Tags(text).rows("data-site")
    assert rows["A"]["data-role"] == "standby"
    assert rows["A"]["data-leader"] == "no"
    assert rows["B"]["data-leader"] == "yes"
    assert 'data-leader="pg-B"' in text


async def test_sources_that_do_not_answer_are_shown_as_unknown(
    sre_client: Client, fakes: Fakes, etcd: SreEtcd, patroni: SrePatroni
) -> None:
    """#15 item 6: with etcd, Patroni and the other node all down the page still answers
    (200, within the sources' deadlines), saying which did not answer, and the leader is
    unknown when etcd gave no quorum answer."""
    await sign_in(sre_client, fakes, "sre")
    etcd.down = True
    patroni.down = True
    # The last leader read was not a quorum answer: not shown as the leader.
    fakes.role.facts = RoleFacts("pg-A", None, None, "pg-A", False)
    sre_client.app[appkeys.CONFIG].peers["B"] = "http://127.0.0.1:1"
    started = time.monotonic()
    status, text = await page(sre_client, "/sre")
    assert time.monotonic() - started < 5
    assert status == 200, text
    rows = Tags(text).rows("data-site")
    assert rows["B"]["data-role"] == "down"
    assert rows["A"]["data-member-role"] == "unknown"
    assert "Not answering" in text
    assert "etcd did not answer" in text
    assert "Patroni did not answer" in text
    assert "Leader unknown" in text
    assert {r["data-leader"] for r in rows.values()} == {"no"}


async def test_a_source_that_never_answers_costs_its_deadline_only(
    sre_client: Client, fakes: Fakes, patroni: SrePatroni
) -> None:
    """#15 item 6: a Patroni that accepts the call and never answers does not hold the page:
    it answers after the source's deadline, saying Patroni did not answer."""
    await sign_in(sre_client, fakes, "sre")
    patroni.hang = True
    started = time.monotonic()
    async with asyncio.timeout(10):
        status, text = await page(sre_client, "/sre")
    assert status == 200
    assert time.monotonic() - started < 5
    assert "Patroni did not answer" in text
    assert "TimeoutError" in text


@pytest.mark.parametrize("with_key", [True, False])
async def test_the_other_node_is_asked_with_the_monitoring_key(
    fakes: Fakes,
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    tmp_path: Path,
    with_key: bool,
) -> None:
    """#15 item 6 with #12 item 3: the other node serves its /health only to the monitoring
    networks or with the monitoring key; the page presents the node's key, and a refusal is
    shown as the node not answering (HTTP 403), never read as a health document."""
    peer = await aiohttp_server(peer_health("standby", "held by pg-A", key="s3cret-key"))
    key_file = tmp_path / "monitoring.key"
    key_file.write_text("s3cret-key\n")
    peers = {"A": "http://127.0.0.1:1", "B": str(peer.make_url("")).rstrip("/")}
    config = fakes.config(peers=peers, monitoring_key_file=key_file if with_key else None)
    fakes.role = FixedRole("active", LEADER_A)
    client = await aiohttp_client(create_app(config, fakes.deps()))
    await sign_in(client, fakes, "sre")
    _, text = await page(client, "/sre")
    row = Tags(text).rows("data-site")["B"]
    if with_key:
        assert row["data-role"] == "standby"
    else:
        assert row["data-role"] == "down"
        assert "HTTP 403" in text


async def test_only_sre_accounts_see_the_pages(sre_client: Client, fakes: Fakes) -> None:
    """#15 item 6: without a session the pages send the visitor to sign in; a trader's
    session gets 403, as the API answers a route of another kind."""
    for path in ("/sre", "/sre/drills"):
        r = await sre_client.get(path, allow_redirects=False)
        assert r.status == 303
        assert r.headers["Location"].startswith("/signin?next=")
    await sign_in(sre_client, fakes, "trader")
    for path in ("/sre", "/sre/drills"):
        status, text = await page(sre_client, path)
        assert status == 403
        assert "data-site" not in text


async def test_drill_reports_draw_the_published_timeline(
    sre_client: Client, fakes: Fakes, etcd: SreEtcd
) -> None:
    """#15 item 6: a drill published with its timeline (deploy.drills.publish) is drawn as an
    SVG chart: a bar per second with acknowledged writes, the write gap shaded, the fault
    marked, the events as dots; a record published without a timeline (before it existed)
    is listed without a chart. The overview lists both with their verdicts."""
    result = DrillResult("switchover", "A->B", "2030-01-07T08:00:00", rto_s=2.5, budget_s=10)
    acked = [0.5, 1.5, 2.5, 5.6, 6.5]
    result.timeline = build_timeline(
        acked,
        [(2.9, 5.6, True)],
        end_s=7.0,
        fault_s=3.0,
        gap=(3.1, 5.6),
        events=[(3.0, "fault injected: switchover"), (4.2, "leader key: pg-A -> pg-B")],
    ).model_dump()
    await publish_to(etcd, result, 1_900_000_000.0)
    old = DrillResult("kill-node", "B->A", "2030-01-07T09:00:00", rto_s=None, rpo=1)
    await publish_to(etcd, old, 1_900_000_100.0)
    await sign_in(sre_client, fakes, "sre")
    status, text = await page(sre_client, "/sre/drills")
    assert status == 200, text
    charts = SVG.findall(text)
    assert len(charts) == 1
    svg = ET.fromstring(charts[0])
    assert svg.get("role") == "img"
    assert "drill-chart" in (svg.get("class") or "")
    rects = svg.findall(f"{NS}rect")
    assert len([r for r in rects if r.get("class") == "bar-ok"]) == 5  # seconds 0, 1, 2, 5, 6
    assert len([r for r in rects if r.get("class") == "gap"]) == 1
    assert len([r for r in rects if r.get("class") == "bar-retrying"]) == 4  # seconds 2-5
    assert len(svg.findall(f"{NS}line[@class='fault']")) == 1
    assert len(svg.findall(f"{NS}circle[@class='event']")) == 2
    assert "leader key: pg-A -&gt; pg-B" in text  # the events' table, escaped
    assert "No timeline was published with this drill." in text  # kill-node
    _, overview = await page(sre_client, "/sre")
    drills = Tags(overview).rows("data-scenario")
    assert set(drills) == {"switchover", "kill-node"}
    assert drills["kill-node"].get("class") == "bad"


async def test_the_write_plot_follows_the_write_path(sre_client: Client, fakes: Fakes) -> None:
    """#15 item 6: writes answered through the API's write path land in the node's last hour
    (a 503 with the database down as failed, a 422 as refused, not failed), and the plot on
    /sre shows the failed bucket as a red bar."""
    fakes.pool.error = operational_error  # type: ignore[assignment]
    headers = {**fakes.auth("trader"), "Content-Type": "application/json"}
    body = {
        "direction": "import",
        "lbcp": "LMC",
        "package_count": 1,
        "package_description": "cartons",
        "article_description": "shirts",
        "consignor_name": "A",
        "consignor_address": "B",
        "consignee_name": "C",
        "consignee_address": "D",
        "expected_at": "2030-01-07T10:00:00+00:00",
    }
    r = await sre_client.post("/v1/consignments", json=body, headers=headers)
    assert r.status == 503, await r.text()
    r = await sre_client.post("/v1/consignments", json={}, headers=headers)
    assert r.status == 422
    now = sre_client.app[appkeys.METRICS].write_history.buckets()[-1]
    assert (now.ok, now.refused, now.failed) == (0, 1, 1)
    await sign_in(sre_client, fakes, "sre")
    _, text = await page(sre_client, "/sre")
    svg = ET.fromstring(next(s for s in SVG.findall(text) if "write-history-chart" in s))
    failed = [r for r in svg.findall(f"{NS}rect") if r.get("class") == "bar-failed"]
    assert len(failed) == 1


async def test_the_pages_speak_traditional_chinese(sre_client: Client, fakes: Fakes) -> None:
    """#15: the SRE pages, chart texts included, in Traditional Chinese."""
    await sign_in(sre_client, fakes, "sre")
    sre_client.session.cookie_jar.update_cookies({"rocars_lang": "zh-Hant"})
    _, text = await page(sre_client, "/sre")
    assert '<html lang="zh-Hant">' in text
    for word in ("主用", "備用", "領導節點", "寫入可用率"):
        assert word in text


def web_sample(client: Client, page_: str, status: str) -> float:
    value = client.app[appkeys.METRICS].registry.get_sample_value(
        "rocars_web_requests_total", {"page": page_, "status": status}
    )
    return 0.0 if value is None else value


async def test_web_pages_are_counted_by_page_and_status(client: Client, fakes: Fakes) -> None:
    """#15 item 6: every page answered counts in rocars_web_requests_total by its route
    template and status (a redirect to sign in, a refusal, a page with a CCRN in its path as
    its template); every page's 200 series exists from the start at 0; static files and API
    routes never count; /metrics exports it."""
    assert (
        client.app[appkeys.METRICS].registry.get_sample_value(
            "rocars_web_requests_total", {"page": "/sre", "status": "200"}
        )
        == 0
    )
    assert (await client.get("/status")).status == 200
    assert (await client.get("/trader", allow_redirects=False)).status == 303
    await sign_in(client, fakes, "trucker")
    assert (await client.get("/trader/c/ABCDEFGH")).status == 403
    assert (await client.get("/static/app.css")).status == 200
    assert (await client.get("/health/live")).status == 200
    assert web_sample(client, "/status", "200") == 1
    assert web_sample(client, "/trader", "303") == 1
    assert web_sample(client, "/trader/c/{ccrn}", "403") == 1
    assert web_sample(client, "/", "200") == 1  # the sign-in form
    assert web_sample(client, "/signin", "303") == 1  # signed in
    registry = client.app[appkeys.METRICS].registry
    samples = [
        s
        for metric in registry.collect()
        if metric.name == "rocars_web_requests"
        for s in metric.samples
        if s.name.endswith("_total")
    ]
    counted = {s.labels["page"] for s in samples if s.value}
    assert counted == {"/", "/signin", "/status", "/trader", "/trader/c/{ccrn}"}
    pages = {s.labels["page"] for s in samples}
    assert {"/sre", "/sre/drills", "/status", "/trader/new"} <= pages
    assert not [p for p in pages if p.startswith(("/v1", "/static", "/health", "/metrics"))]
    metrics = await client.get("/metrics")
    assert 'rocars_web_requests_total{page="/status",status="200"} 1.0' in await metrics.text()
