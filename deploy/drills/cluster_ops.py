"""Cluster operations the drills run around a fault: restore after a fault, put the leader on a
given site (by the one planned switchover, `deploy.failover_ops.planned_switchover`)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

import psutil

from deploy import admin, netns, status
from deploy.drills.fault_context import Context
from deploy.failover_ops import planned_switchover
from deploy.state import StateDir
from deploy.topology import Topology
from kernel.errors import DrillError, RocarsError


async def restore(topo: Topology, state: StateDir, ctx: Context) -> str:
    """Heal partitions, thaw what was frozen, restart what was killed, and wait until healthy
    again (a deposed primary rejoins as a replica, rewound by pg_rewind if it must); returns a
    sentence saying how the fault site's member came back."""
    t0 = time.monotonic()
    for site in ctx.partitioned:
        await asyncio.to_thread(netns.heal, topo, site)
    for pid in ctx.frozen:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).resume()
    # Through the real CLI in a process of its own, so the restarted daemons are not children
    # of the drill (or of pytest) and outlive it cleanly.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "deploy",
        "cluster",
        "up",
        "--state-dir",
        str(state.root),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise DrillError(f"cluster up after the drill failed:\n{out.decode()[-2000:]}")
    view = await status.wait_healthy(topo, state=state)
    if not view.is_healthy:
        raise DrillError(f"cluster did not recover after the drill: {view.problems()}")
    member = view.member(ctx.site)
    assert member is not None  # the status names every data site's member
    return (
        f"restored: member {member.name} is {member.role}/{member.state} on timeline "
        f"{member.timeline}, leader {view.postgres.leader}, "
        f"{time.monotonic() - t0:.1f}s after the drill's end"
    )


async def ensure_leader(topo: Topology, state: StateDir, site: str) -> None:
    """Make `site` the leader by a planned switchover, if it is not already."""
    current = await admin.leader_site(topo)
    if current == site:
        return
    why = f"could not move the leader to site {site} before the drill"
    try:
        await planned_switchover(topo, state, site, leader=current, wait=True)
    except RocarsError as exc:
        raise DrillError(f"{why}: {exc}") from exc
    view = await status.wait_healthy(topo, timeout=60, interval_s=0.5, state=state)
    if not view.is_healthy or view.leader_site != site:
        raise DrillError(f"{why}: leader {view.postgres.leader}, problems {view.problems()}")
