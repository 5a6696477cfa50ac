"""Secrets kept too long and registration keys shared by strangers (issue #10 items 4 and 6), on
the real cluster: a replayed approval does not repeat the API key, idempotency records expire
after 24 hours and are deleted, and a registration key only ever replays the same application."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from apikit import Accounts, Api, consignment_body

from node import background
from node.api.registrations import KEY_NOT_REPEATED

pytestmark = pytest.mark.integration
EXPIRED = "now() - interval '24 hours 1 minute'"


def application(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "trucker",
        "name": f"Applicant {uuid.uuid4().hex[:8]}",
        "brn": "12345678-001",
        "contact": {"email": "ops@example.hk"},
    }
    body.update(overrides)
    return body


def idem(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


class OneConnection:
    """The test's own database connection, lent as a pool to the node's expiry step."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    @asynccontextmanager
    async def connection(
        self, timeout: float | None = None
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        yield self.conn


async def test_an_approval_replay_says_the_key_was_issued_without_repeating_it(
    api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """#10 item 4: an approval replayed with its Idempotency-Key answers the same status with
    api_key null, api_key_issued true and a detail; the stored record never holds the key, and
    the key handed out first works."""
    reg = (await api.post("/v1/registrations", json=application())).json
    path = f"/v1/registrations/{reg['id']}/approve"
    key = f"approve-{uuid.uuid4()}"
    first = await api.post(path, accounts.officer.key, headers=idem(key))
    assert first.status == 200, first.text
    api_key = first.json["api_key"]
    assert api_key.startswith("rk_")
    assert first.json["api_key_issued"] is True
    assert first.headers["Cache-Control"] == "no-store"

    again = await api.post(path, accounts.officer.key, headers=idem(key))
    assert again.status == 200, again.text
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert api_key not in again.text
    assert again.json["api_key"] is None
    assert again.json["api_key_issued"] is True
    assert again.json["api_key_detail"] == KEY_NOT_REPEATED
    assert again.json["account_id"] == first.json["account_id"]
    assert again.json["status"] == "approved"

    cur = await db.execute(
        "SELECT response::text FROM idempotency_keys WHERE account_id = %s AND key = %s",
        (accounts.officer.id, key),
    )
    row = await cur.fetchone()
    assert row is not None
    assert api_key not in row[0]
    bundle = {"vrn": "SEC 1", "lbcp": "SBC", "empty": True}
    assert (await api.post("/v1/bundles", api_key, json=bundle)).status == 201


async def test_a_record_older_than_24_hours_no_longer_replays(
    api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """#10 item 4: after 24 hours an Idempotency-Key is forgotten: the same request with it is
    a new write (a new CCRN), which the key then replays."""
    key = f"old-{uuid.uuid4()}"
    body = consignment_body()
    trader = accounts.trader
    first = await api.post("/v1/consignments", trader.key, json=body, headers=idem(key))
    assert first.status == 201, first.text
    await db.execute(
        f"UPDATE idempotency_keys SET created_at = {EXPIRED} WHERE account_id = %s AND key = %s",
        (trader.id, key),
    )
    fresh = await api.post("/v1/consignments", trader.key, json=body, headers=idem(key))
    assert fresh.status == 201, fresh.text
    assert "Idempotent-Replayed" not in fresh.headers
    assert fresh.json["ccrn"] != first.json["ccrn"]
    replay = await api.post("/v1/consignments", trader.key, json=body, headers=idem(key))
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.json["ccrn"] == fresh.json["ccrn"]


async def test_expired_records_are_deleted_in_batches_and_live_ones_kept(
    api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """#10 item 4: the active node's expiry step deletes every record older than 24 hours from
    both tables, a batch per transaction, and leaves younger ones alone."""
    trader = accounts.trader
    keys = [f"expire-{i}-{uuid.uuid4()}" for i in range(5)]
    for k in keys:
        r = await api.post("/v1/consignments", trader.key, json=consignment_body(), headers=idem(k))
        assert r.status == 201, r.text
    reg_key = f"reg-expire-{uuid.uuid4()}"
    reg = await api.post("/v1/registrations", json=application(), headers=idem(reg_key))
    assert reg.status == 201, reg.text
    live_key = f"live-{uuid.uuid4()}"
    r = await api.post(
        "/v1/consignments", trader.key, json=consignment_body(), headers=idem(live_key)
    )
    assert r.status == 201
    await db.execute(
        f"UPDATE idempotency_keys SET created_at = {EXPIRED}"
        " WHERE account_id = %s AND key = ANY(%s)",
        (trader.id, keys),
    )
    await db.execute(
        f"UPDATE public_idempotency_keys SET created_at = {EXPIRED} WHERE key = %s", (reg_key,)
    )

    standby = SimpleNamespace(role="standby")
    assert await background.expire_idempotency_once(OneConnection(db), standby, batch=2) == 0
    active = SimpleNamespace(role="active")
    assert await background.expire_idempotency_once(OneConnection(db), active, batch=2) >= 6

    cur = await db.execute(
        "SELECT key FROM idempotency_keys WHERE account_id = %s AND key = ANY(%s)",
        (trader.id, [*keys, live_key]),
    )
    assert [r[0] for r in await cur.fetchall()] == [live_key]
    cur = await db.execute(
        "SELECT count(*) FROM public_idempotency_keys WHERE key = %s", (reg_key,)
    )
    assert await cur.fetchone() == (0,)


async def test_one_registration_key_with_two_bodies_makes_two_registrations(api: Api) -> None:
    """#10 item 6: a registration Idempotency-Key is scoped by the request: another applicant's
    body under the same key is a new registration (not a 422, not the first applicant's
    answer), and each body still replays its own registration."""
    key = f"shared-reg-{uuid.uuid4()}"
    alice, bob = application(name="Alice Freight"), application(name="Bob Haulage")
    a = await api.post("/v1/registrations", json=alice, headers=idem(key))
    b = await api.post("/v1/registrations", json=bob, headers=idem(key))
    assert (a.status, b.status) == (201, 201), (a.text, b.text)
    assert "Idempotent-Replayed" not in b.headers
    assert a.json["id"] != b.json["id"]
    assert b.json["name"] == "Bob Haulage"
    assert "Alice" not in b.text

    a2 = await api.post("/v1/registrations", json=alice, headers=idem(key))
    b2 = await api.post("/v1/registrations", json=bob, headers=idem(key))
    assert a2.headers.get("Idempotent-Replayed") == "true"
    assert b2.headers.get("Idempotent-Replayed") == "true"
    assert (a2.json["id"], b2.json["id"]) == (a.json["id"], b.json["id"])
