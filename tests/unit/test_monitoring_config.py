"""Prometheus's and Alertmanager's generated configuration, and the topology's monitoring
section (#13 item 1)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import monitoring_config, pki
from deploy.process_specs import monitoring_names, specs
from deploy.state import DEFAULT_TOPOLOGY, NETNS_TOPOLOGY, StateDir
from deploy.topology import Topology, TopologyError, load_topology, parse_topology

PRODUCTION = Path(__file__).resolve().parents[2] / "deploy" / "topology.production.yaml"
RULES = monitoring_config.RULES_DIR


@pytest.fixture(params=[DEFAULT_TOPOLOGY, NETNS_TOPOLOGY, PRODUCTION], ids=lambda p: p.stem)
def topo(request: pytest.FixtureRequest) -> Topology:
    path: Path = request.param
    return load_topology(path)


def _jobs(topo: Topology) -> dict[str, dict[str, Any]]:
    cfg = monitoring_config.prometheus_config(topo, pki=pki.PkiDir(Path("/pki")))
    return {j["job_name"]: j for j in cfg["scrape_configs"]}


def test_every_job_the_rules_select_is_scraped_with_a_site_label(topo: Topology) -> None:
    """#13 item 1: each job name the alert and recording rules select on is scraped, and every
    target carries the `site` label the rules and Alertmanager's grouping use."""
    jobs = _jobs(topo)
    named = set()
    for rules in ("alerts.yml", "recording.yml"):
        named |= set(re.findall(r'job=~?"([^"]+)"', (RULES / rules).read_text()))
    wanted = {j for pattern in named for j in pattern.split("|")}
    assert wanted <= set(jobs), wanted - set(jobs)
    for job in jobs.values():
        for group in job["static_configs"]:
            assert group["labels"]["site"] in topo.sites


def test_every_part_of_the_system_is_a_target(topo: Topology) -> None:
    """Both nodes, both Patroni members, both exporters, all etcd members, every Redis and
    Sentinel, HAProxy, Prometheus and Alertmanager: nothing that can fail goes unwatched."""
    targets = monitoring_config.scrape_targets(topo)
    counts = {job: len(t) for job, t in targets.items()}
    assert counts == {
        "rocars-node": 2,
        "patroni": 2,
        "postgres": 2,
        "etcd": 3,
        "haproxy": 1,
        "redis": 2 + 3,
        "prometheus": 1,
        "alertmanager": 1,
    }
    hosts = {s.host for s in topo.sites.values()} | {topo.entry_host()}
    for job, pairs in targets.items():
        for _site, addr in pairs:
            host = addr.removeprefix("rediss://").rsplit(":", 1)[0]
            assert host in hosts, (job, addr)


def test_redis_is_scraped_through_the_one_exporter(topo: Topology) -> None:
    """The Redis job asks the exporter on the witness site about each Redis and Sentinel:
    the real address becomes the `target` parameter and the instance label."""
    job = _jobs(topo)["redis"]
    assert job["metrics_path"] == "/scrape"
    relabel = job["relabel_configs"]
    assert relabel[0] == {"source_labels": ["__address__"], "target_label": "__param_target"}
    assert relabel[1] == {"source_labels": ["__param_target"], "target_label": "instance"}
    exporter = topo.monitoring_url("redis_exporter").removeprefix("https://")
    assert relabel[2] == {"target_label": "__address__", "replacement": exporter}


def test_promtool_and_amtool_accept_the_generated_files(tmp_path: Path) -> None:
    """The generated prometheus.yml (with the project's rule files) and alertmanager.yml pass
    Prometheus's and Alertmanager's own checkers."""
    topo = load_topology(DEFAULT_TOPOLOGY)
    prom = tmp_path / "prometheus.yml"
    folder = pki.PkiDir(tmp_path / "pki")  # promtool checks the TLS files exist
    pki.issue_all(folder, pki.plan(topo))
    prom.write_text(yaml.safe_dump(monitoring_config.prometheus_config(topo, pki=folder)))
    am = tmp_path / "alertmanager.yml"
    am.write_text(yaml.safe_dump(monitoring_config.alertmanager_config(topo)))
    for argv in (["promtool", "check", "config", str(prom)], ["amtool", "check-config", str(am)]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_alertmanager_routes_by_severity_and_groups_by_site() -> None:
    """Paging alerts go to the `page` receiver at once, tickets to `ticket`; one site's
    trouble is one notification per alert name."""
    route = monitoring_config.alertmanager_config(load_topology(DEFAULT_TOPOLOGY))["route"]
    assert route["group_by"] == ["alertname", "site"]
    by_matcher = {r["matchers"][0]: r for r in route["routes"]}
    assert by_matcher['severity="page"']["receiver"] == "page"
    assert by_matcher['severity="page"']["group_wait"] == "0s"
    assert by_matcher['severity="ticket"']["receiver"] == "ticket"


def test_monitoring_processes_listen_on_their_sites_address_only(
    topo: Topology, tmp_path: Path
) -> None:
    """Prometheus, Alertmanager and the exporters bind the site's address (never every
    address), Alertmanager opens no gossip port, and no password is on a command line."""
    all_specs = specs(topo, StateDir(tmp_path))
    names = monitoring_names(topo)
    assert set(names) <= set(all_specs)
    for name in names:
        spec = all_specs[name]
        argv = " ".join(spec.argv)
        (what, host, port) = spec.ports[0]
        assert f"{host}:{port}" in argv, what
        assert host == topo.sites[spec.site].host
        # A password file's path is fine (the Redis exporter's, #12 item 3), a password not.
        assert "password" not in argv.lower().replace("-redis.password-file=", "")
    assert "--cluster.listen-address=" in all_specs["alertmanager"].argv
    exporter = all_specs[f"postgres-exporter-{topo.data_sites[0]}"]
    assert "DATA_SOURCE_PASS" not in exporter.env  # by file only
    assert "DATA_SOURCE_PASS_FILE" in exporter.env


def _raw() -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    return raw


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (
            lambda r: r["sites"]["A"].update(prometheus={"port": 9999}),
            "run on the witness site",
        ),
        (
            lambda r: r["sites"]["C"].pop("alertmanager"),
            "prometheus, alertmanager and redis_exporter ports together",
        ),
        (
            lambda r: r["sites"]["B"].pop("postgres_exporter"),
            "every data site needs a postgres_exporter port",
        ),
        (
            lambda r: r["sites"]["C"].update(postgres_exporter={"port": 9999}),
            "a witness site runs only etcd, sentinel and monitoring",
        ),
        (
            lambda r: r["sites"]["C"].update(prometheus={"port": 4379}),
            "port clash",
        ),
    ],
)
def test_a_half_configured_monitoring_section_is_refused(edit: Any, fragment: str) -> None:
    """Monitoring runs whole on the witness site with an exporter beside each database, or not
    at all; a half-written topology is refused before anything starts."""
    raw = _raw()
    edit(raw)
    with pytest.raises(TopologyError, match=fragment):
        parse_topology(raw)


def test_without_monitoring_and_port_offsets() -> None:
    """Test clusters may run without monitoring (nothing of it started or generated), and a
    port offset moves the monitoring ports with the rest."""
    topo = load_topology(DEFAULT_TOPOLOGY)
    assert topo.monitored
    bare = topo.without_monitoring()
    assert not bare.monitored
    assert monitoring_names(bare) == ()
    with pytest.raises(TopologyError, match="runs no prometheus"):
        bare.monitoring_url("prometheus")
    moved = topo.with_port_offset(1000)
    assert moved.monitoring_url("prometheus") == "https://127.0.0.1:10090"
    assert moved.sites["A"].postgres_exporter is not None
    assert moved.sites["A"].postgres_exporter.port == 19187 + 1000


def test_etcd_and_patroni_are_scraped_over_https_with_a_client_certificate(
    topo: Topology,
) -> None:
    """#12 item 2: etcd and Patroni serve HTTPS only and require a client certificate, so
    their jobs scrape https with the CA bundle and Prometheus' own certificate (TLS 1.2+)."""
    jobs = _jobs(topo)
    for name in ("etcd", "patroni"):
        job = jobs[name]
        assert job["scheme"] == "https"
        assert job["tls_config"] == {
            "ca_file": "/pki/ca-bundle.pem",
            "cert_file": "/pki/client-prometheus.crt",
            "key_file": "/pki/client-prometheus.key",
            "min_version": "TLS12",
        }


def test_every_scrape_and_the_alertmanager_link_are_https(topo: Topology) -> None:
    """#12 item 2: Prometheus scrapes every job over HTTPS, checking each server against the
    system's CA (presenting its client certificate where the target asks for one), and sends
    alerts to Alertmanager over HTTPS; Prometheus, Alertmanager and the PostgreSQL exporters
    serve their pages with their own certificates, TLS 1.2 at least."""
    folder = pki.PkiDir(Path("/pki"))
    cfg = monitoring_config.prometheus_config(topo, pki=folder)
    for job in cfg["scrape_configs"]:
        assert job["scheme"] == "https", job["job_name"]
        assert job["tls_config"]["ca_file"] == "/pki/ca-bundle.pem", job["job_name"]
    [am] = cfg["alerting"]["alertmanagers"]
    assert am["scheme"] == "https"
    webs = monitoring_config.web_configs(topo)
    assert set(webs) == {
        "prometheus",
        "alertmanager",
        *(f"postgres-exporter-{s}" for s in topo.data_sites),
    }
    server = monitoring_config.web_config(folder, webs["prometheus"])["tls_server_config"]
    assert server["cert_file"] == f"/pki/prometheus-{topo.witness_site}.crt"
    assert server["min_version"] == "TLS12"


GO_PROGRAMS = {
    "etcd",
    "prometheus",
    "prometheus-alertmanager",
    "prometheus-redis-exporter",
    "prometheus-postgres-exporter",
}


def test_every_go_program_runs_with_less_heap_headroom(topo: Topology, tmp_path: Path) -> None:
    """#11 target 5: etcd, Prometheus, Alertmanager and the exporters (Go programs) run with
    GOGC=50, which keeps the idle system within its memory budget; nothing else gets it."""
    all_specs = specs(topo, StateDir(tmp_path))
    go = {name for name, spec in all_specs.items() if spec.argv[0] in GO_PROGRAMS}
    assert len(go) == len(topo.sites) + len(monitoring_names(topo))
    for name, spec in all_specs.items():
        assert (spec.env.get("GOGC") == "50") == (name in go), name


def _relabelled(job: dict[str, Any], labels: dict[str, str]) -> dict[str, str] | None:
    """A series' labels (its name as `__name__`) after the job's metric_relabel_configs, None
    when dropped: source label values joined by ';', the regex anchored (RE2 and Python's re
    agree on these patterns); `replace` rules here only write a literal."""
    out = dict(labels)
    for rule in job.get("metric_relabel_configs", []):
        value = ";".join(out.get(name, "") for name in rule["source_labels"])
        matched = re.fullmatch(rule["regex"], value) is not None
        action = rule.get("action", "replace")
        if action == "drop" and matched:
            return None
        if action == "replace" and matched:
            out[rule["target_label"]] = rule["replacement"]
    return out


def _dropped(job: dict[str, Any], labels: dict[str, str]) -> bool:
    return _relabelled(job, labels) is None


def _grpc(method: str, service: str = "etcdserverpb.KV") -> dict[str, str]:
    return {
        "__name__": "grpc_server_handled_total",
        "grpc_service": service,
        "grpc_method": method,
        "grpc_code": "OK",
    }


def test_etcd_keeps_the_request_counts_of_what_this_system_calls() -> None:
    """#11 target 5: of etcd's pre-created per-method counters, the membership, health and
    user/role administration ones are dropped at scrape time, with its per-message counters and
    unstable debugging histograms; the KV, Lease, Watch and Maintenance calls, logins, and
    everything about raft, disk and peers stay."""
    job = _jobs(load_topology(DEFAULT_TOPOLOGY))["etcd"]
    for kept in (
        _grpc("Range"),
        _grpc("Txn"),
        _grpc("LeaseKeepAlive", "etcdserverpb.Lease"),
        _grpc("Watch", "etcdserverpb.Watch"),
        _grpc("Status", "etcdserverpb.Maintenance"),
        _grpc("Authenticate", "etcdserverpb.Auth"),
        {"__name__": "etcd_server_has_leader"},
        {"__name__": "etcd_disk_wal_fsync_duration_seconds_bucket", "le": "0.001"},
        {"__name__": "etcd_network_peer_round_trip_time_seconds_bucket", "le": "0.1"},
    ):
        assert not _dropped(job, kept), kept
    for dropped in (
        _grpc("MemberAdd", "etcdserverpb.Cluster"),
        _grpc("Check", "grpc.health.v1.Health"),
        _grpc("UserAdd", "etcdserverpb.Auth"),
        _grpc("RoleGrantPermission", "etcdserverpb.Auth"),
        _grpc("AuthEnable", "etcdserverpb.Auth"),
        {**_grpc("Range"), "__name__": "grpc_server_started_total"},
        {**_grpc("Range"), "__name__": "grpc_server_msg_sent_total"},
        {"__name__": "etcd_debugging_mvcc_keys_total"},
    ):
        assert _dropped(job, dropped), dropped


def test_postgresql_settings_are_dropped_but_the_one_a_dashboard_reads() -> None:
    """#11 target 5: of the PostgreSQL exporter's series per setting only max_connections is
    kept, under its own name; the exporter's other series pass untouched."""
    job = _jobs(load_topology(DEFAULT_TOPOLOGY))["postgres"]
    kept = {"__name__": "pg_settings_max_connections", "server": "x"}
    assert _relabelled(job, kept) == kept
    assert _dropped(job, {"__name__": "pg_settings_shared_buffers_bytes"})
    assert _dropped(job, {"__name__": "pg_settings_jit"})
    up = {"__name__": "pg_up"}
    assert _relabelled(job, up) == up


def test_no_series_a_rule_console_or_dashboard_reads_is_dropped(topo: Topology) -> None:
    """#11 target 5: the scrape-time drops never take a metric the alert and recording rules,
    the consoles or the dashboards read."""
    jobs = _jobs(topo)
    dashboards = Path(monitoring_config.__file__).parent / "dashboards"
    texts = [
        p.read_text()
        for p in (
            *RULES.glob("*.yml"),
            *RULES.parent.glob("consoles/*.html"),
            *dashboards.glob("*.json"),
        )
    ]
    names = set(re.findall(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b", "\n".join(texts)))
    read = {n for n in names if n.split("_")[0] in {"etcd", "grpc", "pg", "rocars", "patroni"}}
    assert {"etcd_server_has_leader", "pg_settings_max_connections"} <= read
    for job in jobs.values():
        assert not [n for n in read if _dropped(job, {"__name__": n})], job["job_name"]
