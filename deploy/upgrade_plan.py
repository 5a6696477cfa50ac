"""The steps of a rolling upgrade (pure): which process restarts when, and where the leader ends.

Serves `deploy.upgrade` (`rocars upgrade`, #17 item 4). Nothing that serves writes is ever
restarted: the standby sites go first, a planned switchover moves the active site onto an
upgraded one, then the old active (a standby by then) follows. The API nodes go first, then the
PostgreSQL members in the same shape (every replica, a switchover, the old primary), then each
read replica (#17 item 5: it serves no writes and cascades from a main member, whose restart
breaks its stream, so it goes last and the upgrade ends on it streaming). With both,
the second switchover goes back to the site that was active before, so the cluster ends where
it started.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from kernel.errors import InvalidInput
from kernel.names import member_name, read_replica_key

StepKind = Literal["restart-node", "switchover", "restart-member", "restart-read-replica"]


@dataclass(frozen=True)
class Step:
    kind: StepKind
    site: str

    def describe(self) -> str:
        if self.kind == "restart-node":
            return f"restart the API node of site {self.site}"
        if self.kind == "switchover":
            return f"switch over to site {self.site}"
        if self.kind == "restart-read-replica":
            return f"restart the read replica {member_name(read_replica_key(self.site))}"
        return f"restart PostgreSQL member {member_name(self.site)}"


@dataclass(frozen=True)
class UpgradePlan:
    steps: tuple[Step, ...]
    ends_on: str  # the site that is active (holds the leader key) after the last step


def plan(
    sites: Sequence[str],
    active: str,
    *,
    nodes: bool,
    postgres: bool,
    read_replicas: Sequence[str] = (),
) -> UpgradePlan:
    """The steps for data sites `sites` while `active` holds the leader key; `read_replicas`:
    the sites with a read replica.

    Raises InvalidInput when there is nothing to do, a single site (no standby to move to), or
    `active` is not one of `sites`."""
    if not nodes and not postgres:
        raise InvalidInput("choose the API nodes, PostgreSQL or both", field="parts")
    if active not in sites:
        raise InvalidInput(f"site {active} is not one of {', '.join(sites)}", field="active")
    standbys = [s for s in sites if s != active]
    if not standbys:
        raise InvalidInput("a rolling upgrade needs a standby site to move to", field="sites")
    steps: list[Step] = []
    leader = active
    if nodes:
        steps += [Step("restart-node", s) for s in standbys]
        steps.append(Step("switchover", standbys[0]))
        steps.append(Step("restart-node", active))
        leader = standbys[0]
    if postgres:
        replicas = [s for s in sites if s != leader]
        # Back to where the upgrade began when the nodes moved the leader away from it.
        target = active if active in replicas else replicas[0]
        steps += [Step("restart-member", s) for s in replicas]
        steps.append(Step("switchover", target))
        steps.append(Step("restart-member", leader))
        steps += [Step("restart-read-replica", s) for s in read_replicas]
        leader = target
    return UpgradePlan(tuple(steps), leader)
