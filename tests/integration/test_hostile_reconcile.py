"""#10 item 3 on the real cluster: a journalled manual clearance PostgreSQL refuses (a NUL in a
document, as could be on disk from before the API refused them) is set aside by
reconciliation, the other records are imported, and manual mode switches off."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from apikit import Accounts, Api, new_vrn

from contingency.journal import ClearanceRecord, Journal
from deploy.harness import LocalCluster

pytestmark = pytest.mark.integration


def _record(site: str, officer: int, documents: tuple[str, ...]) -> ClearanceRecord:
    return ClearanceRecord(
        node=site,
        officer=str(officer),
        lbcp="LMC",
        vrn=new_vrn(),
        decision="release",
        documents=documents,
        ccrns=(),
        cleared_at=datetime.now(UTC),
    )


async def test_a_refused_journal_record_is_set_aside_and_manual_mode_switches_off(
    cluster: LocalCluster, api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """#10 item 3: with manual mode on, three clearances are journalled straight through the
    Journal API on a node's journal, the middle one with a NUL in a document. Switching manual
    mode off reconciles: the two good records are imported, the bad one is set aside in the
    journal with the reason and named in the answer, the node's metric counts it, and the mode
    is normal again."""
    officer = accounts.officer
    site = cluster.topo.data_sites[0]
    path = cluster.state.root / "contingency" / f"journal-{site}.sqlite"
    on = await api.post(
        "/v1/contingency/activate", officer.key, json={"reason": "#10 hostile reconcile"}
    )
    assert on.status == 200, on.text
    try:
        with Journal(path) as journal:
            good1 = journal.append_clearance(_record(site, officer.id, ("manifest 1",)))
            bad = journal.append_clearance(_record(site, officer.id, ("ok", "a\x00b")))
            good2 = journal.append_clearance(_record(site, officer.id, ("manifest 3",)))
        off = await api.post(
            "/v1/contingency/deactivate", officer.key, json={"reason": "#10 database back"}
        )
        assert off.status == 200, off.text
        doc = off.json
        assert doc["mode"] == "normal", doc
        set_aside = doc["reconciliation"]["set_aside"]
        assert [s["uuid"] for s in set_aside] == [bad], doc
        assert set_aside[0]["kind"] == "clearance"
        # jsonb refuses the escaped NUL: "UntranslatableCharacter: unsupported Unicode escape..."
        assert set_aside[0]["reason"].startswith("UntranslatableCharacter: "), set_aside
        assert doc["reconciliation"]["imported"] >= 2, doc

        cur = await db.execute(
            "SELECT uuid::text FROM manual_clearances WHERE uuid = ANY(%s::uuid[])",
            ([good1, bad, good2],),
        )
        assert {r[0] for r in await cur.fetchall()} == {good1, good2}
        with Journal.open_readonly(path) as journal:
            assert bad in {r.uuid for r in journal.set_aside_records()}
            assert journal.pending_clearances() == ()

        metrics = await api.get("/metrics", base=cluster.topo.node_url(site).rstrip("/"))
        count = re.search(r"^rocars_contingency_journal_set_aside (\S+)$", metrics.text, re.M)
        assert count is not None, metrics.text
        assert float(count.group(1)) >= 1, metrics.text

        status = await api.get("/v1/contingency")
        assert status.json["mode"] == "normal", status.text
    finally:
        if (await api.get("/v1/contingency")).json["mode"] != "normal":
            await api.post("/v1/contingency/deactivate", officer.key, json={"reason": "cleanup"})
