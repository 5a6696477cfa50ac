"""The settings PostgreSQL runs with on the real cluster, as Patroni applied them (#11)."""

from __future__ import annotations

import pytest

from deploy.admin import connect_leader, connect_member
from deploy.harness import LocalCluster

pytestmark = pytest.mark.integration


async def test_the_primary_runs_without_jit(cluster: LocalCluster) -> None:
    """#11 target 5: JIT is off on the primary (Patroni applies the member's local parameter):
    no backend loads LLVM and keeps its 20-30 MiB for the rest of its life."""
    async with await connect_leader(cluster.topo, cluster.state, account="superuser") as db:
        row = await (await db.execute("SHOW jit")).fetchone()
    assert row == ("off",)


async def test_both_members_run_the_topologys_memory_and_checkpoint_sizes(
    cluster: LocalCluster,
) -> None:
    """#11: the primary and the standby each run the topology's shared_buffers, max_wal_size,
    checkpoint_timeout and wal_compression (the local defaults here), as Patroni applied them
    from the member's own parameters: the standby's restartpoints follow the same interval,
    and a promoted standby writes page images as compressed as the primary did."""
    want = list(cluster.topo.pg_tuning.parameters().items())
    seen = {}
    for site in cluster.topo.data_sites:
        async with await connect_member(
            cluster.topo, cluster.state, site, account="superuser"
        ) as conn:
            rows = []
            for name, _ in want:
                row = await (await conn.execute(f"SHOW {name}")).fetchone()
                assert row is not None
                rows.append((name, row[0]))
            recovering = await (await conn.execute("SELECT pg_is_in_recovery()")).fetchone()
        seen[site] = (recovering, rows)
    assert sorted(r for r, _ in seen.values()) == [(False,), (True,)]  # a primary and a standby
    for _, rows in seen.values():
        assert rows == want
