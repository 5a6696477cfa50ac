"""#17 item 3, live: pgBackRest backups of a real cluster whose topology has a `backups`
section (WAL archived from the primary to the witness site's repository), `rocars backup
run|status|check`, and the restore drill: backup, writes through the API, T, more writes, a
point-in-time restore into a new data folder, and exactly the writes acknowledged before T in
it.

The cluster is this module's own (the session cluster archives nothing), on its own ports.
The slow variant fills the database with a million consignments first (in SQL, as the owner
role, like tests/integration/test_history_checker_scale.py) and reports the durations:
`flock /tmp/rocars-cluster.lock .venv/bin/pytest -p no:cacheprovider -m slow -s
tests/integration/test_backup_restore_live.py`."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest
import yaml

from deploy import admin
from deploy.drills import restore
from deploy.harness import TEST_ABUSE_LIMITS, TEST_PORT_OFFSETS, LocalCluster
from deploy.state import DEFAULT_TOPOLOGY, StateDir
from deploy.topology import Backups, load_topology

pytestmark = pytest.mark.integration
PORT_OFFSET = int(os.environ.get("ROCARS_BACKUP_PORT_OFFSET", str(TEST_PORT_OFFSETS["backup"])))
MILLION = 1_000_000


@pytest.fixture(scope="module")
def backup_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("backup")
    topo = (
        load_topology(DEFAULT_TOPOLOGY)
        .with_port_offset(PORT_OFFSET)
        .with_abuse_limits(TEST_ABUSE_LIMITS)
        .without_monitoring()
    )
    topo = topo.model_copy(update={"backups": Backups()})
    topo_file = root / "topology.yaml"
    topo_file.write_text(yaml.safe_dump(topo.model_dump(), sort_keys=False))
    c = LocalCluster(topo, StateDir((root / "var").resolve()), topo_file)
    try:
        t0 = time.monotonic()
        c.up()
        print(f"\ncluster with WAL archiving up in {time.monotonic() - t0:.1f} s")
        yield c
    finally:
        c.close()


def _rocars(c: LocalCluster, *args: str, check: bool = True) -> str:
    return c.rocars(*args, "--state-dir", str(c.state.root), timeout=600, check=check)


def test_status_before_the_first_backup_says_there_is_no_stanza(
    backup_cluster: LocalCluster,
) -> None:
    """#17 item 3: `rocars backup status` on a cluster never backed up says so and what to
    run, and exits 0."""
    out = _rocars(backup_cluster, "backup", "status")
    assert "no stanza yet" in out
    assert "rocars backup run" in out


async def test_restore_drill_restores_exactly_the_writes_acknowledged_before_t(
    backup_cluster: LocalCluster,
) -> None:
    """#17 item 3: the restore drill (full backup, writes under load, T from the primary's
    clock, more writes, point-in-time restore into a new data folder, a throwaway PostgreSQL)
    finds every write acknowledged before T and none invoked after it."""
    report = await restore.run_drill(
        backup_cluster.topo, backup_cluster.state, writes_before=40, writes_after=40
    )
    print("\n" + report.text())
    assert report.passed, report.text()
    assert report.acknowledged_before >= 40
    assert report.after >= 40
    assert report.consignments_restored > 0
    leftovers = list((backup_cluster.state.root / "restore-drill").glob("*"))
    assert leftovers == []


def test_incremental_backup_check_and_status_through_the_cli(
    backup_cluster: LocalCluster,
) -> None:
    """#17 item 3: `rocars backup run --type incr` after a full one makes an incremental on
    top of it; `backup check` passes (WAL reaches the repository); `backup status --json`
    lists both with sizes and WAL ranges."""
    if "no stanza yet" in _rocars(backup_cluster, "backup", "status"):
        _rocars(backup_cluster, "backup", "run", "--type", "full")
    out = _rocars(backup_cluster, "backup", "run", "--type", "incr")
    assert "(incr) done in" in out
    assert "configuration, primary and WAL archiving are fine" in _rocars(
        backup_cluster, "backup", "check"
    )
    doc = json.loads(_rocars(backup_cluster, "backup", "status", "--json"))
    types = [b["type"] for b in doc["backups"]]
    assert "full" in types
    assert types[-1] == "incr"
    last = doc["backups"][-1]
    assert last["prior"] is not None
    assert last["size"] > 0
    assert last["wal_start"]
    assert doc["wal_max"] >= last["wal_stop"]


_MAKE_MILLION = (
    "INSERT INTO consignments (ccrn, owner_id, direction, lbcp, package_count,"
    " package_description, article_description, consignor_name, consignor_address,"
    " consignee_name, consignee_address, expected_at, last_changed_at, created_at, risk_draw,"
    " version) SELECT '7' || lpad(g::text, 15, '0'), %(owner)s, 'import', 'LMC', 1 + g %% 40,"
    " 'bulk ' || g, 'cotton shirts', 'Shenzhen Garment Works', 'Shenzhen', 'Kowloon Retail',"
    " 'Kowloon', now() + interval '6 hours', now(), now(), 0.5, 1"
    " FROM generate_series(1, %(total)s) g",
    "INSERT INTO consignment_versions (ccrn, version, data, changed_at, changed_by)"
    " SELECT c.ccrn, 1, jsonb_build_object('ccrn', c.ccrn, 'package_description',"
    " c.package_description, 'consignor_name', c.consignor_name), c.created_at, c.owner_id"
    " FROM consignments c WHERE c.owner_id = %(owner)s",
    "ANALYZE consignments, consignment_versions",
)


@pytest.mark.slow
async def test_backup_and_restore_durations_with_a_million_consignments(
    backup_cluster: LocalCluster,
) -> None:
    """#17 item 3: with at least 1,000,000 consignments the restore drill still restores
    exactly the writes acknowledged before T; prints the backup and restore durations."""
    c = backup_cluster
    owner = await admin.admin_create_account(
        c.topo, c.state, kind="trader", name="bulk million", trader_kind="shipper"
    )
    conn = await admin.connect_leader(c.topo, c.state, account="owner")
    async with conn:
        t0 = time.monotonic()
        for sql in _MAKE_MILLION:
            await conn.execute(sql, {"owner": int(owner["id"]), "total": MILLION})
        await conn.commit()
        made_s = time.monotonic() - t0
    report = await restore.run_drill(c.topo, c.state, writes_before=100, writes_after=100)
    print(f"\n{MILLION} consignments made in {made_s:.1f} s\n{report.text()}")
    assert report.passed, report.text()
    assert report.consignments_restored >= MILLION
