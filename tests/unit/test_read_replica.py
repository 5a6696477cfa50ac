"""#17 item 5: a read replica added from the topology file (`sites.<X>.read_replica`): how it
is parsed and checked, the Patroni member it becomes (tags that keep it out of failover and
synchronous replication), its process, the read role, its place in `cluster status` and the
switchover checks, and its unit on a production host."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_cluster_view import HEALTHY
from unit_fakes import MEMBER_PASSWORDS, fake_sources

from deploy import configgen, host_render, launcher, netns, pg_roles
from deploy.harness import READ_REPLICA_TEST_PORTS, TEST_PORT_OFFSETS
from deploy.pki import PkiDir
from deploy.process_specs import member_keys, patroni_names, specs
from deploy.state import DEFAULT_TOPOLOGY, NETNS_TOPOLOGY, REPO_ROOT, StateDir
from deploy.status import render_table
from deploy.topology import Topology, TopologyError, load_topology, parse_topology
from failover.controller import member_facts
from failover.precheck import precheck
from kernel.cluster import Member, Postgres
from kernel.names import member_name, read_replica_key
from replication.patroni_rest import PatroniCluster

BASE = load_topology(DEFAULT_TOPOLOGY)
TOPO = BASE.with_read_replica("B", postgres_port=25532, patroni_port=28108)
PRODUCTION = load_topology(REPO_ROOT / "deploy" / "topology.production.yaml").with_read_replica(
    "B", postgres_port=5433, patroni_port=8009
)
REPLICA = member_name(read_replica_key("B"))


def _raw(topo: Topology) -> dict[str, Any]:
    raw: dict[str, Any] = topo.model_dump()
    return raw


def _replica_cfg(topo: Topology = TOPO) -> dict[str, Any]:
    return configgen.read_replica_patroni_config(
        topo, "B", Path("/rt/pg-B-replica"), dict(MEMBER_PASSWORDS)
    )


# -- the topology file ------------------------------------------------------------------------


def test_a_read_replica_is_read_from_the_file_and_dumps_back() -> None:
    """`sites.B.read_replica` with its PostgreSQL and Patroni ports parses, names the site in
    `read_replica_sites`, and survives a dump and load."""
    assert TOPO.read_replica_sites == ["B"]
    assert TOPO.read_replica("B").postgres.port == 25532
    assert TOPO.read_replica_patroni_url("B") == "https://127.0.0.1:28108"
    assert parse_topology(_raw(TOPO)) == TOPO


def test_a_topology_without_one_dumps_as_before() -> None:
    """Absent, the option leaves no key in the dump (whose hash decides whether Redis's files
    are regenerated on a running system)."""
    assert all("read_replica" not in site for site in _raw(BASE)["sites"].values())
    assert BASE.read_replica_sites == []
    with pytest.raises(TopologyError, match="has no read replica"):
        BASE.read_replica("B")


def test_the_witness_site_gets_no_read_replica() -> None:
    """A read replica needs a data site's PostgreSQL: the witness site refuses one."""
    raw = _raw(BASE)
    raw["sites"]["C"]["read_replica"] = {"postgres": {"port": 5555}, "patroni": {"port": 5556}}
    with pytest.raises(TopologyError, match="witness site runs only"):
        parse_topology(raw)


def test_its_ports_clash_with_nothing() -> None:
    """The replica's ports are endpoints of the site's host: one equal to the site's own
    PostgreSQL port is refused, naming both."""
    raw = _raw(TOPO)
    raw["sites"]["B"]["read_replica"]["postgres"]["port"] = 25432
    with pytest.raises(TopologyError, match=r"read_replica\.postgres\.port.*sites\.B\.postgres"):
        parse_topology(raw)


def test_port_offsets_shift_its_ports_too() -> None:
    """Test clusters shift every port, the replica's included."""
    shifted = TOPO.with_port_offset(1000)
    assert shifted.read_replica("B").postgres.port == 26532
    assert shifted.read_replica("B").patroni.port == 29108


def test_a_site_name_cannot_pose_as_a_replica_key() -> None:
    """`B-replica` names the replica's member and folder, so no site may be called so."""
    raw = _raw(BASE)
    raw["sites"]["X-replica"] = raw["sites"].pop("B")
    raw["entry"]["site"] = "A"
    with pytest.raises(TopologyError, match="must not end in -replica"):
        parse_topology(raw)


def test_the_test_clusters_replica_ports_clash_with_no_suite() -> None:
    """The read-replica suite's cluster (its ports, the replica's included) shares no
    host:port with any other suite's cluster."""
    ports = {
        name: {(h, p) for _w, h, p in BASE.with_port_offset(off).endpoints()}
        for name, off in TEST_PORT_OFFSETS.items()
    }
    off = TEST_PORT_OFFSETS["read-replica"]
    shifted = {k: v + off for k, v in READ_REPLICA_TEST_PORTS.items()}
    ports["read-replica"] = {
        (h, p)
        for _w, h, p in BASE.with_port_offset(off).with_read_replica("B", **shifted).endpoints()
    }
    for a, b in itertools.combinations(ports, 2):
        assert not ports[a] & ports[b], f"{a} and {b} share {sorted(ports[a] & ports[b])}"
    assert all(1024 < p < 32768 for _h, p in ports["read-replica"])


# -- the Patroni member -----------------------------------------------------------------------


def test_the_replica_is_never_promoted_nor_synchronous_and_cascades() -> None:
    """Tags: nofailover (never a failover or switchover candidate), nosync (never the
    synchronous standby: RPO 0 rests on the other main member alone), and replicatefrom its
    own site's member (the link between sites carries the WAL once)."""
    tags = _replica_cfg()["tags"]
    assert tags["nofailover"] is True
    assert tags["nosync"] is True
    assert tags["replicatefrom"] == member_name("B")


def test_the_main_members_keep_their_tags() -> None:
    """The two main members stay failover candidates, with no cascading."""
    for site in ("A", "B"):
        tags = configgen.patroni_config(TOPO, site, Path(f"/rt/pg-{site}"), MEMBER_PASSWORDS)[
            "tags"
        ]
        assert tags["nofailover"] is False
        assert "nosync" not in tags
        assert "replicatefrom" not in tags


def test_the_replica_is_its_own_member_on_its_own_ports() -> None:
    """Its own name, REST and PostgreSQL addresses and data folder; the site's cluster scope
    and certificates (it runs on the site's host)."""
    cfg = _replica_cfg()
    assert cfg["name"] == REPLICA
    assert cfg["scope"] == TOPO.name
    assert cfg["restapi"]["listen"] == cfg["restapi"]["connect_address"] == "127.0.0.1:28108"
    pg = cfg["postgresql"]
    assert pg["listen"] == pg["connect_address"] == "127.0.0.1:25532"
    assert pg["data_dir"] == "/rt/pg-B-replica/data"
    assert pg["parameters"]["ssl_cert_file"] == "/rt/pg-B-replica/tls/server.crt"


def test_only_the_replica_admits_the_read_role() -> None:
    """The read role's pg_hba lines (TLS, SCRAM, the application database) are in the
    replica's file alone, so reports cannot land on a main member."""
    reader = [
        line for line in _replica_cfg()["postgresql"]["pg_hba"] if pg_roles.READER_USER in line
    ]
    assert reader == [
        f"hostssl {pg_roles.APP_DATABASE} {pg_roles.READER_USER} 127.0.0.1/32 scram-sha-256"
    ]
    for site in ("A", "B"):
        hba = configgen.patroni_config(TOPO, site, Path("/rt"), MEMBER_PASSWORDS)["postgresql"][
            "pg_hba"
        ]
        assert not any(pg_roles.READER_USER in line for line in hba)


def test_the_replica_runs_as_its_own_patroni_process(tmp_path: Path) -> None:
    """`patroni-replica-B` on site B, with its ports and its own folder; `cluster up` starts
    it with the DR member and waits for it to stream, `down` stops it with the members."""
    state = StateDir(tmp_path)
    spec = specs(TOPO, state)["patroni-replica-B"]
    assert spec.site == "B"
    assert {p for _w, _h, p in spec.ports} == {25532, 28108}
    assert spec.cwd == state.member_dir(read_replica_key("B"))
    assert patroni_names(TOPO) == ("patroni-A", "patroni-B", "patroni-replica-B")
    assert member_keys(TOPO) == ("A", "B", "B-replica")
    steps = launcher.steps(TOPO, fresh=True)
    assert any("patroni-replica-B" in s.start for s in steps)
    assert [s.what for s in steps if s.what == "streaming read replicas"]
    assert "patroni-replica-B" not in specs(BASE, state)
    assert not [s for s in launcher.steps(BASE, fresh=True) if s.what == "streaming read replicas"]


# -- the read role ----------------------------------------------------------------------------


def test_the_read_role_gets_select_only_and_only_with_a_replica() -> None:
    """With a replica: the role logs in with no power of its own, starts read-only, may
    connect, and gets SELECT (now and on later tables) and schema usage, nothing more.
    Without one: no statement names it."""
    verifiers = {k: "SCRAM-SHA-256$4096:c2FsdA==$a2V5:c2Vy" for k in pg_roles.PGPASS_ACCOUNTS}
    verifiers |= {"monitor": verifiers["app"], "replication": "v", "rewind": "v"}
    with_reader = [
        *pg_roles.role_statements(set(), verifiers),
        *pg_roles.database_statements(reader=True),
        *pg_roles.schema_statements("CREATE TABLE ledger ()", reader=True),
    ]
    mine = [s for s in with_reader if pg_roles.READER_USER in s]
    assert any(s.startswith(f"CREATE ROLE {pg_roles.READER_USER} LOGIN NOSUPERUSER") for s in mine)
    assert f"ALTER ROLE {pg_roles.READER_USER} SET default_transaction_read_only = on" in mine
    grants = [s for s in mine if "GRANT" in s]
    privileges = {p for s in grants for p in re.findall(r"GRANT (.+?) ON", s)[0].split(", ")}
    assert privileges == {"SELECT", "USAGE", "CONNECT"}
    assert any("GRANT SELECT ON ALL TABLES IN SCHEMA public" in s for s in grants)
    assert any("DEFAULT PRIVILEGES" in s and "GRANT SELECT ON TABLES" in s for s in grants)
    del verifiers["reader"]
    without = [
        *pg_roles.role_statements(set(), verifiers),
        *pg_roles.database_statements(),
        *pg_roles.schema_statements("CREATE TABLE ledger ()"),
    ]
    assert not [s for s in without if pg_roles.READER_USER in s]


def test_the_read_role_never_selects_a_credential() -> None:
    """Reports see who did what, never how anyone logs in: on each table holding a credential
    the read role's SELECT becomes a column grant of every column but the credential's (an
    API key's hash and prefix, a phone PIN's hash)."""
    assert pg_roles.reader_withheld_statements(
        "accounts", ["id", "kind", "name", "key_prefix", "key_hash", "created_at"]
    ) == [
        f"REVOKE SELECT ON accounts FROM {pg_roles.READER_USER}",
        f"GRANT SELECT (id, kind, name, created_at) ON accounts TO {pg_roles.READER_USER}",
    ]
    withheld = pg_roles.READER_WITHHELD
    assert withheld["accounts"] == ("key_prefix", "key_hash")
    assert withheld["phone_pins"] == ("pin_hash",)


# -- status, failover and switchover ----------------------------------------------------------


def test_status_lists_the_replica_with_role_state_and_lag() -> None:
    """`rocars cluster status` shows the replica as a member like the main ones; a streaming
    replica that is not synchronous makes no problem, and the sync standby is still pg-B."""
    members = (*HEALTHY.postgres.members, Member(REPLICA, "replica", "streaming", 128, 1))
    view = HEALTHY.__class__(**{**HEALTHY.__dict__, "postgres": Postgres("pg-A", False, members)})
    assert view.problems() == []
    table = render_table(view).splitlines()
    line = next(x for x in table if x.startswith(REPLICA))
    assert line.split() == [REPLICA, "replica", "streaming", "128", "1"]
    header = next(x for x in table if x.startswith("MEMBER"))
    assert line.index(" replica") == header.index(" ROLE")  # the columns line up
    assert view.member("B") == HEALTHY.member("B")


def test_a_switchover_to_the_replica_is_refused() -> None:
    """Only a site's main member may become the leader: `--to B-replica` is refused."""
    members = (*HEALTHY.postgres.members, Member(REPLICA, "replica", "streaming", 0, 1))
    view = HEALTHY.__class__(**{**HEALTHY.__dict__, "postgres": Postgres("pg-A", False, members)})
    why = precheck(view, read_replica_key("B"))
    assert why is not None
    assert "not a streaming synchronous standby" in why
    assert precheck(view, "B") is None


def test_the_failover_controller_sees_site_b_as_its_main_member() -> None:
    """The controller judges site B by pg-B's facts, whatever the replica reports (listed
    before pg-B here)."""
    view = PatroniCluster(
        members=(
            Member("pg-A", "leader", "running", 0, 2),
            Member(REPLICA, "replica", "streaming", 0, 2),
            Member("pg-B", "sync_standby", "streaming", 0, 2),
        ),
        paused=False,
    )
    facts = member_facts(view, member_name("B"))
    assert facts is not None
    assert facts.is_sync_standby


# -- a production host ------------------------------------------------------------------------


def test_the_dr_host_gets_the_replicas_unit_and_file() -> None:
    """`rocars deploy render --host B`: a unit for the replica's Patroni (as postgres, after
    the site's member), its Patroni file with the tags, and its own TLS copies; host A gets
    none of it."""
    sources = fake_sources(PRODUCTION)
    out_b = host_render.render(PRODUCTION, "B", sources)
    unit = out_b["files/etc/systemd/system/rocars-patroni-replica-B.service"][0].decode()
    assert "User=postgres" in unit
    assert "rocars-patroni-B.service" in unit
    assert "/var/lib/rocars/pg/pg-B-replica/patroni.yaml" in unit
    cfg = yaml.safe_load(out_b["files/var/lib/rocars/pg/pg-B-replica/patroni.yaml"][0])
    assert cfg["tags"]["nofailover"] is True
    assert cfg["tags"]["nosync"] is True
    assert cfg["postgresql"]["listen"] == "198.51.100.10:5433"
    assert "files/var/lib/rocars/pg/pg-B-replica/tls/server.key" in out_b
    target = out_b["files/etc/systemd/system/rocars.target"][0].decode()
    assert "rocars-patroni-replica-B.service" in target
    out_a = host_render.render(PRODUCTION, "A", sources)
    assert not [k for k in out_a if "replica" in k]


def test_the_replica_uses_the_sites_certificates() -> None:
    """It runs on the site's host: the site's PostgreSQL and Patroni certificates name its
    address, and they are what its folder gets."""
    copies = configgen.MemberTls.of(Path("/rt/pg-B-replica")).copies(PkiDir(Path("/p")), "B")
    assert {src.name for src, _d, _m in copies} >= {"postgres-B.crt", "patroni-B.key"}


def test_on_the_namespaced_topology_its_ports_stay_private() -> None:
    """With each site in a namespace, the replica listens on site B's private address, and
    B's perimeter opens no port to outsiders, the replica's included (only the system's own
    addresses may connect)."""
    topo = load_topology(NETNS_TOPOLOGY).with_read_replica(
        "B", postgres_port=25532, patroni_port=28108
    )
    cfg = configgen.read_replica_patroni_config(topo, "B", Path("/rt"), dict(MEMBER_PASSWORDS))
    assert cfg["postgresql"]["listen"] == f"{topo.sites['B'].host}:25532"
    rules = netns.perimeter_ruleset(topo, "B")
    assert "policy drop" in rules
    assert "dport" not in rules
