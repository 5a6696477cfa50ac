"""Every route of the node answers an outage properly on the real stack (issue 9, section 1).

PostgreSQL is killed on both sites (Patroni and the postmaster, SIGKILL), and every route the
app registers (taken from the app's router, so a new route cannot be forgotten) is called on
both nodes with valid auth (the officers' and traders' keys then come from each node's key
cache): each answers 503 problem+json with the retry hints, or its documented answer (health
documents, the public notice, the journal for manual clearances, manual mode switched on with
the audit in the journal); never 500. Then etcd is killed too (all three members) and the
mode-changing routes answer 503. Whatever happens, the `restored` fixture brings the session
cluster back (`rocars cluster up`) and switches manual mode off again.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from apikit import Account, Api, Reply, assert_problem, consignment_body, new_vrn, token

from contingency.keycache import KeyCache
from deploy import processes
from deploy.harness import LocalCluster
from kernel.domain.ccrn import make_ccrn
from node.app import create_app
from node.config import load_node_config
from node.web import is_web_page

pytestmark = pytest.mark.integration

HEALTH_JSON = "application/health+json"
NOT_WRITABLE = "https://rocars.example/problems/not-writable"
CCRN = make_ccrn(1)
MISSING_ID = "999999999"  # a well-formed id no test creates: harmless if a call got through
REG_ID = "0f6a8e1c-3c55-4f7e-9b1e-4a2f0d6c7b11"
Check = Callable[[Reply], None]


# --- what each route answers while PostgreSQL is down (normal mode) ------------------------


def database_outage(r: Reply) -> None:
    """503 problem+json with Retry-After and the failover hint: what a standby answers."""
    doc = assert_problem(r, 503)
    assert r.headers["Retry-After"] == "1"
    assert doc["type"] == NOT_WRITABLE, doc
    assert doc["retry_after_ms"] == 200, doc


def outage_503(r: Reply) -> None:
    """503 problem+json with Retry-After (the mode-changing contingency routes)."""
    assert_problem(r, 503)
    assert r.headers["Retry-After"] == "1"


def alive(r: Reply) -> None:
    assert r.status == 200, r.text
    assert r.content_type == HEALTH_JSON


def not_ready(r: Reply) -> None:
    """No node can be the active one without its database: not ready, as a health document."""
    assert r.status == 503, r.text
    assert r.content_type == HEALTH_JSON


def health_document(r: Reply) -> None:
    assert r.status in (200, 503), r.text
    assert r.content_type == HEALTH_JSON
    assert r.json["contingency"]["mode"] in ("normal", "manual")


def metrics(r: Reply) -> None:
    assert r.status == 200, r.text
    assert "rocars_" in r.text


def openapi(r: Reply) -> None:
    assert r.status == 200, r.text
    assert r.json["openapi"].startswith("3.")


def status_page(r: Reply) -> None:
    """#15 item 5: the public status page is served without PostgreSQL, as HTML."""
    assert r.status == 200, r.text
    assert r.content_type == "text/html"
    assert "<html" in r.text


def public_notice(r: Reply) -> None:
    assert r.status == 200, r.text
    assert r.json["mode"] in ("normal", "manual")


def journalled(r: Reply) -> None:
    """A truck cleared by hand is kept in the node's journal while PostgreSQL is down."""
    assert r.status == 202, r.text
    assert r.json["stored"] == "journal"


def switched_on(r: Reply) -> None:
    """Manual mode goes on without PostgreSQL, audited to the journal, on every node."""
    assert r.status == 200, r.text
    assert r.json["mode"] == "manual"
    assert r.json["audited_to"] == "journal"
    assert r.json["not_applied"] == [], r.json["nodes"]


@dataclass(frozen=True)
class Call:
    kind: str | None  # the account kind whose key is sent; None: no Authorization
    check: Check
    body: Any = None


CLEARANCE = {"lbcp": "LMC", "vrn": "OUT 1", "decision": "release", "documents": ["manifest 1"]}
ROUTES: dict[tuple[str, str], Call] = {
    ("GET", "/health/live"): Call(None, alive),
    ("GET", "/health/ready"): Call(None, not_ready),
    ("GET", "/health"): Call(None, health_document),
    ("GET", "/metrics"): Call(None, metrics),
    ("GET", "/openapi.json"): Call(None, openapi),
    ("POST", "/v1/registrations"): Call(
        None,
        database_outage,
        {
            "kind": "trader",
            "trader_kind": "shipper",
            "name": "Outage Test Trading Ltd",
            "brn": "12345678",
            "contact": {"email": "ops@example.com"},
        },
    ),
    ("GET", "/v1/registrations"): Call("officer", database_outage),
    ("POST", "/v1/registrations/{id}/approve"): Call("officer", database_outage, {}),
    ("POST", "/v1/registrations/{id}/reject"): Call("officer", database_outage, {"reason": "no"}),
    ("POST", "/v1/accounts/{id}/suspend"): Call("officer", database_outage),
    ("POST", "/v1/accounts/{id}/reinstate"): Call("officer", database_outage),
    ("PUT", "/v1/accounts/me/phone-pin"): Call("trucker", database_outage, {"pin": "314159"}),
    ("POST", "/v1/consignments"): Call("trader", database_outage, consignment_body()),
    ("POST", "/v1/consignments:batch"): Call("trader", database_outage, [consignment_body()]),
    ("GET", "/v1/consignments"): Call("trader", database_outage),
    ("GET", "/v1/consignments/{ccrn}"): Call("trader", database_outage),
    ("GET", "/v1/consignments/{ccrn}/history"): Call("trader", database_outage),
    ("PATCH", "/v1/consignments/{ccrn}"): Call("trader", database_outage, {"package_count": 3}),
    ("DELETE", "/v1/consignments/{ccrn}"): Call("trader", database_outage),
    ("DELETE", "/v1/consignments/{ccrn}/bundle"): Call("trader", database_outage),
    ("POST", "/v1/bundles"): Call(
        "trucker", database_outage, {"vrn": new_vrn(), "lbcp": "LMC", "ccrns": [CCRN]}
    ),
    ("GET", "/v1/bundles/{id}"): Call("trucker", database_outage),
    ("DELETE", "/v1/bundles/{id}"): Call("trucker", database_outage),
    ("POST", "/v1/bundles/{id}/inspection"): Call(
        "officer", database_outage, {"result": "cleared"}
    ),
    ("POST", "/v1/lbcp/{code}/arrivals"): Call("officer", database_outage, {"vrn": new_vrn()}),
    ("GET", "/v1/risk-rules"): Call("officer", database_outage),
    ("POST", "/v1/risk-rules"): Call(
        "officer", database_outage, {"kind": "keyword", "value": token()}
    ),
    ("PATCH", "/v1/risk-rules/{id}"): Call("officer", database_outage, {"active": False}),
    ("GET", "/v1/selections"): Call("officer", database_outage),
    ("POST", "/v1/consignments/{ccrn}/selection"): Call(
        "officer", database_outage, {"action": "select", "reason": "outage test"}
    ),
    ("GET", "/v1/itfs/{ccrn}"): Call("officer", database_outage),
    ("POST", "/v1/itfs/{ccrn}/airport-inspections"): Call("officer", database_outage),
    ("GET", "/v1/status"): Call(None, public_notice),
    # The web pages' outage answers are pinned in process (tests/unit/handlers/
    # test_web_pages.py); the public one is checked here, on the real nodes, too.
    ("GET", "/status"): Call(None, status_page),
    ("GET", "/v1/contingency"): Call(None, public_notice),
    # Deactivation reconciles the journal into PostgreSQL first: refused, manual mode stays on.
    ("POST", "/v1/contingency/deactivate"): Call("officer", database_outage, {"reason": "back"}),
    # Manual mode is still off: the journal is manual mode's store, so a clearance the node
    # cannot write is refused with the retry hint (contingency.state.may_journal); once
    # manual mode is on (below) it is journalled.
    ("POST", "/v1/contingency/clearances"): Call("officer", database_outage, CLEARANCE),
    # Called last, on its own: it changes what the other routes answer.
    ("POST", "/v1/contingency/activate"): Call(
        "officer", switched_on, {"reason": "outage test: both database members down"}
    ),
}
ACTIVATE = ("POST", "/v1/contingency/activate")
PER_NODE_AT_ONCE = 16


def _url(template: str) -> str:
    values = {"{ccrn}": CCRN, "{code}": "LMC"}
    values["{id}"] = REG_ID if template.startswith("/v1/registrations/") else MISSING_ID
    for name, value in values.items():
        template = template.replace(name, value)
    return template


def app_routes(c: LocalCluster) -> set[tuple[str, str]]:
    """(method, path template) of every API route the node serves, from its router, and
    the public status page (the other web pages are checked in process)."""
    app = create_app(load_node_config(c.state.node_config(c.topo.data_sites[0])))
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD"
        and route.resource is not None
        and (not is_web_page(route) or route.resource.canonical == "/status")
    }


# --- faults and their repair ------------------------------------------------------------------


def _kill(pids: list[int | None]) -> None:
    for pid in pids:
        if pid:
            os.kill(pid, signal.SIGKILL)


def kill_postgresql(c: LocalCluster) -> None:
    """Both members: Patroni (so nothing restarts PostgreSQL) and the postmaster."""
    for site in c.topo.data_sites:
        _kill([c.pid(f"patroni-{site}")])
        _kill([processes.postmaster_pid(c.state.member_dir(site) / "data")])


def kill_etcd(c: LocalCluster) -> None:
    _kill([c.pid(f"etcd-{site}") for site in c.topo.sites])


def _manual_mode_on(c: LocalCluster) -> bool:
    out = c.rocars("contingency", "status", "--state-dir", str(c.state.root))
    return bool(jsonlib.loads(out[out.index("{") :])["mode"] == "manual")


@pytest.fixture
def restored(cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The session cluster, brought back afterwards even when the test fails: every process
    restarted, manual mode off and the journals reconciled into PostgreSQL."""
    try:
        yield cluster
    finally:
        cluster.up()
        if _manual_mode_on(cluster):
            cluster.rocars(
                "contingency",
                "deactivate",
                "--reason",
                "outage test over",
                "--state-dir",
                str(cluster.state.root),
            )
        else:
            cluster.rocars("contingency", "reconcile", "--state-dir", str(cluster.state.root))
        assert not _manual_mode_on(cluster)


async def _wait(fact: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    give_up = time.monotonic() + timeout
    while not await fact():
        assert time.monotonic() < give_up, f"{what}: not true after {timeout}s"
        await asyncio.sleep(0.2)


async def _keys_cached(c: LocalCluster, keys: list[str]) -> bool:
    """Each node's on-disk key cache verifies every key (it is how auth works without a DB)."""
    folder = c.state.root / "contingency"
    caches = [KeyCache(folder / f"keycache-{site}.json") for site in c.topo.data_sites]
    return all(cache.verify(key) is not None for cache in caches for key in keys)


async def _call(api: Api, site_url: str, route: tuple[str, str], keys: dict[str, str]) -> Reply:
    method, template = route
    call = ROUTES[route]
    key = keys[call.kind] if call.kind else None
    kwargs: dict[str, Any] = {} if call.body is None else {"json": call.body}
    return await api.call(method, _url(template), key, base=site_url, allow_503=True, **kwargs)


async def _every_route(
    api: Api, c: LocalCluster, routes: list[tuple[str, str]], keys: dict[str, str]
) -> None:
    """Call `routes` on both nodes at once (a database outage costs each read a pool timeout)
    and check each answer against its row."""
    jobs = [(site, r) for site in c.topo.data_sites for r in routes]
    # Below each node's own in-flight limit (24): past it a node answers "busy", which is
    # its overload answer, not its outage answer.
    slots = {site: asyncio.Semaphore(PER_NODE_AT_ONCE) for site in c.topo.data_sites}

    async def call(site: str, route: tuple[str, str]) -> Reply:
        async with slots[site]:
            return await _call(api, c.topo.node_url(site), route, keys)

    replies = await asyncio.gather(*(call(site, r) for site, r in jobs))
    failures = []
    for (site, route), reply in zip(jobs, replies, strict=True):
        try:
            assert reply.node == site, reply.node
            ROUTES[route].check(reply)
        except AssertionError as exc:
            failures.append(f"node {site} {route[0]} {route[1]}: {exc} {reply.text[:300]}")
    assert not failures, "\n".join(failures)


def test_every_route_answers_a_database_and_etcd_outage(
    restored: LocalCluster, new_account: Callable[[str], Account]
) -> None:
    """PostgreSQL down on both sites: every route on both nodes answers 503 problem+json with
    Retry-After and retry_after_ms 200, or its documented answer; manual mode then goes on
    (audited to the journal, applied by both nodes before the answer) and a write's 503 says
    so. etcd down too: switching the mode on or off answers 503."""
    c = restored
    routes = app_routes(c)
    assert routes == set(ROUTES), (
        f"routes without a row here: {sorted(routes - set(ROUTES))}; "
        f"rows without a route: {sorted(set(ROUTES) - routes)}"
    )
    keys = {kind: new_account(kind).key for kind in ("officer", "trader", "trucker")}

    async def scenario() -> None:
        await _wait(lambda: _keys_cached(c, list(keys.values())), "keys in every key cache")
        timeout = aiohttp.ClientTimeout(total=30)
        async with c.session(timeout=timeout, limit=200) as session:
            api = Api(session, c.topo.entry_url().rstrip("/"))
            kill_postgresql(c)

            async def no_node_ready() -> bool:
                ready = [
                    await api.call(
                        "GET", "/health/ready", base=c.topo.node_url(site), allow_503=True
                    )
                    for site in c.topo.data_sites
                ]
                return all(r.status == 503 for r in ready)

            # Each node's role loop (every 0.25 s) sees its member gone and stops being active.
            await _wait(no_node_ready, "both nodes see their database gone", timeout=10)
            await _every_route(api, c, sorted(set(ROUTES) - {ACTIVATE}), keys)

            # Manual mode on through node A (officer verified from its key cache).
            a = c.topo.node_url("A")
            reply = await _call(api, a, ACTIVATE, keys)
            switched_on(reply)
            assert reply.json["nodes"] == {s: "manual" for s in c.topo.data_sites}
            # A write now says manual clearance is in effect; the gate answers by hand.
            write = ("POST", "/v1/consignments")
            reply = await _call(api, a, write, keys)
            doc = assert_problem(reply, 503)
            assert doc["mode"] == "manual"
            assert "present your cargo documents" in doc["detail"]
            assert "retry_after_ms" not in doc
            reply = await _call(api, a, ("POST", "/v1/lbcp/{code}/arrivals"), keys)
            assert (reply.status, reply.json["decision"]) == (200, "manual"), reply.text

            # etcd gone too: the mode cannot be changed cluster-wide (503 naming etcd), the
            # public notice still answers from what each node last read.
            kill_etcd(c)
            reply = await _call(api, a, ACTIVATE, keys)
            outage_503(reply)
            assert "etcd" in reply.json["detail"]
            for site in c.topo.data_sites:
                url = c.topo.node_url(site)
                outage_503(await _call(api, url, ("POST", "/v1/contingency/deactivate"), keys))

                async def etcd_unreachable(url: str = url) -> bool:
                    r = await api.call("GET", "/v1/status", base=url)
                    return r.status == 200 and r.json["etcd_reachable"] is False

                await _wait(etcd_unreachable, f"node {site} notices etcd is gone", timeout=10)
                reply = await api.call("GET", "/v1/status", base=url)
                assert reply.json["mode"] == "manual"
                journalled(await _call(api, url, ("POST", "/v1/contingency/clearances"), keys))
            assert not any(status >= 500 and status != 503 for _, _, status in api.seen)

    asyncio.run(scenario())
