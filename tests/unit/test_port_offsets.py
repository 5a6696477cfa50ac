"""Test clusters run side by side (and beside `make run`): their ports must never collide."""

from __future__ import annotations

import itertools

from deploy.harness import TEST_PORT_OFFSETS
from deploy.state import DEFAULT_TOPOLOGY
from deploy.topology import load_topology


def test_test_cluster_port_offsets_never_collide() -> None:
    """No two of the suites' clusters (nor `make run`'s) share any host:port."""
    base = load_topology(DEFAULT_TOPOLOGY)
    ports = {
        name: {(h, p) for _, h, p in base.with_port_offset(off).endpoints()}
        for name, off in TEST_PORT_OFFSETS.items()
    }
    for a, b in itertools.combinations(ports, 2):
        assert not ports[a] & ports[b], f"{a} and {b} clusters share {sorted(ports[a] & ports[b])}"


def test_no_test_cluster_port_lies_in_the_ephemeral_range() -> None:
    """Every port of every suite's cluster lies below Linux's ephemeral range (32768-60999), so
    an outgoing connection's local port can never take it just before the cluster starts
    (measured: etcd's peer port 33380 was once taken and `cluster up` refused to start)."""
    base = load_topology(DEFAULT_TOPOLOGY)
    for name, off in TEST_PORT_OFFSETS.items():
        for what, _host, port in base.with_port_offset(off).endpoints():
            assert 1024 < port < 32768, f"{name}: {what} on port {port}"
