"""#14 item 2, scale: checking a history of 100,000 operations against a database of 1,000,000
consignments takes under 30 s. The data is made in SQL (INSERT ... SELECT generate_series, as
the owner role) on a cluster of this test's own: a million consignments, their first
versions and idempotency records, all by the history's account since it began (the worst case
for the I2 scans), 30,000 of them amended once; the history acknowledges 70,000 submissions
and the 30,000 amendments."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy import admin
from deploy.drills import checker
from deploy.drills.history import History, Kind
from deploy.harness import TEST_PORT_OFFSETS, LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CONSIGNMENTS = 1_000_000
SUBMITS = 70_000
AMENDS = 30_000
BUDGET_S = 30.0

_CONTENT = (
    "'ccrn', c.ccrn, 'version', {version}, 'status', 'submitted', 'direction', c.direction,"
    " 'lbcp', c.lbcp, 'package_count', c.package_count, 'package_description', {description},"
    " 'article_description', c.article_description, 'consignor_name', c.consignor_name,"
    " 'consignor_address', c.consignor_address, 'consignee_name', c.consignee_name,"
    " 'consignee_address', c.consignee_address"
)
_MAKE = [
    "INSERT INTO consignments (ccrn, owner_id, direction, lbcp, package_count,"
    " package_description, article_description, consignor_name, consignor_address,"
    " consignee_name, consignee_address, expected_at, last_changed_at, created_at, risk_draw,"
    " version) SELECT '8' || lpad(g::text, 15, '0'), %(owner)s, 'import', 'LMC', 1 + g %% 40,"
    " CASE WHEN g > %(submits)s AND g <= %(submits)s + %(amends)s THEN 'amended ' ELSE 'scale '"
    " END || g, 'cotton shirts', 'Shenzhen Garment Works', 'Shenzhen', 'Kowloon Retail',"
    " 'Kowloon', now() + interval '6 hours', now(), now(), 0.5,"
    " CASE WHEN g > %(submits)s AND g <= %(submits)s + %(amends)s THEN 2 ELSE 1 END"
    " FROM generate_series(1, %(total)s) g",
    "INSERT INTO consignment_versions (ccrn, version, data, changed_at, changed_by)"
    " SELECT c.ccrn, 1, jsonb_build_object("
    + _CONTENT.format(version=1, description="'scale ' || ltrim(substr(c.ccrn, 2), '0')")
    + "), c.created_at, c.owner_id FROM consignments c WHERE c.owner_id = %(owner)s",
    "INSERT INTO consignment_versions (ccrn, version, data, changed_at, changed_by)"
    " SELECT c.ccrn, 2, jsonb_build_object("
    + _CONTENT.format(version=2, description="c.package_description")
    + "), c.created_at, c.owner_id FROM consignments c WHERE c.owner_id = %(owner)s"
    " AND c.version = 2",
    "INSERT INTO idempotency_keys (account_id, key, request_hash, status, response)"
    " SELECT %(owner)s, (CASE WHEN v.version = 1 THEN 's' ELSE 'a' END) || v.ccrn, 'h', 200,"
    " v.data FROM consignment_versions v WHERE v.changed_by = %(owner)s",
    "ANALYZE consignments, consignment_versions, idempotency_keys",
]


@pytest.fixture(scope="module")
def scale_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("checker-scale")
    with LocalCluster.running(root, port_offset=TEST_PORT_OFFSETS["checker-scale"]) as c:
        yield c


def _history(rows: list[tuple[str, int, dict[str, Any]]], owner: int, wall0: float) -> History:
    """Acknowledged submissions (version 1) and amendments (version 2), one after another."""
    ticks = itertools.count()
    h = History(clock=lambda: next(ticks) / 1000, wall=lambda: wall0)
    h.sample("pg-A", 1, {"A": "active", "B": "standby"})
    for ccrn, version, data in rows:
        kind: Kind = "submit" if version == 1 else "amend"
        key = ("s" if version == 1 else "a") + ccrn
        op = h.invoke(1, owner, kind, key, {"ccrn": ccrn})
        h.complete(op, "ok", result=data, status=200, node="A", role="active")
    h.sample("pg-A", 1, {"A": "active", "B": "standby"})
    return h


def test_checking_100k_operations_against_1m_consignments(
    scale_cluster: LocalCluster, tmp_path: Path
) -> None:
    """#14 item 2: the checker takes under 30 s for 100,000 acknowledged operations against
    1,000,000 consignments (with their versions and idempotency records) and finds nothing
    wrong; the time is printed."""
    owner, _ = scale_cluster.create_account("trader", "scale trader")
    topo, state = scale_cluster.topo, scale_cluster.state

    async def go() -> tuple[float, checker.CheckReport]:
        wall0 = time.time()
        conn = await admin.connect_leader(topo, state, account="owner")
        async with conn:
            t0 = time.monotonic()
            for statement in _MAKE:
                await conn.execute(
                    statement,
                    {"owner": owner, "total": CONSIGNMENTS, "submits": SUBMITS, "amends": AMENDS},
                )
                await conn.commit()
            made = time.monotonic() - t0
            cur = await conn.execute(
                "SELECT ccrn, version, data FROM consignment_versions"
                " WHERE ccrn <= '8' || lpad(%s::text, 15, '0')"
                " AND (version = 2 OR ccrn <= '8' || lpad(%s::text, 15, '0')) ORDER BY ccrn",
                (SUBMITS + AMENDS, SUBMITS),
            )
            rows = [r for r in await cur.fetchall() if r[1] == 2 or int(r[0][1:]) <= SUBMITS]
            await conn.rollback()
        assert len(rows) == SUBMITS + AMENDS
        history = _history(rows, owner, wall0)
        history.save(tmp_path / "history.jsonl")
        loaded = History.load(tmp_path / "history.jsonl")
        t1 = time.monotonic()
        report = await checker.check_cluster(topo, state, loaded)
        took = time.monotonic() - t1
        print(
            f"\n[measure] made {CONSIGNMENTS} consignments in {made:.1f}s; checked"
            f" {SUBMITS + AMENDS} operations in {took:.2f}s ({report.timings})"
        )
        return took, report

    took, report = asyncio.run(go())
    assert report.operations == {
        "submit": {"ok": SUBMITS, "fail": 0, "info": 0},
        "amend": {"ok": AMENDS, "fail": 0, "info": 0},
    }
    assert report.anomalies == []
    assert took < BUDGET_S
