"""#10 item 1 on the real cluster: possession of a CCRN is the authority, so nothing tells a
taken number from a free one, a trucker may bundle any CCRN they were handed, and the owning
trader may revoke that bundle before the truck arrives. Legacy (sequence) CCRNs keep working.

Like the bundle tests, these simulate time passing in PostgreSQL (`backdate_consignments`), and
a few write rows the API can no longer make: a legacy CCRN (issued before CCRNs were random),
and the removal of such a row, to compare "not yours" with "does not exist" on one number.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from apikit import (
    Accounts,
    Api,
    Reply,
    assert_problem,
    backdate_consignments,
    bundle,
    consignment_body,
    new_vrn,
    submit,
)

from kernel.domain.ccrn import ISSUE_ATTEMPTS, NO_SUCH_CCRN, RandBelow, make_ccrn, new_ccrn
from kernel.errors import RocarsError
from node.api.consignments import NewConsignment, _insert
from node.risk_cache import RulesCache
from node.schemas import ConsignmentIn

pytestmark = pytest.mark.integration

PAST = timedelta(minutes=31)
PATCH = {"package_count": 3}


def unknown_ccrn() -> str:
    """A well-formed CCRN from the random range that no one holds (8e14 numbers)."""
    return new_ccrn()


async def trader_routes(api: Api, key: str, ccrn: str) -> dict[str, Reply]:
    """Every trader route that takes a CCRN, called for `ccrn`."""
    path = f"/v1/consignments/{ccrn}"
    return {
        "GET": await api.get(path, key),
        "GET history": await api.get(f"{path}/history", key),
        "PATCH": await api.patch(path, key, json=PATCH),
        "DELETE": await api.delete(path, key),
        "DELETE bundle": await api.delete(f"{path}/bundle", key),
    }


def same_answer(a: Reply, a_ccrn: str, b: Reply, b_ccrn: str) -> None:
    """`a` (for a_ccrn) and `b` (for b_ccrn) are one answer: status, type, and the body byte for
    byte once the number each caller sent (echoed in `instance`) is set aside."""
    assert (a.status, a.content_type) == (b.status, b.content_type)
    assert a.text.replace(a_ccrn, "<ccrn>") == b.text.replace(b_ccrn, "<ccrn>"), (a.text, b.text)


async def insert_legacy(
    db: psycopg.AsyncConnection[Any], owner: int, *, changed_ago: timedelta = timedelta(0)
) -> str:
    """A consignment under a sequence-issued CCRN (prefix 10), as issued before issue 10."""
    ccrn = make_ccrn(random.randrange(5 * 10**12, 10**13 - 1))
    body = ConsignmentIn.model_validate(consignment_body()).model_dump()
    now = datetime.now(UTC)
    await db.execute(
        "INSERT INTO consignments (ccrn, owner_id, direction, lbcp, package_count,"
        " package_description, article_description, consignor_name, consignor_address,"
        " consignee_name, consignee_address, expected_at, last_changed_at, created_at,"
        " risk_draw) VALUES (%(ccrn)s, %(owner)s, %(direction)s, %(lbcp)s, %(package_count)s,"
        " %(package_description)s, %(article_description)s, %(consignor_name)s,"
        " %(consignor_address)s, %(consignee_name)s, %(consignee_address)s, %(expected_at)s,"
        " %(changed)s, %(changed)s, 0.999999)",
        {**body, "ccrn": ccrn, "owner": owner, "changed": now - changed_ago},
    )
    await db.execute(
        "INSERT INTO consignment_versions (ccrn, version, data, changed_at, changed_by)"
        " VALUES (%s, 1, %s, %s, %s)",
        (ccrn, json.dumps({"ccrn": ccrn, "legacy": True}), now, owner),
    )
    return ccrn


async def release(api: Api, accounts: Accounts, ccrn: str) -> None:
    """An officer's release override: the consignment is not selected whatever rules exist."""
    r = await api.post(
        f"/v1/consignments/{ccrn}/selection",
        accounts.officer.key,
        json={"action": "release", "reason": "test: not selected"},
    )
    assert r.status == 200, r.text


async def arrive(api: Api, accounts: Accounts, vrn: str) -> dict[str, Any]:
    r = await api.post("/v1/lbcp/LMC/arrivals", accounts.officer.key, json={"vrn": vrn})
    assert r.status == 200, r.text
    doc: dict[str, Any] = r.json
    return doc


async def test_a_strangers_ccrn_answers_like_an_unknown_one_on_every_trader_route(
    api: Api, accounts: Accounts
) -> None:
    """#10 item 1: whether a stranger's CCRN is submitted, bundled or cancelled, every trader
    route answers it exactly as it answers a number never issued: 404 "no such CCRN", with
    no owner, status or LBCP in it."""
    owner = accounts.trader.key
    submitted = await submit(api, owner, lbcp="MKT")
    bundled = await submit(api, owner)
    await bundle(api, accounts.trucker.key, [bundled["ccrn"]])
    cancelled = await submit(api, owner)
    assert (await api.delete(f"/v1/consignments/{cancelled['ccrn']}", owner)).status == 200
    nobody = unknown_ccrn()
    unknown = await trader_routes(api, accounts.trader2.key, nobody)
    for route, reply in unknown.items():
        doc = assert_problem(reply, 404)
        assert (doc["title"], doc["detail"]) == ("Not Found", NO_SUCH_CCRN), route
    for theirs in (submitted, bundled, cancelled):
        stranger = await trader_routes(api, accounts.trader2.key, theirs["ccrn"])
        for route, reply in stranger.items():
            same_answer(reply, theirs["ccrn"], unknown[route], nobody)
            for leak in ("MKT", "LMC", "submitted", "bundled", "cancelled"):
                assert leak not in reply.text.replace(theirs["ccrn"], ""), (route, leak)
    # The refused writes changed nothing.
    for theirs, status in ((submitted, "submitted"), (bundled, "bundled")):
        got = (await api.get(f"/v1/consignments/{theirs['ccrn']}", owner)).json
        assert (got["status"], got["version"]) == (status, 1)


async def test_one_number_answers_the_same_before_and_after_it_exists(
    api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """#10 item 1: the same CCRN, held by another trader and then gone altogether, gets
    byte-identical answers (headers' content type and the whole body) on every trader route."""
    ccrn = await insert_legacy(db, accounts.trader.id)
    assert (await api.get(f"/v1/consignments/{ccrn}", accounts.trader.key)).status == 200
    theirs = await trader_routes(api, accounts.trader2.key, ccrn)
    await db.execute("DELETE FROM consignment_versions WHERE ccrn = %s", (ccrn,))
    await db.execute("DELETE FROM consignments WHERE ccrn = %s", (ccrn,))
    gone = await trader_routes(api, accounts.trader2.key, ccrn)
    for route, reply in theirs.items():
        assert (reply.status, reply.content_type) == (404, gone[route].content_type), route
        assert reply.text == gone[route].text, route


async def test_a_trucker_may_bundle_any_ccrn_they_were_handed(api: Api, accounts: Accounts) -> None:
    """#10 item 1: possession is the authority: any trucker quoting a trader's CCRN bundles it;
    an unknown CCRN gets the trader's "no such CCRN" text, the same for every unknown number."""
    c = await submit(api, accounts.trader2.key)
    b = await bundle(api, accounts.trucker2.key, [c["ccrn"]])
    assert b["ccrns"] == [c["ccrn"]]
    answers = []
    for _ in range(2):
        r = await api.post(
            "/v1/bundles",
            accounts.trucker.key,
            json={"vrn": "HOSTILE1", "lbcp": "LMC", "ccrns": [unknown_ccrn()]},
        )
        doc = assert_problem(r, 409, "ccrns[0]")
        assert doc["errors"] == [{"field": "ccrns[0]", "message": NO_SUCH_CCRN}]
        answers.append(r.text)
    assert answers[0] == answers[1]


async def test_the_owner_revokes_a_bundle_before_arrival(
    api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """#10 item 1: DELETE /v1/consignments/{ccrn}/bundle takes the trader's CCRN out of an open
    bundle (200, the consignment back to submitted, `revoked_from_bundle`), idempotently; the
    bundle's gate facts no longer count it; a stranger gets the unknown-CCRN 404; the CCRN can
    then be cancelled; revoking the last CCRN cancels the bundle; each revoke is audited."""
    owner = accounts.trader.key
    mine = await submit(api, owner)
    other = await submit(api, owner)
    r = await api.post(
        f"/v1/consignments/{mine['ccrn']}/selection",
        accounts.officer.key,
        json={"action": "select", "reason": "tip-off 10.1"},
    )
    assert r.status == 200, r.text
    b = await bundle(api, accounts.trucker.key, [mine["ccrn"], other["ccrn"]])
    seen = (await api.get(f"/v1/bundles/{b['id']}", accounts.officer.key)).json
    assert any(reason.startswith(mine["ccrn"]) for reason in seen["reasons"])
    assert seen["selected"] is True

    path = f"/v1/consignments/{mine['ccrn']}/bundle"
    nobody = unknown_ccrn()
    same_answer(
        await api.delete(path, accounts.trader2.key),
        mine["ccrn"],
        await api.delete(f"/v1/consignments/{nobody}/bundle", accounts.trader2.key),
        nobody,
    )
    for key in (accounts.trucker.key, accounts.officer.key):
        assert_problem(await api.delete(path, key), 403)

    idem = {"Idempotency-Key": f"revoke-{uuid.uuid4()}"}
    r = await api.delete(path, owner, headers=idem)
    assert r.status == 200, r.text
    assert r.json == {
        **(await api.get(f"/v1/consignments/{mine['ccrn']}", owner)).json,
        "revoked_from_bundle": b["id"],
    }
    assert r.json["status"] == "submitted"
    assert "selected" not in r.json  # the trader's view
    replay = await api.delete(path, owner, headers=idem)
    assert (replay.status, replay.json) == (200, r.json)
    assert replay.headers.get("Idempotent-Replayed") == "true"

    seen = (await api.get(f"/v1/bundles/{b['id']}", accounts.officer.key)).json
    assert seen["status"] == "open"
    assert seen["ccrns"] == [other["ccrn"]]
    assert not any(mine["ccrn"] in reason for reason in seen["reasons"])
    trucker_view = (await api.get(f"/v1/bundles/{b['id']}", accounts.trucker.key)).json
    assert trucker_view["ccrns"] == [other["ccrn"]]

    doc = assert_problem(await api.delete(path, owner), 409)
    assert "no active bundle" in doc["detail"]
    assert (await api.delete(f"/v1/consignments/{mine['ccrn']}", owner)).status == 200

    last = await api.delete(f"/v1/consignments/{other['ccrn']}/bundle", owner)
    assert last.status == 200, last.text
    assert last.json["revoked_from_bundle"] == b["id"]
    emptied = (await api.get(f"/v1/bundles/{b['id']}", accounts.trucker.key)).json
    assert (emptied["status"], emptied["ccrns"]) == ("cancelled", [])
    assert (await api.delete(f"/v1/consignments/{other['ccrn']}", owner)).status == 200
    # The truck, now declaring nothing, is held at the gate.
    assert (await arrive(api, accounts, b["vrn"]))["decision"] == "hold"

    cur = await db.execute(
        "SELECT actor, action, before, after FROM audit_log WHERE subject = %s"
        " AND action = 'bundle.revoke' ORDER BY id",
        (f"bundle:{b['id']}",),
    )
    rows = await cur.fetchall()
    assert [(a, act) for a, act, _, _ in rows] == [
        (f"trader:{accounts.trader.id}", "bundle.revoke")
    ] * 2
    assert [after["revoked"] for _, _, _, after in rows] == [mine["ccrn"], other["ccrn"]]
    assert rows[1][3]["status"] == "cancelled"


async def test_revoke_after_the_truck_arrived_is_409(
    api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """#10 item 1: once the truck has arrived (its bundle inspecting, or closed and the cargo
    cleared) the trader cannot revoke: 409 saying the truck has arrived, nothing changed."""
    owner = accounts.trader.key
    inspected = await submit(api, owner)
    r = await api.post(
        f"/v1/consignments/{inspected['ccrn']}/selection",
        accounts.officer.key,
        json={"action": "select", "reason": "tip-off 10.1"},
    )
    assert r.status == 200, r.text
    released = await submit(api, owner)
    await release(api, accounts, released["ccrn"])
    await backdate_consignments(db, [inspected["ccrn"], released["ccrn"]], PAST)
    at_inspection = await bundle(api, accounts.trucker.key, [inspected["ccrn"]])
    assert (await arrive(api, accounts, at_inspection["vrn"]))["decision"] == "inspect"
    crossed = await bundle(api, accounts.trucker.key, [released["ccrn"]])
    assert (await arrive(api, accounts, crossed["vrn"]))["decision"] == "release"

    for c, status in ((inspected, "bundled"), (released, "cleared")):
        doc = assert_problem(await api.delete(f"/v1/consignments/{c['ccrn']}/bundle", owner), 409)
        assert "the truck has arrived" in doc["detail"], doc
        assert (await api.get(f"/v1/consignments/{c['ccrn']}", owner)).json["status"] == status
    view = (await api.get(f"/v1/bundles/{at_inspection['id']}", accounts.officer.key)).json
    assert (view["status"], view["ccrns"]) == ("inspecting", [inspected["ccrn"]])
    # A consignment that was never bundled has nothing to revoke.
    loose = await submit(api, owner)
    doc = assert_problem(await api.delete(f"/v1/consignments/{loose['ccrn']}/bundle", owner), 409)
    assert "no active bundle" in doc["detail"]


async def test_legacy_sequence_ccrns_still_read_bundle_and_clear(
    api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """#10 item 1: a CCRN issued by the old sequence (prefix 10) is read by its owner (and its
    history), hidden from others like any CCRN, bundled by a trucker, revoked and bundled
    again, and cleared at the gate."""
    ccrn = await insert_legacy(db, accounts.trader.id, changed_ago=PAST)
    assert ccrn.startswith("10")
    got = await api.get(f"/v1/consignments/{ccrn}", accounts.trader.key)
    assert (got.status, got.json["ccrn"], got.json["status"]) == (200, ccrn, "submitted")
    hist = await api.get(f"/v1/consignments/{ccrn}/history", accounts.trader.key)
    assert (hist.status, [v["version"] for v in hist.json["versions"]]) == (200, [1])
    doc = assert_problem(await api.get(f"/v1/consignments/{ccrn}", accounts.trader2.key), 404)
    assert doc["detail"] == NO_SUCH_CCRN
    await release(api, accounts, ccrn)

    first = await bundle(api, accounts.trucker.key, [ccrn])
    revoked = await api.delete(f"/v1/consignments/{ccrn}/bundle", accounts.trader.key)
    assert revoked.status == 200, revoked.text
    b = await bundle(api, accounts.trucker2.key, [ccrn], vrn=new_vrn())
    assert b["id"] != first["id"]
    assert b["instruction"] == "cross_now"
    d = await arrive(api, accounts, b["vrn"])
    assert (d["decision"], d["ccrns"]) == ("release", [ccrn])
    got = await api.get(f"/v1/consignments/{ccrn}", accounts.trader.key)
    assert got.json["status"] == "cleared"


async def test_a_collision_draws_again_inside_the_same_transaction(
    accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """#10 item 1: issuing against the real schema: a drawn CCRN that is taken is skipped (ON
    CONFLICT DO NOTHING) and the next draw used, in the same transaction; a source that only
    gives taken numbers fails after ISSUE_ATTEMPTS draws without aborting the transaction."""
    c = ConsignmentIn.model_validate(consignment_body())
    now = datetime.now(UTC)
    taken_draw = [3, random.randrange(10**14)]
    fresh_draw = [6, random.randrange(10**14)]
    taken, fresh = new_ccrn(_script(taken_draw)), new_ccrn(_script(fresh_draw))
    async with db.transaction(force_rollback=True):
        new, rules = [NewConsignment(c, accounts.trader.id, now)], RulesCache()
        (first,) = await _insert(db, new, rules, randbelow=_script(taken_draw))
        assert first["ccrn"] == taken
        (second,) = await _insert(db, new, rules, randbelow=_script(taken_draw + fresh_draw))
        assert second["ccrn"] == fresh
        with pytest.raises(RocarsError, match="random source is broken"):
            await _insert(db, new, rules, randbelow=_script(taken_draw * ISSUE_ATTEMPTS))
        # Still usable: the collisions raised nothing in PostgreSQL.
        cur = await db.execute(
            "SELECT count(*) FROM consignments WHERE ccrn = ANY(%s)", ([taken, fresh],)
        )
        assert (await cur.fetchone()) == (2,)


def _script(values: list[int]) -> RandBelow:
    """A random source that gives `values` in turn."""
    it = iter(values)
    return lambda n: next(it)
