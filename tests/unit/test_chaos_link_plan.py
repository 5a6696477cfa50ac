"""#14 item 1: the chaos topology's proxy plan, and what it changes in the generated
configuration (every planned link dialled through its proxy) and what it does not (anything at
all without the option)."""

from __future__ import annotations

import collections
import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from unit_fakes import HAPROXY_TLS

from deploy import chaos_links, chaos_proxies, configgen, launcher
from deploy.harness import TEST_PORT_OFFSETS
from deploy.pki import PkiDir
from deploy.state import DEFAULT_TOPOLOGY, NETNS_TOPOLOGY, StateDir
from deploy.topology import (
    CHAOS_PROXY_PORTS,
    Topology,
    TopologyError,
    load_topology,
    parse_topology,
)

BASE = load_topology(DEFAULT_TOPOLOGY)
CHAOS = chaos_links.with_proxies(BASE, 7000)
PKI = PkiDir(Path("/state/pki"))
PASSWORDS: collections.defaultdict[str, str] = collections.defaultdict(lambda: "pw")


def _render(topo: Topology) -> dict[str, str]:
    """Every generated file of `topo`, by name."""
    out: dict[str, str] = {}
    for s, site in topo.sites.items():
        out[f"etcd-{s}"] = configgen.etcd_config(topo, s, Path("/d"), PKI)
        out[f"sentinel-{s}"] = configgen.sentinel_config(topo, s, Path("/d"), PASSWORDS, pki=PKI)
        if site.redis is not None:
            out[f"redis-{s}"] = configgen.redis_config(topo, s, Path("/d"), PASSWORDS, pki=PKI)
    for s in topo.data_sites:
        patroni = configgen.patroni_config(topo, s, Path(f"/m/{s}"), PASSWORDS)
        out[f"patroni-{s}"] = yaml.safe_dump(patroni, sort_keys=False)
        node = configgen.node_config(topo, s, state_root=Path("/st"))
        out[f"node-{s}"] = yaml.safe_dump(node, sort_keys=False)
    out["haproxy"] = configgen.haproxy_config(topo, HAPROXY_TLS, stats_password="x")
    return out


def _off(topo: Topology) -> Topology:
    raw = topo.model_dump()
    raw["chaos"] = {"proxies": False, "toxiproxy_port": 7000}
    return Topology.model_validate(raw)


def test_plan_has_one_proxy_per_link_and_site_on_its_own_loopback_port() -> None:
    """Twenty proxies: node -> its PostgreSQL (2), node -> each etcd member (6), Patroni ->
    each etcd member (6), replication into each data site (2), each Redis (2), HAProxy -> each
    node (2); unique names, ports in the reserved block after the API port, upstreams the
    services' real addresses."""
    plan = chaos_links.plan(CHAOS)
    assert collections.Counter(x.kind for x in plan) == {
        "node-postgres": 2,
        "node-etcd": 6,
        "patroni-etcd": 6,
        "replication": 2,
        "redis": 2,
        "haproxy-node": 2,
    }
    assert len({x.name for x in plan}) == len(plan)
    ports = [int(x.listen.rsplit(":", 1)[1]) for x in plan]
    assert len(set(ports)) == len(plan)
    assert all(7000 < p <= 7000 + CHAOS_PROXY_PORTS for p in ports)
    assert all(x.listen.startswith("127.0.0.1:") for x in plan)
    by = {(x.kind, x.site, x.target): x.upstream for x in plan}
    assert by[("node-postgres", "A", "A")] == "127.0.0.1:15432"
    assert by[("node-etcd", "B", "C")] == "127.0.0.1:4379"
    assert by[("patroni-etcd", "A", "B")] == "127.0.0.1:22379"
    assert by[("replication", "B", "A")] == "127.0.0.1:15432"
    assert by[("replication", "A", "B")] == "127.0.0.1:25432"
    assert by[("redis", "B", "B")] == "127.0.0.1:26379"
    assert by[("haproxy-node", "A", "B")] == "127.0.0.1:28081"


def test_without_the_option_there_is_no_proxy_and_clients_dial_the_upstream() -> None:
    """No plan without `chaos.proxies`, and every address is the service's own."""
    for topo in (BASE, _off(BASE)):
        assert chaos_links.plan(topo) == []
        assert chaos_links.address(topo, "node-postgres", "A", "A") == ("127.0.0.1", 15432)
        assert chaos_links.redis_announce_lines(topo, "A") == []
        assert chaos_links.patroni_etcd_options(topo) == {}


@pytest.mark.parametrize("path", [DEFAULT_TOPOLOGY, NETNS_TOPOLOGY])
def test_generated_configuration_is_unchanged_without_the_option(path: Path) -> None:
    """Default off: a topology without a chaos section, or with proxies false, renders every
    file byte for byte alike and names no proxy port; its dump (the state folder's copy) has
    no chaos key."""
    topo = load_topology(path)
    plain = _render(topo)
    assert plain == _render(_off(topo))
    text = "".join(plain.values())
    for x in chaos_links.plan(chaos_links.with_proxies(BASE, 7000)):
        assert x.listen not in text
    assert "use_proxies" not in text
    assert "replica-announce" not in text
    assert "chaos" not in topo.model_dump()


def test_with_proxies_every_planned_link_is_dialled_through_its_proxy() -> None:
    """Each client's file names the proxy instead of the upstream, and nothing else changes:
    with each proxy's address put back to its upstream (and the two proxy-only settings
    removed) the files are the plain topology's."""
    files = _render(CHAOS)
    plan = {(x.kind, x.site, x.target): x for x in chaos_links.plan(CHAOS)}
    node_a = yaml.safe_load(files["node-A"])
    assert f"127.0.0.1:{node_a['database']['port']}" == plan[("node-postgres", "A", "A")].listen
    assert node_a["etcd_urls"] == [
        f"https://{plan[('node-etcd', 'A', t)].listen}" for t in ("A", "B", "C")
    ]
    assert node_a["etcd_witness_url"] == f"https://{plan[('node-etcd', 'A', 'C')].listen}"
    patroni_b = yaml.safe_load(files["patroni-B"])
    assert patroni_b["etcd3"]["hosts"] == [
        plan[("patroni-etcd", "B", t)].listen for t in ("A", "B", "C")
    ]
    assert patroni_b["etcd3"]["use_proxies"] is True
    # The standby (A) streams from B through the replication proxy in front of B.
    assert patroni_b["postgresql"]["connect_address"] == plan[("replication", "A", "B")].listen
    assert patroni_b["postgresql"]["listen"] == "127.0.0.1:25432"
    redis_a, redis_b = plan[("redis", "A", "A")].listen, plan[("redis", "B", "B")].listen
    assert f"replicaof {redis_a.replace(':', ' ')}" in files["redis-B"]
    assert f"replica-announce-port {redis_b.split(':')[1]}" in files["redis-B"]
    assert f"sentinel monitor rocars {redis_a.replace(':', ' ')} 2" in files["sentinel-C"]
    assert f"server node-B {plan[('haproxy-node', 'A', 'B')].listen} check" in files["haproxy"]

    def back(text: str) -> str:
        for x in plan.values():
            host, port = x.listen.rsplit(":", 1)
            up_host, up_port = x.upstream.rsplit(":", 1)
            # host:port in most files, "host port" in Redis's, the node's database apart.
            text = text.replace(x.listen, x.upstream).replace(
                f"{host} {port}", f"{up_host} {up_port}"
            )
            text = text.replace(f"  port: {port}\n", f"  port: {up_port}\n")
        kept = [
            line
            for line in text.splitlines(keepends=True)
            if "use_proxies" not in line and "replica-announce" not in line
        ]
        return "".join(kept)

    assert {k: back(v) for k, v in files.items()} == _render(BASE)


def test_chaos_topology_parses_from_a_file_and_shifts_with_the_offset() -> None:
    """`chaos: {proxies: true, toxiproxy_port: N}` in a topology file makes a chaos topology;
    a port offset moves the API port and so every proxy; a proxy block over another port, or
    proxies with network namespaces, are refused with the key named."""
    raw: dict[str, Any] = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    raw["chaos"] = {"proxies": True, "toxiproxy_port": 7000}
    topo = parse_topology(raw)
    assert topo.chaos_proxies
    assert chaos_links.plan(topo) == chaos_links.plan(CHAOS)
    moved = topo.with_port_offset(3500)
    assert moved.chaos is not None
    assert moved.chaos.toxiproxy_port == 10500
    assert chaos_links.plan(moved)[0].listen == "127.0.0.1:10501"
    raw["chaos"]["toxiproxy_port"] = 15420  # its block covers PostgreSQL A's 15432
    with pytest.raises(TopologyError, match="port clash"):
        parse_topology(raw)
    ns: dict[str, Any] = yaml.safe_load(NETNS_TOPOLOGY.read_text())
    ns["chaos"] = {"proxies": True, "toxiproxy_port": 7000}
    with pytest.raises(TopologyError, match="chaos proxies"):
        parse_topology(ns)


def test_chaos_cluster_ports_meet_no_other_test_cluster() -> None:
    """The chaos suite's cluster (its offset, its Toxiproxy block) shares no port with the
    other suites' clusters nor `make run`'s, and stays below the ephemeral range."""
    mine = chaos_links.with_proxies(
        BASE.with_port_offset(TEST_PORT_OFFSETS["chaos"]), chaos_links.TEST_TOXIPROXY_PORT
    )
    ours = {(h, p) for _, h, p in mine.endpoints()}
    others = {name: off for name, off in TEST_PORT_OFFSETS.items() if name != "chaos"}
    for name, off in others.items():
        theirs = {(h, p) for _, h, p in BASE.with_port_offset(off).endpoints()}
        assert not ours & theirs, (name, sorted(ours & theirs))
    assert all(1024 < p < 32768 for _, p in ours)


def test_launcher_starts_the_proxies_first_and_only_for_a_chaos_topology() -> None:
    """With proxies, the first step starts Toxiproxy and creates the proxies, before etcd (which
    Patroni reaches through them); without, the steps are the usual ones."""
    plain = launcher.steps(BASE, fresh=True)
    chaos = launcher.steps(CHAOS, fresh=True)
    assert chaos[0].start == (chaos_proxies.PROCESS,)
    assert chaos[0].then is not None
    assert [s.what for s in chaos[1:]] == [s.what for s in plain]
    assert all(chaos_proxies.PROCESS not in s.start for s in plain)


def test_toxiproxy_process_names_its_state_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Python server runs under a command line naming the state folder (so `down` stops
    it with the leftovers), listens on the topology's API port, and the plan is written beside
    the other generated files; nothing without the option."""
    state = StateDir(tmp_path)
    assert chaos_proxies.prepare(BASE, state) == {}
    monkeypatch.setattr("shutil.which", lambda _name: None)
    spec = chaos_proxies.prepare(CHAOS, state)[chaos_proxies.PROCESS]
    assert spec.marker == f"--state-dir {tmp_path}"
    assert spec.marker in " ".join(spec.argv)
    assert spec.ports == (("Toxiproxy API", "127.0.0.1", 7000),)
    written = yaml.safe_load(chaos_proxies.plan_file(state).read_text())
    assert written == [x.as_toxiproxy() for x in chaos_links.plan(CHAOS)]


def test_every_site_pair_of_a_kind_is_planned_once() -> None:
    """`link` finds each planned (kind, site, target) and refuses one that is not planned."""
    for x in chaos_links.plan(CHAOS):
        assert chaos_links.link(CHAOS, x.kind, x.site, x.target) == x
    pairs = [(x.kind, x.site, x.target) for x in chaos_links.plan(CHAOS)]
    assert len(pairs) == len(set(pairs))
    assert {x.site for x in chaos_links.links(CHAOS, "patroni-etcd", site="A")} == {"A"}
    assert list(itertools.chain(chaos_links.links(CHAOS, "replication")))
    with pytest.raises(TopologyError):
        chaos_links.link(CHAOS, "node-postgres", "A", "B")
