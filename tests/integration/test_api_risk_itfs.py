"""Risk profiling (rules, selections, officers' overrides), inspections and ITFS, through HAProxy
on the real cluster.

Rules are global, so every rule here matches only this test's cargo (a unique token, name or
vehicle, or an LBCP scope) and is deactivated when the test ends. Reaching the gate after the
30-minute profiling window is simulated in PostgreSQL (see test_api_bundles_gate.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from apikit import (
    Accounts,
    Api,
    assert_problem,
    backdate_consignments,
    bundle,
    new_vrn,
    submit,
    token,
)

from kernel.domain.ccrn import make_ccrn

pytestmark = pytest.mark.integration

PAST = timedelta(minutes=31)
MakeRule = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
async def make_rule(api: Api, accounts: Accounts) -> AsyncIterator[MakeRule]:
    """Factory creating risk rules through the API; each is deactivated after the test."""
    made: list[int] = []

    async def make(kind: str, value: str, lbcp: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": kind, "value": value}
        if lbcp is not None:
            body["lbcp"] = lbcp
        r = await api.post("/v1/risk-rules", accounts.officer.key, json=body)
        assert r.status == 201, r.text
        made.append(r.json["id"])
        doc: dict[str, Any] = r.json
        return doc

    yield make
    for rid in made:
        r = await api.patch(f"/v1/risk-rules/{rid}", accounts.officer.key, json={"active": False})
        assert r.status == 200


async def officer_view(api: Api, accounts: Accounts, ccrn: str) -> dict[str, Any]:
    r = await api.get(f"/v1/consignments/{ccrn}", accounts.officer.key)
    assert r.status == 200
    doc: dict[str, Any] = r.json
    return doc


async def selections(api: Api, accounts: Accounts, lbcp: str) -> dict[str, Any]:
    r = await api.get(f"/v1/selections?lbcp={lbcp}", accounts.officer.key)
    assert r.status == 200, r.text
    doc: dict[str, Any] = r.json
    return doc


async def arrive(api: Api, accounts: Accounts, vrn: str, lbcp: str = "LMC") -> dict[str, Any]:
    r = await api.post(f"/v1/lbcp/{lbcp}/arrivals", accounts.officer.key, json={"vrn": vrn})
    assert r.status == 200, r.text
    doc: dict[str, Any] = r.json
    return doc


async def test_keyword_rule_selects_and_reasons_are_visible_to_officers(
    api: Api, accounts: Accounts, make_rule: MakeRule
) -> None:
    """A keyword (case/spacing-insensitive) selects matching cargo; GET /v1/selections shows why."""
    word = token()
    rule = await make_rule("keyword", word)
    hit = await submit(
        api, accounts.trader.key, lbcp="STK", article_description=f"toys and {word.upper()} parts"
    )
    miss = await submit(api, accounts.trader.key, lbcp="STK")
    view = await officer_view(api, accounts, hit["ccrn"])
    assert view["selected"] is True
    assert any(f"rule {rule['id']} (keyword)" in r for r in view["selection_reasons"])
    assert (await officer_view(api, accounts, miss["ccrn"]))["selected"] is False

    sel = await selections(api, accounts, "STK")
    listed = {c["ccrn"]: c for c in sel["consignments"]}
    assert hit["ccrn"] in listed
    assert miss["ccrn"] not in listed
    assert any(word in r for r in listed[hit["ccrn"]]["selection_reasons"])
    assert hit["ccrn"] not in {
        c["ccrn"] for c in (await selections(api, accounts, "MKT"))["consignments"]
    }
    # The trader is not told.
    own = (await api.get(f"/v1/consignments/{hit['ccrn']}", accounts.trader.key)).json
    assert "selected" not in own
    assert "selection_reasons" not in own


async def test_pattern_rule(api: Api, accounts: Accounts, make_rule: MakeRule) -> None:
    """A regular-expression rule selects only cargo whose descriptions match it."""
    word = token()
    await make_rule("pattern", rf"{word}-\d{{3}}\b")
    hit = await submit(api, accounts.trader.key, package_description=f"crate {word}-123 sealed")
    miss = await submit(api, accounts.trader.key, package_description=f"crate {word}-12 sealed")
    assert (await officer_view(api, accounts, hit["ccrn"]))["selected"] is True
    assert (await officer_view(api, accounts, miss["ccrn"]))["selected"] is False


async def test_consignor_and_consignee_watch_lists(
    api: Api, accounts: Accounts, make_rule: MakeRule
) -> None:
    """Watch-listed consignor/consignee names select cargo, ignoring case and spacing."""
    name = f"{token()} Trading Ltd"
    await make_rule("consignor", f"  {name.upper()}  ")
    other = f"{token()} Imports"
    await make_rule("consignee", other)
    a = await submit(api, accounts.trader.key, consignor_name=name.lower().replace(" ", "   "))
    b = await submit(api, accounts.trader.key, consignee_name=other)
    c = await submit(api, accounts.trader.key, consignor_name=name + " (HK)")
    va = await officer_view(api, accounts, a["ccrn"])
    assert va["selected"] is True
    assert "watch-list" in va["selection_reasons"][0]
    assert (await officer_view(api, accounts, b["ccrn"]))["selected"] is True
    assert (await officer_view(api, accounts, c["ccrn"]))["selected"] is False


async def test_vrn_watch_list_selects_the_truck(
    api: Api, accounts: Accounts, make_rule: MakeRule, db: psycopg.AsyncConnection[Any]
) -> None:
    """A watch-listed vehicle's bundle is selected (listed under trucks) and sent to inspection."""
    vrn = new_vrn()
    await make_rule("vrn", f"{vrn[:3]}-{vrn[3:].lower()}")
    c = await submit(api, accounts.trader.key)
    await backdate_consignments(db, [c["ccrn"]], PAST)
    b = await bundle(api, accounts.trucker.key, [c["ccrn"]], vrn=vrn)
    trucks = {t["bundle_id"]: t for t in (await selections(api, accounts, "LMC"))["trucks"]}
    assert b["id"] in trucks
    assert any(vrn in r for r in trucks[b["id"]]["reasons"])
    d = await arrive(api, accounts, vrn)
    assert d["decision"] == "inspect"
    assert "watch-list" in d["reason"]

    # An empty truck on the watch-list is selected too.
    vrn2 = new_vrn()
    await make_rule("vrn", vrn2)
    r = await api.post(
        "/v1/bundles", accounts.trucker.key, json={"vrn": vrn2, "lbcp": "LMC", "empty": True}
    )
    assert r.status == 201
    assert (await arrive(api, accounts, vrn2))["decision"] == "inspect"


async def test_random_rate_one_selects_every_consignment_in_scope(
    api: Api, accounts: Accounts, make_rule: MakeRule
) -> None:
    """A random rule at rate 1.0 scoped to one LBCP selects all its new cargo and nothing else."""
    rule = await make_rule("random", "1.0", lbcp="HYW")
    ins = [await submit(api, accounts.trader.key, lbcp="HYW") for _ in range(5)]
    out = await submit(api, accounts.trader.key, lbcp="LMC")
    for c in ins:
        v = await officer_view(api, accounts, c["ccrn"])
        assert v["selected"] is True
        assert "random selection at rate 1.0" in v["selection_reasons"][0]
    assert (await officer_view(api, accounts, out["ccrn"]))["selected"] is False
    listed = {c["ccrn"] for c in (await selections(api, accounts, "HYW"))["consignments"]}
    assert {c["ccrn"] for c in ins} <= listed

    r = await api.patch(
        f"/v1/risk-rules/{rule['id']}", accounts.officer.key, json={"active": False}
    )
    assert r.status == 200
    assert r.json["active"] is False
    later = await submit(api, accounts.trader.key, lbcp="HYW")
    assert (await officer_view(api, accounts, later["ccrn"]))["selected"] is False


async def test_amendment_is_reassessed(api: Api, accounts: Accounts, make_rule: MakeRule) -> None:
    """Amending cargo into or out of a rule's reach selects or unselects it."""
    word = token()
    await make_rule("keyword", word)
    c = await submit(api, accounts.trader.key)
    path = f"/v1/consignments/{c['ccrn']}"
    assert (await officer_view(api, accounts, c["ccrn"]))["selected"] is False
    await api.patch(path, accounts.trader.key, json={"article_description": f"now with {word}"})
    assert (await officer_view(api, accounts, c["ccrn"]))["selected"] is True
    await api.patch(path, accounts.trader.key, json={"article_description": "plain again"})
    assert (await officer_view(api, accounts, c["ccrn"]))["selected"] is False


async def test_officer_release_and_select_overrides(
    api: Api, accounts: Accounts, make_rule: MakeRule, db: psycopg.AsyncConnection[Any]
) -> None:
    """An officer may release selected cargo or select unselected cargo, with a reason; it wins."""
    word = token()
    await make_rule("keyword", word)
    flagged = await submit(api, accounts.trader.key, package_description=word)
    plain = await submit(api, accounts.trader.key)
    await backdate_consignments(db, [flagged["ccrn"], plain["ccrn"]], PAST)
    b = await bundle(api, accounts.trucker.key, [flagged["ccrn"]])
    assert (await api.get(f"/v1/bundles/{b['id']}", accounts.officer.key)).json["selected"] is True

    r = await api.post(
        f"/v1/consignments/{flagged['ccrn']}/selection",
        accounts.officer.key,
        json={"action": "release", "reason": "known regular shipper"},
    )
    assert r.status == 200, r.text
    assert r.json["selected"] is False
    assert r.json["selection_reasons"][0] == (
        f"released by officer officer:{accounts.officer.id}: known regular shipper"
    )
    assert any(word in x for x in r.json["selection_reasons"][1:])
    # The release reaches the truck's precomputed gate answer.
    assert (await api.get(f"/v1/bundles/{b['id']}", accounts.officer.key)).json["selected"] is False
    assert (await arrive(api, accounts, b["vrn"]))["decision"] == "release"

    r = await api.post(
        f"/v1/consignments/{plain['ccrn']}/selection",
        accounts.officer.key,
        json={"action": "select", "reason": "tip-off"},
    )
    assert r.json["selected"] is True
    listed = {c["ccrn"] for c in (await selections(api, accounts, "LMC"))["consignments"]}
    assert plain["ccrn"] in listed


async def test_override_errors(api: Api, accounts: Accounts) -> None:
    """Overrides need an action and a non-blank reason, a valid CCRN, and live cargo."""
    c = await submit(api, accounts.trader.key)
    path = f"/v1/consignments/{c['ccrn']}/selection"
    key = accounts.officer.key
    assert_problem(await api.post(path, key, json={"action": "select"}), 422, "reason")
    assert_problem(
        await api.post(path, key, json={"action": "select", "reason": " "}), 422, "reason"
    )
    assert_problem(
        await api.post(path, key, json={"action": "ignore", "reason": "x"}), 422, "action"
    )
    assert_problem(
        await api.post(path, key, json={"action": "select", "reason": "x\u0000"}), 422, "reason"
    )
    bad = f"/v1/consignments/{c['ccrn'][:-1]}{(int(c['ccrn'][-1]) + 1) % 10}/selection"
    assert_problem(await api.post(bad, key, json={"action": "select", "reason": "x"}), 422, "ccrn")
    unknown = f"/v1/consignments/{make_ccrn(8_888_888_888)}/selection"
    assert_problem(await api.post(unknown, key, json={"action": "select", "reason": "x"}), 404)
    await api.delete(f"/v1/consignments/{c['ccrn']}", accounts.trader.key)
    assert_problem(await api.post(path, key, json={"action": "select", "reason": "x"}), 409)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "pattern", "value": "(unclosed"}, "value"),
        ({"kind": "random", "value": "1.5"}, "value"),
        ({"kind": "random", "value": "often"}, "value"),
        ({"kind": "random", "value": "nan"}, "value"),
        ({"kind": "vrn", "value": "AB_12"}, "value"),
        ({"kind": "keyword", "value": "   "}, "value"),
        ({"kind": "keyword", "value": "x" * 201}, "value"),
        ({"kind": "keyword", "value": "a\u0000b"}, "value"),
        ({"kind": "magic", "value": "x"}, "kind"),
        ({"value": "x"}, "kind"),
        ({"kind": "keyword"}, "value"),
        ({"kind": "keyword", "value": "x", "lbcp": "XXX"}, "lbcp"),
        ({"kind": "keyword", "value": "x", "active": "yes"}, "active"),
        ({"kind": "keyword", "value": "x", "weight": 2}, "weight"),
    ],
)
async def test_invalid_rules_are_422(
    api: Api, accounts: Accounts, body: dict[str, Any], field: str
) -> None:
    """An unusable rule (bad regex, rate outside 0..1, bad VRN, blank value...) is 422 naming it."""
    assert_problem(await api.post("/v1/risk-rules", accounts.officer.key, json=body), 422, field)


async def test_rule_listing_and_update_errors(
    api: Api, accounts: Accounts, make_rule: MakeRule
) -> None:
    """Rules are listed; PATCH takes only a boolean `active`; unknown rule 404; bad lbcp 422."""
    rule = await make_rule("keyword", token(), lbcp="SBC")
    listed = await api.get("/v1/risk-rules", accounts.officer.key)
    assert rule in listed.json["items"]
    key = accounts.officer.key
    path = f"/v1/risk-rules/{rule['id']}"
    assert_problem(await api.patch(path, key, json={}), 422, "active")
    assert_problem(await api.patch(path, key, json={"active": "false"}), 422, "active")
    assert_problem(await api.patch(path, key, json={"value": "y"}), 422, "value")
    assert_problem(await api.patch("/v1/risk-rules/999999999", key, json={"active": False}), 404)
    assert_problem(await api.patch("/v1/risk-rules/abc", key, json={"active": False}), 422, "id")
    assert_problem(await api.get("/v1/selections?lbcp=NOPE", key), 422, "lbcp")


# ---------------------------------------------------------------------------------------------
# ITFS: land-to-air cargo is inspected at most once


ITFS = {"airport": "HKG", "flight": "CX2055"}


async def test_itfs_inspected_at_lbcp_is_not_inspected_at_airport(
    api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """ITFS cargo inspected at the LBCP: GET /v1/itfs says so and the airport's request is 409."""
    c = await submit(api, accounts.trader.key, itfs=ITFS)
    await api.post(
        f"/v1/consignments/{c['ccrn']}/selection",
        accounts.officer.key,
        json={"action": "select", "reason": "ITFS sample"},
    )
    await backdate_consignments(db, [c["ccrn"]], PAST)
    b = await bundle(api, accounts.trucker.key, [c["ccrn"]])
    assert (await arrive(api, accounts, b["vrn"]))["decision"] == "inspect"
    r = await api.post(
        f"/v1/bundles/{b['id']}/inspection", accounts.officer.key, json={"result": "cleared"}
    )
    assert r.status == 200

    q = await api.get(f"/v1/itfs/{c['ccrn']}", accounts.officer.key)
    assert q.status == 200
    assert q.json["itfs"] == ITFS
    assert q.json["lbcp_outcome"] == "inspected"
    assert q.json["inspected_at_lbcp"] is True
    assert q.json["airport_inspection_allowed"] is False
    assert "LBCP" in q.json["message"]
    refused = await api.post(f"/v1/itfs/{c['ccrn']}/airport-inspections", accounts.officer.key)
    doc = assert_problem(refused, 409)
    assert "LBCP" in doc["detail"]


async def test_itfs_released_at_lbcp_may_be_inspected_at_airport_once(
    api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """ITFS cargo released at the LBCP may be inspected at the airport once; again is 409."""
    c = await submit(api, accounts.trader.key, itfs=ITFS)
    path = f"/v1/itfs/{c['ccrn']}"
    # Not cleared at the LBCP yet: the airport must wait.
    before = await api.get(path, accounts.officer.key)
    assert before.json["airport_inspection_allowed"] is False
    assert_problem(await api.post(path + "/airport-inspections", accounts.officer.key), 409)

    await backdate_consignments(db, [c["ccrn"]], PAST)
    b = await bundle(api, accounts.trucker.key, [c["ccrn"]])
    assert (await arrive(api, accounts, b["vrn"]))["decision"] == "release"
    q = await api.get(path, accounts.officer.key)
    assert (q.json["lbcp_outcome"], q.json["inspected_at_lbcp"]) == ("released", False)
    assert q.json["airport_inspection_allowed"] is True

    first = await api.post(path + "/airport-inspections", accounts.officer.key)
    assert first.status == 201, first.text
    assert first.json["airport_inspected"] is True
    second = await api.post(path + "/airport-inspections", accounts.officer.key)
    assert_problem(second, 409)
    after = await api.get(path, accounts.officer.key)
    assert after.json["airport_inspected"] is True
    assert after.json["airport_inspection_allowed"] is False


async def test_itfs_query_errors(api: Api, accounts: Accounts) -> None:
    """GET /v1/itfs: non-ITFS cargo 404, malformed CCRN 422 (before lookup), traders 403."""
    plain = await submit(api, accounts.trader.key)
    assert_problem(await api.get(f"/v1/itfs/{plain['ccrn']}", accounts.officer.key), 404)
    assert_problem(await api.get("/v1/itfs/1000000000000016", accounts.officer.key), 422, "ccrn")
    assert_problem(
        await api.post("/v1/itfs/1000000000000016/airport-inspections", accounts.officer.key),
        422,
        "ccrn",
    )
    assert_problem(await api.get(f"/v1/itfs/{plain['ccrn']}", accounts.trader.key), 403)


async def test_risk_and_itfs_changes_are_audited(
    api: Api, accounts: Accounts, make_rule: MakeRule, db: psycopg.AsyncConnection[Any]
) -> None:
    """Rule changes, overrides, inspections and airport inspections append audit rows."""
    officer = f"officer:{accounts.officer.id}"
    rule = await make_rule("keyword", token())
    await api.patch(f"/v1/risk-rules/{rule['id']}", accounts.officer.key, json={"active": False})
    c = await submit(api, accounts.trader.key, itfs=ITFS)
    await api.post(
        f"/v1/consignments/{c['ccrn']}/selection",
        accounts.officer.key,
        json={"action": "select", "reason": "audit me"},
    )
    await api.post(
        f"/v1/consignments/{c['ccrn']}/selection",
        accounts.officer.key,
        json={"action": "release", "reason": "changed my mind"},
    )
    await backdate_consignments(db, [c["ccrn"]], PAST)
    b = await bundle(api, accounts.trucker.key, [c["ccrn"]])
    await arrive(api, accounts, b["vrn"])
    await api.post(f"/v1/itfs/{c['ccrn']}/airport-inspections", accounts.officer.key)

    async def rows(subject: str) -> list[Any]:
        cur = await db.execute(
            "SELECT actor, action, before, after FROM audit_log WHERE subject = %s ORDER BY id",
            (subject,),
        )
        return list(await cur.fetchall())

    rr = await rows(f"rule:{rule['id']}")
    assert [(r[0], r[1]) for r in rr[:2]] == [
        (officer, "risk_rule.create"),
        (officer, "risk_rule.update"),
    ]
    assert (rr[1][2]["active"], rr[1][3]["active"]) == (True, False)
    cr = await rows(c["ccrn"])
    assert [(r[0], r[1]) for r in cr] == [
        (f"trader:{accounts.trader.id}", "consignment.submit"),
        (officer, "consignment.select"),
        (officer, "consignment.release"),
        (officer, "itfs.airport_inspection"),
    ]
    assert (cr[1][2]["selected"], cr[1][3]["selected"]) == (False, True)
    assert cr[1][3]["reason"] == "audit me"
    assert (cr[2][2]["selected"], cr[2][3]["selected"]) == (True, False)
    assert cr[3][3]["airport_inspected"] is True
