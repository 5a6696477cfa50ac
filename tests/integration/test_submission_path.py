"""The submission write path after #11 (node/api/consignments.py `_insert`, node/risk_cache.py,
node/stores.py `check_locally`), through HAProxy on the real cluster: what it no longer reads
back or re-checks must still come out as before.

Rules are global, so every rule here matches only this test's cargo (a unique token) and is
deactivated when the test ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from apikit import Accounts, Api, consignment_body, submit, token
from psycopg_pool import AsyncConnectionPool

from deploy.admin import leader_site
from deploy.harness import LocalCluster
from node.config import load_node_config
from node.stores import check_locally

pytestmark = pytest.mark.integration


@pytest.fixture
async def direct_rules(db: psycopg.AsyncConnection[Any]) -> AsyncIterator[list[int]]:
    """Ids of rules a test wrote straight into PostgreSQL; deactivated after the test."""
    made: list[int] = []
    yield made
    if made:
        await db.execute("UPDATE risk_rules SET active = false WHERE id = ANY(%s)", (made,))


async def selected(api: Api, accounts: Accounts, ccrn: str) -> bool:
    r = await api.get(f"/v1/consignments/{ccrn}", accounts.officer.key)
    assert r.status == 200, r.text
    return bool(r.json["selected"])


async def test_a_rule_written_behind_the_nodes_back_applies_to_the_next_submission(
    api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any], direct_rules: list[int]
) -> None:
    """#11 target 1: the node keeps the rules in memory, yet a rule committed by anyone (here
    straight into the database, so no node could have been told) applies to every submission
    after its commit, and stops applying after it is deactivated: the insert checks the rules'
    version in the same statement."""
    word = token()
    before = await submit(api, accounts.trader.key, article_description=f"crates of {word}")
    assert not await selected(api, accounts, before["ccrn"])  # and the node now has the rules
    cur = await db.execute(
        "INSERT INTO risk_rules (kind, value, created_by) VALUES ('keyword', %s, %s) RETURNING id",
        (word, accounts.officer.id),
    )
    row = await cur.fetchone()
    assert row is not None
    direct_rules.append(int(row[0]))
    hit = await submit(api, accounts.trader.key, article_description=f"crates of {word}")
    assert await selected(api, accounts, hit["ccrn"])
    batch = await api.post(
        "/v1/consignments:batch",
        accounts.trader.key,
        json=[consignment_body(article_description=f"{word} in bulk"), consignment_body()],
    )
    assert batch.status == 200, batch.text
    first, second = (x["ccrn"] for x in batch.json["results"])
    assert (await selected(api, accounts, first), await selected(api, accounts, second)) == (
        True,
        False,
    )
    await db.execute("UPDATE risk_rules SET active = false WHERE id = %s", (row[0],))
    after = await submit(api, accounts.trader.key, article_description=f"crates of {word}")
    assert not await selected(api, accounts, after["ccrn"])
    # Each submission stored exactly one consignment: none was stored with stale rules first.
    cur = await db.execute(
        "SELECT count(*) FROM consignments WHERE article_description LIKE %s", (f"%{word}%",)
    )
    assert await cur.fetchone() == (4,)


async def test_the_answer_is_the_stored_record_and_its_first_version(
    api: Api, accounts: Accounts
) -> None:
    """#11 target 1: the 201's body is built in the node, not read back from the row; it must
    still be exactly what a GET answers and what history keeps as version 1, also for an
    expected_at sent with an offset other than UTC and with ITFS."""
    at = (datetime.now(UTC) + timedelta(hours=3)).astimezone(timezone(timedelta(hours=5.5)))
    body = consignment_body(expected_at=at.isoformat(), itfs={"airport": "HKG", "flight": "CX250"})
    r = await api.post("/v1/consignments", accounts.trader.key, json=body)
    assert r.status == 201, r.text
    got = await api.get(f"/v1/consignments/{r.json['ccrn']}", accounts.trader.key)
    assert got.status == 200
    assert r.json == got.json
    hist = await api.get(f"/v1/consignments/{r.json['ccrn']}/history", accounts.trader.key)
    assert [v["data"] for v in hist.json["versions"]] == [got.json]
    assert datetime.fromisoformat(got.json["expected_at"]) == at


async def test_a_batch_stores_each_accepted_item_with_its_first_version(
    api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """#11 target 4: the multi-row insert stores every accepted item once, under the CCRN its
    result names, each with version 1 equal to what a GET answers, and the audit names them."""
    items: list[Any] = [consignment_body(package_count=n) for n in range(1, 41)]
    items[7] = consignment_body(lbcp="ZZZ")
    r = await api.post("/v1/consignments:batch", accounts.trader.key, json=items)
    assert r.status == 200, r.text
    ccrns = [x.get("ccrn") for x in r.json["results"]]
    assert ccrns[7] is None
    assert r.json["results"][7]["errors"][0]["field"] == "lbcp"
    stored = [c for c in ccrns if c is not None]
    assert (r.json["accepted"], len(set(stored))) == (39, 39)
    cur = await db.execute(
        "SELECT c.ccrn, c.package_count, v.version FROM consignments c"
        " JOIN consignment_versions v USING (ccrn) WHERE c.ccrn = ANY(%s)",
        (stored,),
    )
    rows = {ccrn: (count, version) for ccrn, count, version in await cur.fetchall()}
    assert rows == {c: (i + 1, 1) for i, c in enumerate(ccrns) if c is not None}
    one = stored[-1]
    got = await api.get(f"/v1/consignments/{one}", accounts.trader.key)
    hist = await api.get(f"/v1/consignments/{one}/history", accounts.trader.key)
    assert [v["data"] for v in hist.json["versions"]] == [got.json]
    cur = await db.execute(
        "SELECT after FROM audit_log WHERE action = 'consignment.submit_batch'"
        " AND after -> 'ccrns' ? %s",
        (one,),
    )
    (after,) = await cur.fetchone() or (None,)
    assert after is not None
    assert after["ccrns"] == stored


async def test_a_pooled_connection_whose_backend_died_is_not_handed_out(
    cluster: LocalCluster, db: psycopg.AsyncConnection[Any]
) -> None:
    """#11 target 1: the node's pool no longer sends a query on every checkout
    (node.stores.check_locally); a connection whose server process was terminated while it
    sat in the pool (a restart, a switchover) is still found at checkout and replaced, so the
    request that takes it is not the one that fails."""
    site = await leader_site(cluster.topo)
    conninfo = load_node_config(cluster.state.node_config(site)).database.conninfo(
        application_name="test-check-locally"
    )
    pool = AsyncConnectionPool(conninfo, min_size=1, max_size=2, open=False, check=check_locally)
    await pool.open(wait=True)
    try:
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")
            pid = conn.info.backend_pid
        await db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 10
        while True:  # until the server process is gone (its socket closed)
            cur = await db.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
            if await cur.fetchone() == (0,):
                break
            assert time.monotonic() < deadline, f"backend {pid} still there"
            await asyncio.sleep(0.02)
        async with pool.connection(timeout=10) as conn:
            cur = await conn.execute("SELECT pg_backend_pid()")
            assert await cur.fetchone() != (pid,)
    finally:
        await pool.close()
