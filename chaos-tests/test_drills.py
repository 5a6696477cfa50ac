"""Failover drills against the real cluster: each fault, in both directions, under write load.

Every drill checks RPO 0 (no acknowledged write lost), no duplicates (exactly once through
idempotency keys), no failed client request, and prints the RTO (the `rocars drill` command
exits non-zero over budget; here only twice the budget fails, as CI shares 2 cores). CI runs
switchover, kill-postgres and kill-site each time, the rest under `slow` (`make drills`).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import pytest

from deploy.drills import runner
from deploy.drills.drill import DrillResult
from deploy.harness import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def _check(r: DrillResult) -> None:
    print(f"\n[measure] drill {runner.describe(r)}")
    assert r.rpo == 0, r.missing[:10]
    assert r.checks_failed == []
    assert r.duplicates == 0
    assert r.acked > 0
    assert r.failed_requests == 0
    # RTO targets are measured figures (printed above and in the reports); on a shared 2-core
    # CI machine only a gross regression fails the run.
    assert r.rto_s is not None
    assert r.rto_s <= 2 * r.budget_s, r.verdict()


def _drill(c: LocalCluster, key: str, name: str) -> None:
    """One round trip (A -> B, then B -> A), each direction checked as soon as it ends."""
    results = asyncio.run(
        runner.run_round_trips(c.topo, c.state, name, api_key=key, on_result=_check)
    )
    assert [r.direction for r in results] == ["A->B", "B->A"]


@pytest.mark.parametrize("scenario", ["switchover", "kill-postgres", "kill-site"])
def test_drill_in_ci(drill_cluster: LocalCluster, drill_key: str, scenario: str) -> None:
    """Planned switchover, a killed primary PostgreSQL and a lost site: RPO 0, RTO in budget."""
    _drill(drill_cluster, drill_key, scenario)


@pytest.mark.slow
@pytest.mark.parametrize(
    "scenario",
    [
        "kill-patroni-and-postgres",
        "freeze-patroni",
        "kill-node",
        "hang-node",
        "kill-redis-primary",
    ],
)
def test_drill_slow(drill_cluster: LocalCluster, drill_key: str, scenario: str) -> None:
    """The other faults, run by `make drills`: RPO 0, no duplicates, RTO in budget."""
    _drill(drill_cluster, drill_key, scenario)


def test_isolate_site_in_ci(netns_cluster: LocalCluster) -> None:
    """A primary site cut off from the other two (nftables inside its namespace) while clients
    can still reach it: it acknowledges nothing it could lose, the other site takes over, the
    old primary rejoins as a replica once healed; in both directions, through the real CLI."""
    c = netns_cluster
    reports = c.state.reports
    before = set(reports.glob("*.json")) if reports.exists() else set()
    out = c.rocars("drill", "isolate-site", "--state-dir", str(c.state.root), check=False)
    print(out)
    results = [json.loads(p.read_text()) for p in sorted(set(reports.glob("*.json")) - before)]
    assert [r["direction"] for r in results] == ["A->B", "B->A"], out
    for r in results:
        print(f"\n[measure] drill isolate-site {r['direction']}: RTO {r['rto_s']}s RPO {r['rpo']}")
        assert r["rpo"] == 0, r["missing"][:10]
        assert r["checks_failed"] == []
        assert r["duplicates"] == 0
        assert r["acked"] > 0
        assert r["failed_requests"] == 0
        assert r["rto_s"] is not None
        assert r["rto_s"] <= 2 * r["budget_s"], r["verdict"]
    # Prometheus, in the witness's namespace, scrapes every target across the bridge again once
    # the site is healed (#13 item 1 in the production-shaped topology).
    deadline = time.monotonic() + 60
    while True:
        _, doc = c.status()
        mon = doc["monitoring"]
        if mon["prometheus"]["up"] and not mon["prometheus"]["targets_down"]:
            break
        assert time.monotonic() < deadline, mon
        time.sleep(1)
    assert mon["prometheus"]["targets_up"] == 17
    # The root namespace never saw any of it: no address of the cluster's subnet here.
    assert c.topo.namespaces is not None
    assert (
        c.topo.namespaces.hub_host
        not in subprocess.run(
            ["ip", "-4", "addr"], capture_output=True, text=True, check=True
        ).stdout
    )
