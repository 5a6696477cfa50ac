"""The control plane's pages are kept from clients by the generated configuration (#12 item 3):
HAProxy's entry refuses them to addresses off the monitoring networks, and each node is told
those networks and where its monitoring key is (never the key)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from unit_fakes import HAPROXY_TLS, haproxy_tls_files

from deploy import configgen
from deploy.state import DEFAULT_TOPOLOGY, NETNS_TOPOLOGY, StateDir
from deploy.topology import Topology, load_topology


@pytest.fixture(params=[DEFAULT_TOPOLOGY, NETNS_TOPOLOGY], ids=["loopback", "netns"])
def topo(request: pytest.FixtureRequest) -> Topology:
    path: Path = request.param
    return load_topology(path)


def test_monitoring_networks_are_the_systems_own_addresses(topo: Topology) -> None:
    """127.0.0.1, each site's address and the hub's: where Prometheus, HAProxy's checks and
    the operators' commands come from; no wider network (not even the rest of 127/8)."""
    nets = topo.monitoring_networks()
    hosts = {s.host for s in topo.sites.values()} | {topo.entry_host(), "127.0.0.1"}
    assert set(nets) == {f"{h}/32" for h in hosts}


def test_the_entry_refuses_control_pages_to_other_addresses(topo: Topology, tmp_path: Path) -> None:
    """#12 item 3: the public frontend answers /metrics, /health and /health/* with a 404
    problem+json unless the client is on the monitoring networks, before any backend is
    chosen; HAProxy accepts the file."""
    cfg = configgen.haproxy_config(topo, haproxy_tls_files(tmp_path, topo))
    frontend = cfg.split("frontend api", 1)[1].split("\nbackend ", 1)[0]
    lines = [x.strip() for x in frontend.splitlines()]
    assert f"acl monitoring_network src {' '.join(topo.monitoring_networks())}" in lines
    assert "acl control_page path /metrics /health" in lines
    assert "acl control_page path_beg /health/" in lines
    refuse = next(
        i for i, x in enumerate(lines) if x.endswith("if control_page !monitoring_network")
    )
    assert lines[refuse].startswith("http-request return status 404")
    assert refuse < next(i for i, x in enumerate(lines) if x.startswith("use_backend"))
    path = tmp_path / "haproxy.cfg"
    path.write_text(cfg)
    done = subprocess.run(["haproxy", "-c", "-q", "-f", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_nodes_get_the_networks_and_the_keys_path_never_the_key(
    topo: Topology, tmp_path: Path
) -> None:
    """Each node's configuration names the monitoring networks and the path of the key file
    in the secrets folder (mode 0600 there), not the key."""
    state = StateDir(tmp_path)
    key = state.secrets()["monitoring-key"]
    for site in topo.data_sites:
        cfg = configgen.node_config(topo, site, state_root=tmp_path)
        assert cfg["monitoring_networks"] == topo.monitoring_networks()
        assert cfg["monitoring_key_file"] == str(state.secret_file("monitoring-key"))
        assert key not in repr(cfg)
    assert state.secret_file("monitoring-key").read_text() == key
    assert state.secret_file("monitoring-key").stat().st_mode & 0o077 == 0


def test_haproxys_stats_port_is_internal_and_its_page_wants_a_password(topo: Topology) -> None:
    """#12 item 3: the stats port refuses every address off the monitoring networks before
    anything else (Prometheus, on them, reads /metrics there); the stats page asks for the
    password it is given, and is off without one."""
    cfg = configgen.haproxy_config(topo, HAPROXY_TLS, stats_password="pw-123")
    stats = [x.strip() for x in cfg.split("frontend stats", 1)[1].splitlines() if x.strip()]
    nets = " ".join(topo.monitoring_networks())
    assert stats[1] == f"http-request deny deny_status 403 unless {{ src {nets} }}"
    assert "stats auth rocars-admin:pw-123" in stats
    assert stats[-1] == "http-request use-service prometheus-exporter if { path /metrics }"
    off = configgen.haproxy_config(topo, HAPROXY_TLS).split("frontend stats", 1)[1]
    assert "stats enable" not in off
    assert "prometheus-exporter" in off
