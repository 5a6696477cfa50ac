"""Each production host's firewall (#12 item 5): deploy.perimeter's rules for that host, and
the systemd unit that loads them before any other rocars unit starts.

On a host the sites' processes listen on the site's one address, the same address its
administrator's ssh and HAProxy's clients use; these rules make every port of the system
reachable only from the system's own addresses (all sites' hosts), except HAProxy's client
ports where the host serves clients (the entry site's host, or each data site's on the
floating address).

The rules live in a table of their own (`table inet rocars`): loading or removing it never
touches the administrator's other tables, and the unit's stop removes only it.
"""

from __future__ import annotations

from pathlib import Path

from deploy import perimeter, systemd_units
from deploy.host_install import FileSpec
from deploy.topology import Topology

TABLE = "rocars"
UNIT = "rocars-firewall.service"
PACKAGES = ("nftables",)
NFT = "/usr/sbin/nft"  # Debian's nftables package


def rules_path(config_dir: Path) -> Path:
    """The ruleset file on the host, beside the other configuration."""
    return config_dir / "firewall.nft"


def guarded_ports(topo: Topology, site: str) -> list[int]:
    """Every port the system listens on at this host: its site's services, and HAProxy's
    (client ports and stats page) where it runs here."""
    host = topo.sites[site].host
    ports = {port for _what, at, port in topo.endpoints() if at == host}
    if perimeter.clients(topo, site) is not None:
        e = topo.entry
        ports |= {e.stats_port, *perimeter.client_ports(topo)}
    return sorted(ports)


def ruleset(topo: Topology, site: str) -> str:
    """The file `nft -f` loads: the table emptied and filled in one transaction, so a reload
    never leaves the ports open in between."""
    # Only the system's ports are dropped, never by default: a default drop on a host would
    # cut off its administrator's ssh and whatever else the host runs, which is not ours to
    # decide, while every port of ours is named here (deploy.topology's endpoints).
    own, clients = perimeter.system_hosts(topo), perimeter.clients(topo, site)
    rules = perimeter.ruleset(TABLE, own, clients, guarded_ports(topo, site))
    head = [
        f"# Rendered by `rocars deploy render --host {site}`: the system's ports on this host.",
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
    ]
    return "\n".join(head) + "\n" + rules


def unit(site: str, rules: Path, before: tuple[str, ...]) -> str:
    """The oneshot unit that loads `rules` before the units in `before` start, and removes
    the table when stopped. Stopping rocars.target leaves it loaded (it is not PartOf the
    target): the ports stay closed to outsiders while nothing listens on them. It fails
    closed: each of `before` requires it once enabled (RequiredBy=), so no process of ours
    starts exposed when the rules cannot be loaded; changed rules are applied with
    `systemctl reload rocars-firewall` (one nft transaction), since a restart would restart
    every unit that requires it."""
    return "\n".join(
        [
            "# Rendered by `rocars deploy render`; edit the topology and render again instead.",
            "[Unit]",
            f"Description=rocars firewall (site {site}): the system's ports for its own hosts",
            f"Before={' '.join(before)}",
            "",
            "[Service]",
            "Type=oneshot",
            "RemainAfterExit=yes",
            f"ExecStart={NFT} -f {rules}",
            f"ExecReload={NFT} -f {rules}",
            f"ExecStop={NFT} delete table inet {TABLE}",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "CapabilityBoundingSet=CAP_NET_ADMIN",
            # nft speaks netlink; the inet families only to resolve a host given by name.
            "RestrictAddressFamilies=AF_NETLINK AF_UNIX AF_INET AF_INET6",
            "",
            "[Install]",
            f"WantedBy={systemd_units.TARGET}",
            f"RequiredBy={' '.join(before)}",
            "",
        ]
    )


def files(
    topo: Topology, site: str, config_dir: Path, unit_dir: Path, services: tuple[str, ...]
) -> tuple[FileSpec, FileSpec]:
    """The host's ruleset file and its unit (ordered before `services`, every other unit)."""
    rules = rules_path(config_dir)
    text = unit(site, rules, services)
    return (
        FileSpec(rules, ruleset(topo, site).encode(), "root", "root", 0o644),
        FileSpec(unit_dir / UNIT, text.encode(), "root", "root", 0o644),
    )
