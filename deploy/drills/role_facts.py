"""Whether anything failed over, from facts the cluster keeps rather than from log wording.

- Patroni's leader key in etcd (a quorum read): who holds it and its mod_revision. Patroni
  writes the key only when it takes the lock and keeps it afterwards by refreshing a lease, so
  an unchanged revision means nobody took the lock in between, however briefly.
- Each API node's role from its /health document ("down" when it does not answer).
- Each node's role-change counter from its /metrics (it also starts again when the node
  restarts).

`changes` compares two snapshots; the soak test takes one every second and expects none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from deploy import etcd_auth, status
from deploy.topology import Topology
from kernel.names import leader_key

ROLE_CHANGES_METRIC = "rocars_node_role_changes"
DOWN = "down"
_TIMEOUT = aiohttp.ClientTimeout(total=1.5)


@dataclass(frozen=True)
class RoleSnapshot:
    leader: str | None  # the leader key's value (a member name), None when nobody holds it
    leader_revision: int  # the leader key's mod_revision (0 when absent)
    roles: Mapping[str, str]  # site -> the node's /health role, or DOWN
    role_changes: Mapping[str, float | None]  # site -> its role-change counter, None if unread


def changes(before: RoleSnapshot, after: RoleSnapshot) -> list[str]:
    """What differs between two snapshots, one sentence per fact; empty when nothing moved."""
    out = []
    if before.leader != after.leader:
        out.append(f"leader key: {before.leader} -> {after.leader}")
    elif before.leader_revision != after.leader_revision:
        out.append(
            f"leader key of {after.leader} written again "
            f"(revision {before.leader_revision} -> {after.leader_revision})"
        )
    for site in sorted(before.roles.keys() | after.roles.keys()):
        old, new = before.roles.get(site), after.roles.get(site)
        if old != new:
            out.append(f"node {site} role: {old} -> {new}")
    for site in sorted(before.role_changes.keys() | after.role_changes.keys()):
        old_n, new_n = before.role_changes.get(site), after.role_changes.get(site)
        if old_n != new_n:
            out.append(f"node {site} role-change counter: {old_n} -> {new_n}")
    return out


def changes_over(samples: Sequence[RoleSnapshot]) -> list[str]:
    """Every change between consecutive snapshots, in order."""
    return [c for a, b in pairwise(samples) for c in changes(a, b)]


def role_change_count(metrics_text: str) -> float | None:
    """The role-change counter in a node's Prometheus exposition, None when absent."""
    for family in text_string_to_metric_families(metrics_text):
        if family.name == ROLE_CHANGES_METRIC:
            for sample in family.samples:
                if sample.name == f"{ROLE_CHANGES_METRIC}_total":
                    return sample.value
    return None


async def _counter(session: aiohttp.ClientSession, url: str) -> float | None:
    try:
        async with session.get(url, timeout=_TIMEOUT) as r:
            return role_change_count(await r.text()) if r.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def snapshot(session: aiohttp.ClientSession, topo: Topology) -> RoleSnapshot:
    """The facts now (raises EtcdUnavailable when etcd gives no quorum answer)."""
    kv = await etcd_auth.operator_gateway(session, topo).get(leader_key(topo.name))
    health = await status.node_health(session, topo)
    roles = {
        site: DOWN if isinstance(doc, Exception) else str(doc.get("role"))
        for site, doc in health.items()
    }
    counters = {
        site: await _counter(session, f"{topo.node_url(site)}/metrics") for site in topo.data_sites
    }
    return RoleSnapshot(
        leader=kv.value.decode() if kv else None,
        leader_revision=kv.mod_revision if kv else 0,
        roles=roles,
        role_changes=counters,
    )
