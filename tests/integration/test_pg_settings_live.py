"""The settings PostgreSQL runs with on the real cluster, as Patroni applied them (#11)."""

from __future__ import annotations

import pytest

from deploy.admin import connect_leader
from deploy.harness import LocalCluster

pytestmark = pytest.mark.integration


async def test_the_primary_runs_without_jit(cluster: LocalCluster) -> None:
    """#11 target 5: JIT is off on the primary (Patroni applies the member's local parameter):
    no backend loads LLVM and keeps its 20-30 MiB for the rest of its life."""
    async with await connect_leader(cluster.topo, cluster.state, account="superuser") as db:
        row = await (await db.execute("SHOW jit")).fetchone()
    assert row == ("off",)
