"""Bundling CCRNs with a vehicle and the LBCP gate's decision, through HAProxy on the real cluster.

Time: the service reads the real clock, which HTTP cannot move, and a new consignment's
not_before is 30 minutes ahead. To reach the moment a truck may cross, these tests simulate time
passing in PostgreSQL directly (on the leader, with the node's own credentials): they move
consignments' `last_changed_at` back before bundling (`backdate_consignments`), or move an open
bundle's precomputed `not_before` into the past (`open_gate`). Nothing else is written behind the
API's back.
"""

from __future__ import annotations

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
    open_gate,
    parse_time,
    submit,
)

from kernel.domain.ccrn import make_ccrn

pytestmark = pytest.mark.integration

WINDOW = timedelta(minutes=30)
PAST = timedelta(minutes=31)


async def arrive(api: Api, accounts: Accounts, vrn: str, lbcp: str = "LMC") -> dict[str, Any]:
    r = await api.post(f"/v1/lbcp/{lbcp}/arrivals", accounts.officer.key, json={"vrn": vrn})
    assert r.status == 200, r.text
    doc: dict[str, Any] = r.json
    return doc


async def test_bundle_of_fresh_cargo_is_cross_after_last_change_plus_30_min(
    api: Api, accounts: Accounts
) -> None:
    """Bundling fresh cargo answers cross_after with not_before = newest change + 30 minutes."""
    a = await submit(api, accounts.trader.key)
    b = await submit(api, accounts.trader2.key)
    r = await api.post(
        "/v1/bundles",
        accounts.trucker.key,
        json={"vrn": " kx-12 34 ", "lbcp": "LMC", "ccrns": [a["ccrn"], b["ccrn"]]},
    )
    assert r.status == 201, r.text
    doc = r.json
    assert doc["vrn"] == "KX1234"
    assert doc["status"] == "open"
    assert doc["instruction"] == "cross_after"
    assert doc["ccrns"] == [a["ccrn"], b["ccrn"]]
    newest = max(parse_time(a["last_changed_at"]), parse_time(b["last_changed_at"]))
    assert parse_time(doc["not_before"]) == newest + WINDOW
    for c in (a, b):
        got = await api.get(f"/v1/consignments/{c['ccrn']}", accounts.officer.key)
        assert got.json["status"] == "bundled"
    mine = await api.get(f"/v1/bundles/{doc['id']}", accounts.trucker.key)
    assert mine.status == 200
    assert mine.json["not_before"] == doc["not_before"]
    assert_problem(await api.get(f"/v1/bundles/{doc['id']}", accounts.trucker2.key), 404)
    officer = await api.get(f"/v1/bundles/{doc['id']}", accounts.officer.key)
    assert officer.json["selected"] is False
    # Tidy up: the VRN is fixed, so free it for reruns on the same cluster.
    assert (await api.delete(f"/v1/bundles/{doc['id']}", accounts.trucker.key)).status == 200


async def test_cargo_unchanged_for_30_minutes_may_cross_now(
    api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """When every consignment last changed >= 30 minutes ago the instruction is cross_now."""
    a = await submit(api, accounts.trader.key)
    b = await submit(api, accounts.trader.key)
    await backdate_consignments(db, [a["ccrn"], b["ccrn"]], PAST)
    doc = await bundle(api, accounts.trucker.key, [a["ccrn"], b["ccrn"]])
    assert doc["instruction"] == "cross_now"
    assert doc["not_before"] == doc["created_at"]
    # ... unless one of them is fresh: then the fresh one decides.
    c = await submit(api, accounts.trader.key)
    d = await submit(api, accounts.trader.key)
    await backdate_consignments(db, [c["ccrn"]], PAST)
    doc2 = await bundle(api, accounts.trucker.key, [c["ccrn"], d["ccrn"]])
    assert doc2["instruction"] == "cross_after"
    assert parse_time(doc2["not_before"]) == parse_time(d["last_changed_at"]) + WINDOW


async def test_amending_bundled_cargo_moves_not_before_later(
    api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """An amendment of bundled cargo restarts its 30-minute window on the bundle."""
    c = await submit(api, accounts.trader.key)
    await backdate_consignments(db, [c["ccrn"]], PAST)
    b = await bundle(api, accounts.trucker.key, [c["ccrn"]])
    assert b["instruction"] == "cross_now"
    r = await api.patch(
        f"/v1/consignments/{c['ccrn']}", accounts.trader.key, json={"package_count": 5}
    )
    assert r.status == 200, r.text
    after = (await api.get(f"/v1/bundles/{b['id']}", accounts.trucker.key)).json
    assert parse_time(after["not_before"]) == parse_time(r.json["last_changed_at"]) + WINDOW
    decision = await arrive(api, accounts, b["vrn"])
    assert decision["decision"] == "hold"
    assert parse_time(decision["until"]) == parse_time(after["not_before"])


async def test_empty_truck_may_cross_now_and_is_released(api: Api, accounts: Accounts) -> None:
    """An empty truck (empty: true) is cross_now and the gate releases it at once."""
    vrn = new_vrn()
    r = await api.post(
        "/v1/bundles", accounts.trucker.key, json={"vrn": vrn, "lbcp": "MKT", "empty": True}
    )
    assert r.status == 201, r.text
    assert r.json["instruction"] == "cross_now"
    assert r.json["ccrns"] == []
    assert r.json["empty"] is True
    d = await arrive(api, accounts, vrn, "MKT")
    assert d["decision"] == "release"
    assert d["bundle_id"] == r.json["id"]
    closed = await api.get(f"/v1/bundles/{r.json['id']}", accounts.officer.key)
    assert closed.json["status"] == "closed"
    assert closed.json["outcome"] == "released"
    # The bundle is closed: the next arrival of that truck finds nothing declared.
    assert (await arrive(api, accounts, vrn, "MKT"))["decision"] == "hold"


async def test_trucker_cancels_bundle_and_bundles_again(api: Api, accounts: Accounts) -> None:
    """A trucker may cancel an open bundle (CCRNs free again) and bundle the same CCRNs anew."""
    c = await submit(api, accounts.trader.key)
    vrn = new_vrn()
    first = await bundle(api, accounts.trucker.key, [c["ccrn"]], vrn=vrn)
    assert_problem(await api.delete(f"/v1/bundles/{first['id']}", accounts.trucker2.key), 404)
    r = await api.delete(f"/v1/bundles/{first['id']}", accounts.trucker.key)
    assert r.status == 200, r.text
    assert r.json["status"] == "cancelled"
    assert_problem(await api.delete(f"/v1/bundles/{first['id']}", accounts.trucker.key), 409)
    got = await api.get(f"/v1/consignments/{c['ccrn']}", accounts.trader.key)
    assert got.json["status"] == "submitted"
    assert (await arrive(api, accounts, vrn))["decision"] == "hold"

    again = await bundle(api, accounts.trucker.key, [c["ccrn"]], vrn=vrn)
    assert again["id"] != first["id"]
    other = await bundle(
        api, accounts.trucker2.key, [(await submit(api, accounts.trader.key))["ccrn"]]
    )
    assert other["status"] == "open"


async def test_ccrn_in_two_bundles_is_409(api: Api, accounts: Accounts) -> None:
    """A CCRN already in an open bundle cannot be bundled again (409 naming it), by anyone."""
    a = await submit(api, accounts.trader.key)
    b = await submit(api, accounts.trader.key)
    first = await bundle(api, accounts.trucker.key, [a["ccrn"]])
    for key in (accounts.trucker.key, accounts.trucker2.key):
        r = await api.post(
            "/v1/bundles",
            key,
            json={"vrn": new_vrn(), "lbcp": "LMC", "ccrns": [b["ccrn"], a["ccrn"]]},
        )
        doc = assert_problem(r, 409, "ccrns[1]")
        assert str(first["id"]) in doc["errors"][0]["message"]
    # Nothing was written by the refused requests: b is still free.
    assert (await api.get(f"/v1/consignments/{b['ccrn']}", accounts.trader.key)).json[
        "status"
    ] == "submitted"


async def test_cancelled_ccrn_cannot_be_bundled(api: Api, accounts: Accounts) -> None:
    """A cancelled CCRN in a bundle request is 409 naming it."""
    c = await submit(api, accounts.trader.key)
    assert (await api.delete(f"/v1/consignments/{c['ccrn']}", accounts.trader.key)).status == 200
    r = await api.post(
        "/v1/bundles",
        accounts.trucker.key,
        json={"vrn": new_vrn(), "lbcp": "LMC", "ccrns": [c["ccrn"]]},
    )
    doc = assert_problem(r, 409, "ccrns[0]")
    assert "cancelled" in doc["errors"][0]["message"]


async def test_bundled_consignment_cannot_be_cancelled_until_bundle_is(
    api: Api, accounts: Accounts
) -> None:
    """Cargo in an open bundle cannot be cancelled (409); after the bundle is cancelled it can."""
    c = await submit(api, accounts.trader.key)
    b = await bundle(api, accounts.trucker.key, [c["ccrn"]])
    assert_problem(await api.delete(f"/v1/consignments/{c['ccrn']}", accounts.trader.key), 409)
    await api.delete(f"/v1/bundles/{b['id']}", accounts.trucker.key)
    assert (await api.delete(f"/v1/consignments/{c['ccrn']}", accounts.trader.key)).status == 200


async def test_wrong_check_digit_in_bundle_is_422_before_lookup(
    api: Api, accounts: Accounts
) -> None:
    """Malformed CCRNs in a bundle are 422 naming each position; the valid one stays unbundled."""
    good = await submit(api, accounts.trader.key)
    wrong = good["ccrn"][:-1] + str((int(good["ccrn"][-1]) + 1) % 10)
    swapped = good["ccrn"][:3] + good["ccrn"][4] + good["ccrn"][3] + good["ccrn"][5:]
    body = {"vrn": new_vrn(), "lbcp": "LMC", "ccrns": [good["ccrn"], wrong, "12AB", swapped]}
    r = await api.post("/v1/bundles", accounts.trucker.key, json=body)
    if swapped == good["ccrn"]:  # equal neighbours: the swap is no error
        fields = ["ccrns[1]", "ccrns[2]"]
    else:
        fields = ["ccrns[1]", "ccrns[2]", "ccrns[3]"]
    doc = assert_problem(r, 422, *fields)
    assert doc["type"].endswith("/validation")
    got = await api.get(f"/v1/consignments/{good['ccrn']}", accounts.trader.key)
    assert got.json["status"] == "submitted"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"lbcp": "LMC", "ccrns": []}, 422, "vrn"),
        ({"vrn": "", "lbcp": "LMC", "empty": True}, 422, "vrn"),
        ({"vrn": "AB 12345 67", "lbcp": "LMC", "empty": True}, 422, "vrn"),
        ({"vrn": "AB*123", "lbcp": "LMC", "empty": True}, 422, "vrn"),
        ({"vrn": "AB1", "lbcp": "XXX", "empty": True}, 422, "lbcp"),
        ({"vrn": "AB1", "empty": True}, 422, "lbcp"),
        ({"vrn": "AB1", "lbcp": "LMC"}, 422, "ccrns"),
        ({"vrn": "AB1", "lbcp": "LMC", "ccrns": []}, 422, "ccrns"),
        ({"vrn": "AB1", "lbcp": "LMC", "empty": True, "ccrns": [make_ccrn(1)]}, 422, "ccrns"),
        ({"vrn": "AB1", "lbcp": "LMC", "ccrns": make_ccrn(1)}, 422, "ccrns"),
        ({"vrn": "AB1", "lbcp": "LMC", "ccrns": [1000000000000015]}, 422, "ccrns.0"),
        ({"vrn": "AB1", "lbcp": "LMC", "empty": "yes"}, 422, "empty"),
        ({"vrn": "AB1", "lbcp": "LMC", "empty": True, "driver": "x"}, 422, "driver"),
        ({"vrn": "AB1", "lbcp": "LMC", "ccrns": [make_ccrn(1)] * 201}, 422, "ccrns"),
        ({"vrn": "AB1", "lbcp": "LMC", "ccrns": [make_ccrn(999_999_999)]}, 409, "ccrns[0]"),
    ],
)
async def test_invalid_bundle_requests(
    api: Api, accounts: Accounts, body: dict[str, Any], status: int, field: str
) -> None:
    """Invalid bundle requests are 4xx naming the field (422 shape, 409 for unknown CCRNs)."""
    assert_problem(await api.post("/v1/bundles", accounts.trucker.key, json=body), status, field)


async def test_lbcp_mismatch_and_duplicates_are_409(api: Api, accounts: Accounts) -> None:
    """Cargo declared for another LBCP, or a CCRN listed twice, is 409 naming the CCRN."""
    c = await submit(api, accounts.trader.key, lbcp="SBC")
    r = await api.post(
        "/v1/bundles",
        accounts.trucker.key,
        json={"vrn": new_vrn(), "lbcp": "LMC", "ccrns": [c["ccrn"]]},
    )
    doc = assert_problem(r, 409, "ccrns[0]")
    assert "SBC" in doc["errors"][0]["message"]
    d = await submit(api, accounts.trader.key)
    r = await api.post(
        "/v1/bundles",
        accounts.trucker.key,
        json={"vrn": new_vrn(), "lbcp": "LMC", "ccrns": [d["ccrn"], d["ccrn"]]},
    )
    assert_problem(r, 409, "ccrns[0]")


async def test_one_open_bundle_per_vehicle_and_lbcp(api: Api, accounts: Accounts) -> None:
    """A vehicle with a bundle in progress at an LBCP cannot open a second one there (409 vrn)."""
    vrn = new_vrn()
    await bundle(
        api, accounts.trucker.key, [(await submit(api, accounts.trader.key))["ccrn"]], vrn=vrn
    )
    c = await submit(api, accounts.trader.key)
    r = await api.post(
        "/v1/bundles",
        accounts.trucker.key,
        json={"vrn": vrn.lower(), "lbcp": "LMC", "ccrns": [c["ccrn"]]},
    )
    assert_problem(r, 409, "vrn")
    assert (await api.get(f"/v1/consignments/{c['ccrn']}", accounts.trader.key)).json[
        "status"
    ] == "submitted"


# ---------------------------------------------------------------------------------------------
# The gate


async def test_unknown_vehicle_is_held(api: Api, accounts: Accounts) -> None:
    """A vehicle with no open bundle at this LBCP is held, and the answer says why."""
    d = await arrive(api, accounts, new_vrn())
    assert d["decision"] == "hold"
    assert "no open bundle" in d["reason"]
    assert d["until"] is None
    assert d["bundle_id"] is None


async def test_bundle_at_another_lbcp_is_held(
    api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """A truck bundled for LMC arriving at MKT is held: nothing is declared for it there."""
    c = await submit(api, accounts.trader.key)
    await backdate_consignments(db, [c["ccrn"]], PAST)
    b = await bundle(api, accounts.trucker.key, [c["ccrn"]])
    assert (await arrive(api, accounts, b["vrn"], "MKT"))["decision"] == "hold"
    assert (await arrive(api, accounts, b["vrn"], "LMC"))["decision"] == "release"


async def test_arrival_before_not_before_is_held_until_then(
    api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """Before not_before the truck is held until not_before; once it passed, it is released."""
    c = await submit(api, accounts.trader.key)
    b = await bundle(api, accounts.trucker.key, [c["ccrn"]])
    d = await arrive(api, accounts, b["vrn"])
    assert d["decision"] == "hold"
    assert parse_time(d["until"]) == parse_time(b["not_before"])
    assert "HKT" in d["reason"]
    assert d["bundle_id"] == b["id"]
    assert (await api.get(f"/v1/bundles/{b['id']}", accounts.officer.key)).json["status"] == "open"

    await open_gate(db, b["id"])
    d = await arrive(api, accounts, b["vrn"])
    assert d["decision"] == "release"
    assert d["ccrns"] == [c["ccrn"]]
    officer_view = (await api.get(f"/v1/consignments/{c['ccrn']}", accounts.officer.key)).json
    assert officer_view["status"] == "cleared"
    assert officer_view["lbcp_outcome"] == "released"
    assert (await api.get(f"/v1/bundles/{b['id']}", accounts.officer.key)).json[
        "status"
    ] == "closed"
    # The closed bundle's items are no longer active (the one statement of the release).
    cur = await db.execute(
        "SELECT bool_or(active) FROM bundle_items WHERE bundle_id = %s", (b["id"],)
    )
    assert await cur.fetchone() == (False,)
    # A crossed consignment can no longer be amended or cancelled, nor bundled again.
    path = f"/v1/consignments/{c['ccrn']}"
    assert_problem(await api.patch(path, accounts.trader.key, json={"package_count": 3}), 409)
    assert_problem(await api.delete(path, accounts.trader.key), 409)
    r = await api.post(
        "/v1/bundles",
        accounts.trucker.key,
        json={"vrn": new_vrn(), "lbcp": "LMC", "ccrns": [c["ccrn"]]},
    )
    assert_problem(r, 409, "ccrns[0]")


async def test_selected_truck_is_inspected_and_inspection_clears_it(
    api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """A truck with selected cargo is directed to inspection; the recorded result clears it."""
    sel = await submit(api, accounts.trader.key)
    plain = await submit(api, accounts.trader.key)
    r = await api.post(
        f"/v1/consignments/{sel['ccrn']}/selection",
        accounts.officer.key,
        json={"action": "select", "reason": "intelligence report 42"},
    )
    assert r.status == 200, r.text
    await backdate_consignments(db, [sel["ccrn"], plain["ccrn"]], PAST)
    b = await bundle(api, accounts.trucker.key, [sel["ccrn"], plain["ccrn"]])
    assert b["instruction"] == "cross_now"

    d = await arrive(api, accounts, b["vrn"])
    assert d["decision"] == "inspect"
    assert "intelligence report 42" in d["reason"]
    # Arriving again (e.g. the gate re-reads the plate) keeps the inspection direction.
    d2 = await arrive(api, accounts, b["vrn"])
    assert d2["decision"] == "inspect"
    assert (await api.get(f"/v1/bundles/{b['id']}", accounts.officer.key)).json[
        "status"
    ] == "inspecting"
    # The trucker cannot escape inspection by cancelling.
    assert_problem(await api.delete(f"/v1/bundles/{b['id']}", accounts.trucker.key), 409)

    path = f"/v1/bundles/{b['id']}/inspection"
    assert_problem(
        await api.post(path, accounts.officer.key, json={"result": "fine"}), 422, "result"
    )
    assert_problem(await api.post(path, accounts.officer.key, json={}), 422, "result")
    r = await api.post(path, accounts.officer.key, json={"result": "cleared", "notes": "ok"})
    assert r.status == 200, r.text
    assert r.json["status"] == "closed"
    assert r.json["outcome"] == "inspected"
    for c in (sel, plain):
        v = (await api.get(f"/v1/consignments/{c['ccrn']}", accounts.officer.key)).json
        assert (v["status"], v["lbcp_outcome"]) == ("cleared", "inspected")
    assert_problem(await api.post(path, accounts.officer.key, json={"result": "cleared"}), 409)


async def test_detained_inspection_result(
    api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """An inspection result 'detained' marks the truck's cargo detained, and is audited."""
    c = await submit(api, accounts.trader.key)
    await api.post(
        f"/v1/consignments/{c['ccrn']}/selection",
        accounts.officer.key,
        json={"action": "select", "reason": "random check"},
    )
    await backdate_consignments(db, [c["ccrn"]], PAST)
    b = await bundle(api, accounts.trucker.key, [c["ccrn"]])
    assert (await arrive(api, accounts, b["vrn"]))["decision"] == "inspect"
    r = await api.post(
        f"/v1/bundles/{b['id']}/inspection", accounts.officer.key, json={"result": "detained"}
    )
    assert r.status == 200
    assert (await api.get(f"/v1/consignments/{c['ccrn']}", accounts.trader.key)).json[
        "status"
    ] == "detained"
    cur = await db.execute(
        "SELECT actor, action, after FROM audit_log WHERE subject = %s ORDER BY id",
        (f"bundle:{b['id']}",),
    )
    rows = await cur.fetchall()
    assert [(r[0], r[1]) for r in rows] == [
        (f"trucker:{accounts.trucker.id}", "bundle.create"),
        (f"officer:{accounts.officer.id}", "lbcp.inspection"),
    ]
    assert (rows[1][2]["result"], rows[1][2]["outcome"]) == ("detained", "inspected")
    cur = await db.execute(
        "SELECT bool_or(active) FROM bundle_items WHERE bundle_id = %s", (b["id"],)
    )
    assert await cur.fetchone() == (False,)


async def test_inspection_of_a_truck_not_directed_to_inspection_is_409(
    api: Api, accounts: Accounts
) -> None:
    """Recording an inspection for an open (not inspecting) bundle is 409; unknown bundle 404."""
    b = await bundle(api, accounts.trucker.key, [(await submit(api, accounts.trader.key))["ccrn"]])
    r = await api.post(
        f"/v1/bundles/{b['id']}/inspection", accounts.officer.key, json={"result": "cleared"}
    )
    assert_problem(r, 409)
    r = await api.post(
        "/v1/bundles/999999999/inspection", accounts.officer.key, json={"result": "cleared"}
    )
    assert_problem(r, 404)
    r = await api.post(
        "/v1/bundles/x1/inspection", accounts.officer.key, json={"result": "cleared"}
    )
    assert_problem(r, 422, "id")


@pytest.mark.parametrize(
    ("code", "body", "field"),
    [
        ("XXX", {"vrn": "AB1"}, "code"),
        ("lmc", {"vrn": "AB1"}, "code"),
        ("LMC", {}, "vrn"),
        ("LMC", {"vrn": ""}, "vrn"),
        ("LMC", {"vrn": "AB_1"}, "vrn"),
        ("LMC", {"vrn": "ABCDEFGHI"}, "vrn"),
        ("LMC", {"vrn": 123}, "vrn"),
        ("LMC", {"vrn": "AB1", "lane": 3}, "lane"),
    ],
)
async def test_invalid_arrivals_are_422(
    api: Api, accounts: Accounts, code: str, body: dict[str, Any], field: str
) -> None:
    """An unknown LBCP code or an invalid VRN at the gate is 422 naming it."""
    r = await api.post(f"/v1/lbcp/{code}/arrivals", accounts.officer.key, json=body)
    assert_problem(r, 422, field)


async def test_bundle_and_gate_are_audited(
    api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """Bundle creation and cancellation, arrivals and inspections append audit rows."""
    c = await submit(api, accounts.trader.key)
    b1 = await bundle(api, accounts.trucker.key, [c["ccrn"]])
    await api.delete(f"/v1/bundles/{b1['id']}", accounts.trucker.key)
    await backdate_consignments(db, [c["ccrn"]], PAST)
    b2 = await bundle(api, accounts.trucker.key, [c["ccrn"]])
    await arrive(api, accounts, b2["vrn"])

    async def rows(subject: str) -> list[Any]:
        cur = await db.execute(
            "SELECT actor, action, before, after FROM audit_log WHERE subject = %s ORDER BY id",
            (subject,),
        )
        return list(await cur.fetchall())

    trucker = f"trucker:{accounts.trucker.id}"
    r1 = await rows(f"bundle:{b1['id']}")
    assert [(r[0], r[1]) for r in r1] == [(trucker, "bundle.create"), (trucker, "bundle.cancel")]
    assert r1[0][3]["ccrns"] == [c["ccrn"]]
    assert (r1[1][2]["status"], r1[1][3]["status"]) == ("open", "cancelled")
    r2 = await rows(f"bundle:{b2['id']}")
    assert [r[1] for r in r2] == ["bundle.create"]
    gate = await rows(f"LMC:{b2['vrn']}")
    assert [(r[0], r[1], r[3]["decision"]) for r in gate] == [
        (f"officer:{accounts.officer.id}", "lbcp.arrival", "release")
    ]


async def test_a_replayed_arrival_answers_the_first_decision_once(
    api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """#11: an arrival reads its bundle in the same round trip as the idempotency lookup, so
    the replay of a release reads a bundle already closed; it still answers the first decision
    (release, the same bundle and CCRNs), marked replayed, and records no second arrival. The
    same key with another truck is 422 naming Idempotency-Key, and records nothing."""
    c = await submit(api, accounts.trader.key)
    await backdate_consignments(db, [c["ccrn"]], PAST)
    b = await bundle(api, accounts.trucker.key, [c["ccrn"]])
    path, key = "/v1/lbcp/LMC/arrivals", {"Idempotency-Key": f"gate-{new_vrn()}"}
    first = await api.post(path, accounts.officer.key, json={"vrn": b["vrn"]}, headers=key)
    assert first.status == 200, first.text
    assert (first.json["decision"], first.json["ccrns"]) == ("release", [c["ccrn"]])
    again = await api.post(path, accounts.officer.key, json={"vrn": b["vrn"]}, headers=key)
    assert again.status == 200, again.text
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json == first.json
    other = await api.post(path, accounts.officer.key, json={"vrn": new_vrn()}, headers=key)
    assert_problem(other, 422, "Idempotency-Key")
    cur = await db.execute("SELECT count(*) FROM arrivals WHERE vrn = %s", (b["vrn"],))
    assert await cur.fetchone() == (1,)
