"""#12 item 1: the pure plan of `rocars certs rotate`'s apply step (deploy/cert_reload.py):
which action each component gets after new leaves or a changed CA bundle, in which order,
and which listener must then present which certificate."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deploy import pki
from deploy.cert_reload import Action, Change, How, plan
from deploy.process_specs import specs
from deploy.state import DEFAULT_TOPOLOGY, NETNS_TOPOLOGY, REPO_ROOT, StateDir
from deploy.topology import MONITORING_SERVICES, Topology, load_topology, parse_topology

CHANGES = tuple(Change)


def _unmonitored() -> Topology:
    doc = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    for site in doc["sites"].values():
        for svc in MONITORING_SERVICES:
            site.pop(svc, None)
    return parse_topology(doc)


def _floating_hosts() -> Topology:
    """Production hosts with a floating address: the data sites' HAProxies, no hub one."""
    doc = load_topology(REPO_ROOT / "deploy" / "topology.production.yaml").model_dump()
    doc["sites"]["B"]["host"] = "192.0.2.20"
    doc["entry"]["floating"] = {"address": "192.0.2.100", "interface": "eth0", "prefix_len": 24}
    return parse_topology(doc)


def _read_replica() -> Topology:
    """A read replica on site B (#17 item 5): a third Patroni member with B's certificates."""
    doc = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    doc["sites"]["B"]["read_replica"] = {"postgres": {"port": 25532}, "patroni": {"port": 28108}}
    return parse_topology(doc)


TOPOLOGIES = {
    "loopback": lambda: load_topology(DEFAULT_TOPOLOGY),
    "netns": lambda: load_topology(NETNS_TOPOLOGY),
    "unmonitored": _unmonitored,
    "floating": lambda: load_topology(REPO_ROOT / "deploy" / "topology.netns-vip.yaml"),
    "floating-hosts": _floating_hosts,
    "read-replica": _read_replica,
}


@pytest.fixture(params=sorted(TOPOLOGIES))
def topo(request: pytest.FixtureRequest) -> Topology:
    return TOPOLOGIES[request.param]()


def _kind(process: str) -> str:
    """etcd-A -> etcd, postgres-exporter-B -> postgres-exporter, haproxy -> haproxy."""
    if process in ("haproxy", "prometheus", "alertmanager", "redis-exporter"):
        return process
    return process.rpartition("-")[0]


# What each kind of component gets (deploy/pki.py's rotation procedure).
EXPECTED: dict[Change, dict[str, How]] = {
    Change.LEAVES: {
        "etcd": How.NOTHING,
        "patroni": How.SIGHUP,
        "patroni-replica": How.SIGHUP,
        "redis": How.CONFIG_SET,
        "sentinel": How.RESTART,
        "haproxy": How.HAPROXY_RELOAD,
        "node": How.SIGHUP,
        "prometheus": How.NOTHING,
        "alertmanager": How.NOTHING,
        "postgres-exporter": How.NOTHING,
        "redis-exporter": How.NOTHING,
        "keepalived": How.NOTHING,
    },
    Change.TRUST: {
        "etcd": How.RESTART,
        "patroni": How.SIGHUP,
        "patroni-replica": How.SIGHUP,
        "redis": How.CONFIG_SET,
        "sentinel": How.RESTART,
        "haproxy": How.HAPROXY_RELOAD,
        "node": How.SIGHUP,
        "prometheus": How.NOTHING,
        "alertmanager": How.NOTHING,
        "postgres-exporter": How.NOTHING,
        "redis-exporter": How.RESTART,
        "keepalived": How.NOTHING,
    },
}


def _index(actions: tuple[Action, ...], kind: str) -> list[int]:
    return [i for i, a in enumerate(actions) if _kind(a.process) == kind]


@pytest.mark.parametrize("change", CHANGES)
def test_every_process_the_launcher_starts_is_in_the_plan_once(
    topo: Topology, change: Change, tmp_path: Path
) -> None:
    """#12 item 1: no component is forgotten and none is told twice: the plan names exactly
    the processes deploy.process_specs starts for the topology."""
    names = [a.process for a in plan(topo, change)]
    assert sorted(names) == sorted(specs(topo, StateDir(tmp_path)))


@pytest.mark.parametrize("change", CHANGES)
def test_each_component_gets_the_least_disruptive_action_it_allows(
    topo: Topology, change: Change
) -> None:
    """#12 item 1: reloads where the component allows (Patroni and the nodes SIGHUP, Redis
    CONFIG SET, HAProxy a -sf reload), restarts only where it does not (Sentinel always; etcd
    and the Redis exporter only when the trusted CAs change), nothing for per-connection
    readers."""
    got = {a.process: a.how for a in plan(topo, change)}
    assert got == {p: EXPECTED[change][_kind(p)] for p in got}


def test_a_leaf_rotation_restarts_only_the_sentinels(topo: Topology) -> None:
    """#12 item 1: new leaves restart nothing but Sentinel, which cannot reload TLS."""
    restarted = {_kind(a.process) for a in plan(topo, Change.LEAVES) if a.how is How.RESTART}
    assert restarted == {"sentinel"}


def test_after_new_leaves_every_server_certificate_is_checked_on_its_listener(
    topo: Topology,
) -> None:
    """#12 item 1: a leaf rotation is done only when every listener presents its new
    certificate: the plan checks every server certificate pki.plan issues, on every port the
    topology declares except the plain ones (the phone channel, the HTTP redirect), once."""
    actions = plan(topo, Change.LEAVES)
    checked = {lsn.cert for a in actions for lsn in a.listeners}
    servers = {s.name for s in pki.plan(topo) if s.usage.server_auth}
    assert checked == servers
    ports = [(lsn.host, lsn.port) for a in actions for lsn in a.listeners]
    assert len(set(ports)) == len(ports)
    declared = {(host, port) for key, host, port in topo.endpoints() if "phone" not in key}
    declared -= {(topo.entry_host(), topo.entry.http_port)}  # the plain redirect
    if topo.entry.floating is not None:  # each data site's HAProxy (on all its addresses)
        e = topo.entry
        declared |= {
            (topo.sites[s].host, p) for s in topo.data_sites for p in (e.port, e.stats_port)
        }
    assert set(ports) == declared


def test_only_postgresql_is_dialled_with_its_sslrequest(topo: Topology) -> None:
    """#12 item 1: PostgreSQL speaks TLS after its SSLRequest; every other listener at once."""
    for a in plan(topo, Change.LEAVES):
        for lsn in a.listeners:
            is_postgres = lsn.cert in {f"postgres-{s}" for s in topo.data_sites}
            assert lsn.postgres == is_postgres, lsn


def test_a_trust_change_checks_no_serials(topo: Topology) -> None:
    """#12 item 1: after --ca or --drop-old-ca the leaves are the same files: no listener is
    expected to present another certificate (the waits are the restarts' own)."""
    assert all(not a.listeners for a in plan(topo, Change.TRUST))


def test_patroni_reloads_before_any_other_component(topo: Topology) -> None:
    """#12 item 1: Patroni's REST API trusts a new CA only when it rebuilds its listener for
    a new certificate; it goes first, before the clients present new-CA certificates."""
    for change in CHANGES:
        actions = plan(topo, change)
        first_other = min(
            i for i, a in enumerate(actions) if _kind(a.process) not in ("patroni", "etcd")
        )
        assert max(_index(actions, "patroni")) < first_other


def test_etcd_restarts_before_anything_else_when_the_trust_changes(topo: Topology) -> None:
    """#12 item 1: etcd reads its CA file only at start; its members restart first, so that
    every component reloaded after them dials members that trust the bundle."""
    actions = plan(topo, Change.TRUST)
    etcd = _index(actions, "etcd")
    assert etcd == list(range(len(topo.sites)))


def test_notes_say_why_a_component_is_left_alone_or_restarted(topo: Topology) -> None:
    """#12 item 1: each NOTHING and RESTART carries its reason, printed by the command."""
    for change in CHANGES:
        for a in plan(topo, change):
            if a.how in (How.NOTHING, How.RESTART):
                assert a.note, a


def test_the_node_says_a_dropped_ca_lasts_until_its_restart(topo: Topology) -> None:
    """#12 item 1: an SSLContext can learn a CA but not forget one; the plan says so."""
    for a in plan(topo, Change.TRUST):
        if _kind(a.process) == "node":
            assert "until it restarts" in a.note


def test_a_floating_address_adds_each_sites_haproxy_to_the_reload() -> None:
    """#17 item 2: with a floating address each data site's HAProxy is reloaded like the hub's
    (a new process with -sf), after it, and checked on the site's own address against the
    name its certificate carries (the floating address); keepalived, a client, is told
    nothing; without the option the plan has no per-site HAProxy."""
    vip = load_topology(REPO_ROOT / "deploy" / "topology.netns-vip.yaml")
    for change in CHANGES:
        actions = plan(vip, change)
        names = [a.process for a in actions]
        assert names.index("haproxy") < names.index("haproxy-A") < names.index("haproxy-B")
        got = {a.process: a for a in actions}
        for site in ("A", "B"):
            assert got[f"haproxy-{site}"].how is How.HAPROXY_RELOAD
            assert got[f"keepalived-{site}"].how is How.NOTHING
    site_b = {a.process: a for a in plan(vip, Change.LEAVES)}["haproxy-B"]
    assert [(lsn.host, lsn.port, lsn.cert, lsn.tls_name) for lsn in site_b.listeners] == [
        ("10.77.13.2", 18080, "haproxy", "10.77.13.100"),
        ("10.77.13.2", 18404, "haproxy", "10.77.13.100"),
    ]
    plain = [a.process for a in plan(load_topology(NETNS_TOPOLOGY), Change.LEAVES)]
    assert not [p for p in plain if p.startswith(("haproxy-", "keepalived-"))]
