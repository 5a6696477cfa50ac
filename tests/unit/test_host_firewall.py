"""#12 item 5 on production hosts: `rocars deploy render --host SITE` gives each host an
nftables table of its own (deploy.host_firewall, deploy.perimeter's rules) and a oneshot unit
that loads it before any other rocars unit; every port of the system on the host is open only
to the system's own hosts, except HAProxy's client ports where the host serves clients."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from unit_fakes import fake_sources, floating_production

from deploy import host_firewall, host_render, perimeter, systemd_units
from deploy.host_render import HostLayout
from deploy.process_specs import specs
from deploy.state import NETNS_TOPOLOGY, REPO_ROOT
from deploy.topology import Topology, load_topology

PRODUCTION = REPO_ROOT / "deploy" / "topology.production.yaml"
UNITS = "files/etc/systemd/system"
RULES = "files/var/lib/rocars/config/firewall.nft"
SYSTEM = {"192.0.2.10", "198.51.100.10", "203.0.113.10"}  # the production sites' hosts
# The production topology's ports, by host (deploy/topology.production.yaml).
DATA_SITE = {2379, 2380, 26379, 5432, 8008, 6379, 8081, 4574, 9187}
WITNESS = {2379, 2380, 26379, 9090, 9093, 9121}
CLIENT = {443, 80, 4573}
STATS = 8404


def _rules(text: str) -> tuple[str, list[tuple[str, str | None, set[int] | None, str]]]:
    """The input chain's policy and its rules as (match, address set, ports, verdict): match
    is "lo", "ct", "saddr", "daddr" or "any" (ports from any address)."""
    policy = re.search(r"policy (\w+);", text)
    assert policy is not None
    out: list[tuple[str, str | None, set[int] | None, str]] = []
    for line in (x.strip() for x in text.splitlines()):
        if not line.endswith((" accept", " drop")) or line.startswith("#"):
            continue
        verdict = line.rsplit(" ", 1)[1]
        ports_m = re.search(r"tcp dport \{ ([\d, ]+) \}", line)
        ports = {int(p) for p in ports_m.group(1).split(", ")} if ports_m else None
        if line.startswith('iifname "lo"'):
            out.append(("lo", None, None, verdict))
        elif line.startswith("ct state established,related"):
            out.append(("ct", None, None, verdict))
        elif m := re.match(r"ip6? saddr \{ ([^}]+) \}", line):
            out.append(("saddr", m.group(1), ports, verdict))
        elif m := re.match(r"ip6? daddr (\S+) tcp dport", line):
            out.append(("daddr", m.group(1), ports, verdict))
        elif line.startswith("tcp dport"):
            out.append(("any", None, ports, verdict))
        else:
            raise AssertionError(f"unexpected rule {line!r}")
    return policy.group(1), out


@pytest.fixture(scope="module")
def production() -> Topology:
    return load_topology(PRODUCTION)


def _render(topo: Topology, site: str) -> dict[str, tuple[bytes, int]]:
    return host_render.render(topo, site, fake_sources(topo))


@pytest.mark.parametrize(
    ("site", "served", "ours"),
    [
        ("A", CLIENT, DATA_SITE | CLIENT | {STATS}),
        ("B", set(), DATA_SITE),
        ("C", set(), WITNESS),
    ],
)
def test_each_production_host_opens_only_the_client_ports_to_anyone(
    production: Topology, site: str, served: set[int], ours: set[int]
) -> None:
    """#12 item 5: on each host the system's ports are accepted from the three hosts and
    dropped from anyone else; only the entry host (A) accepts HTTPS, the HTTP redirect and the
    phone channel from anyone (never HAProxy's stats page); B and C accept nothing from
    outsiders, C's Prometheus and Alertmanager included. Nothing but the system's ports is
    filtered: the chain's policy accepts (ssh and the administrator's own services)."""
    text = _render(production, site)[RULES][0].decode()
    assert re.search(r"^table inet rocars \{$", text, re.M)
    policy, rules = _rules(text)
    assert policy == "accept"
    expected = [
        ("lo", None, None, "accept"),
        ("ct", None, None, "accept"),
        ("saddr", ", ".join(sorted(SYSTEM)), None, "accept"),
        *([("any", None, served, "accept")] if served else []),
        ("any", None, ours, "drop"),
    ]
    assert rules == expected
    assert 22 not in ours


@pytest.mark.parametrize("site", ["A", "B", "C"])
def test_every_listener_of_the_host_is_dropped_for_outsiders(
    production: Topology, site: str
) -> None:
    """#12 item 5: each port a process on the host listens on (the launcher's own specs), and
    each port the topology places on the host's address, is in the host's drop set."""
    _policy, rules = _rules(host_firewall.ruleset(production, site))
    dropped = next(p for m, _a, p, v in rules if v == "drop" and m == "any")
    assert dropped is not None
    layout = HostLayout()
    every = specs(production, layout.state, layout.programs)
    listened = {port for s in every.values() if s.site == site for _w, _h, port in s.ports}
    placed = {p for _w, h, p in production.endpoints() if h == production.sites[site].host}
    assert listened | placed <= dropped


def test_with_a_floating_address_data_hosts_serve_clients_there_only() -> None:
    """#12 item 5 with #17 item 2: each data site's own HAProxy serves clients on the
    floating address, so each data host accepts the client ports from anyone only to that
    address, and drops them (and the stats page) on its own; the witness serves none."""
    topo = floating_production()
    floating = topo.entry.floating
    assert floating is not None
    for site in topo.data_sites:
        _policy, rules = _rules(host_firewall.ruleset(topo, site))
        assert ("daddr", floating.address, CLIENT, "accept") in rules
        assert not [r for r in rules if r[0] == "any" and r[3] == "accept"]
        dropped = next(p for m, _a, p, v in rules if v == "drop")
        assert dropped is not None
        assert CLIENT | {STATS} | DATA_SITE <= dropped
    _policy, rules = _rules(host_firewall.ruleset(topo, "C"))
    assert [r for r in rules if r[3] == "accept" and r[2]] == []


def test_an_ipv6_host_is_matched_as_ipv6() -> None:
    """#12 item 5: a system address given as IPv6 is accepted by an `ip6 saddr` rule (an
    `ip saddr` set with it would not load)."""
    text = perimeter.ruleset("t", ["2001:db8::1", "192.0.2.1"], None, [5432])
    assert "    ip saddr { 192.0.2.1 } accept" in text
    assert "    ip6 saddr { 2001:db8::1 } accept" in text


def _nft_check(path: Path) -> subprocess.CompletedProcess[str]:
    # In a network namespace of its own: the check never sees or touches this machine's rules.
    return subprocess.run(
        ["unshare", "--net", "nft", "-c", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.skipif(
    shutil.which("nft") is None or shutil.which("unshare") is None or os.geteuid() != 0,
    reason="nft -c needs nft, unshare and root",
)
@pytest.mark.parametrize("which", ["production", "floating", "netns"])
def test_nft_accepts_each_rendered_ruleset(tmp_path: Path, which: str) -> None:
    """#12 item 5: nftables' own parser accepts every host's rendered file (`nft -c -f`),
    including its reload prelude (the table created, deleted and filled in one transaction)."""
    if which == "floating":
        topo = floating_production()
    else:
        topo = load_topology(PRODUCTION if which == "production" else NETNS_TOPOLOGY)
    for site in topo.sites:
        path = tmp_path / f"{site}.nft"
        path.write_text(host_firewall.ruleset(topo, site))
        proc = _nft_check(path)
        assert proc.returncode == 0, proc.stderr


def _unit(out: dict[str, tuple[bytes, int]], name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(out[f"{UNITS}/{name}"][0].decode())
    return cp


@pytest.mark.parametrize("site", ["A", "B", "C"])
def test_the_firewall_unit_loads_before_every_other_unit(production: Topology, site: str) -> None:
    """#12 item 5: rocars-firewall.service is a oneshot that stays active, loads the rendered
    file with `nft -f`, deletes only its own table when stopped, is ordered before every
    other rocars unit of the host, is wanted by rocars.target (and enabled by install.sh),
    and is not part of the target (stopping the system leaves its ports closed); every other
    unit requires it once enabled (RequiredBy=), so none starts when the rules do not load,
    and changed rules reload in place (ExecReload=)."""
    out = _render(production, site)
    cp = _unit(out, host_firewall.UNIT)
    service = cp["Service"]
    assert service["Type"] == "oneshot"
    assert service["RemainAfterExit"] == "yes"
    assert service["ExecStart"] == f"{host_firewall.NFT} -f /var/lib/rocars/config/firewall.nft"
    assert service["ExecStop"] == f"{host_firewall.NFT} delete table inet rocars"
    assert service["CapabilityBoundingSet"] == "CAP_NET_ADMIN"
    assert "PartOf" not in cp["Unit"]
    others = {
        k.rsplit("/", 1)[1] for k in out if k.startswith(UNITS) and k.endswith(".service")
    } - {host_firewall.UNIT}
    assert others
    assert set(cp["Unit"]["Before"].split()) == others
    assert cp["Install"]["WantedBy"] == systemd_units.TARGET
    assert set(cp["Install"]["RequiredBy"].split()) == others
    assert service["ExecReload"] == service["ExecStart"]
    target = _unit(out, systemd_units.TARGET)
    assert host_firewall.UNIT in target["Unit"]["Wants"].split()
    script = out["install.sh"][0].decode()
    assert re.search(rf"^for unit in .*{re.escape(host_firewall.UNIT)}", script, re.M)
    assert re.search(r"^packages=\(.*\bnftables\b", script, re.M)
    assert out[RULES][1] == 0o644
