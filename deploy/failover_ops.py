"""Planned switchover and failback (`rocars failover switchover --to B`), with pre-checks.

The candidate must be the streaming synchronous standby with zero lag, the cluster must not be
paused, and the target node must be live; a checkpoint on the leader first keeps the demotion
short.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import aiohttp

from deploy import status
from deploy.drills.scenarios import checkpoint_leader, wait_healthy
from deploy.state import StateDir
from deploy.topology import Topology
from kernel.errors import RocarsError
from replication.patroni_rest import PatroniRest


class SwitchoverRefused(RocarsError):
    """A pre-check failed; the message says which and what to do."""


async def failover_status(topo: Topology) -> dict[str, Any]:
    doc = await status.collect(topo)
    async with aiohttp.ClientSession() as s:
        health = await status.node_health(s, topo)
    controllers = {
        site: None if isinstance(h, Exception) else h.get("failover_controller")
        for site, h in health.items()
    }
    return {
        "leader": doc["postgres"]["leader"],
        "paused": doc["postgres"]["paused"],
        "members": doc["postgres"]["members"],
        "nodes": doc["nodes"],
        "controllers": controllers,
        "healthy": doc["healthy"],
    }


def render(doc: dict[str, Any]) -> str:
    lines = [f"leader: {doc['leader']}" + ("  (PAUSED)" if doc["paused"] else "")]
    for m in doc["members"]:
        lines.append(
            f"  {m['name']}: {m['role']} {m['state']} lag={m['lag_bytes']} tl={m['timeline']}"
        )
    for n in doc["nodes"]:
        c = doc["controllers"].get(n["site"]) or {}
        lines.append(f"  node-{n['site']}: {n['role']} ready={n['ready']}")
        lines.append(f"    controller: {c.get('reason', 'unknown')}")
    return "\n".join(lines)


def precheck(doc: dict[str, Any], target: str) -> str | None:
    """Why a switchover to `target` must not happen now, or None."""
    pg = doc["postgres"]
    if pg["paused"]:
        return "the cluster is paused (Patroni maintenance mode); resume it first"
    if pg["leader"] is None:
        return "there is no leader to switch over from"
    member = next((m for m in pg["members"] if m["name"] == f"pg-{target}"), None)
    if member is None or member["role"] != "sync_standby" or member["state"] != "streaming":
        got = f"{member['role']}/{member['state']}" if member else "absent"
        return f"pg-{target} is not a streaming synchronous standby ({got})"
    if member["lag_bytes"] != 0:
        return f"pg-{target} lags by {member['lag_bytes']} bytes; wait until it is zero"
    node = next((n for n in doc["nodes"] if n["site"] == target), None)
    if node is None or not node.get("up"):
        return f"the API node of site {target} is not running"
    return None


async def switchover(
    topo: Topology, state: StateDir, target: str, progress: Callable[[str], None]
) -> float:
    doc = await status.collect(topo)
    if doc["postgres"]["leader"] == f"pg-{target}":
        raise SwitchoverRefused(f"site {target} is already active; nothing to do")
    why = precheck(doc, target)
    if why:
        raise SwitchoverRefused(f"switchover to {target} refused: {why}")
    leader = doc["postgres"]["leader"]
    t0 = time.monotonic()
    await checkpoint_leader(topo, state)
    progress(f"checkpoint done on {leader}; asking Patroni to switch over to pg-{target}")
    async with aiohttp.ClientSession() as s:
        code, text = await PatroniRest(s).switchover(
            topo.patroni_url(leader.removeprefix("pg-")), leader=leader, candidate=f"pg-{target}"
        )
    progress(f"Patroni answered {code}: {text}")
    if code != 200:
        raise SwitchoverRefused(f"Patroni refused the switchover ({code}): {text}")
    doc = await wait_healthy(topo, timeout=60)
    if doc["postgres"]["leader"] != f"pg-{target}" or not doc["healthy"]:
        raise RocarsError(f"switchover did not settle: {doc['problems']}")
    return time.monotonic() - t0
