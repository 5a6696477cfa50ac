"""Idempotent writes (promise I2) and the standby's refusal to write (I3), on the real cluster."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
import pytest
from apikit import (
    Account,
    Accounts,
    Api,
    Reply,
    assert_problem,
    consignment_body,
    new_vrn,
    submit,
)

pytestmark = pytest.mark.integration

T = TypeVar("T")
CONCURRENCY = 16


async def bounded(jobs: list[Callable[[], Awaitable[T]]], limit: int = CONCURRENCY) -> list[T]:
    sem = asyncio.Semaphore(limit)

    async def run(job: Callable[[], Awaitable[T]]) -> T:
        async with sem:
            return await job()

    return list(await asyncio.gather(*(run(j) for j in jobs)))


def idem(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def test_replaying_100_submissions_creates_no_duplicate(
    api: Api, new_account: Callable[[str], Account], db: psycopg.AsyncConnection[Any]
) -> None:
    """100 submissions sent twice at once and then replayed give exactly 100 CCRNs and rows."""
    trader = new_account("trader")
    keys = [f"sub-{i}-{uuid.uuid4()}" for i in range(100)]
    bodies = [consignment_body(package_count=i + 1) for i in range(100)]

    def send(i: int) -> Callable[[], Awaitable[Reply]]:
        return lambda: api.post(
            "/v1/consignments", trader.key, json=bodies[i], headers=idem(keys[i])
        )

    # Each submission and its duplicate race each other (a client retrying at once).
    first = await bounded([send(i) for i in range(100) for _ in range(2)])
    assert all(r.status == 201 for r in first), {r.status for r in first}
    ccrn_of: dict[int, str] = {}
    for n, r in enumerate(first):
        i = n // 2
        ccrn_of.setdefault(i, r.json["ccrn"])
        assert r.json["ccrn"] == ccrn_of[i], f"submission {i} answered two CCRNs"
        assert r.json["package_count"] == i + 1
    replayed_flags = [first[2 * i].headers.get("Idempotent-Replayed") for i in range(100)] + [
        first[2 * i + 1].headers.get("Idempotent-Replayed") for i in range(100)
    ]
    # Exactly one of each pair did the work; the other was answered from the stored result.
    assert replayed_flags.count("true") == 100

    # A later replay of all 100 (e.g. after a failover) answers the same, marked as replayed.
    again = await bounded([send(i) for i in range(100)])
    for i, r in enumerate(again):
        assert r.status == 201
        assert r.headers.get("Idempotent-Replayed") == "true"
        assert r.json == first[2 * i].json

    assert len(set(ccrn_of.values())) == 100
    cur = await db.execute("SELECT count(*) FROM consignments WHERE owner_id = %s", (trader.id,))
    assert (await cur.fetchone()) == (100,)
    listed: list[str] = []
    cursor = None
    while True:
        q = "?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        page = (await api.get("/v1/consignments" + q, trader.key)).json
        listed += [c["ccrn"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(listed) == sorted(ccrn_of.values())


async def test_same_key_different_body_is_422_naming_the_key(api: Api, accounts: Accounts) -> None:
    """Reusing an Idempotency-Key with a different body (or route) is 422 naming Idempotency-Key."""
    key = f"k-{uuid.uuid4()}"
    body = consignment_body()
    r = await api.post("/v1/consignments", accounts.trader.key, json=body, headers=idem(key))
    assert r.status == 201
    assert "Idempotent-Replayed" not in r.headers
    changed = {**body, "package_count": body["package_count"] + 1}
    r2 = await api.post("/v1/consignments", accounts.trader.key, json=changed, headers=idem(key))
    assert_problem(r2, 422, "Idempotency-Key")
    r3 = await api.post(
        "/v1/consignments:batch", accounts.trader.key, json=[body], headers=idem(key)
    )
    assert_problem(r3, 422, "Idempotency-Key")
    # The original is still answered for the original body.
    r4 = await api.post("/v1/consignments", accounts.trader.key, json=body, headers=idem(key))
    assert r4.headers.get("Idempotent-Replayed") == "true"
    assert r4.json["ccrn"] == r.json["ccrn"]


async def test_same_key_by_another_account_is_independent(api: Api, accounts: Accounts) -> None:
    """Keys are per account: another trader's identical key and body make a new consignment."""
    key = f"shared-{uuid.uuid4()}"
    body = consignment_body()
    a = await api.post("/v1/consignments", accounts.trader.key, json=body, headers=idem(key))
    b = await api.post("/v1/consignments", accounts.trader2.key, json=body, headers=idem(key))
    assert (a.status, b.status) == (201, 201)
    assert "Idempotent-Replayed" not in b.headers
    assert a.json["ccrn"] != b.json["ccrn"]
    assert (await api.get(f"/v1/consignments/{b.json['ccrn']}", accounts.trader2.key)).status == 200
    assert_problem(await api.get(f"/v1/consignments/{b.json['ccrn']}", accounts.trader.key), 404)


async def test_failed_request_does_not_consume_the_key(api: Api, accounts: Accounts) -> None:
    """A refused request stores nothing under its key, so the corrected retry goes through."""
    key = f"fix-{uuid.uuid4()}"
    bad = consignment_body(package_count=0)
    r = await api.post("/v1/consignments", accounts.trader.key, json=bad, headers=idem(key))
    assert_problem(r, 422, "package_count")
    good = consignment_body()
    r = await api.post("/v1/consignments", accounts.trader.key, json=good, headers=idem(key))
    assert r.status == 201
    assert "Idempotent-Replayed" not in r.headers

    # The same for a refusal inside the transaction (409: cancelled CCRN bundled).
    c = await submit(api, accounts.trader.key)
    await api.delete(f"/v1/consignments/{c['ccrn']}", accounts.trader.key)
    bkey = f"bfix-{uuid.uuid4()}"
    body = {"vrn": new_vrn(), "lbcp": "LMC", "ccrns": [c["ccrn"]]}
    assert_problem(
        await api.post("/v1/bundles", accounts.trucker.key, json=body, headers=idem(bkey)), 409
    )
    fresh = await submit(api, accounts.trader.key)
    body2 = {**body, "ccrns": [fresh["ccrn"]]}
    r = await api.post("/v1/bundles", accounts.trucker.key, json=body2, headers=idem(bkey))
    assert r.status == 201, r.text


async def test_amend_cancel_and_bundle_replays_apply_once(api: Api, accounts: Accounts) -> None:
    """PATCH, DELETE and bundle POST replayed with their key answer the first result, once."""
    c = await submit(api, accounts.trader.key)
    path = f"/v1/consignments/{c['ccrn']}"
    k1 = idem(f"amend-{uuid.uuid4()}")
    p1 = await api.patch(path, accounts.trader.key, json={"package_count": 50}, headers=k1)
    p2 = await api.patch(path, accounts.trader.key, json={"package_count": 50}, headers=k1)
    assert (p1.status, p2.status) == (200, 200)
    assert p2.headers.get("Idempotent-Replayed") == "true"
    assert p1.json == p2.json
    assert p2.json["version"] == 2
    hist = (await api.get(path + "/history", accounts.trader.key)).json["versions"]
    assert [v["version"] for v in hist] == [1, 2]

    vrn = new_vrn()
    kb = idem(f"bundle-{uuid.uuid4()}")
    body = {"vrn": vrn, "lbcp": "LMC", "ccrns": [c["ccrn"]]}
    b1, b2 = await asyncio.gather(
        api.post("/v1/bundles", accounts.trucker.key, json=body, headers=kb),
        api.post("/v1/bundles", accounts.trucker.key, json=body, headers=kb),
    )
    assert (b1.status, b2.status) == (201, 201)
    assert b1.json["id"] == b2.json["id"]
    kd = idem(f"unbundle-{uuid.uuid4()}")
    bpath = f"/v1/bundles/{b1.json['id']}"
    d1 = await api.delete(bpath, accounts.trucker.key, headers=kd)
    d2 = await api.delete(bpath, accounts.trucker.key, headers=kd)
    assert (d1.status, d2.status) == (200, 200)
    assert d2.headers.get("Idempotent-Replayed") == "true"
    # Without the key, the second cancel is a real (refused) second attempt.
    assert_problem(await api.delete(bpath, accounts.trucker.key), 409)

    kc = idem(f"cancel-{uuid.uuid4()}")
    c1 = await api.delete(path, accounts.trader.key, headers=kc)
    c2 = await api.delete(path, accounts.trader.key, headers=kc)
    assert (c1.status, c2.status) == (200, 200)
    assert c1.json == c2.json


async def test_batch_replay_returns_the_same_ccrns(api: Api, accounts: Accounts) -> None:
    """A batch replayed with its key answers the same per-item results and stores nothing new."""
    items = [consignment_body(), consignment_body(package_count=0), consignment_body()]
    k = idem(f"batch-{uuid.uuid4()}")
    r1 = await api.post("/v1/consignments:batch", accounts.trader.key, json=items, headers=k)
    r2 = await api.post("/v1/consignments:batch", accounts.trader.key, json=items, headers=k)
    assert (r1.status, r2.status) == (200, 200)
    assert r1.json == r2.json
    assert r2.headers.get("Idempotent-Replayed") == "true"


@pytest.mark.parametrize(
    "value", ["x" * 201, "   ", "tab\there"], ids=["too-long", "blank", "control-char"]
)
async def test_invalid_idempotency_key_is_400(api: Api, accounts: Accounts, value: str) -> None:
    """An Idempotency-Key that is blank, over 200 characters or not printable is 400 naming it."""
    r = await api.post(
        "/v1/consignments", accounts.trader.key, json=consignment_body(), headers=idem(value)
    )
    assert_problem(r, 400, "Idempotency-Key")


# ---------------------------------------------------------------------------------------------
# The standby node


async def test_standby_node_refuses_writes_with_503_and_retry_after(
    api: Api, accounts: Accounts, standby_url: str
) -> None:
    """Writes sent straight to the standby node answer 503 with Retry-After; nothing is stored."""
    key = f"standby-{uuid.uuid4()}"
    body = consignment_body()
    r = await api.post(
        "/v1/consignments",
        accounts.trader.key,
        json=body,
        headers=idem(key),
        base=standby_url,
        allow_503=True,
    )
    doc = assert_problem(r, 503)
    assert int(r.headers["Retry-After"]) > 0
    assert r.headers.get("X-Rocars-Role") == "standby"
    assert "standby" in doc["detail"]
    other_writes: list[tuple[str, str, str | None, Any]] = [
        ("POST", "/v1/bundles", accounts.trucker.key, {"vrn": "SB1", "lbcp": "LMC", "empty": True}),
        ("POST", "/v1/lbcp/LMC/arrivals", accounts.officer.key, {"vrn": "SB1"}),
        ("POST", "/v1/risk-rules", accounts.officer.key, {"kind": "keyword", "value": "sb"}),
        (
            "POST",
            "/v1/registrations",
            None,
            {"kind": "trucker", "name": "x", "brn": "12345678", "contact": {"email": "a@b.hk"}},
        ),
    ]
    for method, path, akey, payload in other_writes:
        w = await api.call(method, path, akey, json=payload, base=standby_url, allow_503=True)
        assert_problem(w, 503)
        assert "Retry-After" in w.headers

    # The same request through HAProxy reaches the active node and is applied once.
    ok = await api.post("/v1/consignments", accounts.trader.key, json=body, headers=idem(key))
    assert ok.status == 201
    assert "Idempotent-Replayed" not in ok.headers
    assert ok.headers.get("X-Rocars-Role") == "active"


async def test_standby_node_serves_reads(api: Api, accounts: Accounts, standby_url: str) -> None:
    """The standby answers reads from its synchronous replica (the record is already there)."""
    c = await submit(api, accounts.trader.key)
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        r = await api.get(f"/v1/consignments/{c['ccrn']}", accounts.trader.key, base=standby_url)
        if r.status == 200 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert r.status == 200, r.text
    assert r.json == c
