"""Grafana dashboards and the Prometheus console page, generated from one description (#13 item 4).

Each dashboard is a list of rows of panels; each panel is a title, a unit and PromQL. From that
`grafana_dashboard` builds a Grafana JSON model (schemaVersion 39) that imports into any Grafana:
its data source is the `${datasource}` variable, never a fixed uid, and the component dashboards
have a `site` variable (every target carries a `site` label, deploy/monitoring_config.py). The
overview is also rendered as a Prometheus console template (`console_page`), served by the
Prometheus that `make run` starts at /consoles/rocars.html, so it is visible without Grafana.

`python -m deploy.dashboards` rewrites deploy/dashboards/*.json and monitoring/consoles/
rocars.html; tests/unit/test_dashboards.py checks the committed files equal what this module
generates, and tests/integration/test_dashboards_live.py runs every query against the live
Prometheus. Metric names are those the nodes (monitoring/metrics.py), Patroni, etcd, HAProxy and
the PostgreSQL and Redis exporters really expose; the rocars:* series are the recording rules in
monitoring/rules/recording.yml.
"""

from __future__ import annotations

import html
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

ROOT: Final = Path(__file__).resolve().parent.parent
DASHBOARDS_DIR: Final = ROOT / "deploy" / "dashboards"
CONSOLE_PAGE: Final = ROOT / "monitoring" / "consoles" / "rocars.html"
SCHEMA_VERSION: Final = 39
DATASOURCE: Final = {"type": "prometheus", "uid": "${datasource}"}
TAGS: Final = ("rocars",)
# Width and height in Grafana's 24-column grid, per panel kind.
_SIZE: Final = {"stat": (4, 4), "timeseries": (8, 8)}
# `site=~"$site"` in a query: the site variable's selection (All is ".*").
SITE: Final = 'site=~"$site"'
NODE: Final = f'job="rocars-node", {SITE}'

PanelKind = Literal["stat", "timeseries"]


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    kind: PanelKind
    unit: str
    targets: tuple[Target, ...]
    description: str = ""
    # Stat panels: value -> text shown instead (0 -> "normal", ...).
    mappings: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class SiteVariable:
    """The `site` variable: its values are the `site` labels of `metric` (a selector)."""

    metric: str


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    site: SiteVariable | None = None


def _targets(exprs: tuple[str | tuple[str, str], ...]) -> tuple[Target, ...]:
    out = []
    for e in exprs:
        out.append(Target(e) if isinstance(e, str) else Target(e[0], e[1]))
    return tuple(out)


def graph(title: str, unit: str, *exprs: str | tuple[str, str], description: str = "") -> Panel:
    """A time series panel; each expr is PromQL, or (PromQL, legend format)."""
    return Panel(title, "timeseries", unit, _targets(exprs), description)


def stat(
    title: str,
    unit: str,
    expr: str,
    legend: str = "",
    *,
    description: str = "",
    mappings: tuple[tuple[int, str], ...] = (),
) -> Panel:
    """A single-value panel (the last value of each series)."""
    return Panel(title, "stat", unit, (Target(expr, legend),), description, mappings)


def rate(selector: str) -> str:
    return f"rate({selector}[$__rate_interval])"


def sum_rate(by: str, selector: str) -> str:
    return f"sum by ({by}) ({rate(selector)})"


def quantile(q: float, bucket_selector: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({bucket_selector}[$__rate_interval])))"


def burn(ratio: str, objective: str) -> str:
    """How many times faster than allowed the error budget is spent (1 = exactly on budget)."""
    return f"{ratio} / on () (1 - {objective})"


def all_panels(d: Dashboard) -> list[Panel]:
    return [p for row in d.rows for p in row.panels]


# ---------------------------------------------------------------------------------------------
# The dashboards

_SUB: Final = "rocars:slo_submission_errors:ratio_rate"
_SUB_OBJ: Final = "rocars:slo_submission_latency:objective_ratio"
_WRITE: Final = "rocars:slo_write_errors:ratio_rate"
_WRITE_OBJ: Final = "rocars:slo_write_availability:objective_ratio"
# The windows the burn-rate alerts read (monitoring/rules/alerts.yml).
_WINDOWS: Final = ("5m", "1h", "6h", "3d")
_MODE: Final = ((0, "normal"), (1, "MANUAL"))
_YES_NO: Final = ((0, "no"), (1, "yes"))
_UP_DOWN: Final = ((0, "down"), (1, "up"))

_LATENCY = 'rocars_http_request_duration_seconds_bucket{job="rocars-node"}'


def overview() -> Dashboard:
    status = Row(
        "Now",
        (
            stat(
                "Active site",
                "none",
                'max by (site) (rocars_node_role{job="rocars-node", role="active"} == 1)',
                "{{site}}",
                description="The site whose node accepts writes (its Patroni member leads).",
            ),
            stat(
                "Write available",
                "none",
                "rocars:write_available:max",
                mappings=_YES_NO,
                description="1 while some node reports itself ready to accept writes.",
            ),
            stat(
                "Leader member",
                "none",
                'max by (member) (rocars_patroni_leader{job="rocars-node"})',
                "{{member}}",
                description="The Patroni member holding the leader key (quorum read of etcd).",
            ),
            stat(
                "Synchronous standby streaming",
                "none",
                'max(rocars_sync_standby_streaming{job="rocars-node"}) or vector(0)',
                mappings=_YES_NO,
            ),
            stat(
                "Contingency mode",
                "none",
                'max(rocars_contingency_manual{job="rocars-node"})',
                mappings=_MODE,
            ),
            stat(
                "Alerts firing",
                "none",
                'count(ALERTS{alertstate="firing"}) or vector(0)',
            ),
        ),
    )
    slo = Row(
        "Service level objectives",
        (
            graph(
                "Submission SLO burn rate",
                "x",
                *((burn(f"{_SUB}{w}", _SUB_OBJ), w) for w in _WINDOWS),
                description="99.95% of submissions acknowledged within 1 s; a burn rate of 1 "
                "spends the 30-day budget in exactly 30 days, 14.4 pages.",
            ),
            graph(
                "Write availability SLO burn rate",
                "x",
                *((burn(f"{_WRITE}{w}", _WRITE_OBJ), w) for w in _WINDOWS),
                description="99.9% of the time some node accepts writes.",
            ),
            graph(
                "Error budget left (30 days)",
                "percentunit",
                ("rocars:slo_submission_latency:error_budget_remaining_ratio", "submissions"),
                ("rocars:slo_write_availability:error_budget_remaining_ratio", "writes"),
                description="1 = all of it, 0 = spent; evaluated every 5 minutes.",
            ),
        ),
    )
    traffic = Row(
        "Requests",
        (
            graph(
                "Latency p50 by route",
                "s",
                (quantile(0.5, _LATENCY, "route"), "{{route}}"),
            ),
            graph(
                "Latency p99 by route",
                "s",
                (quantile(0.99, _LATENCY, "route"), "{{route}}"),
            ),
            graph(
                "Throughput by route and status",
                "reqps",
                (
                    sum_rate("route, status", 'rocars_http_requests_total{job="rocars-node"}'),
                    "{{route}} {{status}}",
                ),
            ),
        ),
    )
    state = Row(
        "Replication and contingency",
        (
            graph(
                "Replication lag (bytes)",
                "bytes",
                (
                    'max by (standby) (rocars_replication_lag_bytes{job="rocars-node"})',
                    "{{standby}}",
                ),
            ),
            graph(
                "Replication lag (seconds)",
                "s",
                (
                    'max by (standby) (rocars_replication_lag_seconds{job="rocars-node"})',
                    "{{standby}}",
                ),
            ),
            graph(
                "Manual mode and journal",
                "short",
                ('max(rocars_contingency_manual{job="rocars-node"})', "manual mode"),
                (
                    'max(rocars_contingency_manual_recommended{job="rocars-node"})',
                    "manual mode recommended",
                ),
                ('sum(rocars_contingency_journal_pending{job="rocars-node"})', "journal pending"),
            ),
            graph(
                "Alerts firing",
                "short",
                ('count by (severity) (ALERTS{alertstate="firing"})', "{{severity}}"),
            ),
        ),
    )
    return Dashboard(
        "rocars-overview",
        "rocars / Overview",
        "Which site is active, whether writes are available, the SLOs, latency, throughput, "
        "replication lag and contingency mode (#13 item 4).",
        (status, slo, traffic, state),
    )


def nodes() -> Dashboard:
    role = Row(
        "Role",
        (
            stat(
                "Role",
                "none",
                f"max by (site, role) (rocars_node_role{{{NODE}}} == 1)",
                "{{site}}: {{role}}",
            ),
            stat("Ready", "none", f"rocars_node_ready{{{NODE}}}", "{{site}}", mappings=_YES_NO),
            stat(
                "etcd reachable", "none", f"rocars_etcd_up{{{NODE}}}", "{{site}}", mappings=_UP_DOWN
            ),
            stat(
                "Redis reachable",
                "none",
                f"rocars_redis_up{{{NODE}}}",
                "{{site}}",
                mappings=_UP_DOWN,
            ),
            stat(
                "Leader known",
                "none",
                f"rocars_patroni_leader_known{{{NODE}}}",
                "{{site}}",
                mappings=_YES_NO,
            ),
            stat(
                "Write probe",
                "none",
                f"rocars_write_probe_success{{{NODE}}}",
                "{{site}}",
                mappings=_YES_NO,
            ),
            graph(
                "Role and leader changes",
                "short",
                (f"increase(rocars_node_role_changes_total{{{NODE}}}[1h])", "{{site}} role"),
                (f"increase(rocars_patroni_leader_changes_total{{{NODE}}}[1h])", "{{site}} leader"),
                description="Changes over the last hour.",
            ),
            graph(
                "Role loop age",
                "s",
                (f"rocars_role_cycle_age_seconds{{{NODE}}}", "{{site}}"),
                description="Seconds since the role loop last completed (alert above 3 s).",
            ),
            graph(
                "Seconds since the last proven write",
                "s",
                (f"rocars_seconds_since_last_successful_write{{{NODE}}}", "{{site}}"),
            ),
        ),
    )
    requests = Row(
        "Requests",
        (
            graph(
                "Requests by route and status",
                "reqps",
                (
                    sum_rate("site, route, status", f"rocars_http_requests_total{{{NODE}}}"),
                    "{{site}} {{route}} {{status}}",
                ),
            ),
            graph(
                "Web pages by page and status",
                "reqps",
                (
                    sum_rate("site, page, status", f"rocars_web_requests_total{{{NODE}}}"),
                    "{{site}} {{page}} {{status}}",
                ),
                description="The web channel's pages (#15), by route template.",
            ),
            graph(
                "Latency p99 by route",
                "s",
                (
                    quantile(
                        0.99,
                        f"rocars_http_request_duration_seconds_bucket{{{NODE}}}",
                        "site, route",
                    ),
                    "{{site}} {{route}}",
                ),
            ),
            graph(
                "Latency p50 by route",
                "s",
                (
                    quantile(
                        0.5, f"rocars_http_request_duration_seconds_bucket{{{NODE}}}", "site, route"
                    ),
                    "{{site}} {{route}}",
                ),
            ),
            graph("In flight", "short", (f"rocars_http_in_flight{{{NODE}}}", "{{site}}")),
            graph(
                "Shed, rate limited, let through unchecked",
                "reqps",
                (rate(f"rocars_http_shed_total{{{NODE}}}"), "{{site}} shed (503)"),
                (rate(f"rocars_rate_limited_total{{{NODE}}}"), "{{site}} rate limited (429)"),
                (
                    rate(f"rocars_rate_limit_fail_open_total{{{NODE}}}"),
                    "{{site}} rate limit fail-open",
                ),
            ),
        ),
    )
    domain = Row(
        "What the requests came to",
        (
            graph(
                "Submissions by outcome",
                "reqps",
                (
                    sum_rate("kind, outcome", f"rocars_submissions_total{{{NODE}}}"),
                    "{{kind}} {{outcome}}",
                ),
            ),
            graph(
                "Batch items",
                "ops",
                (
                    sum_rate("outcome", f"rocars_submission_batch_items_total{{{NODE}}}"),
                    "{{outcome}}",
                ),
            ),
            graph(
                "Amendments and cancellations by outcome",
                "reqps",
                (
                    sum_rate("action, outcome", f"rocars_consignment_changes_total{{{NODE}}}"),
                    "{{action}} {{outcome}}",
                ),
            ),
            graph(
                "Bundles by outcome",
                "reqps",
                (
                    sum_rate("action, outcome", f"rocars_bundles_total{{{NODE}}}"),
                    "{{action}} {{outcome}}",
                ),
            ),
            graph(
                "Arrivals by outcome",
                "reqps",
                (
                    sum_rate("outcome", f"rocars_arrivals_total{{{NODE}}}"),
                    "{{outcome}}",
                ),
            ),
            graph(
                "Gate decisions",
                "ops",
                (
                    sum_rate("decision", f"rocars_arrival_decisions_total{{{NODE}}}"),
                    "{{decision}}",
                ),
            ),
        ),
    )
    db = Row(
        "Group commit and database pool",
        (
            graph(
                "Submissions per shared statement",
                "short",
                (
                    f"{rate(f'rocars_group_commit_items_sum{{{NODE}}}')} / "
                    f"{rate(f'rocars_group_commit_items_count{{{NODE}}}')}",
                    "{{site}} mean",
                ),
                (
                    quantile(0.99, f"rocars_group_commit_items_bucket{{{NODE}}}", "site"),
                    "{{site}} p99",
                ),
            ),
            graph(
                "Group commit splits",
                "ops",
                (rate(f"rocars_group_commit_splits_total{{{NODE}}}"), "{{site}}"),
            ),
            graph(
                "Pool connections",
                "short",
                (f"rocars_db_pool_connections{{{NODE}}}", "{{site}} open"),
                (f"rocars_db_pool_idle_connections{{{NODE}}}", "{{site}} idle"),
                (f"rocars_db_pool_max_connections{{{NODE}}}", "{{site}} max"),
                (f"rocars_db_pool_requests_waiting{{{NODE}}}", "{{site}} waiting"),
            ),
            graph(
                "Pool requests and waits",
                "ops",
                (rate(f"rocars_db_pool_requests_total{{{NODE}}}"), "{{site}} requests"),
                (rate(f"rocars_db_pool_requests_queued_total{{{NODE}}}"), "{{site}} had to wait"),
                (rate(f"rocars_db_pool_request_errors_total{{{NODE}}}"), "{{site}} got none"),
                (rate(f"rocars_db_pool_connect_errors_total{{{NODE}}}"), "{{site}} connect errors"),
            ),
            graph(
                "Pool wait time per request",
                "s",
                (
                    f"{rate(f'rocars_db_pool_wait_seconds_total{{{NODE}}}')} / "
                    f"{rate(f'rocars_db_pool_requests_total{{{NODE}}}')}",
                    "{{site}}",
                ),
            ),
            graph(
                "Pool usage (connections lent out)",
                "short",
                (rate(f"rocars_db_pool_usage_seconds_total{{{NODE}}}"), "{{site}}"),
                description="Seconds of connection use per second: the mean number lent out.",
            ),
        ),
    )
    redis_row = Row(
        "Redis, contingency and replication",
        (
            graph(
                "Redis primary used",
                "short",
                (f"rocars_redis_primary{{{NODE}}}", "{{site}} -> {{address}}"),
            ),
            graph(
                "Redis errors", "ops", (rate(f"rocars_redis_errors_total{{{NODE}}}"), "{{site}}")
            ),
            graph(
                "Manual mode and journal",
                "short",
                (f"rocars_contingency_manual{{{NODE}}}", "{{site}} manual"),
                (f"rocars_contingency_manual_recommended{{{NODE}}}", "{{site}} recommended"),
                (f"rocars_contingency_journal_pending{{{NODE}}}", "{{site}} pending"),
                (f"rocars_contingency_journal_set_aside{{{NODE}}}", "{{site}} set aside"),
            ),
            graph(
                "Journal size",
                "bytes",
                (f"rocars_contingency_journal_bytes{{{NODE}}}", "{{site}}"),
            ),
            graph(
                "Replication as the active node sees it",
                "bytes",
                (f"rocars_replication_lag_bytes{{{NODE}}}", "{{standby}} bytes"),
            ),
            graph(
                "Synchronous standby streaming",
                "short",
                (f"rocars_sync_standby_streaming{{{NODE}}}", "{{site}}"),
            ),
        ),
    )
    drills = Row(
        "Drills and certificates",
        (
            graph(
                "Last drill RTO",
                "s",
                ('max by (scenario) (rocars_drill_rto_seconds{job="rocars-node"})', "{{scenario}}"),
            ),
            graph(
                "Last drill RPO and result",
                "short",
                (
                    'max by (scenario) (rocars_drill_rpo_records{job="rocars-node"})',
                    "{{scenario}} writes lost",
                ),
                (
                    'min by (scenario) (rocars_drill_passed{job="rocars-node"})',
                    "{{scenario}} passed",
                ),
            ),
            graph(
                "Certificate expiry",
                "s",
                (
                    'min by (name) (rocars_certificate_expiry_seconds{job="rocars-node"}) - time()',
                    "{{name}}",
                ),
            ),
        ),
    )
    return Dashboard(
        "rocars-nodes",
        "rocars / API nodes",
        "The API nodes: role, requests, latency, admission control, domain outcomes, group "
        "commit, database pool, Redis and contingency (#13 item 4).",
        (role, requests, domain, db, redis_row, drills),
        SiteVariable('rocars_node_ready{job="rocars-node"}'),
    )


def postgres() -> Dashboard:
    pat = f'job="patroni", {SITE}'
    pg = f'job="postgres", {SITE}'
    patroni = Row(
        "Patroni",
        (
            stat("Primary", "none", f"patroni_primary{{{pat}}} == 1", "{{name}}"),
            stat("Synchronous standby", "none", f"patroni_sync_standby{{{pat}}} == 1", "{{name}}"),
            stat("Timeline", "none", "rocars:patroni_timeline:max", "{{scope}}"),
            stat(
                "PostgreSQL running",
                "none",
                f"patroni_postgres_running{{{pat}}}",
                "{{name}}",
                mappings=_YES_NO,
            ),
            stat("Paused", "none", f"patroni_is_paused{{{pat}}}", "{{name}}", mappings=_YES_NO),
            stat(
                "Pending restart",
                "none",
                f"patroni_pending_restart{{{pat}}}",
                "{{name}}",
                mappings=_YES_NO,
            ),
            graph(
                "Roles",
                "short",
                (f"patroni_primary{{{pat}}}", "{{name}} primary"),
                (f"patroni_sync_standby{{{pat}}}", "{{name}} sync standby"),
                (f"patroni_replica{{{pat}}}", "{{name}} replica"),
                (f"patroni_postgres_streaming{{{pat}}}", "{{name}} streaming"),
            ),
            graph(
                "WAL positions",
                "bytes",
                (f"patroni_xlog_location{{{pat}}} > 0", "{{name}} written (primary)"),
                (f"patroni_xlog_received_location{{{pat}}} > 0", "{{name}} received"),
                (f"patroni_xlog_replayed_location{{{pat}}} > 0", "{{name}} replayed"),
            ),
            graph(
                "Replay lag (bytes)",
                "bytes",
                (f"rocars:patroni_replication_lag:bytes{{{SITE}}}", "{{name}}"),
            ),
            graph(
                "Timeline by member",
                "short",
                (f"patroni_postgres_timeline{{{pat}}}", "{{name}}"),
            ),
            graph(
                "Seconds since etcd was last seen",
                "s",
                (f"time() - patroni_dcs_last_seen{{{pat}}}", "{{name}}"),
            ),
        ),
    )
    postgres_row = Row(
        "PostgreSQL (postgres_exporter)",
        (
            stat("PostgreSQL up", "none", f"pg_up{{{pg}}}", "{{site}}", mappings=_UP_DOWN),
            graph(
                "Connections by state",
                "short",
                (
                    f"sum by (site, state) (pg_stat_activity_count{{{pg}}}) > 0",
                    "{{site}} {{state}}",
                ),
                (f"pg_settings_max_connections{{{pg}}}", "{{site}} max"),
            ),
            graph(
                "Streaming replication (primary's view)",
                "bytes",
                (
                    f"pg_stat_replication_pg_wal_lsn_diff{{{pg}}}",
                    "{{site}} -> {{application_name}} {{state}}",
                ),
                (f"pg_replication_slots_pg_wal_lsn_diff{{{pg}}}", "{{site}} slot {{slot_name}}"),
            ),
            graph(
                "Database size",
                "bytes",
                (f'pg_database_size_bytes{{{pg}, datname="rocars"}}', "{{site}}"),
            ),
            graph(
                "Locks by mode",
                "short",
                (
                    f'sum by (site, mode) (pg_locks_count{{{pg}, datname="rocars"}})',
                    "{{site}} {{mode}}",
                ),
            ),
            graph(
                "Transactions",
                "ops",
                (
                    rate(f'pg_stat_database_xact_commit{{{pg}, datname="rocars"}}'),
                    "{{site}} commit",
                ),
                (
                    rate(f'pg_stat_database_xact_rollback{{{pg}, datname="rocars"}}'),
                    "{{site}} rollback",
                ),
            ),
            graph(
                "Rows written",
                "ops",
                (
                    rate(f'pg_stat_database_tup_inserted{{{pg}, datname="rocars"}}'),
                    "{{site}} inserted",
                ),
                (
                    rate(f'pg_stat_database_tup_updated{{{pg}, datname="rocars"}}'),
                    "{{site}} updated",
                ),
            ),
            graph(
                "Longest transaction",
                "s",
                (
                    f'max by (site) (pg_stat_activity_max_tx_duration{{{pg}, datname="rocars"}})',
                    "{{site}}",
                ),
            ),
            graph(
                "Deadlocks and conflicts",
                "short",
                (
                    f'increase(pg_stat_database_deadlocks{{{pg}, datname="rocars"}}[1h])',
                    "{{site}} deadlocks (1h)",
                ),
                (
                    f'increase(pg_stat_database_conflicts{{{pg}, datname="rocars"}}[1h])',
                    "{{site}} recovery conflicts (1h)",
                ),
            ),
        ),
    )
    return Dashboard(
        "rocars-postgres",
        "rocars / PostgreSQL and Patroni",
        "Patroni's view of the cluster (primary, synchronous standby, timeline, WAL positions) "
        "and PostgreSQL's through postgres_exporter (#13 item 4).",
        (patroni, postgres_row),
        SiteVariable('up{job="patroni"}'),
    )


def etcd() -> Dashboard:
    sel = f'job="etcd", {SITE}'
    rows = (
        Row(
            "Members",
            (
                stat("Members up", "none", 'sum(up{job="etcd"})'),
                stat("Members", "none", 'count(up{job="etcd"})'),
                stat(
                    "Has a leader",
                    "none",
                    f"etcd_server_has_leader{{{sel}}}",
                    "{{site}}",
                    mappings=_YES_NO,
                ),
                stat("Leader", "none", f"etcd_server_is_leader{{{sel}}} == 1", "{{site}}"),
                graph("Up", "short", (f"up{{{sel}}}", "{{site}}")),
                graph(
                    "Leader changes seen (1h)",
                    "short",
                    (f"increase(etcd_server_leader_changes_seen_total{{{sel}}}[1h])", "{{site}}"),
                ),
            ),
        ),
        Row(
            "Raft and disk",
            (
                graph(
                    "Proposals",
                    "ops",
                    (rate(f"etcd_server_proposals_committed_total{{{sel}}}"), "{{site}} committed"),
                    (rate(f"etcd_server_proposals_failed_total{{{sel}}}"), "{{site}} failed"),
                    (f"etcd_server_proposals_pending{{{sel}}}", "{{site}} pending"),
                ),
                graph(
                    "WAL fsync p99",
                    "s",
                    (
                        quantile(
                            0.99, f"etcd_disk_wal_fsync_duration_seconds_bucket{{{sel}}}", "site"
                        ),
                        "{{site}}",
                    ),
                ),
                graph(
                    "Backend commit p99",
                    "s",
                    (
                        quantile(
                            0.99,
                            f"etcd_disk_backend_commit_duration_seconds_bucket{{{sel}}}",
                            "site",
                        ),
                        "{{site}}",
                    ),
                ),
                graph(
                    "Peer round trip p99",
                    "s",
                    (
                        quantile(
                            0.99,
                            f"etcd_network_peer_round_trip_time_seconds_bucket{{{sel}}}",
                            "site, To",
                        ),
                        "{{site}} -> {{To}}",
                    ),
                ),
                graph(
                    "Database size",
                    "bytes",
                    (f"etcd_mvcc_db_total_size_in_bytes{{{sel}}}", "{{site}} total"),
                    (f"etcd_mvcc_db_total_size_in_use_in_bytes{{{sel}}}", "{{site}} in use"),
                    (f"etcd_server_quota_backend_bytes{{{sel}}}", "{{site}} quota"),
                ),
                graph(
                    "Client traffic",
                    "Bps",
                    (
                        rate(f"etcd_network_client_grpc_received_bytes_total{{{sel}}}"),
                        "{{site}} in",
                    ),
                    (rate(f"etcd_network_client_grpc_sent_bytes_total{{{sel}}}"), "{{site}} out"),
                ),
            ),
        ),
    )
    return Dashboard(
        "rocars-etcd",
        "rocars / etcd",
        "The etcd members Patroni and the nodes rely on: quorum, leader, proposals, disk and "
        "network latency (#13 item 4).",
        rows,
        SiteVariable('up{job="etcd"}'),
    )


def redis() -> Dashboard:
    sel = f'job="redis", {SITE}'
    rows = (
        Row(
            "Redis",
            (
                graph("Up", "short", (f"redis_up{{{sel}}}", "{{instance}}")),
                graph(
                    "Role",
                    "short",
                    (
                        f'redis_instance_info{{{sel}, redis_mode="standalone"}}',
                        "{{instance}} {{role}}",
                    ),
                ),
                graph(
                    "Replicas connected (primary) and link up (replica)",
                    "short",
                    (f"redis_connected_slaves{{{sel}}}", "{{instance}} replicas"),
                    (f"redis_master_link_up{{{sel}}}", "{{instance}} link to primary"),
                ),
                graph(
                    "Memory",
                    "bytes",
                    (f"redis_memory_used_bytes{{{sel}}}", "{{instance}} used"),
                    (f"redis_memory_max_bytes{{{sel}}}", "{{instance}} max"),
                ),
                graph(
                    "Commands",
                    "ops",
                    (
                        sum_rate("instance, cmd", f"redis_commands_total{{{sel}}}"),
                        "{{instance}} {{cmd}}",
                    ),
                ),
                graph(
                    "Clients and keys",
                    "short",
                    (f"redis_connected_clients{{{sel}}}", "{{instance}} clients"),
                    (f"sum by (instance) (redis_db_keys{{{sel}}})", "{{instance}} keys"),
                ),
                graph(
                    "Replication offset",
                    "bytes",
                    (f"redis_master_repl_offset{{{sel}}}", "{{instance}}"),
                ),
                graph(
                    "Evicted and expired keys",
                    "ops",
                    (rate(f"redis_evicted_keys_total{{{sel}}}"), "{{instance}} evicted"),
                    (rate(f"redis_expired_keys_total{{{sel}}}"), "{{instance}} expired"),
                ),
            ),
        ),
        Row(
            "Sentinel",
            (
                graph(
                    "Primary as each Sentinel sees it",
                    "short",
                    (
                        f"redis_sentinel_master_status{{{sel}}}",
                        "{{instance}}: {{master_address}} {{master_status}}",
                    ),
                ),
                graph(
                    "Sentinels and replicas agreeing",
                    "short",
                    (f"redis_sentinel_master_ok_sentinels{{{sel}}}", "{{instance}} sentinels ok"),
                    (f"redis_sentinel_master_ok_slaves{{{sel}}}", "{{instance}} replicas ok"),
                ),
                graph(
                    "Quorum reachable and tilt",
                    "short",
                    (f"redis_sentinel_master_ckquorum_status{{{sel}}}", "{{instance}} quorum"),
                    (f"redis_sentinel_tilt{{{sel}}}", "{{instance}} tilt"),
                ),
            ),
        ),
    )
    return Dashboard(
        "rocars-redis",
        "rocars / Redis and Sentinel",
        "Redis (rate limits, idempotency cache) and its Sentinels, through redis_exporter "
        "(#13 item 4).",
        rows,
        SiteVariable('up{job="redis"}'),
    )


def haproxy() -> Dashboard:
    sel = 'job="haproxy"'
    rows = (
        Row(
            "Routing",
            (
                graph(
                    "Servers up",
                    "short",
                    (f'haproxy_server_status{{{sel}, state="UP"}}', "{{proxy}} {{server}}"),
                    description="The `nodes` backend routes to the one ready node.",
                ),
                graph(
                    "Active servers per backend",
                    "short",
                    (f"haproxy_backend_active_servers{{{sel}}}", "{{proxy}}"),
                ),
                graph(
                    "Server state changes (1h)",
                    "short",
                    (
                        f"increase(haproxy_server_check_up_down_total{{{sel}}}[1h])",
                        "{{proxy}} {{server}}",
                    ),
                ),
                graph(
                    "Health check duration",
                    "s",
                    (f"haproxy_server_check_duration_seconds{{{sel}}}", "{{proxy}} {{server}}"),
                ),
            ),
        ),
        Row(
            "Traffic",
            (
                graph(
                    "Frontend requests",
                    "reqps",
                    (rate(f"haproxy_frontend_http_requests_total{{{sel}}}"), "{{proxy}}"),
                ),
                graph(
                    "Backend responses by code",
                    "reqps",
                    (
                        sum_rate("proxy, code", f"haproxy_backend_http_responses_total{{{sel}}}"),
                        "{{proxy}} {{code}}",
                    ),
                ),
                graph(
                    "Sessions and queue",
                    "short",
                    (f"haproxy_frontend_current_sessions{{{sel}}}", "{{proxy}} sessions"),
                    (f"haproxy_backend_current_queue{{{sel}}}", "{{proxy}} queued"),
                ),
                graph(
                    "Backend response time (average)",
                    "s",
                    (f"haproxy_backend_response_time_average_seconds{{{sel}}}", "{{proxy}}"),
                ),
                graph(
                    "Errors and denials",
                    "ops",
                    (
                        rate(f"haproxy_backend_connection_errors_total{{{sel}}}"),
                        "{{proxy}} connect errors",
                    ),
                    (rate(f"haproxy_frontend_requests_denied_total{{{sel}}}"), "{{proxy}} denied"),
                    (
                        rate(f"haproxy_frontend_request_errors_total{{{sel}}}"),
                        "{{proxy}} bad requests",
                    ),
                ),
                graph(
                    "Abuse tables in use",
                    "short",
                    (f"haproxy_sticktable_used{{{sel}}}", "{{name}}"),
                    description="Per-address counters of the unauthenticated and auth-failure "
                    "limits.",
                ),
            ),
        ),
    )
    return Dashboard(
        "rocars-haproxy",
        "rocars / HAProxy",
        "The entry point: which node it routes to, traffic, errors and the abuse limits' tables "
        "(#13 item 4).",
        rows,
    )


def dashboards() -> dict[str, Dashboard]:
    """File stem -> dashboard."""
    return {
        "overview": overview(),
        "nodes": nodes(),
        "postgres": postgres(),
        "etcd": etcd(),
        "redis": redis(),
        "haproxy": haproxy(),
    }


# ---------------------------------------------------------------------------------------------
# Grafana's JSON model


def _panel_json(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    w, h = _SIZE[p.kind]
    defaults: dict[str, Any] = {"unit": p.unit}
    if p.mappings:
        defaults["mappings"] = [
            {
                "type": "value",
                "options": {
                    str(v): {"text": text, "index": i} for i, (v, text) in enumerate(p.mappings)
                },
            }
        ]
    options: dict[str, Any]
    if p.kind == "stat":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none",
            # A legend (the active site's name) says more than the value 1.
            "textMode": "name" if p.targets[0].legend and not p.mappings else "auto",
        }
    else:
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 0}
        options = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    return {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": dict(DATASOURCE),
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": dict(DATASOURCE),
                "expr": t.expr,
                "legendFormat": t.legend or "__auto",
                "range": p.kind == "timeseries",
                "instant": p.kind == "stat",
            }
            for i, t in enumerate(p.targets)
        ],
    }


def _layout(d: Dashboard) -> list[dict[str, Any]]:
    """Rows one under another; in a row, panels left to right, wrapping at 24 columns."""
    out: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row in d.rows:
        out.append(
            {
                "id": pid,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        pid, y = pid + 1, y + 1
        x, line_h = 0, 0
        for p in row.panels:
            w, h = _SIZE[p.kind]
            if x + w > 24:
                x, y, line_h = 0, y + line_h, 0
            out.append(_panel_json(p, pid, x, y))
            pid, x, line_h = pid + 1, x + w, max(line_h, h)
        y += line_h
    return out


def _variables(d: Dashboard) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "options": [],
            "refresh": 1,
            "regex": "",
        }
    ]
    if d.site is not None:
        query = f"label_values({d.site.metric}, site)"
        out.append(
            {
                "name": "site",
                "label": "Site",
                "type": "query",
                "datasource": dict(DATASOURCE),
                "definition": query,
                "query": {"query": query, "refId": "site"},
                "current": {},
                "hide": 0,
                "includeAll": True,
                "allValue": ".*",
                "multi": True,
                "options": [],
                "refresh": 2,
                "regex": "",
                "sort": 1,
            }
        )
    return out


def grafana_dashboard(d: Dashboard) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model, ready for Dashboards > Import."""
    return {
        "uid": d.uid,
        "title": d.title,
        "description": d.description,
        "tags": list(TAGS),
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {
                "type": "dashboards",
                "tags": list(TAGS),
                "asDropdown": True,
                "title": "rocars",
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "templating": {"list": _variables(d)},
        "panels": _layout(d),
    }


def render_json(d: Dashboard) -> str:
    return json.dumps(grafana_dashboard(d), indent=2, sort_keys=True) + "\n"


# ---------------------------------------------------------------------------------------------
# The overview as a Prometheus console template (Go html/template, with Prometheus's console
# library: prom_query_drilldown for the current values, PromConsole.Graph for the graphs).

CONSOLE_PARAMS: Final = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def console_expr(expr: str) -> str:
    """A dashboard query as the console page runs it: Grafana's variables replaced."""
    for var, value in CONSOLE_PARAMS.items():
        expr = expr.replace(var, value)
    if "$" in expr or "{{" in expr or "}}" in expr or "`" in expr:
        # A Grafana variable left over, or text Go's template parser would take as its own.
        raise ValueError(f"query cannot go into a console template: {expr}")
    return expr


def _console_stat(p: Panel) -> str:
    t = p.targets[0]
    expr = console_expr(t.expr)
    if t.legend:
        # The series' label (the active site, the leader member), not the value 1.
        label = t.legend.removeprefix("{{").removesuffix("}}")
        ident = html.escape(p.title.lower().replace(" ", "-"))
        value = (
            f'<span id="{ident}">{{{{ range $i, $s := query `{expr}` }}}}'
            f"{{{{ if $i }}}}, {{{{ end }}}}{{{{ $s.Labels.{label} }}}}{{{{ end }}}}</span>"
        )
    elif p.mappings:
        cases = "".join(
            f"{{{{ if eq $v {float(v)} }}}}{text}{{{{ end }}}}" for v, text in p.mappings
        )
        value = (
            f"{{{{ with query `{expr}` }}}}{{{{ $v := . | first | value }}}}{cases}"
            "{{ else }}-{{ end }}"
        )
    else:
        value = f'{{{{ template "prom_query_drilldown" (args `{expr}`) }}}}'
    return f"  <tr><td>{html.escape(p.title)}</td><td>{value}</td></tr>\n"


def _console_graph(p: Panel, n: int) -> str:
    exprs = [console_expr(t.expr) for t in p.targets]
    # PromConsole names series with [[label]] where Grafana uses {{label}}.
    names = [t.legend.replace("{{", "[[").replace("}}", "]]") or p.title for t in p.targets]
    formatter = {
        "bytes": "PromConsole.NumberFormatter.humanize1024",
        "percentunit": "PromConsole.NumberFormatter.humanize",
    }.get(p.unit, "PromConsole.NumberFormatter.humanizeNoSmallPrefix")
    spec = {"expr": exprs, "name": names, "min": 0 if p.unit != "percentunit" else None}
    spec = {k: v for k, v in spec.items() if v is not None}
    body = json.dumps(spec, indent=2, sort_keys=True)[1:-2]
    return (
        f"<h3>{html.escape(p.title)}</h3>\n"
        f'<div id="graph{n}"></div>\n'
        "<script>\n"
        "new PromConsole.Graph({\n"
        f'  node: document.querySelector("#graph{n}"),{body},\n'
        f"  yAxisFormatter: {formatter},\n"
        f"  yHoverFormatter: {formatter},\n"
        '  duration: "1h",\n'
        "});\n"
        "</script>\n"
    )


def console_page(d: Dashboard) -> str:
    """The dashboard as a console template: its stat panels in the right-hand table, its
    graphs in the content area, the same queries."""
    stats = [p for p in all_panels(d) if p.kind == "stat"]
    graphs = [p for p in all_panels(d) if p.kind == "timeseries"]
    out = [
        "{{/* Generated by `python -m deploy.dashboards` from deploy/dashboards.py (#13 item 4):"
        " edit that, not this. */}}\n",
        '{{ template "head" . }}\n\n',
        '{{ template "prom_right_table_head" }}\n',
        f'  <tr><th colspan="2">{html.escape(d.title)}</th></tr>\n',
        *(_console_stat(p) for p in stats),
        '{{ template "prom_right_table_tail" }}\n\n',
        '{{ template "prom_content_head" . }}\n',
        f"<h1>{html.escape(d.title)}</h1>\n<p>{html.escape(d.description)}</p>\n",
        *(_console_graph(p, i) for i, p in enumerate(graphs)),
        '{{ template "prom_content_tail" . }}\n\n',
        '{{ template "tail" }}\n',
    ]
    return "".join(out)


# ---------------------------------------------------------------------------------------------


def rendered() -> dict[Path, str]:
    """Every generated file and its content."""
    out = {DASHBOARDS_DIR / f"{stem}.json": render_json(d) for stem, d in dashboards().items()}
    out[CONSOLE_PAGE] = console_page(overview())
    return out


def main() -> None:
    for path, text in rendered().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path.relative_to(ROOT), file=sys.stderr)


if __name__ == "__main__":
    main()
