"""The nftables perimeter of the system's network (#12 item 5), one source for both places it
is loaded: each site's namespace (deploy.netns) and each production host (deploy.host_firewall).

Pure: values in, ruleset text out. The rules, in order: loopback and replies to connections
the machine opened pass; new connections from the system's own addresses (every site's, and
the hub's where there is one) pass; the client ports (HTTPS, the HTTP redirect, the phone
channel) pass from anyone where HAProxy serves clients (on the floating address only, where
there is one); then either everything else is dropped (a namespace: nothing but the system
lives there) or only the system's own ports are (a host: its administrator's ssh and other
services are none of ours).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from deploy.topology import Topology


@dataclass(frozen=True)
class Clients:
    """Where clients reach HAProxy: its client ports, on `address` only, or on any (None)."""

    ports: tuple[int, ...]
    address: str | None = None


def system_hosts(topo: Topology) -> list[str]:
    """The system's own addresses: every site's, and HAProxy's entry (the hub's, when the
    sites run in namespaces; otherwise it is a site's own)."""
    return sorted({s.host for s in topo.sites.values()} | {topo.entry_host()})


def client_ports(topo: Topology) -> tuple[int, ...]:
    """HAProxy's ports for clients: HTTPS, the HTTP redirect and the phone channel (never its
    stats page)."""
    e = topo.entry
    return tuple(sorted(p for p in (e.port, e.http_port, e.phone_port) if p))


def clients(topo: Topology, site: str | None) -> Clients | None:
    """Where `site` (None: the hub namespace, which holds HAProxy) serves HAProxy's clients:
    a data site on the floating address where there is one (its own HAProxy binds the client
    ports there, deploy.floating_address); the hub, or the entry's host, on any address; any
    other site nowhere (None)."""
    ports = client_ports(topo)
    if site is None:
        return Clients(ports)
    floating = topo.entry.floating
    if floating is not None:
        return Clients(ports, floating.address) if topo.sites[site].node is not None else None
    return Clients(ports) if topo.entry_host() == topo.sites[site].host else None


def _family(address: str) -> str:
    """nftables' address selector for `address` (a name counts as IPv4: nft resolves it)."""
    try:
        return "ip6" if ipaddress.ip_address(address).version == 6 else "ip"
    except ValueError:
        return "ip"


def _set(items: Iterable[object]) -> str:
    return "{ " + ", ".join(str(i) for i in items) + " }"


def ruleset(
    table: str, own: Iterable[str], clients: Clients | None, guarded: Iterable[int] | None
) -> str:
    """`table inet <table>`'s input chain. `guarded` None: every other new connection is
    dropped (the chain's policy); otherwise only new TCP connections to those ports are, and
    everything else is left to the machine's other rules."""
    policy = "drop" if guarded is None else "accept"
    rules = [
        f"table inet {table} {{",
        "  chain input {",
        f"    type filter hook input priority 0; policy {policy};",
        '    iifname "lo" accept',
        "    ct state established,related accept",
    ]
    own = list(own)
    ports = None if guarded is None else sorted(set(guarded))
    for family in ("ip", "ip6"):
        hosts = [h for h in own if _family(h) == family]
        if hosts:
            rules.append(f"    {family} saddr {_set(hosts)} accept")
    if clients is not None and clients.ports:
        a = clients.address
        to = "" if a is None else f"{_family(a)} daddr {a} "
        rules.append(f"    {to}tcp dport {_set(clients.ports)} accept")
    if ports:
        rules.append(f"    tcp dport {_set(ports)} drop")
    return "\n".join([*rules, "  }", "}", ""])
