"""Prometheus metrics of one node, in a registry of its own (so several apps can share a process
in tests). Every state that matters is a gauge here: role, readiness, leader, write availability.

Who records what: the request middleware (node/app.py) the HTTP series; the handlers the
domain outcomes (node.api.outcomes); the role loop the role; the write probe and the observer
loop (node.background) write availability, the leader, replication, drills and certificates;
the /metrics handler (node.api.metrics) the rest, read at scrape time. Series whose label
values are only known at run time live in `SnapshotCollector`s (monitoring.snapshots).
Counters are declared without `_total`: prometheus_client adds it on exposition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.metrics_core import GaugeMetricFamily

from monitoring.outcomes import OUTCOMES, Outcome
from monitoring.pool_stats import PoolCollector
from monitoring.snapshots import SnapshotCollector
from monitoring.write_history import WriteHistory

# No `_created` series beside each counter and histogram: nothing reads them (rates come from
# the counts), and they were 264 of Prometheus's series (#11 target 5). A process-wide switch
# of prometheus_client, set by importing this module.
disable_created_metrics()  # type: ignore[no-untyped-call]  # (untyped in 0.26)

# kernel.domain.gate.GateDecision's decisions.
ARRIVAL_DECISIONS: Final = ("release", "inspect", "hold", "manual")
SUBMISSION_KINDS: Final = ("single", "batch")
CONSIGNMENT_CHANGES: Final = ("amend", "cancel")
BUNDLE_ACTIONS: Final = ("create", "cancel", "revoke")
PHONE_CALL_OUTCOMES: Final = ("cross_now", "cross_after", "failed", "refused", "hung_up", "error")
# One request's outcome counter per outcome, created up front (node.api.outcomes).
OutcomeCounters = Mapping[Outcome, Counter]


def _by_outcome(counter: Counter, **fixed: str) -> dict[Outcome, Counter]:
    return {o: counter.labels(**fixed, outcome=o) for o in OUTCOMES}


@dataclass
class NodeMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self._http_series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
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
        self.migrations_pending = Gauge(
            "rocars_schema_migrations_pending",
            "Migrations of this node's code the database has not applied (rocars db migrate)",
            registry=r,
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

        self._domain_metrics()
        self._state_metrics()
        # The last hour of write answers, for the SRE page (#15 item 6); not exported.
        self.write_history = WriteHistory()

    def _domain_metrics(self) -> None:
        """What the users' requests came to (#13 item 2), by outcome (monitoring.outcomes).
        A request shed by admission control never reaches its handler: it is only in
        rocars_http_shed_total."""
        r = self.registry
        submissions = Counter(
            "rocars_submissions",
            "Consignment submission requests (single or batch), by outcome",
            ["kind", "outcome"],
            registry=r,
        )
        self.submission_outcomes = {k: _by_outcome(submissions, kind=k) for k in SUBMISSION_KINDS}
        items = Counter(
            "rocars_submission_batch_items",
            "Items of batch submissions written, accepted or rejected (with their errors)",
            ["outcome"],
            registry=r,
        )
        self.batch_items_accepted = items.labels(outcome="accepted")
        self.batch_items_rejected = items.labels(outcome="rejected")
        changes = Counter(
            "rocars_consignment_changes",
            "Requests to amend or cancel a consignment, by outcome",
            ["action", "outcome"],
            registry=r,
        )
        self.change_outcomes = {a: _by_outcome(changes, action=a) for a in CONSIGNMENT_CHANGES}
        bundles = Counter(
            "rocars_bundles",
            "Requests to create or cancel a bundle or take a consignment out of one, by outcome",
            ["action", "outcome"],
            registry=r,
        )
        self.bundle_outcomes = {a: _by_outcome(bundles, action=a) for a in BUNDLE_ACTIONS}
        self.arrival_outcomes = _by_outcome(
            Counter(
                "rocars_arrivals",
                "Truck arrivals reported at the LBCP gates, by outcome of the request",
                ["outcome"],
                registry=r,
            )
        )
        decisions = Counter(
            "rocars_arrival_decisions",
            "Gate decisions made for arriving trucks (replays of one are not counted again)",
            ["decision"],
            registry=r,
        )
        self.arrival_decisions = {d: decisions.labels(decision=d) for d in ARRIVAL_DECISIONS}
        calls = Counter(
            "rocars_phone_calls",
            "Calls to the phone channel (FastAGI) by how they ended: cross_now, cross_after,"
            " failed (the caller heard why), refused (not the active node, or too many calls),"
            " hung_up (before an answer), error",
            ["outcome"],
            registry=r,
        )
        self.phone_calls = {o: calls.labels(outcome=o) for o in PHONE_CALL_OUTCOMES}
        # The web channel's pages (node.web.page_metrics): by route template, never the path.
        self.web_requests = Counter(
            "rocars_web_requests",
            "Web pages answered, by page (route template) and HTTP status",
            ["page", "status"],
            registry=r,
        )

    def _state_metrics(self) -> None:
        r = self.registry
        self.etcd_up = Gauge(
            "rocars_etcd_up",
            "1 when the role loop's last quorum read of etcd succeeded",
            registry=r,
        )
        self.write_probe_success = Gauge(
            "rocars_write_probe_success",
            "1 when this node's last write probe proved the database writable (active node)",
            registry=r,
        )
        self.journal_bytes = Gauge(
            "rocars_contingency_journal_bytes",
            "Size on disk of this node's manual clearance journal (SQLite file and its WAL)",
            registry=r,
        )
        self.leader_changes = Counter(
            "rocars_patroni_leader_changes",
            "Times the Patroni leader (etcd's leader key) moved to another member",
            registry=r,
        )
        self._last_leader: str | None = None
        self.leader = SnapshotCollector()
        self.replication = SnapshotCollector()
        self.drills = SnapshotCollector()
        self.certificates = SnapshotCollector()
        self.pool = PoolCollector()
        for collector in (
            self.leader,
            self.replication,
            self.drills,
            self.certificates,
            self.pool,
        ):
            r.register(collector)

    def note_leader(self, *, known: bool, holder: str | None) -> None:
        """The leader as the role loop last read it: `known` False when etcd gave no quorum
        answer, `holder` None when no member holds the key. A change counts when another
        member takes the key (A, none, A is no change: the same member took it again)."""
        if not known or holder is None:
            self.leader.replace(())
            return
        if holder == self._last_leader and self.leader.families:
            return
        if self._last_leader is not None and holder != self._last_leader:
            self.leader_changes.inc()
        self._last_leader = holder
        family = GaugeMetricFamily(
            "rocars_patroni_leader",
            "1 for the Patroni member holding the leader key (quorum read of etcd)",
            labels=["member"],
        )
        family.add_metric([holder], 1)
        self.leader.replace((family,))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered request: counted by method, route template and status, timed by
        method and route. The label children are kept per combination (a bounded set: route
        templates, never paths): `labels()` costs a lock and a tuple per call, on every
        request of the node's one Python process (#11)."""
        key = (method, route, status)
        series = self._http_series.get(key)
        if series is None:
            series = (
                self.requests.labels(method=method, route=route, status=str(status)),
                self.latency.labels(method=method, route=route),
            )
            self._http_series[key] = series
        series[0].inc()
        series[1].observe(seconds)

    def set_redis(self, *, up: bool, primary: str | None) -> None:
        self.redis_up.set(1 if up else 0)
        self.redis_primary.clear()
        if primary is not None:
            self.redis_primary.labels(address=primary).set(1)

    def set_role(self, site: str, role: str) -> None:
        for r in ("active", "standby"):
            self.role.labels(site=site, role=r).set(1 if r == role else 0)
        self.ready.set(1 if role == "active" else 0)
