"""Planned switchover and failback (`rocars failover switchover --to B`), and the failover picture
(`rocars failover status`).

The request must pass `failover.precheck` (the candidate is the streaming synchronous standby
with zero lag, the cluster is not paused, the target node is live); `planned_switchover` wires the
topology to the one `failover.switchover`, which the drills use too.

Patroni's switchover is an unsafe REST method: `operator_patroni` sends the operator's
credentials, the "patroni-rest" secret read from its own file in the state folder (#12 item 3).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import aiohttp

from deploy import admin, control_tls, etcd_auth, http_client, status
from deploy.state import StateDir
from deploy.topology import Topology
from failover.precheck import only_lag, precheck
from failover.switchover import LeaderWait, SwitchoverRefused, switchover
from kernel.cluster import ClusterStatus
from kernel.errors import RocarsError
from kernel.names import leader_key
from replication.patroni_rest import PatroniRest, read_credentials

log = logging.getLogger("rocars.failover")
# How long a switchover waits for a standby's lag to reach zero before refusing.
LAG_SETTLE_S = 5.0


def failover_document(view: ClusterStatus) -> dict[str, Any]:
    """The JSON document of `rocars failover status --json`."""
    doc = view.to_dict()
    return {
        "leader": view.postgres.leader,
        "paused": view.postgres.paused,
        "members": doc["postgres"]["members"],
        "nodes": doc["nodes"],
        "controllers": {
            n.site: None if n.controller is None else asdict(n.controller) for n in view.nodes
        },
        "healthy": doc["healthy"],
    }


def render(view: ClusterStatus) -> str:
    pg = view.postgres
    lines = [f"leader: {pg.leader}" + ("  (PAUSED)" if pg.paused else "")]
    for m in pg.members:
        lines.append(f"  {m.name}: {m.role} {m.state} lag={m.lag_bytes} tl={m.timeline}")
    for n in view.nodes:
        lines.append(f"  {n.name}: {n.role} ready={n.ready}")
        lines.append(f"    controller: {n.controller.reason if n.controller else 'unknown'}")
    return "\n".join(lines)


def operator_patroni(session: aiohttp.ClientSession, state: StateDir) -> PatroniRest:
    """Patroni's REST API with the credentials of the state folder's "patroni-rest" secret,
    for the operator commands, drills and benches that use its unsafe methods (#12 item 3)."""
    auth = read_credentials(state.secret_file("patroni-rest"))
    return control_tls.patroni(session, state, auth=auth)  # over TLS (#12 item 2)


async def planned_switchover(
    topo: Topology,
    state: StateDir,
    target: str,
    *,
    leader: str,
    wait: bool,
    progress: Callable[[str], None] = log.info,
) -> str:
    """Checkpoint the leader on site `leader`, ask its Patroni to switch over to `target`, and
    with `wait`, wait until `target` holds the leader key; returns Patroni's answer."""
    async with http_client.session(topo, state) as s:
        return await switchover(
            target,
            leader=leader,
            patroni=operator_patroni(s, state),
            patroni_url=topo.patroni_url(leader),
            checkpoint=lambda: admin.checkpoint_leader(topo, state),
            wait=LeaderWait(etcd_auth.operator_gateway(s, topo), leader_key(topo.name))
            if wait
            else None,
            progress=progress,
        )


async def run_switchover(
    topo: Topology, state: StateDir, target: str, progress: Callable[[str], None]
) -> float:
    """`rocars failover switchover --to target`: pre-checks, the switchover, then wait until the
    whole system is healthy with `target` active; returns the seconds it took."""
    # A busy primary's standby is a few bytes behind now and then (a write in flight): lag
    # alone is looked at again for a moment before it refuses.
    settle_until = time.monotonic() + LAG_SETTLE_S
    while True:
        view = await status.collect(topo, state)
        why = precheck(view, target)
        if why is None:
            break
        if not only_lag(view, target) or time.monotonic() >= settle_until:
            raise SwitchoverRefused(f"switchover to {target} refused: {why}")
        await asyncio.sleep(0.2)
    assert view.leader_site is not None  # precheck refuses a cluster without a leader
    t0 = time.monotonic()
    await planned_switchover(
        topo, state, target, leader=view.leader_site, wait=True, progress=progress
    )
    view = await status.wait_healthy(topo, timeout=60, state=state)
    if view.leader_site != target or not view.is_healthy:
        raise RocarsError(f"switchover did not settle: {view.problems()}")
    return time.monotonic() - t0
