"""Prometheus's and Alertmanager's configuration, generated from the topology like every other
process's (#13 item 1).

Prometheus runs on the witness site, so it still sees, records and alerts on the loss of either
data site. Its job names and the `site` label on every target are what the alert and recording
rules in monitoring/rules/ are written against (and tested with promtool).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy.pki import PkiDir
from deploy.topology import Topology

# Every target is scraped, and every rule evaluated, each 5 s: a handful of targets, so cheap,
# and an alert's `for` (30 s for the paging ones) is then counted in six samples, not two.
SCRAPE_INTERVAL = "5s"
EVALUATION_INTERVAL = "5s"
# The SLO rules read up to 30 days back (monitoring/rules/recording.yml).
RETENTION = "31d"
RULES_DIR = Path(__file__).resolve().parent.parent / "monitoring" / "rules"
CONSOLES_DIR = RULES_DIR.parent / "consoles"
# Prometheus's own prom.lib (Debian installs it only among the documentation examples) and a
# menu of ours.
CONSOLE_LIBRARIES = CONSOLES_DIR / "libraries"

# Job names the rules select on (monitoring/rules/alerts.yml).
JOBS = (
    "rocars-node",
    "patroni",
    "postgres",
    "etcd",
    "haproxy",
    "redis",
    "prometheus",
    "alertmanager",
)


# Jobs whose targets serve HTTPS only and require a client certificate from the system's CA
# (#12 item 2): Prometheus presents its own (`client-prometheus`, deploy/pki.py) and checks
# theirs against the CA bundle and the address it scrapes.
# The nodes and HAProxy's stats port serve HTTPS too (no client certificate asked for).
MUTUAL_TLS_JOBS = frozenset({"etcd", "patroni", "rocars-node", "haproxy"})
# Every job is HTTPS (#12 item 2); the monitoring processes' pages ask for no client
# certificate (what they show is readable from the monitoring networks only).


# Series dropped at scrape time (#11 target 5: Prometheus's memory grows with its series). etcd
# pre-creates a request counter for every gRPC method and status code (41 methods, 17 codes,
# per member): 2,091 of the 8,652 series a fresh system had, plus as many again in per-message
# counters and `etcd_debugging_*` histograms its documentation calls unstable. Kept: the request
# counts of the services this system calls (KV, Lease, Watch, Maintenance, and Authenticate,
# which every client login is), everything else etcd says about raft, disk and peers.
# Dropped: the membership, health-check and user/role administration methods, called only
# when a cluster is set up.
ETCD_DROPPED_SERIES: tuple[dict[str, Any], ...] = (
    {
        "source_labels": ["__name__"],
        "regex": "etcd_debugging_.+|grpc_server_(started|msg_received|msg_sent)_total",
        "action": "drop",
    },
    {
        "source_labels": ["__name__", "grpc_service", "grpc_method"],
        "regex": "grpc_server_handled_total;("
        "(etcdserverpb[.]Cluster|grpc[.]health[.]v1[.]Health);.+"
        "|etcdserverpb[.]Auth;(Auth(Enable|Disable|Status)|User.+|Role.+))",
        "action": "drop",
    },
)


# The PostgreSQL exporter's one series per setting (248 per member): only max_connections is
# read (the connections dashboard's ceiling). RE2 has no negative look-ahead, so it steps aside
# under another name while the rest are dropped.
_KEPT_SETTING = "pg_settings_max_connections"
_KEPT_SETTING_ASIDE = "rocars_kept_pg_settings_max_connections"
POSTGRES_DROPPED_SERIES: tuple[dict[str, Any], ...] = (
    {
        "source_labels": ["__name__"],
        "regex": _KEPT_SETTING,
        "target_label": "__name__",
        "replacement": _KEPT_SETTING_ASIDE,
    },
    {"source_labels": ["__name__"], "regex": "pg_settings_.+", "action": "drop"},
    {
        "source_labels": ["__name__"],
        "regex": _KEPT_SETTING_ASIDE,
        "target_label": "__name__",
        "replacement": _KEPT_SETTING,
    },
)


def _hostport(host: str, port: int) -> str:
    return f"{host}:{port}"


def scrape_targets(topo: Topology) -> dict[str, list[tuple[str, str]]]:
    """Per job, the (site, host:port) it scrapes; the Redis job's are rediss:// addresses (TLS
    only, #12 item 2) the exporter is asked about (its multi-target /scrape endpoint)."""
    witness = topo.witness_site
    w = topo.sites[witness]
    assert w.prometheus and w.alertmanager
    out: dict[str, list[tuple[str, str]]] = {job: [] for job in JOBS}
    for name in topo.data_sites:
        s = topo.sites[name]
        assert s.node and s.patroni and s.postgres_exporter and s.redis
        out["rocars-node"].append((name, _hostport(s.host, s.node.port)))
        out["patroni"].append((name, _hostport(s.host, s.patroni.port)))
        out["postgres"].append((name, _hostport(s.host, s.postgres_exporter.port)))
        out["redis"].append((name, f"rediss://{_hostport(s.host, s.redis.port)}"))
    for name, s in topo.sites.items():
        out["etcd"].append((name, _hostport(s.host, s.etcd.client_port)))
        out["redis"].append((name, f"rediss://{_hostport(s.host, s.sentinel.port)}"))
    out["haproxy"].append((topo.entry.site, _hostport(topo.entry_host(), topo.entry.stats_port)))
    out["prometheus"].append((witness, _hostport(w.host, w.prometheus.port)))
    out["alertmanager"].append((witness, _hostport(w.host, w.alertmanager.port)))
    return out


def scrape_tls(pki: PkiDir) -> dict[str, str]:
    """A scrape job's `tls_config` for the system's HTTPS targets."""
    return {
        "ca_file": str(pki.bundle),
        "cert_file": str(pki.cert("client-prometheus")),
        "key_file": str(pki.key("client-prometheus")),
        "min_version": "TLS12",
    }


def server_tls(pki: PkiDir) -> dict[str, str]:
    """A `tls_config` that checks the server only (no client certificate)."""
    return {"ca_file": str(pki.bundle), "min_version": "TLS12"}


def web_config_file(config_dir: Path, process: str) -> Path:
    """Where `process`'s `--web.config.file` is written."""
    return config_dir / f"web-{process}.yml"


def web_configs(topo: Topology) -> dict[str, str]:
    """The processes that read a `--web.config.file`, with the certificate each serves."""
    witness = topo.witness_site
    out = {"prometheus": f"prometheus-{witness}", "alertmanager": f"alertmanager-{witness}"}
    for site in topo.data_sites:
        out[f"postgres-exporter-{site}"] = f"postgres-exporter-{site}"
    return out


def web_config(pki: PkiDir, name: str) -> dict[str, Any]:
    """A Prometheus-toolkit `--web.config.file` (Prometheus, Alertmanager, the PostgreSQL
    exporter): HTTPS with the process's own certificate `name`, TLS 1.2 at least."""
    return {
        "tls_server_config": {
            "cert_file": str(pki.cert(name)),
            "key_file": str(pki.key(name)),
            "min_version": "TLS12",
        }
    }


def prometheus_config(topo: Topology, *, pki: PkiDir) -> dict[str, Any]:
    """`pki`: the state's pki folder, whose CA bundle and client certificate the HTTPS
    scrapes use."""
    w = topo.sites[topo.witness_site]
    assert w.alertmanager and w.redis_exporter
    jobs: list[dict[str, Any]] = []
    for job, targets in scrape_targets(topo).items():
        cfg: dict[str, Any] = {
            "job_name": job,
            "static_configs": [
                {"targets": [addr], "labels": {"site": site}} for site, addr in targets
            ],
        }
        cfg["scheme"] = "https"
        cfg["tls_config"] = scrape_tls(pki) if job in MUTUAL_TLS_JOBS else server_tls(pki)
        if job == "redis":
            # One exporter asks each Redis and Sentinel in turn (redis_exporter's multi-target
            # pattern): the target becomes a parameter and the instance label, the exporter
            # the address actually scraped.
            cfg["metrics_path"] = "/scrape"
            cfg["relabel_configs"] = [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {
                    "target_label": "__address__",
                    "replacement": _hostport(w.host, w.redis_exporter.port),
                },
            ]
        if job == "etcd":
            cfg["metric_relabel_configs"] = list(ETCD_DROPPED_SERIES)
        if job == "postgres":
            cfg["metric_relabel_configs"] = list(POSTGRES_DROPPED_SERIES)
        jobs.append(cfg)
    return {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": "4s",
            "evaluation_interval": EVALUATION_INTERVAL,
            "external_labels": {"cluster": topo.name},
        },
        "rule_files": [str(RULES_DIR / "recording.yml"), str(RULES_DIR / "alerts.yml")],
        "alerting": {
            "alertmanagers": [
                {
                    "scheme": "https",
                    "tls_config": server_tls(pki),
                    "static_configs": [{"targets": [_hostport(w.host, w.alertmanager.port)]}],
                }
            ]
        },
        "scrape_configs": jobs,
    }


def alertmanager_config(topo: Topology) -> dict[str, Any]:
    """Routes by severity (the rules' `page` or `ticket`), grouped by site so one site's
    trouble is one notification. The receivers have no destination here: production adds the
    pager's and the ticket queue's webhooks to them (Alertmanager's own API shows the alerts
    meanwhile: `rocars cluster status` lists where)."""
    return {
        "route": {
            "receiver": "ticket",
            "group_by": ["alertname", "site"],
            "group_wait": "10s",
            "group_interval": "1m",
            "repeat_interval": "4h",
            "routes": [
                {
                    "matchers": ['severity="page"'],
                    "receiver": "page",
                    "group_wait": "0s",
                    "repeat_interval": "1h",
                },
                {"matchers": ['severity="ticket"'], "receiver": "ticket"},
            ],
        },
        "receivers": [{"name": "page"}, {"name": "ticket"}],
    }
