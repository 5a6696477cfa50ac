"""The failover controller's decision: when to move the active site because its API node died.

Pure core (DESIGN §4): plain values in, one :class:`Decision` out; no I/O, and no clock is read
here (``now`` comes in the :class:`Observation`). The adapter that runs this on every node each
cycle gathers the observation (leader from a majority view of etcd, member facts from Patroni,
node health from the probes), calls :func:`decide`, logs ``Decision.reason`` and, on
``"switchover"``, asks Patroni for a switchover from the current leader to ``target_site``.
Passing the current leader to Patroni makes a request built on a stale view fail there
instead of moving the cluster twice.

Scope (DESIGN §2): only "API node dead, database fine". Database failures are Patroni's job,
so this controller stays out whenever the leader is unknown or is not a running primary. The
adapter counts the leader's site's node as healthy only while it is ready (active), so a node
that is alive but cannot reach its own PostgreSQL (failover.role_rule) also moves the site.

Rules, first match wins; each yields one sentence in ``Decision.reason``:

=====  ==========================================================  ============
 #     situation                                                    action
=====  ==========================================================  ============
 1     cluster paused (Patroni maintenance mode)                    none
 2     no leader known                                              none
 3     leader's member missing or not a running primary             none
 4     active node (the leader's site) healthy                      none
 5     active node unhealthy for <= grace period                    wait
 6     other site's node unhealthy too (moving would not help)      wait
 7     other member not a streaming sync standby on the leader's    wait
       timeline with known lag <= max_lag_bytes
 8     last switchover less than min_interval ago                   wait
 9     otherwise                                                    switchover
=====  ==========================================================  ============

So ``"wait"`` means exactly: the active node is down and we own the problem, but not yet (or
not this way); ``"none"`` means there is nothing for this controller to do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Action = Literal["none", "switchover", "wait"]
Role = Literal["primary", "replica"]
# Patroni's /cluster reports "running" for the leader and "streaming" for a replica whose WAL
# receiver streams; the adapter maps every other Patroni state (stopped, starting, crashed,
# in archive recovery, ...) to "stopped" or, for a replica that runs without streaming, "running".
MemberState = Literal["running", "streaming", "stopped"]

_ACTIONS: frozenset[str] = frozenset({"none", "switchover", "wait"})
_ROLES: frozenset[str] = frozenset({"primary", "replica"})
_STATES: frozenset[str] = frozenset({"running", "streaming", "stopped"})


def _finite(name: str, value: object) -> float:
    # bool is an int subclass; True seconds is a caller bug, not a duration.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _count(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class ControllerConfig:
    """Tuning of the controller; every value is checked when the config is built."""

    grace_period_s: float = 5.0
    min_interval_s: float = 300.0
    max_lag_bytes: int = 0

    def __post_init__(self) -> None:
        for name in ("grace_period_s", "min_interval_s"):
            if _finite(name, getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        _count("max_lag_bytes", self.max_lag_bytes, minimum=0)


@dataclass(frozen=True)
class NodeHealth:
    """Health of one site's API node as the probes see it.

    ``unhealthy_since`` is when the current unhealthy streak began, on the same clock as
    ``Observation.now``; it is set exactly when the node is unhealthy, so "how long" always has
    an answer.
    """

    healthy: bool
    unhealthy_since: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.healthy, bool):
            raise ValueError(f"healthy must be a bool, got {self.healthy!r}")
        if self.healthy and self.unhealthy_since is not None:
            raise ValueError("unhealthy_since must be None for a healthy node")
        if not self.healthy:
            if self.unhealthy_since is None:
                raise ValueError("unhealthy_since is required for an unhealthy node")
            _finite("unhealthy_since", self.unhealthy_since)


@dataclass(frozen=True)
class MemberFacts:
    """What Patroni reports about one site's PostgreSQL member (``role`` None: unknown)."""

    role: Role | None
    state: MemberState
    is_sync_standby: bool = False
    lag_bytes: int | None = None
    timeline: int | None = None

    def __post_init__(self) -> None:
        if self.role is not None and self.role not in _ROLES:
            raise ValueError(f"role must be one of {sorted(_ROLES)} or None, got {self.role!r}")
        if self.state not in _STATES:
            raise ValueError(f"state must be one of {sorted(_STATES)}, got {self.state!r}")
        if not isinstance(self.is_sync_standby, bool):
            raise ValueError(f"is_sync_standby must be a bool, got {self.is_sync_standby!r}")
        if self.lag_bytes is not None:
            _count("lag_bytes", self.lag_bytes, minimum=0)
        if self.timeline is not None:
            _count("timeline", self.timeline, minimum=1)


@dataclass(frozen=True)
class SiteView:
    """One data site: its API node and its PostgreSQL member (None: Patroni lists none)."""

    name: str
    node: NodeHealth
    member: MemberFacts | None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"site name must be a non-blank string, got {self.name!r}")


@dataclass(frozen=True)
class Observation:
    """Everything one controller cycle looks at, gathered by the adapter at time ``now``.

    ``leader_site`` must come from a majority view (a quorum read of etcd), never from one
    member's ``/cluster``, which can be stale on an isolated site (DESIGN §6).
    ``last_switchover_at`` may come from another node's clock: a value in the future only
    makes the controller wait longer, which is the safe side of any skew.
    """

    now: float
    leader_site: str | None
    paused: bool
    sites: tuple[SiteView, SiteView]
    last_switchover_at: float | None = None

    def __post_init__(self) -> None:
        _finite("now", self.now)
        if not isinstance(self.paused, bool):
            raise ValueError(f"paused must be a bool, got {self.paused!r}")
        # Two data sites by design (DESIGN §2); the witness site C has no node to move to.
        sites = tuple(self.sites)
        if len(sites) != 2 or not all(isinstance(s, SiteView) for s in sites):
            raise ValueError("sites must hold exactly two SiteView values")
        if sites[0].name == sites[1].name:
            raise ValueError(f"sites must have distinct names, got {sites[0].name!r} twice")
        object.__setattr__(self, "sites", sites)
        if self.leader_site is not None and self.leader_site not in self.site_names:
            raise ValueError(
                f"leader_site {self.leader_site!r} is not one of the sites {self.site_names}"
            )
        if self.last_switchover_at is not None:
            _finite("last_switchover_at", self.last_switchover_at)

    @property
    def site_names(self) -> tuple[str, str]:
        return (self.sites[0].name, self.sites[1].name)

    def site(self, name: str) -> SiteView:
        """The site called ``name``."""
        for view in self.sites:
            if view.name == name:
                return view
        raise KeyError(name)

    def other(self, name: str) -> SiteView:
        """The site that is not ``name``."""
        self.site(name)
        return self.sites[1] if self.sites[0].name == name else self.sites[0]


@dataclass(frozen=True)
class Decision:
    """What one cycle decided, with the reason as one human sentence for the log and audit."""

    action: Action
    target_site: str | None
    reason: str

    def __post_init__(self) -> None:
        if self.action not in _ACTIONS:
            raise ValueError(f"action must be one of {sorted(_ACTIONS)}, got {self.action!r}")
        if (self.action == "switchover") != (self.target_site is not None):
            raise ValueError("target_site is required for a switchover and only for one")
        if not self.reason or "\n" in self.reason or not self.reason.endswith("."):
            raise ValueError(f"reason must be one sentence ending with '.', got {self.reason!r}")


def _secs(value: float) -> str:
    # One decimal reads best ("6.0s"), but a rounded value must not contradict the comparison
    # printed next to it ("5.0s > grace 5.0s"), so keep up to millisecond precision.
    text = f"{value:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _none(reason: str) -> Decision:
    return Decision("none", None, reason)


def _wait(reason: str) -> Decision:
    return Decision("wait", None, reason)


def standby_blocker(member: MemberFacts | None, leader: MemberFacts, cfg: ControllerConfig) -> str:
    """Why ``member`` may not be promoted, as a predicate phrase; ``""`` when it may.

    Synchronous mode only lets Patroni promote the synchronous standby (RPO = 0); asking for
    anything else would fail there or, worse, lose acknowledged writes.
    """
    if member is None:
        return "is not in Patroni's view"
    if member.role is None:
        return "has an unknown role"
    if member.role != "replica":
        return f"is not a replica (role {member.role})"
    if member.state != "streaming":
        return f"is not streaming (state {member.state})"
    if not member.is_sync_standby:
        return "is not the synchronous standby"
    if member.timeline is None or leader.timeline is None:
        return "cannot be compared with the leader's timeline (unknown)"
    if member.timeline != leader.timeline:
        return f"is on timeline {member.timeline}, the leader on {leader.timeline}"
    if member.lag_bytes is None:
        return "has unknown lag"
    if member.lag_bytes > cfg.max_lag_bytes:
        return f"lags {member.lag_bytes} bytes > max {cfg.max_lag_bytes}"
    return ""


def decide(obs: Observation, cfg: ControllerConfig | None = None) -> Decision:
    """Decide this cycle's action; see the module docstring for the rule table."""
    cfg = cfg if cfg is not None else ControllerConfig()
    if obs.paused:
        return _none("cluster is paused (Patroni maintenance mode): no action.")
    if obs.leader_site is None:
        return _none("no Patroni leader is known: database failover is Patroni's job, no action.")

    active = obs.site(obs.leader_site)
    standby = obs.other(obs.leader_site)
    leader = active.member
    if leader is None:
        return _none(
            f"leader site {active.name} has no member in Patroni's view: "
            "database failover is Patroni's job, no action."
        )
    if leader.role != "primary" or leader.state != "running":
        return _none(
            f"leader member {active.name} is not a running primary "
            f"(role {leader.role or 'unknown'}, state {leader.state}): "
            "database failover is Patroni's job, no action."
        )
    since = active.node.unhealthy_since
    if active.node.healthy or since is None:  # NodeHealth sets since exactly when unhealthy
        return _none(f"node {active.name} is active and healthy: no action.")

    # A streak start in the future (skew) gives a negative duration and so waits: safe side.
    down_for = obs.now - since
    down = f"node {active.name} unhealthy for {_secs(down_for)}s"
    if down_for <= cfg.grace_period_s:
        return _wait(f"{down} <= grace {_secs(cfg.grace_period_s)}s: wait.")
    down = f"{down} > grace {_secs(cfg.grace_period_s)}s"

    if not standby.node.healthy:
        return _wait(
            f"{down} but node {standby.name} is unhealthy too: a switchover would not help, wait."
        )
    member = standby.member
    blocker = standby_blocker(member, leader, cfg)
    if blocker or member is None:
        return _wait(f"{down} but member {standby.name} {blocker}: wait.")
    if obs.last_switchover_at is not None:
        since_last = obs.now - obs.last_switchover_at
        if since_last < cfg.min_interval_s:
            return _wait(
                f"{down} but the last switchover was {_secs(since_last)}s ago "
                f"< minimum interval {_secs(cfg.min_interval_s)}s: wait."
            )

    return Decision(
        "switchover",
        standby.name,
        f"{down} and member {standby.name} is a streaming sync standby with lag "
        f"{member.lag_bytes}: switch over to {standby.name}.",
    )
