"""The bench's memory figures (deploy.bench.memory) that need no running system."""

from __future__ import annotations

from deploy.bench.memory import monitoring_share
from deploy.state import DEFAULT_TOPOLOGY
from deploy.topology import load_topology


def test_monitoring_share_counts_monitoring_processes_only() -> None:
    """Prometheus, Alertmanager and the exporters are summed; what serves (nodes, PostgreSQL,
    Patroni, etcd, Redis, HAProxy) is not, and a name the reading lacks counts nothing."""
    topo = load_topology(DEFAULT_TOPOLOGY)
    pss = {
        "prometheus": 77.0,
        "alertmanager": 34.5,
        "redis-exporter": 13.0,
        "postgres-exporter-A": 10.0,
        "node-A": 78.0,
        "postgres-A": 53.5,
        "etcd-C": 30.0,
        "haproxy": 13.0,
    }
    assert monitoring_share(topo, pss) == 134.5
    assert monitoring_share(topo, {"node-A": 78.0}) == 0.0


def test_a_topology_without_monitoring_has_no_share() -> None:
    """Monitoring switched off in the topology: nothing is monitoring's, whatever the names."""
    topo = load_topology(DEFAULT_TOPOLOGY)
    witness = topo.sites[topo.witness_site].model_copy(update={"prometheus": None})
    topo = topo.model_copy(update={"sites": {**topo.sites, topo.witness_site: witness}})
    assert not topo.monitored
    assert monitoring_share(topo, {"prometheus": 77.0}) == 0.0
