"""Pre-checks of a planned switchover (pure): only to a live site whose member is the streaming
synchronous standby with zero lag, never while paused, never without a leader.

Serves `rocars failover switchover`; the failover controller has its own rule for unplanned
moves (`failover.decision`). First failing check wins, so the answer names one thing to fix.
"""

from __future__ import annotations

import dataclasses

from kernel.cluster import ClusterStatus
from kernel.names import member_name


def only_lag(view: ClusterStatus, target: str) -> bool:
    """Whether the one objection to a switchover to `target` is lag (unknown or above zero)
    of a streaming synchronous standby: a state that passes by itself within moments (a write
    in flight, Patroni's next report), so the caller may look again before refusing."""
    member = view.postgres.member(target)
    if member is None or member.lag_bytes == 0 or precheck(view, target) is None:
        return False
    caught_up = dataclasses.replace(member, lag_bytes=0)
    members = tuple(caught_up if m is member else m for m in view.postgres.members)
    postgres = dataclasses.replace(view.postgres, members=members)
    return precheck(dataclasses.replace(view, postgres=postgres), target) is None


def precheck(view: ClusterStatus, target: str) -> str | None:
    """Why a switchover to site `target` must not happen now, or None."""
    pg = view.postgres
    if pg.leader_site == target:
        return f"site {target} is already active; nothing to do"
    if pg.paused:
        return "the cluster is paused (Patroni maintenance mode); resume it first"
    if pg.leader is None:
        return "there is no leader to switch over from"
    candidate = member_name(target)
    member = pg.member(target)
    if member is None or not member.is_streaming_sync_standby:
        got = f"{member.role}/{member.state}" if member else "absent"
        return f"{candidate} is not a streaming synchronous standby ({got})"
    if member.lag_bytes is None:
        return f"the lag of {candidate} is unknown; wait until Patroni reports it"
    if member.lag_bytes != 0:
        return f"{candidate} lags by {member.lag_bytes} bytes; wait until it is zero"
    node = view.node(target)
    if node is None or not node.up:
        return f"the API node of site {target} is not running"
    return None
