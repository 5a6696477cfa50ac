"""#14 item 3 (a rolling restart of every component under load): every process of a chaos
cluster restarted one at a time under the recorded history workload, each waited for until it
serves again (chaos_rolling.py says the order and the waits), then the history checker.

The scenario runner (`Run`, `_check`) is test_chaos_links.py's, imported.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import chaos_cluster
import chaos_report
import pytest
from chaos_rolling import RollingRestart
from test_chaos_links import QUIET_S, Run, _check

from deploy.drills.workload import WorkloadAccounts, make_accounts, recording
from deploy.harness import LocalCluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.chaos,
    pytest.mark.slow,
    # The restarted processes are started from here, detached (their own session) and never
    # waited for, as `rocars` starts them: their Popen objects warn when dropped.
    pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning"),
]


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with chaos_cluster.running(tmp_path_factory.mktemp("chaos-rolling")) as c:
        yield c


@pytest.fixture
def accounts(chaos: LocalCluster) -> WorkloadAccounts:
    return asyncio.run(make_accounts(chaos.topo, chaos.state))


@pytest.fixture
def settled(chaos: LocalCluster) -> str:
    """The cluster settled before the test; the leader's site."""
    return asyncio.run(chaos_cluster.settled(chaos))


async def test_rolling_restart_of_every_component_under_load_loses_nothing(
    chaos: LocalCluster, accounts: WorkloadAccounts, settled: str, tmp_path: Path
) -> None:
    """#14 item 3 (rolling restart of every component under load): each etcd member (the raft
    leader's last), the Redis replica then the primary (after a Sentinel failover), each
    Sentinel, HAProxy (reloaded), the API nodes and the PostgreSQL members (Patroni and
    PostgreSQL; `rocars upgrade`'s order: never what serves writes before a switchover) are
    restarted one at a time under the workload, each waited for until it serves again. Every
    process has a new pid afterwards, the checker finds no anomaly, and writes succeed after
    the last step; the worst write gap is reported."""
    run = Run("rolling-restart")
    rolling = RollingRestart(chaos)
    before = rolling.pids()
    assert None not in before.values(), before
    async with recording(chaos.topo, accounts, run.history, settings=run.settings):
        await asyncio.sleep(QUIET_S)
        start = time.monotonic()
        try:
            await rolling.run()
        finally:
            run.fault = (start, time.monotonic())
            for i, step in enumerate(rolling.steps, 1):
                print(f"[step {i:2d}] {step.name}: {step.seconds:.1f} s ({step.detail})")
        await chaos_cluster.settled(chaos)
        await asyncio.sleep(QUIET_S)
    after = rolling.pids()
    run.measured["steps"] = len(rolling.steps)
    run.measured |= {f"{s.name} s": round(s.seconds, 1) for s in rolling.steps}
    report = await _check(chaos, run, tmp_path)
    chaos_report.record(run.name, report, notes=run.measured)
    ops = run.history.operations()
    counts = "/".join(str(sum(op.type == t for op in ops)) for t in ("ok", "fail", "info"))
    print(
        f"[measure] rolling restart: steps {len(rolling.steps)}, ops ok/fail/info {counts},"
        f" anomalies {len(report.anomalies)}, worst write gap {report.worst_gap():.2f} s,"
        f" restarts took {run.fault[1] - run.fault[0]:.1f} s"
    )
    same = sorted(name for name, pid in before.items() if after.get(name) == pid)
    assert same == [], f"not restarted: {same}"
    assert None not in after.values(), after
