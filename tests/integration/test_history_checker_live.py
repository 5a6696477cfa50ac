"""#14 item 2 on the real cluster: a short recorded workload of every write kind through
HAProxy checks clean, and anomalies planted in the database (as the owner role, inside a
transaction rolled back afterwards) or forged into the history are found."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import psycopg
import pytest

from deploy import admin
from deploy.drills import checker
from deploy.drills.history import Completion, History, Invoke, Operation
from deploy.drills.workload import Actor, Settings, WorkloadAccounts, recording
from deploy.harness import LocalCluster

pytestmark = pytest.mark.integration
RUN_S = 8.0


def _accounts(cluster: LocalCluster) -> WorkloadAccounts:
    def some(kind: str, n: int) -> list[Actor]:
        tag = secrets.token_hex(3)
        return [Actor(*cluster.create_account(kind, f"checker {tag} {kind} {i}")) for i in range(n)]

    return WorkloadAccounts(some("trader", 2), some("trucker", 1), some("officer", 1))


@pytest.fixture(scope="module")
def recorded(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A history of RUN_S seconds of the workload on the session cluster, saved as JSON Lines."""
    accounts = _accounts(cluster)

    async def run() -> History:
        async with recording(cluster.topo, accounts, settings=Settings(seed=14)) as history:
            await asyncio.sleep(RUN_S)
        return history

    return asyncio.run(run()).save(tmp_path_factory.mktemp("history") / "history.jsonl")


def _ok(ops: list[Operation], kind: str) -> list[Operation]:
    return [op for op in ops if op.kind == kind and op.type == "ok"]


async def test_workload_history_checks_clean(cluster: LocalCluster, recorded: Path) -> None:
    """#14 item 2: every kind of write (submissions, amendments, batches, bundles, arrival
    decisions, manual clearances) was acknowledged during the run, and the checker, reading
    the saved history back, finds no anomaly and no unavailability window on a quiet
    cluster."""
    history = History.load(recorded)
    report = await checker.check_cluster(cluster.topo, cluster.state, history)
    print(f"\n[measure] checker on the live workload:\n{report.summary()}\n{report.timings}")
    for kind in ("submit", "amend", "batch", "bundle", "arrival", "clearance"):
        assert report.operations[kind]["ok"] > 0, kind
    assert report.anomalies == []
    assert report.windows == []
    assert len(history.samples()) >= RUN_S


def _forged_i3(history: History) -> tuple[History, int]:
    """The history plus a submission acknowledged by the site not holding the leader key,
    between two samples that show the leader unchanged."""
    samples = history.samples()
    a, b = samples[1], samples[2]
    assert a.leader == b.leader
    assert a.revision == b.revision
    real = next(op for op in history.operations() if op.type == "ok" and op.kind == "submit")
    assert real.completion is not None
    other = "B" if real.completion.node == "A" else "A"
    op_id = max(op.id for op in history.operations()) + 1
    t0, t1 = a.t + (b.t - a.t) / 3, a.t + 2 * (b.t - a.t) / 3
    # A replay of a real submission (same key, same answer): only who answered is wrong.
    inv = real.invoke
    invoke = Invoke(op_id, 999, inv.account, "submit", inv.key, inv.input, t0, a.wall)
    done = Completion(op_id, "ok", t1, a.wall, real.result, 201, other, "active")
    return History([*history.events, invoke, done]), op_id


async def _plant(conn: psycopg.AsyncConnection[Any], ops: list[Operation]) -> dict[str, str]:
    """Damage the database as the owner (the caller rolls back); what was planted where."""
    amended = _ok(ops, "amend")[-1]
    ccrn, version = amended.result["ccrn"], amended.result["version"]
    await conn.execute(
        "DELETE FROM consignment_versions WHERE ccrn = %s AND version = %s", (ccrn, version)
    )
    submitted = next(op for op in _ok(ops, "submit") if op.result["ccrn"] not in {ccrn})
    changed = submitted.result["ccrn"]
    await conn.execute(
        'UPDATE consignment_versions SET data = data || \'{"consignee_name": "X"}\''
        " WHERE ccrn = %s AND version = 1",
        (changed,),
    )
    dup = "9" + "".join(secrets.choice("0123456789") for _ in range(15))
    await conn.execute(
        "INSERT INTO consignments SELECT %s, owner_id, direction, lbcp, package_count,"
        " package_description, article_description, consignor_name, consignor_address,"
        " consignee_name, consignee_address, expected_at, itfs, status, version,"
        " last_changed_at, now(), selected, selection_reasons, override, lbcp_outcome,"
        " airport_inspected, late, risk_draw FROM consignments WHERE ccrn = %s",
        (dup, changed),
    )
    bundled = _ok(ops, "bundle")[0]
    await conn.execute(
        'UPDATE idempotency_keys SET response = response || \'{"vrn": "FORGED"}\''
        " WHERE account_id = %s AND key = %s",
        (bundled.invoke.account, bundled.invoke.key),
    )
    return {
        "lost": ccrn,
        "changed": changed,
        "duplicate": dup,
        "record-differs": bundled.invoke.key or "",
    }


async def test_checker_finds_planted_anomalies(cluster: LocalCluster, recorded: Path) -> None:
    """#14 item 2: with an acknowledged amendment's version deleted (I1 lost), an acknowledged
    submission's content altered (I1 changed), a consignment no key explains (I2 duplicate),
    an idempotency record altered (I2) and a write forged as acknowledged by the site not
    holding the leader key (I3), the checker reports each, naming the planted object."""
    history, forged = _forged_i3(History.load(recorded))
    ops = history.operations()
    conn = await admin.connect_leader(cluster.topo, cluster.state, account="owner")
    async with conn:
        try:
            planted = await _plant(conn, ops)
            report = await checker.check(conn, history)
        finally:
            await conn.rollback()
        print(f"\n[measure] checker with planted anomalies:\n{report.summary()}")
        by_kind: dict[str, list[str]] = {}
        for a in report.anomalies:
            by_kind.setdefault(a.kind, []).append(a.detail)
        for kind, needle in planted.items():
            assert any(needle in d for d in by_kind.get(kind, [])), (kind, by_kind)
        assert [a.op for a in report.anomalies if a.kind == "ack-by-non-leader"] == [forged]
        # Rolled back: the database checks clean again.
        clean = await checker.check(conn, History.load(recorded))
        assert clean.anomalies == []
