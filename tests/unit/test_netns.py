"""Network namespace plans: what `cluster up` builds for a namespaced topology and the nftables
partition a drill loads, checked without root (the real thing runs in the isolate-site drill)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from deploy import netns
from deploy.state import NETNS_TOPOLOGY
from deploy.topology import TopologyError, load_topology, parse_topology
from kernel.errors import LaunchError


def _raw() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(NETNS_TOPOLOGY.read_text())
    return copy.deepcopy(data)


def test_namespaced_topology_puts_haproxy_in_the_hub() -> None:
    """HAProxy (the entry URL) listens on the hub's address; each site has a namespace."""
    topo = load_topology(NETNS_TOPOLOGY)
    assert topo.entry_url() == "https://10.77.13.254:18080"
    assert topo.netns("A") == "rnet-a"
    assert netns.all_namespaces(topo) == ["rnet-hub", "rnet-a", "rnet-b", "rnet-c"]


def test_every_command_names_a_project_namespace() -> None:
    """No setup command touches the machine's own namespace: each is `ip netns add` of one of
    ours or runs with `-n <ours>`, and every address is added inside a namespace."""
    topo = load_topology(NETNS_TOPOLOGY)
    ours = set(netns.all_namespaces(topo))
    cmds = netns.setup_commands(topo)
    for argv in cmds:
        assert argv[0] == "ip"
        if argv[1] == "netns":
            assert argv[2] == "add"
            assert argv[3] in ours
        else:
            assert argv[1] == "-n"
            assert argv[2] in ours
    added = [a for a in cmds if "addr" in a]
    assert sorted(a[a.index("add") + 1] for a in added) == [
        "10.77.13.1/24",
        "10.77.13.2/24",
        "10.77.13.254/24",
        "10.77.13.3/24",
    ]


def test_partition_drops_both_ways_between_the_site_and_the_others_only() -> None:
    """Site A's rules drop packets from and to B and C, and nothing else (the hub, where
    clients and HAProxy are, still reaches A)."""
    topo = load_topology(NETNS_TOPOLOGY)
    rules = netns.partition_ruleset(topo, "A")
    assert "ip saddr { 10.77.13.2, 10.77.13.3 } drop" in rules
    assert "ip daddr { 10.77.13.2, 10.77.13.3 } drop" in rules
    assert "10.77.13.254" not in rules
    assert "10.77.13.1 " not in rules
    assert f"table inet {netns.PARTITION_TABLE}" in rules


def test_loopback_topology_has_no_namespaces_to_partition() -> None:
    """Asking for a partition on a loopback cluster says which topology file to use."""
    from deploy.state import DEFAULT_TOPOLOGY

    with pytest.raises(LaunchError, match=r"topology\.netns\.yaml"):
        netns.partition(load_topology(DEFAULT_TOPOLOGY), "A")


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        (("sites", "A", "host"), "127.0.0.1", "must be a host address of 10.77.13.0/24"),
        (("sites", "B", "host"), "10.77.14.2", "must be a host address"),
        (("sites", "C", "host"), "10.77.13.1", "both use 10.77.13.1"),
        (("namespaces", "hub_host"), "10.77.13.2", "both use 10.77.13.2"),
        (("sites", "A", "host"), "site-a.example", "is not an IP address"),
        (("namespaces", "prefix"), "Bad_Prefix", "namespaces.prefix"),
    ],
)
def test_bad_namespace_addresses_are_rejected(
    where: tuple[str, ...], value: str, message: str
) -> None:
    """Addresses outside the namespaces' subnet, loopback, shared or not addresses at all are
    refused before anything is created, naming the key."""
    raw = _raw()
    node = raw
    for k in where[:-1]:
        node = node[k]
    node[where[-1]] = value
    with pytest.raises(TopologyError, match=message):
        parse_topology(raw)


def test_namespace_prefix_can_be_renamed_for_a_second_cluster() -> None:
    """A test cluster renames its namespaces; the loopback topology has none to rename."""
    from deploy.state import DEFAULT_TOPOLOGY

    topo = load_topology(NETNS_TOPOLOGY).with_namespace_prefix("rdrill")
    assert topo.netns("B") == "rdrill-b"
    with pytest.raises(TopologyError, match="no namespaces"):
        load_topology(DEFAULT_TOPOLOGY).with_namespace_prefix("x")


def test_drill_command_offers_every_scenario() -> None:
    """`rocars drill` accepts exactly the scenarios the drill module defines, and the restore
    drill (#17 item 3, deploy/drills/restore.py)."""
    from deploy.cli import drill
    from deploy.drills.scenarios import SCENARIOS

    choices = next(p for p in drill.params if p.name == "scenario").type.choices  # type: ignore[attr-defined]
    assert sorted(choices) == sorted([*SCENARIOS, "restore"])


def test_the_sites_take_connections_only_from_the_systems_own_addresses() -> None:
    """#12 item 5: each site's namespace drops new connections from any address but the
    sites' and the hub's; the hub opens only the client ports (HTTPS, the HTTP redirect, the
    phone channel) to others, so HAProxy's stats port stays internal."""
    topo = load_topology(NETNS_TOPOLOGY)
    own = "ip saddr { 10.77.13.1, 10.77.13.2, 10.77.13.254, 10.77.13.3 } accept"
    for site in topo.sites:
        rules = [x.strip() for x in netns.perimeter_ruleset(topo, site).splitlines()]
        assert "type filter hook input priority 0; policy drop;" in rules
        assert own in rules
        assert not [x for x in rules if x.startswith("tcp dport")], site
    hub = [x.strip() for x in netns.perimeter_ruleset(topo, None).splitlines()]
    assert own in hub
    e = topo.entry
    assert f"tcp dport {{ {e.phone_port}, {e.http_port}, {e.port} }} accept" in hub
    assert str(e.stats_port) not in " ".join(hub)
