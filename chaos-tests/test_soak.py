"""No failover when nothing fails: steady writes for 10 minutes show zero role changes.

Role changes are read from facts (deploy.drills.role_facts): Patroni's leader key and its
revision in etcd, each node's /health role and its role-change counter in /metrics, sampled
every second. ROCARS_SOAK_S shortens the run (e.g. 30 to try the test itself).
"""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest

from deploy.drills import role_facts
from deploy.drills.drill import Drill
from deploy.harness import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.slow]
SOAK_S = float(os.environ.get("ROCARS_SOAK_S", "600"))
SAMPLE_EVERY_S = 1.0


@pytest.mark.timeout(SOAK_S + 300)  # the run itself, plus the cluster's start and checks
def test_quiet_cluster_never_fails_over(drill_cluster: LocalCluster, drill_key: str) -> None:
    """A 10-minute run with normal load and no fault: the leader key is never taken again, no
    node's role or role-change counter moves, and no request fails or write is lost."""
    topo = drill_cluster.topo

    async def go() -> None:
        samples: list[role_facts.RoleSnapshot] = []
        done = asyncio.Event()

        async def sample(session: aiohttp.ClientSession) -> None:
            while not done.is_set():
                samples.append(await role_facts.snapshot(session, topo))
                await asyncio.sleep(SAMPLE_EVERY_S)

        drill = Drill(
            topo,
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

        async with drill_cluster.session() as session:
            sampler = asyncio.create_task(sample(session))
            try:
                r = await drill.run(nothing, drill_key)
            finally:
                done.set()
            await sampler  # re-raises if a snapshot failed (etcd without a quorum answer)
            samples.append(await role_facts.snapshot(session, topo))
        changes = role_facts.changes_over(samples)
        print(
            f"\n[measure] soak {SOAK_S:.0f}s: acked {r.acked}, worst gap {r.rto_s}s, "
            f"{len(samples)} samples, role/leader changes {len(changes)}"
        )
        assert len(samples) >= SOAK_S / (2 * SAMPLE_EVERY_S)
        assert samples[0].leader is not None
        assert set(samples[0].roles.values()) == {"active", "standby"}
        assert None not in samples[0].role_changes.values()
        assert changes == []
        assert r.failed_requests == 0
        assert r.rpo == 0

    asyncio.run(go())
