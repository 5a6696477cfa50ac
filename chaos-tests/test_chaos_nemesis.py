"""#14 item 4: the nemesis. Random faults from nemesis.CATALOGUE (link cuts, latency and resets
through Toxiproxy; a Patroni freeze below ttl and an API node kill, as the drills inject them),
one every 10-30 s, each held a few seconds and healed, for ROCARS_NEMESIS_S seconds (60 by
default, what CI runs; `make chaos` runs 300) under the recorded workload; then everything is
healed, the cluster settles, and the history checker must find no anomaly.

ROCARS_NEMESIS_SEED picks the schedule (printed, and saved as JSON beside the history), so a
failing run is replayed by running it again with that seed.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path

import chaos_cluster
import chaos_report
import nemesis
import pytest
from chaos_cluster import Links

from deploy.drills import checker
from deploy.drills.history import History
from deploy.drills.workload import Settings, make_accounts, recording
from deploy.harness import LocalCluster

NEMESIS_S = float(os.environ.get("ROCARS_NEMESIS_S", "60"))
SEED = int(os.environ.get("ROCARS_NEMESIS_SEED", "14"))
QUIET_S = 3.0  # workload after everything healed and settled

pytestmark = [
    pytest.mark.integration,
    pytest.mark.chaos,
    # Cluster start, the run, settling, the check and teardown.
    pytest.mark.timeout(NEMESIS_S + 420),
    # CI's default selection runs the 60-second nemesis; longer ones are `make chaos`'s.
    *([pytest.mark.slow] if NEMESIS_S > 60 else []),
]


@pytest.fixture
def chaos(shared_chaos: LocalCluster) -> LocalCluster:
    """The suite's shared chaos cluster (chaos-tests/conftest.py)."""
    return shared_chaos


async def test_nemesis_random_faults_leave_no_anomaly(chaos: LocalCluster, tmp_path: Path) -> None:
    """#14 item 4: random faults every 10-30 s under the recorded workload, healed at the end:
    the checker finds zero anomalies (no acknowledged write lost or changed, none doubled, no
    write acknowledged by a node that was not active), writes succeed after the healing, and
    every planned fault was applied."""
    t_start = time.monotonic()
    plan = nemesis.schedule(SEED, NEMESIS_S, nemesis.CATALOGUE)
    print(
        f"\nnemesis seed {SEED}, {NEMESIS_S:.0f} s: {[(p.at_s, p.fault, p.hold_s) for p in plan]}"
    )
    assert plan, "the schedule has no fault"
    links = Links(chaos.topo)
    links.heal()
    await chaos_cluster.settled(chaos)
    accounts = await make_accounts(chaos.topo, chaos.state)
    history = History()
    nem = nemesis.Nemesis(chaos, links)
    healed = settle_s = 0.0
    async with recording(chaos.topo, accounts, history, settings=Settings(seed=SEED)):
        try:
            await nem.run(plan, NEMESIS_S)
        finally:
            nem.heal()
            healed = time.monotonic()
            # Settled while the workload runs on, so there are writes after the healing.
            site = await chaos_cluster.settled(chaos)
            settle_s = time.monotonic() - healed
            await asyncio.sleep(QUIET_S)

    folder = Path(os.environ.get("ROCARS_CHAOS_HISTORY_DIR") or tmp_path)
    saved = history.save(folder / f"nemesis-{SEED}.jsonl")
    (folder / f"nemesis-{SEED}.schedule.json").write_text(
        json.dumps(
            {
                "seed": SEED,
                "duration_s": NEMESIS_S,
                "applied": [a.as_dict() for a in nem.applied],
            },
            indent=2,
        )
    )
    report = await checker.check_cluster(chaos.topo, chaos.state, history)
    applied = [a for a in nem.applied if a.skipped is None]
    by_kind = dict(Counter(a.planned.fault for a in applied))
    chaos_report.record("nemesis", report, faults=by_kind, notes={"seed": SEED})
    ops = chaos_report.as_record("nemesis", report).operations
    print(
        f"[measure] nemesis: seed {SEED}, {NEMESIS_S:.0f} s, faults {len(applied)} {by_kind},"
        f" ops ok/fail/info {ops['ok']}/{ops['fail']}/{ops['info']},"
        f" anomalies {len(report.anomalies)}, worst write gap {report.worst_gap():.2f} s,"
        f" settled {settle_s:.1f} s after healing (leader {site}),"
        f" test {time.monotonic() - t_start:.1f} s\n"
        f"{json.dumps([a.as_dict() for a in nem.applied])}\n{report.summary()}\nhistory: {saved}"
    )
    assert report.anomalies == [], report.summary()
    assert [a.planned for a in nem.applied] == plan
    assert [a for a in nem.applied if a.skipped] == []
    after = [op for op in history.operations() if op.start > healed]
    assert any(op.type == "ok" for op in after), "no write succeeded after healing"
