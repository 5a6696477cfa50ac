"""#14 item 3: a manual clearance retried under one Idempotency-Key is one record, on the real
session cluster (through HAProxy to the active node and its PostgreSQL). The crossings
between a node's journal and the database need the database unreachable; no session fixture
does that cheaply, so they are pinned in process (tests/unit/handlers/
test_clearance_idempotency.py)."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from apikit import Account, Api, assert_problem, new_vrn

pytestmark = pytest.mark.integration

URL = "/v1/contingency/clearances"


async def _rows(db: psycopg.AsyncConnection[Any], officer: Account) -> list[tuple[Any, ...]]:
    cur = await db.execute(
        "SELECT uuid::text, vrn, decision, cleared_at, recorded_at FROM manual_clearances"
        " WHERE officer = %s ORDER BY recorded_at",
        (str(officer.id),),
    )
    return await cur.fetchall()


async def test_a_clearance_sent_twice_under_one_key_is_one_row(
    api: Api, db: psycopg.AsyncConnection[Any], new_account: Any
) -> None:
    """#14 item 3: two POSTs of one clearance under the same Idempotency-Key store one row in
    `manual_clearances` and are answered alike (201, same uuid and outcome; the second marked
    replayed); the same key with another clearance is 422 naming `Idempotency-Key` and stores
    nothing. Without a key the same body is two records, as before."""
    officer: Account = new_account("officer")
    body = {"lbcp": "LMC", "vrn": new_vrn(), "decision": "release", "documents": ["manifest"]}
    key = {"Idempotency-Key": f"live-{uuid.uuid4()}"}
    first = await api.post(URL, officer.key, json=body, headers=key)
    again = await api.post(URL, officer.key, json=body, headers=key)
    assert (first.status, again.status) == (201, 201), (first.text, again.text)
    assert again.json == first.json
    assert first.json["stored"] == "database"
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers
    rows = await _rows(db, officer)
    assert [r[:3] for r in rows] == [(first.json["uuid"], body["vrn"], "release")]

    other = await api.post(URL, officer.key, json={**body, "decision": "inspect"}, headers=key)
    assert_problem(other, 422, "Idempotency-Key")
    assert await _rows(db, officer) == rows

    a = await api.post(URL, officer.key, json=body)
    b = await api.post(URL, officer.key, json=body)
    assert (a.status, b.status) == (201, 201)
    assert len({first.json["uuid"], a.json["uuid"], b.json["uuid"]}) == 3
    assert len(await _rows(db, officer)) == 3
