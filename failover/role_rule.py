"""The node's role rule (pure): `active` on the site that holds the Patroni leader, else
`standby`. Its adapter, `failover.role.RoleWatcher`, feeds it the facts every cycle.

A silent local Patroni (frozen, or too slow for the watcher's short timeout) no longer makes
the node give up at once (#14 item 3). While the leader key, read with quorum, still names
this member and its own PostgreSQL says it is the primary, writing on is safe: every commit
waits for the synchronous standby, so each acknowledged write is on the standby too. If the
key expires meanwhile and the standby is promoted, the old primary's commits hang instead of
being acknowledged, and the next cycle sees the key held by another member (DESIGN.md section
6: the zombie primary). Measured before this rule: a 10 s freeze of the primary's Patroni gave
a 9.5 s write outage with no failover at all.

The other way round (#14 item 3, node -> PostgreSQL cut): Patroni says its member is the
running primary, but this node has not reached that PostgreSQL for PG_SILENCE_LIMIT_S. Then
the node is standby, so HAProxy stops sending it writes it can only refuse, and the failover
controller on the other site sees the active site's node not ready and moves the site there.
Before this rule the node stayed ready and answered every write 503, and nothing moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["active", "standby"]

# How long the node's own PostgreSQL may go without answering the node before the node gives
# up being active. Long enough that one slow probe (a busy machine, a checkpoint) is not a
# failover; short next to the controller's grace period, so the site moves within seconds.
PG_SILENCE_LIMIT_S = 3.0


@dataclass(frozen=True)
class RoleFacts:
    """What one cycle saw; None means "could not find out"."""

    my_member: str
    local_role: str | None  # Patroni's role for the local member, e.g. "primary", "replica"
    local_state: str | None  # e.g. "running", "streaming", "stopped"
    leader_key: str | None  # member named by the leader key, read with quorum
    leader_known: bool  # False when etcd gave no quorum answer
    paused: bool = False
    # Asked whenever the leader key is this member's: the member's own PostgreSQL says it is
    # not in recovery (True), is in recovery (False), or did not answer (None).
    local_pg_primary: bool | None = None
    # For how long, in seconds, that PostgreSQL has not answered this node (None: it answered
    # at the last ask).
    local_pg_silent_s: float | None = None


@dataclass(frozen=True)
class RoleDecision:
    role: Role
    reason: str


def decide_role(f: RoleFacts) -> RoleDecision:
    """One sentence per cycle, like Patroni's HA loop."""
    if not f.leader_known:
        return RoleDecision("standby", "etcd gave no quorum answer for the leader key")
    if f.local_role is None:
        if f.leader_key == f.my_member and f.local_pg_primary is True:
            return RoleDecision(
                "active",
                f"local Patroni member {f.my_member} did not answer, but it holds the leader "
                "key and its PostgreSQL is the primary: commits wait for the synchronous "
                "standby, so writing on is safe",
            )
        return RoleDecision("standby", f"local Patroni member {f.my_member} did not answer")
    if f.leader_key != f.my_member:
        holder = f.leader_key or "nobody"
        return RoleDecision("standby", f"the leader key is held by {holder}, not {f.my_member}")
    if f.local_role not in ("primary", "master") or f.local_state != "running":
        return RoleDecision(
            "standby",
            f"{f.my_member} holds the leader key but is {f.local_role}/{f.local_state}, "
            "not a running primary",
        )
    if f.local_pg_silent_s is not None and f.local_pg_silent_s >= PG_SILENCE_LIMIT_S:
        return RoleDecision(
            "standby",
            f"{f.my_member} is the running primary and holds the leader key, but this node has "
            f"not reached it for {f.local_pg_silent_s:.1f} s: the site's writes must move",
        )
    return RoleDecision("active", f"{f.my_member} is the running primary and holds the leader key")
