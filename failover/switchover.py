"""The one planned switchover: checkpoint the leader, ask Patroni to hand over to the candidate,
optionally wait until the candidate holds the leader key.

Used by `rocars failover switchover` and the drills (through `deploy.failover_ops`) and by the
failover controller. The pre-checks an operator's request must pass are `failover.precheck`;
the controller's own rule is `failover.decision`. Passing the current leader to Patroni makes a
request built on a stale view fail there instead of moving the cluster twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kernel.errors import ComponentUnavailable, InvalidTransition, RocarsError
from kernel.names import member_name
from replication.etcd_gateway import EtcdGateway
from replication.patroni_rest import PatroniRest


class SwitchoverRefused(InvalidTransition):
    """A pre-check failed or Patroni refused the switchover; the message says why."""


@dataclass(frozen=True)
class LeaderWait:
    """After the request, wait until a quorum read of `key` names the candidate."""

    etcd: EtcdGateway
    key: str  # kernel.names.leader_key(cluster)
    timeout_s: float = 60.0
    interval_s: float = 0.25


def _quiet(_: str) -> None:
    pass


async def switchover(
    target: str,
    *,
    leader: str,
    patroni: PatroniRest,
    patroni_url: str,
    checkpoint: Callable[[], Awaitable[None]] | None = None,
    wait: LeaderWait | None = None,
    progress: Callable[[str], None] = _quiet,
) -> str:
    """Switch the leader over from site `leader` to site `target` through the Patroni REST API
    at `patroni_url`; returns Patroni's answer.

    `checkpoint` runs first (a CHECKPOINT on the leader leaves little for the demotion's
    shutdown checkpoint to write, so the old primary stops sooner). Raises SwitchoverRefused
    when Patroni answers other than 200, PatroniUnavailable when it does not answer, and (with
    `wait`) RocarsError when the candidate does not hold the leader key in time."""
    old, new = member_name(leader), member_name(target)
    if checkpoint is not None:
        await checkpoint()
        progress(f"CHECKPOINT on {old}")
    progress(f"asking Patroni to switch over from {old} to {new}")
    code, text = await patroni.switchover(patroni_url, leader=old, candidate=new)
    progress(f"Patroni answered {code}: {text[:200]}")
    if code != 200:
        raise SwitchoverRefused(f"Patroni refused the switchover to {new} ({code}): {text}")
    if wait is not None:
        await _wait_leader(wait, new, progress)
    return text


async def _wait_leader(wait: LeaderWait, member: str, progress: Callable[[str], None]) -> None:
    t0 = time.monotonic()
    holder: str | None = None
    while time.monotonic() - t0 < wait.timeout_s:
        try:
            kv = await wait.etcd.get(wait.key)
            holder = kv.value.decode() if kv else None
        except ComponentUnavailable:
            holder = None  # etcd may blink while the cluster moves: ask again
        if holder == member:
            progress(f"{member} holds the leader key ({time.monotonic() - t0:.1f}s)")
            return
        await asyncio.sleep(wait.interval_s)
    raise RocarsError(
        f"{member} did not take the leader key within {wait.timeout_s:.0f}s"
        f" (last holder: {holder or 'nobody'})"
    )
