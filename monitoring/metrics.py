"""Prometheus metrics of one node, in a registry of its own (so several apps can share a process
in tests). Every state that matters is a gauge here: role, readiness, leader, write availability.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class NodeMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.role = Gauge(
            "rocars_node_role", "1 for the node's current role", ["site", "role"], registry=r
        )
        self.ready = Gauge("rocars_node_ready", "1 when this node accepts writes", registry=r)
        self.role_changes = Counter(
            "rocars_node_role_changes", "Role changes seen by this node", registry=r
        )
        self.role_cycle_age = Gauge(
            "rocars_role_cycle_age_seconds",
            "Seconds since the role loop last completed",
            registry=r,
        )
        self.leader_known = Gauge(
            "rocars_patroni_leader_known",
            "1 when etcd gave a quorum answer for the leader",
            registry=r,
        )
        # Recorded by the node's request middleware (node/app.py). `route` is the route
        # template, never the raw path, so the number of series stays bounded.
        self.requests = Counter(
            "rocars_http_requests",
            "HTTP requests answered, by method, route template and status code",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "rocars_http_request_duration_seconds",
            "Time from receiving a request to its answer, by method and route template",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        # Admission control (node/admission.py, #11 target 3).
        self.in_flight = Gauge(
            "rocars_http_in_flight",
            "Requests this node is handling now, of the routes its in-flight limit covers",
            registry=r,
        )
        self.shed = Counter(
            "rocars_http_shed",
            "Requests answered 503 at once because this node was at its in-flight limit",
            registry=r,
        )

        self.manual_mode = Gauge(
            "rocars_contingency_manual",
            "1 while manual clearance mode is in force here",
            registry=r,
        )
        self.manual_recommended = Gauge(
            "rocars_contingency_manual_recommended",
            "1 when no node could write for the configured time (manual mode recommended)",
            registry=r,
        )
        self.since_last_write = Gauge(
            "rocars_seconds_since_last_successful_write",
            "Seconds since any node last proved the database writable",
            registry=r,
        )
        self.journal_pending = Gauge(
            "rocars_contingency_journal_pending",
            "Manual clearance records in this node's journal not yet reconciled",
            registry=r,
        )
        self.journal_set_aside = Gauge(
            "rocars_contingency_journal_set_aside",
            "Records in this node's journal that reconciliation set aside (refused by PostgreSQL)",
            registry=r,
        )

        self.redis_up = Gauge(
            "rocars_redis_up",
            "1 when this node's last Redis operation (probe or request) succeeded",
            registry=r,
        )
        self.redis_primary = Gauge(
            "rocars_redis_primary",
            "1 for the Redis primary (host:port) this node's client uses",
            ["address"],
            registry=r,
        )
        self.redis_errors = Counter(
            "rocars_redis_errors", "Redis operations of this node that failed", registry=r
        )
        self.rate_limited = Counter(
            "rocars_rate_limited", "Requests refused with 429 by the per-account limit", registry=r
        )
        self.group_items = Histogram(
            "rocars_group_commit_items",
            "Submissions written by each shared statement (node.group_commit)",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.group_splits = Counter(
            "rocars_group_commit_splits",
            "Shared statements refused for one item's content and written item by item",
            registry=r,
        )
        self.rate_limit_fail_open = Counter(
            "rocars_rate_limit_fail_open",
            "Requests let through unchecked because Redis could not count them",
            registry=r,
        )

    def set_redis(self, *, up: bool, primary: str | None) -> None:
        self.redis_up.set(1 if up else 0)
        self.redis_primary.clear()
        if primary is not None:
            self.redis_primary.labels(address=primary).set(1)

    def set_role(self, site: str, role: str) -> None:
        for r in ("active", "standby"):
            self.role.labels(site=site, role=r).set(1 if r == role else 0)
        self.ready.set(1 if role == "active" else 0)
