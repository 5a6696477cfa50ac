"""Group commit on the real cluster (#11 target 1, node/group_commit.py): submissions arriving
together share one statement and one commit, and each is still stored whole, with its first
version, its audit record and its idempotency record, under its own account; a used key in a
shared statement makes PostgreSQL refuse it, and only that request takes the replay path.

Sharing depends on timing (items only pile up while every statement slot is busy), so each test
sends bursts until the node's metrics show the fact it needs, within a deadline, and checks
every burst's answers either way.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import psycopg
import pytest
from apikit import Accounts, Api, Reply, consignment_body, node_metric, token

from deploy.admin import leader_site
from deploy.harness import LocalCluster

pytestmark = pytest.mark.integration

# HAProxy lets 16 requests at a time reach the node (entry.admission.server_maxconn) and
# answers a busy 503 to any that queue for 100 ms: a burst is exactly that many.
BURST = 16
DEADLINE_S = 60.0


async def _shared(session: aiohttp.ClientSession, node_url: str) -> tuple[float, float]:
    """(statements, items) written by the active node's submission group so far."""
    count = await node_metric(session, node_url, "rocars_group_commit_items_count")
    items = await node_metric(session, node_url, "rocars_group_commit_items_sum")
    return count, items


async def _post(api: Api, key: str, body: dict[str, Any], idem: str | None) -> Reply:
    headers = {} if idem is None else {"Idempotency-Key": idem}
    return await api.post("/v1/consignments", key, json=body, headers=headers)


async def _stored(db: psycopg.AsyncConnection[Any], ccrn: str) -> dict[str, Any]:
    cur = await db.execute(
        "SELECT c.owner_id, c.article_description,"
        " (SELECT count(*) FROM consignment_versions v WHERE v.ccrn = c.ccrn AND v.version = 1),"
        " (SELECT array_agg(a.actor) FROM audit_log a"
        "   WHERE a.subject = c.ccrn AND a.action = 'consignment.submit'),"
        " (SELECT a.after FROM audit_log a"
        "   WHERE a.subject = c.ccrn AND a.action = 'consignment.submit' LIMIT 1)"
        " FROM consignments c WHERE c.ccrn = %s",
        (ccrn,),
    )
    row = await cur.fetchone()
    assert row is not None, f"{ccrn} acknowledged but not stored"
    owner, article, versions, actors, after = row
    return {"owner": owner, "article": article, "versions": versions, "actors": actors,
            "after": after}  # fmt: skip


async def test_a_burst_shares_statements_and_stores_every_submission_whole(
    cluster: LocalCluster, api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """#11 target 1 and I1: concurrent submissions of two accounts, with and without keys,
    are written by statements holding several of them (the node's metrics say so), and each
    acknowledged one is stored once, under its own account, with its first version, one audit
    record by its own actor holding the answer, and for a keyed one an idempotency record
    holding that same answer."""
    node_url = cluster.topo.node_url(await leader_site(cluster.topo)).rstrip("/")
    traders = (accounts.trader, accounts.trader2)
    async with cluster.session() as plain:
        statements0, items0 = await _shared(plain, node_url)
        deadline, shared, acked = time.monotonic() + DEADLINE_S, False, []
        while not shared:
            assert time.monotonic() < deadline, "no statement ever held two submissions"
            word = token()
            sent = [
                (traders[i % 2], consignment_body(article_description=f"{word} lot {i}"),
                 f"burst-{word}-{i}" if i % 3 else None)
                for i in range(BURST)
            ]  # fmt: skip
            replies = await asyncio.gather(*(_post(api, a.key, b, k) for a, b, k in sent))
            for (account, body, key), r in zip(sent, replies, strict=True):
                assert r.status == 201, r.text
                assert "Idempotent-Replayed" not in r.headers
                acked.append((account, body, key, r.json))
            statements, items = await _shared(plain, node_url)
            shared = items - items0 > statements - statements0
    assert len({doc["ccrn"] for *_, doc in acked}) == len(acked)
    for account, body, key, doc in acked:
        row = await _stored(db, doc["ccrn"])
        assert row["owner"] == account.id
        assert row["article"] == body["article_description"] == doc["article_description"]
        assert row["versions"] == 1
        assert row["actors"] == [f"{account.kind}:{account.id}"]
        assert row["after"] == doc
        cur = await db.execute(
            "SELECT response FROM idempotency_keys WHERE account_id = %s AND key = %s",
            (account.id, key),
        )
        record = await cur.fetchone()
        if key is None:
            assert record is None
        else:
            assert record is not None
            assert record[0] == doc


async def test_a_used_key_in_a_shared_statement_is_replayed_and_the_others_are_stored(
    cluster: LocalCluster, api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """#11 target 1 and I2: in a burst, a request repeating a committed submission's key (same
    body) gets the first answer marked replayed and a used key with another body gets 422,
    while the burst's other submissions are stored once each; PostgreSQL's refusal of the
    shared statement (the record's primary key) makes the node write that statement's items
    one by one, which the metrics show."""
    node_url = cluster.topo.node_url(await leader_site(cluster.topo)).rstrip("/")
    trader = accounts.trader
    async with cluster.session() as plain:
        splits0 = await node_metric(plain, node_url, "rocars_group_commit_splits_total")
        deadline, split = time.monotonic() + DEADLINE_S, False
        while not split:
            assert time.monotonic() < deadline, "no shared statement was ever refused"
            word = token()
            first_body = consignment_body(article_description=f"{word} first")
            first = await _post(api, trader.key, first_body, f"used-{word}")
            assert first.status == 201, first.text
            fresh = [
                consignment_body(article_description=f"{word} fresh {i}") for i in range(BURST - 2)
            ]
            other = consignment_body(article_description=f"{word} other")
            calls = [_post(api, trader.key, b, f"fresh-{word}-{i}") for i, b in enumerate(fresh)]
            calls.insert(BURST // 4, _post(api, trader.key, first_body, f"used-{word}"))
            calls.insert(3 * BURST // 4, _post(api, trader.key, other, f"used-{word}"))
            replies = await asyncio.gather(*calls)
            replay = replies.pop(BURST // 4)
            refused = replies.pop(3 * BURST // 4 - 1)
            assert replay.status == 201, replay.text
            assert replay.headers.get("Idempotent-Replayed") == "true"
            assert replay.json == first.json
            assert refused.status == 422, refused.text
            assert json.loads(refused.text)["errors"][0]["field"] == "Idempotency-Key"
            for r in replies:
                assert r.status == 201, r.text
                assert "Idempotent-Replayed" not in r.headers
            cur = await db.execute(
                "SELECT article_description, count(*) FROM consignments"
                " WHERE article_description LIKE %s GROUP BY 1",
                (f"{word} %",),
            )
            counts = dict(await cur.fetchall())
            assert counts == {b["article_description"]: 1 for b in [first_body, *fresh]}
            split = await node_metric(plain, node_url, "rocars_group_commit_splits_total") > splits0


async def test_a_key_whose_record_expired_submits_anew_on_the_general_path(
    api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """#11 target 1 and the 24 h idempotency window: a key whose record expired but is not yet
    deleted fails the grouped statement's record insert, and the general path then writes a
    new submission (same statement, its audit record by its own actor) and replaces the
    record with the new answer: no replay of the expired one, no 422."""
    trader = accounts.trader
    key = f"expired-{token()}"
    old = await _post(api, trader.key, consignment_body(), key)
    assert old.status == 201, old.text
    await db.execute(
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours'"
        " WHERE account_id = %s AND key = %s",
        (trader.id, key),
    )
    body = consignment_body(article_description=f"{token()} after expiry")
    new = await _post(api, trader.key, body, key)
    assert new.status == 201, new.text
    assert "Idempotent-Replayed" not in new.headers
    assert new.json["ccrn"] != old.json["ccrn"]
    row = await _stored(db, new.json["ccrn"])
    assert (row["owner"], row["versions"], row["after"]) == (trader.id, 1, new.json)
    assert row["actors"] == [f"trader:{trader.id}"]
    cur = await db.execute(
        "SELECT response FROM idempotency_keys WHERE account_id = %s AND key = %s",
        (trader.id, key),
    )
    assert await cur.fetchone() == (new.json,)
