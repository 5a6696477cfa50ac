"""No failover when nothing fails: steady writes for 10 minutes show zero role changes."""

from __future__ import annotations

import asyncio
import os

import pytest

from deploy.drills.drill import Drill
from deploy.harness import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.slow]
SOAK_S = float(os.environ.get("ROCARS_SOAK_S", "600"))


@pytest.mark.timeout(SOAK_S + 300)  # the run itself, plus the cluster's start and checks
def test_quiet_cluster_never_fails_over(drill_cluster: LocalCluster, drill_key: str) -> None:
    """A 10-minute run with normal load and no fault: no leader or role change, no error."""

    async def go() -> None:
        drill = Drill(
            drill_cluster.topo,
            drill_cluster.state,
            scenario="soak",
            direction="none",
            budget_s=1.0,
            writers=2,
            warmup_s=1.0,
            min_observe_s=SOAK_S,
            max_wait_s=SOAK_S + 60,
        )

        async def nothing(_d: Drill) -> None:
            return None

        r = await drill.run(nothing, drill_key)
        changes = [e.what for e in r.events if "->" in e.what]
        print(
            f"\n[measure] soak {SOAK_S:.0f}s: acked {r.acked}, worst gap {r.rto_s}s, "
            f"role/leader changes {len(changes)}"
        )
        assert changes == []
        assert r.failed_requests == 0
        assert r.rpo == 0

    asyncio.run(go())
