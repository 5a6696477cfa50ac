"""#17 item 2: the floating address's topology option, generated files and process specs
(deploy/floating_address.py); nothing changes for a topology without the option."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from deploy import configgen, floating_address, netns, pki
from deploy.process_specs import Programs, specs
from deploy.state import REPO_ROOT, DbUser, StateDir
from deploy.topology import Topology, TopologyError, load_topology, parse_topology

VIP = REPO_ROOT / "deploy" / "topology.netns-vip.yaml"
PLAIN = REPO_ROOT / "deploy" / "topology.netns.yaml"
PRODUCTION = REPO_ROOT / "deploy" / "topology.production.yaml"
PROGRAMS = Programs("/usr/bin/python3", "/usr/bin/patroni", DbUser.current())
TLS = configgen.HaproxyTls(Path("/p/haproxy.pem"), Path("/p/ca.pem"), Path("/p/client.pem"))


def _raw(path: Path) -> dict[str, Any]:
    return load_topology(path).model_dump()


def _with_floating(raw: dict[str, Any], address: str) -> dict[str, Any]:
    raw["entry"]["floating"] = {"address": address}
    return raw


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("10.77.14.5", "must be a host address of 10.77.13.0/24"),
        ("10.77.13.255", "must be a host address"),
        ("10.77.13.1", "is sites.A.host"),
        ("10.77.13.254", "is namespaces.hub_host"),
        ("not-an-ip", "is not an IP address"),
    ],
)
def test_floating_address_must_be_a_free_address_of_the_subnet(address: str, says: str) -> None:
    """#17 item 2: the floating address is a host address of the namespaces' subnet that no
    site and not the hub uses."""
    with pytest.raises(TopologyError, match=says):
        parse_topology(_with_floating(_raw(PLAIN), address))


def _production(**floating: object) -> dict[str, Any]:
    """The production topology with both data sites on one subnet (RFC 5737's 192.0.2.0/24)
    and `floating` as entry.floating."""
    raw = _raw(PRODUCTION)
    raw["sites"]["B"]["host"] = "192.0.2.20"
    raw["entry"]["floating"] = floating
    return raw


def test_a_floating_address_on_production_hosts_names_its_interface_and_subnet() -> None:
    """#17 item 2 on production hosts (no namespaces): the topology says which interface of
    each data site's host carries the address and the subnet's length; the address is then
    the floating one clients use."""
    topo = parse_topology(_production(address="192.0.2.100", interface="ens3", prefix_len=24))
    assert topo.entry_url() == "https://192.0.2.100:443"
    assert floating_address.link(topo) == ("ens3", 24)
    assert floating_address.link(load_topology(VIP)) == ("eth0", 24)
    assert topo.model_dump()["entry"]["floating"] == {
        "address": "192.0.2.100", "interface": "ens3", "prefix_len": 24
    }  # fmt: skip


@pytest.mark.parametrize(
    ("floating", "hosts", "says"),
    [
        ({"address": "192.0.2.100", "prefix_len": 24}, {}, "interface is required when the sites"),
        ({"address": "192.0.2.100", "interface": "ens3"}, {}, "prefix_len is required"),
        (
            {"address": "192.0.2.100", "interface": "lo", "prefix_len": 24},
            {},
            "'lo' is not a network interface name",
        ),
        (
            {"address": "192.0.2.100", "interface": "a-very-long-name0", "prefix_len": 24},
            {},
            "is not a network interface name",
        ),
        ({"address": "192.0.2.100", "interface": "ens3", "prefix_len": 31}, {}, "must be 8-30"),
        (
            {"address": "192.0.2.100", "interface": "ens3", "prefix_len": 24},
            {"B": "198.51.100.10"},
            "must share one subnet .* A on 192.0.2.0/24, B on 198.51.100.0/24",
        ),
        (
            {"address": "192.0.3.100", "interface": "ens3", "prefix_len": 24},
            {},
            "must be a host address of 192.0.2.0/24",
        ),
        (
            {"address": "192.0.2.20", "interface": "ens3", "prefix_len": 24},
            {},
            "is sites.B.host",
        ),
        (
            {"address": "192.0.2.100", "interface": "ens3", "prefix_len": 24},
            {"B": "192.0.2.10"},
            "the data sites share a host",
        ),
        (
            {"address": "127.0.0.9", "interface": "ens3", "prefix_len": 8},
            {"A": "127.0.0.1", "B": "127.0.0.2"},
            "loopback address",
        ),
        (
            {"address": "192.0.2.100", "interface": "ens3", "prefix_len": 24},
            {"B": "db-b.example"},
            "must be an IP address with a floating address",
        ),
    ],
)
def test_a_floating_address_on_production_hosts_is_checked(
    floating: dict[str, object], hosts: dict[str, str], says: str
) -> None:
    """#17 item 2 on production hosts: interface and prefix length are required and sane, both
    data sites' hosts are IP addresses on one subnet (VRRP and gratuitous ARP stay on one
    link), and the address is a free host address of it."""
    raw = _production(**floating)
    for site, host in hosts.items():
        raw["sites"][site]["host"] = host
    with pytest.raises(TopologyError, match=says):
        parse_topology(raw)


def test_namespaces_fix_the_interface_and_subnet() -> None:
    """#17 item 2: in namespaces each site's interface is eth0 on the namespaces' subnet;
    the topology may not name others."""
    for key, value in (("interface", "ens3"), ("prefix_len", 24)):
        raw = _with_floating(_raw(PLAIN), "10.77.13.100")
        raw["entry"]["floating"][key] = value
        with pytest.raises(TopologyError, match=f"entry.floating.{key}: only for sites on their"):
            parse_topology(raw)


def test_the_clients_url_is_the_floating_address_only_with_the_option() -> None:
    """#17 item 2: entry_url() (the drills' writers, status) is the floating address when set,
    the hub's otherwise; a topology without the option dumps as before (no `floating` key)."""
    vip, plain = load_topology(VIP), load_topology(PLAIN)
    assert vip.entry_url() == "https://10.77.13.100:18080"
    assert plain.entry_url() == "https://10.77.13.254:18080"
    assert "floating" not in plain.model_dump()["entry"]
    assert vip.model_dump()["entry"]["floating"] == {"address": "10.77.13.100"}


def test_per_site_processes_only_with_the_option(tmp_path: Path) -> None:
    """#17 item 2: each data site gets its own HAProxy and keepalived in its namespace, and
    a topology without the option gets neither."""
    state = StateDir(tmp_path)
    plain = specs(load_topology(PLAIN), state, PROGRAMS)
    assert not [n for n in plain if n.startswith(("haproxy-", "keepalived-"))]
    vip = load_topology(VIP)
    got = specs(vip, state, PROGRAMS)
    assert floating_address.process_names(vip) == (
        "haproxy-A", "haproxy-B", "keepalived-A", "keepalived-B"
    )  # fmt: skip
    for site in ("A", "B"):
        assert got[f"haproxy-{site}"].netns == f"rvip-{site.lower()}"
        assert got[f"keepalived-{site}"].netns == f"rvip-{site.lower()}"
        conf = f"--use-file={state.config / f'keepalived-{site}.conf'}"
        assert conf in got[f"keepalived-{site}"].argv
    assert got["haproxy"].netns == "rvip-hub"
    # HAProxy has no reread: `cluster up` applies a changed file with a new process (-sf).
    assert {n for n, spec in got.items() if spec.takes_over} == {
        "haproxy",
        "haproxy-A",
        "haproxy-B",
    }


@pytest.mark.skipif(os.geteuid() != 0, reason="keepalived's check script must be root's")
def test_written_site_files_name_the_processes_to_tell(tmp_path: Path) -> None:
    """`cluster up` applies a changed site file (config_files.write_configs): write_files names
    `haproxy-<site>` and `keepalived-<site>` whose file it changed: all on the first write,
    none when nothing changed, only the one edited by hand (and rewritten) after that; the
    check script, run anew each time, names nobody."""
    state = StateDir(tmp_path / "var")
    state.ensure()
    vip = load_topology(VIP)
    first = floating_address.write_files(vip, state)
    assert sorted(first) == ["haproxy-A", "haproxy-B", "keepalived-A", "keepalived-B"]
    assert floating_address.write_files(vip, state) == []
    # Each site's HAProxy has its own admin socket and servers' state (deploy.haproxy_state),
    # named in its spec, which the reload reads.
    got = specs(vip, state, PROGRAMS)
    for site in ("A", "B"):
        ss = got[f"haproxy-{site}"].server_state
        assert ss is not None
        text = (state.config / f"haproxy-{site}.cfg").read_text()
        assert f"    stats socket {ss.socket} mode 600 level admin\n" in text
        assert f"    server-state-file {ss.file}\n" in text
    assert got["haproxy-A"].server_state != got["haproxy-B"].server_state
    edited = state.config / "haproxy-B.cfg"
    script = state.config / "floating-check-A.sh"
    for path in (edited, script):
        path.write_text(path.read_text() + "# edited\n")
    assert floating_address.write_files(vip, state) == ["haproxy-B"]
    assert "# edited" not in edited.read_text()
    assert "# edited" not in script.read_text()
    keepalived = state.config / "keepalived-A.conf"
    keepalived.write_text(keepalived.read_text() + "# edited\n")
    assert floating_address.write_files(vip, state) == ["keepalived-A"]


def test_site_haproxy_listens_on_every_address_of_its_site() -> None:
    """#17 item 2: the site's HAProxy is the hub's configuration with the client ports bound on
    all of the site's addresses (the floating one once held), the redirect to the floating
    address and the stats page on the site's own address; nothing else differs."""
    topo = load_topology(VIP)
    hub = configgen.haproxy_config(topo, TLS, stats_password="pw")
    site = floating_address.site_haproxy_config(hub, topo, "B")
    changed = {(a, b) for a, b in zip(hub.splitlines(), site.splitlines(), strict=True) if a != b}
    assert {b.strip().split(" ssl")[0] for _a, b in changed} == {
        "bind :18079",
        "http-request redirect prefix https://10.77.13.100:18080 code 308",
        "bind :18080",
        "bind :14573",
        "bind 10.77.13.2:18404",
    }


def test_keepalived_holds_the_address_while_the_sites_patroni_leads() -> None:
    """#17 item 2: keepalived's check asks the site's own Patroni GET /leader (200 only while
    it holds the leader key) with a client certificate; the address goes on the site's veth
    end, VRRP by unicast to the other data site."""
    topo = load_topology(VIP)
    script = floating_address.check_script(topo, "A", pki.PkiDir(Path("/p")))
    assert "https://10.77.13.1:18008/leader" in script
    assert "--cert /p/client-floating-address.crt" in script
    conf = floating_address.keepalived_config(topo, "A", Path("/s/check.sh"))
    assert 'script "/s/check.sh"' in conf
    assert "10.77.13.100/24 dev eth0" in conf
    assert "unicast_src_ip 10.77.13.1" in conf
    peers = conf.split("unicast_peer {")[1].split("}")[0].split()
    assert peers == ["10.77.13.2"]
    assert "nopreempt" not in conf  # the leader's site takes the address from the other
    assert "weight 50" in conf
    assert "priority 100" in conf


def test_haproxy_certificate_names_the_floating_address() -> None:
    """#17 item 2: clients check the certificate against the floating address; without the
    option the plan is what it was."""
    vip, plain = pki.plan(load_topology(VIP)), pki.plan(load_topology(PLAIN))
    haproxy = next(s for s in vip if s.name == "haproxy")
    assert ipaddress.ip_address("10.77.13.100") in haproxy.ip_addresses
    assert "client-floating-address" in {s.name for s in vip}
    assert next(s for s in plain if s.name == "haproxy").sans == ("10.77.13.254",)
    assert {s.name for s in vip} - {s.name for s in plain} == {"client-floating-address"}


def test_site_perimeter_lets_clients_reach_the_floating_address_only_with_the_option() -> None:
    """#17 item 2: a data site's nftables perimeter accepts the client ports on the floating
    address (clients from anywhere); the witness and a topology without the option keep only
    the system's own addresses."""
    vip: Topology = load_topology(VIP)
    rule = "ip daddr 10.77.13.100 tcp dport { 14573, 18079, 18080 } accept"
    assert rule in netns.perimeter_ruleset(vip, "A")
    assert "daddr" not in netns.perimeter_ruleset(vip, "C")
    assert "daddr" not in netns.perimeter_ruleset(load_topology(PLAIN), "A")


def test_holders_are_the_sites_whose_interface_carries_the_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """#17 item 2 (status): the holder is read from each site's interface (`ip -n <ns> addr
    show dev eth0 up`), not from keepalived; another address with the same prefix does not
    count; without namespaces (sites on other hosts) the holder is not known here."""
    asked: list[list[str]] = []
    lines = {
        "rvip-a": "2: eth0    inet 10.77.13.1/24 brd 10.77.13.255 scope global eth0\n"
        "2: eth0    inet 10.77.13.10/24 scope global secondary eth0\n",
        "rvip-b": "2: eth0    inet 10.77.13.2/24 brd 10.77.13.255 scope global eth0\n"
        "2: eth0    inet 10.77.13.100/24 scope global secondary eth0\n",
    }

    def run(argv: list[str], **_kw: object) -> subprocess.CompletedProcess[str]:
        asked.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout=lines[argv[2]])

    monkeypatch.setattr(floating_address.subprocess, "run", run)
    assert floating_address.holders(load_topology(VIP)) == ("B",)
    assert asked[0] == ["ip", "-n", "rvip-a", "-4", "-o", "addr", "show", "dev", "eth0", "up"]
    lines["rvip-a"] += "2: eth0    inet 10.77.13.100/24 scope global secondary eth0\n"
    assert floating_address.holders(load_topology(VIP)) == ("A", "B")
    assert floating_address.holders(load_topology(PLAIN)) is None
