"""The officers' pages (#15 item 4) in process: only officers open them, each shows what the
API's own functions answer (the selections queue with its reasons, the rules, the
registrations, the ITFS view, the arrivals and their Server-Sent Events stream), and the
contingency switch works with PostgreSQL down: sign-in from the key cache, activation after a
confirmation step, a clearance journalled and listed as "journalled", deactivation refused while
the journals cannot be reconciled. Through the real app factory with the handler fakes; a
scripted database answers the reads where a page needs rows."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from handler_fakes import NOW, DownPool, Fakes, operational_error
from problem_checks import AiohttpClient, Client
from web_signin import CSRF, csrf, sign_in

from node import appkeys, background
from node.api import contingency as api_contingency
from node.app import create_app
from node.web import officer_arrivals

OFFICER_PAGES = (
    "/officer",
    "/officer/arrivals",
    "/officer/arrivals/stream",
    "/officer/rules",
    "/officer/registrations",
    "/officer/itfs",
    "/officer/contingency",
)


class ScriptedCursor:
    def __init__(self, pool: ScriptedPool) -> None:
        self.pool = pool
        self.rows: list[dict[str, Any]] = []

    async def execute(self, sql: str, params: Any = None) -> None:
        self.pool.queries.append((sql, params))
        for fragment, rows in self.pool.script:
            if fragment in sql:
                self.rows = rows(params) if callable(rows) else rows
                return
        raise AssertionError(f"the test scripted no answer to {sql!r}")

    async def fetchall(self) -> list[dict[str, Any]]:
        return self.rows

    async def fetchone(self) -> dict[str, Any] | None:
        return self.rows[0] if self.rows else None


class ScriptedPool:
    """A database that answers reads from a script: (a fragment of the SQL, its rows)."""

    def __init__(self, script: list[tuple[str, Any]]) -> None:
        self.script = script
        self.queries: list[tuple[str, Any]] = []

    class _Conn:
        def __init__(self, pool: ScriptedPool) -> None:
            self.pool = pool

        def cursor(self, row_factory: Any = None) -> ScriptedCursor:
            return ScriptedCursor(self.pool)

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Any]:
        yield self._Conn(self)


async def _app_with(
    fakes: Fakes, aiohttp_client: AiohttpClient, pool: ScriptedPool | DownPool
) -> Client:
    deps = dataclasses.replace(fakes.deps(), pool=pool)
    return await aiohttp_client(create_app(fakes.config(), deps))


async def _officer(fakes: Fakes, aiohttp_client: AiohttpClient, pool: ScriptedPool) -> Client:
    """A node whose database answers from `pool`, an officer signed in (landing on the
    selections queue)."""
    client = await _app_with(fakes, aiohttp_client, pool)
    assert await sign_in(client, fakes, "officer") == "/officer"
    return client


async def _officer_with_database_down(
    fakes: Fakes, aiohttp_client: AiohttpClient, pool: DownPool | None = None
) -> Client:
    """A node with PostgreSQL down (`pool`, by default one that never connects), an officer
    signed in from the node's key cache."""
    client = await _app_with(fakes, aiohttp_client, pool or DownPool(operational_error))
    await background.refresh_keycache_once(fakes.accounts, client.app[appkeys.KEYCACHE])
    fakes.accounts.down = True
    assert await sign_in(client, fakes, "officer") == "/officer"
    return client


@pytest.mark.parametrize("kind", ["trader", "trucker"])
@pytest.mark.parametrize("path", OFFICER_PAGES)
async def test_traders_and_truckers_get_a_403_page(
    client: Client, fakes: Fakes, kind: str, path: str
) -> None:
    """#15 item 4: the officers' pages enforce the API's officer role: another kind of account
    gets 403 (an HTML page, or the stream's problem), before any database read."""
    await sign_in(client, fakes, kind)
    async with asyncio.timeout(10), client.get(path, allow_redirects=False) as r:
        assert r.status == 403, path
        if path != "/officer/arrivals/stream":
            assert r.content_type == "text/html"


@pytest.mark.parametrize("path", OFFICER_PAGES)
async def test_without_a_session_the_pages_ask_to_sign_in(client: Client, path: str) -> None:
    """#15 item 4: no session: the pages send the visitor to sign in; the stream is 401."""
    r = await client.get(path, allow_redirects=False)
    if path == "/officer/arrivals/stream":
        assert r.status == 401
    else:
        assert r.status == 303
        assert r.headers["Location"].startswith("/signin?next=")


async def test_a_trader_cannot_switch_manual_mode_on(client: Client, fakes: Fakes) -> None:
    """#15 item 4: the switch's POST is refused for a trader (403) and nothing is switched."""
    await sign_in(client, fakes, "trader")
    token = await csrf(client, "/trader/new")
    r = await client.post(
        "/officer/contingency/activate",
        data={"csrf": token, "reason": "not mine", "confirm": "yes"},
    )
    assert r.status == 403
    assert not fakes.contingency.any_manual


def _truck(lbcp: str = "LMC") -> dict[str, Any]:
    return {
        "id": 7,
        "vrn": "AB1234",
        "lbcp": lbcp,
        "status": "open",
        "not_before": datetime(2030, 1, 7, 8, 30, tzinfo=UTC),
        "reasons": ["rule 3: keyword 'fireworks'"],
    }


async def test_the_selections_queue_shows_trucks_with_their_reasons(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """#15 item 4: an officer lands on the selections queue; it lists what the API's queue
    answers (the selected trucks with their reasons), filtered by LBCP as the API filters."""
    pool = ScriptedPool([("FROM consignments c", []), ("FROM bundles", [_truck("MKT")])])
    client = await _officer(fakes, aiohttp_client, pool)
    r = await client.get("/officer?lbcp=MKT")
    assert r.status == 200
    text = await r.text()
    assert re.search(r'data-bundle="7">.*AB1234.*MKT.*keyword &#39;fireworks&#39;', text), text
    assert {"lbcp": "MKT"} in [q[1] for q in pool.queries]
    r = await client.get("/officer?lbcp=XYZ")
    assert r.status == 422
    assert r.content_type == "text/html"


async def test_the_rules_page_lists_and_refuses_a_bad_rule_beside_its_field(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """#15 item 4: the risk rules are listed with a switch each; a new rule the API's rule
    check refuses comes back as the form, the API's message beside the value field."""
    rule = {
        "id": 3,
        "kind": "keyword",
        "value": "fireworks",
        "lbcp": None,
        "active": True,
        "created_at": NOW,
    }
    pool = ScriptedPool([("FROM risk_rules", [rule])])
    client = await _officer(fakes, aiohttp_client, pool)
    r = await client.get("/officer/rules")
    text = await r.text()
    assert 'id="rule-3" data-rule="3" data-active="true"' in text
    assert 'name="active" value="false"' in text
    token = CSRF.search(text).group(1)  # type: ignore[union-attr]
    r = await client.post(
        "/officer/rules", data={"csrf": token, "kind": "keyword", "value": "", "active": "on"}
    )
    assert r.status == 422
    assert re.search(r'id="e-value">[^<]+', await r.text())


async def test_a_rule_switch_goes_down_the_apis_write_path(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """#15 item 4: activating or deactivating a rule is the API's write (PATCH's own path):
    with PostgreSQL down it answers the outage as a 503 page, never a 500."""
    pool = DownPool(operational_error)
    client = await _officer_with_database_down(fakes, aiohttp_client, pool)
    token = await csrf(client, "/officer/contingency")
    r = await client.post("/officer/rules/3/active", data={"csrf": token, "active": "false"})
    assert r.status == 503, await r.text()
    assert r.content_type == "text/html"
    assert pool.attempts >= 1
    r = await client.post("/officer/rules/3/active", data={"csrf": token, "active": "maybe"})
    assert r.status == 422


async def test_registrations_to_approve_and_a_rejection_needs_a_reason(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """#15 item 4: pending registrations are listed with approve and reject; a rejection
    without a reason is the API's 422, shown beside that registration's reason field."""
    reg = {
        "id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        "kind": "trader",
        "trader_kind": "shipper",
        "name": "Kowloon Trading",
        "brn": "12345678",
        "contact": {"email": "a@b.hk"},
        "status": "pending",
        "reason": None,
        "created_at": NOW,
        "decided_at": None,
    }
    pool = ScriptedPool([("FROM registrations", [reg])])
    client = await _officer(fakes, aiohttp_client, pool)
    r = await client.get("/officer/registrations")
    text = await r.text()
    assert "Kowloon Trading" in text
    assert f'action="/officer/registrations/{reg["id"]}/approve"' in text
    token = CSRF.search(text).group(1)  # type: ignore[union-attr]
    r = await client.post(f"/officer/registrations/{reg['id']}/reject", data={"csrf": token})
    assert r.status == 422
    assert f'id="e-reason-{reg["id"]}">a rejection needs a reason' in await r.text()


async def test_the_itfs_view_says_whether_the_airport_may_inspect(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """#15 item 4: the ITFS view is the API's (inspected at most once): cargo inspected at the
    LBCP may not be inspected at the airport; a malformed CCRN is named beside the field."""
    row = {
        "ccrn": "X",
        "itfs": {"airport": "HKG", "flight": "CX100"},
        "status": "cleared",
        "lbcp_outcome": "inspected",
        "airport_inspected": False,
    }
    pool = ScriptedPool([("FROM consignments WHERE ccrn", [row])])
    client = await _officer(fakes, aiohttp_client, pool)
    r = await client.get("/officer/itfs?ccrn=nonsense")
    assert r.status == 422
    assert 'id="e-ccrn">' in await r.text()
    from kernel.domain.ccrn import new_ccrn

    r = await client.get(f"/officer/itfs?ccrn={new_ccrn()}")
    assert r.status == 200, await r.text()
    text = await r.text()
    assert 'data-allowed="false"' in text
    assert "CX100" in text


def _arrival(i: int, lbcp: str = "LMC") -> dict[str, Any]:
    return {
        "id": i,
        "lbcp": lbcp,
        "vrn": f"TRK{i}",
        "decision": "inspect",
        "reason": "selected by risk profiling",
        "until": None,
        "at": NOW,
        "bundle_id": i,
    }


async def _events(resp: Any, wanted: int) -> list[tuple[str, str, str]]:
    """(event, id, data) of the first `wanted` events of an SSE answer."""
    out: list[tuple[str, str, str]] = []
    event = eid = data = ""
    while len(out) < wanted:
        async with asyncio.timeout(10):
            raw = await resp.content.readline()
        assert raw, f"the stream ended after {out}"
        line = raw.decode().rstrip("\r\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("id: "):
            eid = line[4:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and event:
            out.append((event, eid, data))
            event = eid = data = ""
    return out


async def test_the_arrivals_page_lists_and_the_stream_sends_new_ones(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """#15 item 4: the arrivals page (no script needed) lists the latest arrivals and tells the
    stream where to start; the stream (Server-Sent Events) sends each later arrival with its
    id as the event id, and resumes after the browser's Last-Event-ID."""

    def after(params: dict[str, Any]) -> list[dict[str, Any]]:
        return [_arrival(i) for i in (5, 6) if i > params["after"]]

    pool = ScriptedPool([("ORDER BY id DESC", [_arrival(4)]), ("WHERE id >", after)])
    client = await _officer(fakes, aiohttp_client, pool)
    r = await client.get("/officer/arrivals")
    text = await r.text()
    assert 'data-arrival="4"' in text
    assert "after=4" in text
    async with client.get("/officer/arrivals/stream?after=4") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        events = await _events(resp, 3)
    assert [(e, i) for e, i, _ in events] == [("state", ""), ("arrival", "5"), ("arrival", "6")]
    assert '"vrn": "TRK5"' in events[1][2]
    assert '"decision_text": "Inspect"' in events[1][2]
    async with client.get(
        "/officer/arrivals/stream?after=4", headers={"Last-Event-ID": "5"}
    ) as resp:
        events = await _events(resp, 2)
    assert [i for _, i, _ in events] == ["", "6"]
    streams = client.app[officer_arrivals.STREAMS]
    give_up = asyncio.get_running_loop().time() + 5
    while streams.open:  # each stream ends once it sees its browser gone
        assert asyncio.get_running_loop().time() < give_up, "a stream outlived its browser"
        await asyncio.sleep(0.05)


async def test_the_stream_says_when_the_database_cannot_be_read_and_is_bounded(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """#15 item 4: with PostgreSQL down the arrivals page still answers (saying so) and the
    stream sends state "unavailable" instead of failing; past MAX_STREAMS open streams a
    node answers 503 (the page keeps its list and refresh link)."""
    pool = DownPool(operational_error)
    client = await _officer_with_database_down(fakes, aiohttp_client, pool)
    r = await client.get("/officer/arrivals")
    assert r.status == 200
    assert "The database cannot be read now" in await r.text()
    async with client.get("/officer/arrivals/stream?after=1") as resp:
        events = await _events(resp, 2)
    assert [(e, d) for e, _, d in events] == [("state", "ok"), ("state", "unavailable")]
    client.app[officer_arrivals.STREAMS].open = officer_arrivals.MAX_STREAMS
    r = await client.get("/officer/arrivals/stream")
    assert r.status == 503
    assert "Retry-After" in r.headers


async def test_manual_mode_with_the_database_down_confirm_record_journalled(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """#15 item 4: with PostgreSQL down an officer (key from the node's key cache) asks for
    manual mode at MKT: a confirmation page comes first and nothing is switched; confirmed,
    MKT is manual; a clearance goes to the node's journal and is listed as "journalled"."""
    client = await _officer_with_database_down(fakes, aiohttp_client)
    token = await csrf(client, "/officer/contingency")
    form = {"csrf": token, "reason": "database down", "message": "Paper at MKT", "lbcps": "MKT"}
    r = await client.post("/officer/contingency/activate", data=form)
    assert r.status == 200
    text = await r.text()
    assert 'id="confirm-activate"' in text
    assert 'name="lbcps" value="MKT"' in text
    assert not fakes.contingency.any_manual
    r = await client.post(
        "/officer/contingency/activate", data={**form, "confirm": "yes"}, allow_redirects=False
    )
    assert r.status == 303, await r.text()
    assert fakes.contingency.mode_for("MKT") == "manual"
    assert fakes.contingency.mode_for("LMC") == "normal"
    r = await client.get("/officer/contingency")
    text = await r.text()
    assert 'data-mode="manual"' in text
    assert "only this node&#39;s journal is listed" in text
    r = await client.post(
        "/officer/contingency/clearances",
        data={
            "csrf": token,
            "lbcp": "MKT",
            "vrn": "ab 1234",
            "decision": "release",
            "documents": "manifest 1\ninvoice 2",
        },
        allow_redirects=False,
    )
    assert r.status == 303, await r.text()
    assert "done=journalled" in r.headers["Location"]
    pending = client.app[appkeys.JOURNAL].pending_clearances()
    assert [(c.lbcp, c.vrn, c.documents) for c in pending] == [
        ("MKT", "AB1234", ("manifest 1", "invoice 2"))
    ]
    r = await client.get(r.headers["Location"])
    text = await r.text()
    assert re.search(
        rf'data-uuid="{pending[0].uuid}" data-state="journalled".*?>journalled</td>', text
    )


async def test_a_bad_clearance_is_named_beside_its_field(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """#15 item 4: the API's own validation of a clearance (documents required, CCRNs checked)
    comes back beside the form's fields and nothing is journalled."""
    client = await _officer_with_database_down(fakes, aiohttp_client)
    await fakes.contingency.activate(actor="officer:1", reason="t", lbcps=None, message="m")
    token = await csrf(client, "/officer/contingency")
    form = {"csrf": token, "lbcp": "LMC", "vrn": "AB1", "decision": "release"}
    r = await client.post("/officer/contingency/clearances", data=form)
    assert r.status == 422
    assert 'id="e-c-documents">' in await r.text()
    r = await client.post(
        "/officer/contingency/clearances", data={**form, "documents": "manifest", "ccrns": "X1"}
    )
    assert r.status == 422
    assert 'id="e-c-ccrns">' in await r.text()
    assert client.app[appkeys.JOURNAL].pending_clearances() == ()


async def test_switching_off_needs_the_database_and_shows_the_report(
    fakes: Fakes, aiohttp_client: AiohttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#15 item 4: with PostgreSQL down, switching off is the API's refusal (503: the journals
    cannot be reconciled, manual mode stays on), shown on the page; once the API's
    deactivation answers, the page shows its reconciliation report."""
    client = await _officer_with_database_down(fakes, aiohttp_client)
    await fakes.contingency.activate(actor="officer:1", reason="t", lbcps=None, message="m")
    token = await csrf(client, "/officer/contingency")
    r = await client.post("/officer/contingency/deactivate", data={"csrf": token, "reason": "ok"})
    assert r.status == 503
    text = await r.text()
    assert re.search(r'role="alert".*manual mode stays on', text, re.DOTALL)
    assert 'id="officer-mode" data-mode="manual"' in text  # the switch's page, forms kept
    assert fakes.contingency.any_manual

    async def deactivated(request: Any, account: Any, body: Any) -> dict[str, Any]:
        await fakes.contingency.deactivate(actor=account.actor, reason=body.reason, lbcps=None)
        report = {
            "journals": ["j"],
            "imported": 1,
            "already_imported": 0,
            "matched": 1,
            "unmatched": [],
            "audit_imported": 2,
            "set_aside": [],
        }
        return {"reconciliation": report}

    monkeypatch.setattr(api_contingency, "deactivate_as", deactivated)
    r = await client.post("/officer/contingency/deactivate", data={"csrf": token, "reason": "ok"})
    assert r.status == 200
    text = await r.text()
    assert 'id="report-imported">1<' in text
    assert 'data-mode="normal"' in text


async def test_the_pages_speak_traditional_chinese(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """#15 item 4: the officers' pages are in Traditional Chinese for a zh-HK browser,
    including the clearance's "journalled" state and the arrival's decision."""
    pool = ScriptedPool(
        [
            ("FROM consignments c", []),
            ("FROM bundles", [_truck()]),
            ("ORDER BY id DESC", [_arrival(4)]),
            ("FROM risk_rules", []),
            ("FROM registrations", []),
            ("FROM manual_clearances", []),
        ]
    )
    client = await _officer(fakes, aiohttp_client, pool)
    zh = {"Accept-Language": "zh-HK"}
    expected = {
        "/officer": "被選取查驗的貨車",
        "/officer/arrivals": 'class="decision">查驗',
        "/officer/rules": "新增風險規則",
        "/officer/registrations": "沒有登記申請。",
        "/officer/itfs": "陸空轉運",
        "/officer/contingency": "啟動人手清關",
    }
    for path, text in expected.items():
        r = await client.get(path, headers=zh)
        assert r.status == 200, (path, await r.text())
        body = await r.text()
        assert '<html lang="zh-Hant">' in body
        assert text in body, path
    await fakes.contingency.activate(actor="officer:1", reason="t", lbcps=None, message="m")
    token = await csrf(client, "/officer/contingency")
    form = {"csrf": token, "lbcp": "LMC", "vrn": "AB1", "decision": "release", "documents": "m"}
    client.app[appkeys.ROLE].set("standby")  # type: ignore[attr-defined]
    r = await client.post("/officer/contingency/clearances", data=form, headers=zh)
    assert r.status == 200
    assert ">已記錄於節點日誌</td>" in await r.text()
