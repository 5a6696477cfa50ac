"""The addresses a user of the running local system needs, printed by `rocars cluster up`."""

from __future__ import annotations

from deploy.state import StateDir
from deploy.topology import Topology


def summary(topo: Topology, state: StateDir) -> dict[str, object]:
    return {
        "api": topo.entry_url(),
        "nodes": {n: topo.node_url(n) for n in topo.data_sites},
        "patroni": {n: topo.patroni_url(n) for n in topo.data_sites},
        "metrics": {n: f"{topo.node_url(n)}/metrics" for n in topo.data_sites},
        "haproxy_stats": f"https://{topo.entry_host()}:{topo.entry.stats_port}/stats",
        "logs": str(state.logs),
        "state_dir": str(state.root),
        "prometheus": topo.monitoring_url("prometheus") if topo.monitored else None,
        "alertmanager": topo.monitoring_url("alertmanager") if topo.monitored else None,
    }
