"""The node's role rule (pure): `active` on the site that holds the Patroni leader, else
`standby`. Its adapter, `failover.role.RoleWatcher`, feeds it the facts every cycle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["active", "standby"]


@dataclass(frozen=True)
class RoleFacts:
    """What one cycle saw; None means "could not find out"."""

    my_member: str
    local_role: str | None  # Patroni's role for the local member, e.g. "primary", "replica"
    local_state: str | None  # e.g. "running", "streaming", "stopped"
    leader_key: str | None  # member named by the leader key, read with quorum
    leader_known: bool  # False when etcd gave no quorum answer
    paused: bool = False


@dataclass(frozen=True)
class RoleDecision:
    role: Role
    reason: str


def decide_role(f: RoleFacts) -> RoleDecision:
    """One sentence per cycle, like Patroni's HA loop."""
    if f.local_role is None:
        return RoleDecision("standby", f"local Patroni member {f.my_member} did not answer")
    if not f.leader_known:
        return RoleDecision("standby", "etcd gave no quorum answer for the leader key")
    if f.leader_key != f.my_member:
        holder = f.leader_key or "nobody"
        return RoleDecision("standby", f"the leader key is held by {holder}, not {f.my_member}")
    if f.local_role not in ("primary", "master") or f.local_state != "running":
        return RoleDecision(
            "standby",
            f"{f.my_member} holds the leader key but is {f.local_role}/{f.local_state}, "
            "not a running primary",
        )
    return RoleDecision("active", f"{f.my_member} is the running primary and holds the leader key")
