"""One typed picture of the running system (as Patroni's `Cluster`/`Member`): PostgreSQL
members and the leader, the API nodes, etcd, Redis, entry tier and manual clearance mode.

Plain frozen values, no I/O: `deploy.status.collect` fills them in, and the CLI, the switchover
pre-checks and the drills read attributes. `ClusterStatus.to_dict` is the one place that gives
the JSON document of `rocars cluster status --json`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kernel.names import member_name, member_site

UNREACHABLE = "unreachable"  # the state of a member no Patroni answered for


@dataclass(frozen=True)
class Member:
    """One PostgreSQL member as Patroni's `GET /cluster` reports it."""

    name: str  # Patroni member name, e.g. "pg-A"
    role: str | None  # "leader" | "sync_standby" | "replica" | ...; None when unreachable
    state: str  # "running" | "streaming" | "stopped" | ... | UNREACHABLE
    lag_bytes: int | None  # replication lag; None when Patroni cannot tell
    timeline: int | None

    @classmethod
    def unreachable(cls, site: str) -> Member:
        return cls(member_name(site), None, UNREACHABLE, None, None)

    @property
    def site(self) -> str | None:
        return member_site(self.name)

    @property
    def is_streaming_sync_standby(self) -> bool:
        return self.role == "sync_standby" and self.state == "streaming"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "site": self.site,
            "role": self.role,
            "state": self.state,
            "lag_bytes": self.lag_bytes,
            "timeline": self.timeline,
        }


@dataclass(frozen=True)
class Postgres:
    """The PostgreSQL cluster: `leader` is the member the leader key names (a quorum read of
    etcd, never one member's possibly stale `/cluster`)."""

    leader: str | None
    paused: bool  # Patroni maintenance mode
    members: tuple[Member, ...]

    @property
    def leader_site(self) -> str | None:
        return member_site(self.leader)

    def member(self, site: str) -> Member | None:
        return next((m for m in self.members if m.name == member_name(site)), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "leader": self.leader,
            "paused": self.paused,
            "members": [m.to_dict() for m in self.members],
        }


@dataclass(frozen=True)
class ControllerDecision:
    """A node's failover controller's latest decision (`failover.decision.Decision`)."""

    action: str
    reason: str


@dataclass(frozen=True)
class Node:
    """One API node, from its own `/health` document; `error` says why it could not be read."""

    site: str
    url: str
    role: str | None  # "active" | "standby"; None when the node does not answer
    ready: bool
    reason: str | None = None  # the role rule's sentence
    error: str | None = None
    contingency_mode: str | None = None  # the mode this node applies
    redis_primary: str | None = None  # host:port, None when its last Redis operation failed
    controller: ControllerDecision | None = None

    @property
    def name(self) -> str:
        return f"node-{self.site}"

    @property
    def up(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "site": self.site,
            "url": self.url,
            "role": self.role,
            "ready": self.ready,
            "up": self.up,
        }
        if self.up:
            out["reason"] = self.reason
        else:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class EtcdMember:
    name: str | None  # None when the member list could not be read
    url: str
    healthy: bool
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "url": self.url, "healthy": self.healthy}
        if self.error:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class Etcd:
    members: tuple[EtcdMember, ...]
    leader: str | None  # the raft leader's name, when the healthy members agree on one

    @property
    def healthy(self) -> bool:
        return all(m.healthy for m in self.members)

    def to_dict(self) -> dict[str, Any]:
        return {
            "members": [m.to_dict() for m in self.members],
            "healthy": self.healthy,
            "leader": self.leader,
        }


@dataclass(frozen=True)
class Redis:
    """What the Sentinels name as primary (confirmed by the primary itself), and its online
    replicas, as host:port."""

    primary: str | None
    replicas: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"primary": self.primary, "replicas": list(self.replicas)}


@dataclass(frozen=True)
class Contingency:
    """Manual clearance mode as stored in etcd: "normal", "manual", ... or "unknown" when etcd
    did not answer; `document` is the stored state (contingency.state documents it)."""

    mode: str
    document: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, **{k: v for k, v in self.document.items() if k != "mode"}}


@dataclass(frozen=True)
class FloatingAddress:
    """The clients' floating address (#17 item 2) and the data sites whose interface carries
    it now; `holders` is None where that cannot be seen from here (sites on other hosts)."""

    address: str
    holders: tuple[str, ...] | None

    def problem(self) -> str | None:
        """Why clients cannot count on the address, if they cannot."""
        if self.holders is None or len(self.holders) == 1:
            return None
        if not self.holders:
            return f"no site holds the floating address {self.address}"
        return f"the floating address {self.address} is on several sites: {', '.join(self.holders)}"

    def describe(self) -> str:
        if self.holders is None:
            return f"{self.address} (holder not visible from here)"
        return f"{self.address} held by {', '.join(self.holders) or 'no site'}"

    def to_dict(self) -> dict[str, Any]:
        holders = None if self.holders is None else list(self.holders)
        return {"address": self.address, "holders": holders}


@dataclass(frozen=True)
class Entry:
    """The entry tier (HAProxy): does it route `/health/ready` to an active node? `floating`:
    the floating address and who holds it, when the topology has one."""

    url: str
    routes: bool
    role: str | None = None
    error: str | None = None
    floating: FloatingAddress | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"url": self.url, "routes": self.routes}
        if self.error is not None:
            out["error"] = self.error
        else:
            out["role"] = self.role
        if self.floating is not None:
            out["floating"] = self.floating.to_dict()
        return out


@dataclass(frozen=True)
class Monitoring:
    """Prometheus and Alertmanager (#13): whether each answers, which scrape targets are down
    (as "job instance"), and the alerts Alertmanager holds active now."""

    prometheus: str  # URL
    alertmanager: str  # URL
    prometheus_up: bool
    alertmanager_up: bool
    targets_up: int = 0
    targets_down: tuple[str, ...] = ()
    alerts: tuple[str, ...] = ()  # "AlertName (severity)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "prometheus": {
                "url": self.prometheus,
                "up": self.prometheus_up,
                "targets_up": self.targets_up,
                "targets_down": list(self.targets_down),
            },
            "alertmanager": {
                "url": self.alertmanager,
                "up": self.alertmanager_up,
                "alerts": list(self.alerts),
            },
        }


@dataclass(frozen=True)
class ClusterStatus:
    api: str  # the URL clients use (the entry tier)
    entry: Entry
    nodes: tuple[Node, ...]
    postgres: Postgres
    etcd: Etcd
    redis: Redis
    contingency: Contingency
    monitoring: Monitoring | None = None  # None: the topology runs no monitoring
    phone: str | None = None  # agi://host:port/bundle (issue 16); None: no phone channel
    # What clients must trust to reach `api` (#12 item 5): the CA certificate(s) file.
    ca: str | None = None

    @property
    def leader_site(self) -> str | None:
        return self.postgres.leader_site

    def member(self, site: str) -> Member | None:
        return self.postgres.member(site)

    def node(self, site: str) -> Node | None:
        return next((n for n in self.nodes if n.site == site), None)

    def problems(self) -> list[str]:
        """Why the system is not healthy; empty when it is."""
        out = []
        if not self.etcd.healthy:
            bad = [m.url for m in self.etcd.members if not m.healthy]
            out.append(f"etcd members down: {', '.join(bad)}")
        if not self.postgres.leader:
            out.append("no PostgreSQL leader")
        if not any(m.is_streaming_sync_standby for m in self.postgres.members):
            out.append("no streaming synchronous standby")
        ready = [n for n in self.nodes if n.ready]
        if len(ready) != 1:
            out.append(f"{len(ready)} API nodes ready (want exactly 1)")
        out.extend(f"{n.name} is down" for n in self.nodes if not n.up)
        if not self.entry.routes:
            out.append("HAProxy does not route to an active node")
        if self.entry.floating is not None and (held := self.entry.floating.problem()):
            out.append(held)
        if not self.redis.primary:
            out.append("no Redis primary")
        elif not self.redis.replicas:
            out.append("Redis primary has no online replica")
        # Down targets are not listed: each is the consequence of a problem named above.
        if self.monitoring is not None:
            if not self.monitoring.prometheus_up:
                out.append(f"Prometheus does not answer at {self.monitoring.prometheus}")
            if not self.monitoring.alertmanager_up:
                out.append(f"Alertmanager does not answer at {self.monitoring.alertmanager}")
        return out

    @property
    def is_healthy(self) -> bool:
        return not self.problems()

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of `rocars cluster status --json`."""
        problems = self.problems()
        return {
            "api": self.api,
            "tls": {"ca": self.ca},
            "phone": self.phone,
            "entry": self.entry.to_dict(),
            "nodes": [n.to_dict() for n in self.nodes],
            "postgres": self.postgres.to_dict(),
            "etcd": self.etcd.to_dict(),
            "redis": self.redis.to_dict(),
            "contingency": self.contingency.to_dict(),
            "monitoring": None if self.monitoring is None else self.monitoring.to_dict(),
            "problems": problems,
            "healthy": not problems,
        }
