"""Configuration generated from the topology: the settings the promises depend on."""

from __future__ import annotations

from pathlib import Path

import yaml
from unit_fakes import HAPROXY_TLS, MEMBER_PASSWORDS

from deploy import configgen
from deploy.pki import PkiDir
from deploy.state import CONTROL_SECRET_NAMES, DEFAULT_TOPOLOGY, REPO_ROOT
from deploy.topology import load_topology
from kernel.names import leader_key, member_name
from node.config import NodeConfig

TOPO = load_topology(DEFAULT_TOPOLOGY)
PKI = PkiDir(Path("/state/pki"))


def _patroni(site: str) -> dict:  # type: ignore[type-arg]
    return configgen.patroni_config(TOPO, site, Path(f"/rt/pg-{site}"), MEMBER_PASSWORDS)


def test_patroni_runs_synchronous_with_rewind_and_validated_timings() -> None:
    """Both members bootstrap with synchronous_mode, pg_rewind and the topology's timings."""
    for site in ("A", "B"):
        dcs = _patroni(site)["bootstrap"]["dcs"]
        assert dcs["synchronous_mode"] is True
        assert dcs["postgresql"]["use_pg_rewind"] is True
        assert dcs["ttl"] == 20
        assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"]
        assert dcs["primary_start_timeout"] == 0
        assert dcs["postgresql"]["parameters"]["wal_sender_timeout"] == "5s"


def test_each_member_lists_all_three_etcd_members_and_its_own_ports() -> None:
    """Patroni talks to the three-site etcd and listens on its site's ports."""
    cfg = _patroni("B")
    assert cfg["etcd3"]["hosts"] == ["127.0.0.1:12379", "127.0.0.1:22379", "127.0.0.1:4379"]
    assert cfg["postgresql"]["listen"] == "127.0.0.1:25432"
    assert cfg["restapi"]["listen"] == "127.0.0.1:28008"
    assert cfg["name"] == "pg-B"
    assert cfg["postgresql"]["data_dir"] == "/rt/pg-B/data"


def test_database_access_is_password_protected_from_site_hosts_only() -> None:
    """pg_hba allows replication and clients only from data-site hosts, with SCRAM, over TLS
    (#12 item 2)."""
    hba = _patroni("A")["postgresql"]["pg_hba"]
    assert "hostssl replication replicator 127.0.0.1/32 scram-sha-256" in hba
    assert not [line for line in hba if line.split()[0] == "host"]
    assert not any("0.0.0.0" in line or ("trust" in line and "host" in line) for line in hba)


def test_etcd_cluster_has_one_member_per_site_with_gateway_on() -> None:
    """Each etcd member knows all three peers; the JSON gateway the nodes use is enabled."""
    cfg = yaml.safe_load(configgen.etcd_config(TOPO, "C", Path("/d"), PKI))
    assert cfg["initial-cluster"].count("etcd-") == 3
    assert cfg["enable-grpc-gateway"] is True
    assert cfg["listen-client-urls"] == "https://127.0.0.1:4379"


def test_etcd_members_ask_before_an_election_so_a_rejoining_one_deposes_no_leader() -> None:
    """Availability: pre-vote on, so a member healed from isolation (its term raised by the
    elections it could not win) does not depose the leader of the two that kept working."""
    cfg = yaml.safe_load(configgen.etcd_config(TOPO, "A", Path("/d"), PKI))
    assert cfg["pre-vote"] is True


def test_etcd_history_is_compacted_and_its_raft_log_kept_short() -> None:
    """#11 target 5 and availability: etcd keeps five minutes of history (else the nodes'
    heartbeat revisions fill the backend quota and every write stops, and each one kept is
    resident memory) and snapshots every
    1,000 entries (3.4's 100,000 kept tens of MiB of raft log in memory per member, 10,000 up
    to 14 MiB an hour into a run)."""
    cfg = yaml.safe_load(configgen.etcd_config(TOPO, "A", Path("/d"), PKI))
    assert (cfg["auto-compaction-mode"], cfg["auto-compaction-retention"]) == ("periodic", "5m")
    assert cfg["snapshot-count"] == 1000


def test_redis_replica_follows_the_primary_site_and_sentinels_need_quorum_two() -> None:
    """Redis on B replicates from A; every Sentinel monitors A with quorum 2."""
    pw = {name: f"pw-{name}" for name in CONTROL_SECRET_NAMES}
    assert "replicaof 127.0.0.1 16379" in configgen.redis_config(TOPO, "B", Path("/d"), pw, pki=PKI)
    assert "replicaof" not in configgen.redis_config(TOPO, "A", Path("/d"), pw, pki=PKI)
    for site in "ABC":
        text = configgen.sentinel_config(TOPO, site, Path("/d"), pw, pki=PKI)
        assert "sentinel monitor rocars 127.0.0.1 16379 2" in text


def test_haproxy_routes_by_readiness_and_cuts_sessions_of_a_node_marked_down() -> None:
    """HAProxy checks /health/ready every 250 ms on both nodes, marks a node down after 3
    failed checks (late ones included: `timeout check`) and kills its sessions then."""
    text = configgen.haproxy_config(TOPO, HAPROXY_TLS)
    assert "option httpchk GET /health/ready" in text
    assert "on-marked-down shutdown-sessions" in text
    assert "inter 250ms" in text
    assert "fall 3" in text
    assert "fall 1" not in text
    assert "timeout check 1s" in text
    assert "server node-A 127.0.0.1:18081 check" in text
    assert "server node-B 127.0.0.1:28081 check" in text
    assert "bind 127.0.0.1:18080" in text


def test_haproxy_reuses_idle_node_connections_for_any_request() -> None:
    """#11 target 2: any request may use any idle connection to the node (not only those its
    own client connection opened), so many client connections do not cost the node an accept
    per request."""
    assert "    http-reuse always\n" in configgen.haproxy_config(TOPO, HAPROXY_TLS)


def test_node_writes_only_through_its_own_site_member() -> None:
    """The node's database settings name exactly its own site's PostgreSQL member."""
    for site, port, rest in (("A", 15432, 18008), ("B", 25432, 28008)):
        cfg = configgen.node_config(TOPO, site, state_root=Path("/s"))
        assert cfg["database"]["port"] == port
        assert cfg["patroni_member"] == f"pg-{site}"
        assert cfg["patroni_url"] == f"https://127.0.0.1:{rest}"


def test_node_reads_the_leader_key_patroni_writes() -> None:
    """The key each node's role watcher reads is the one Patroni's configuration makes it
    write (namespace + scope + /leader), and the node's member is the name Patroni runs as."""
    for site in ("A", "B"):
        patroni = _patroni(site)
        node = NodeConfig.model_validate(configgen.node_config(TOPO, site, state_root=Path("/s")))
        assert node.leader_key == f"{patroni['namespace']}{patroni['scope']}/leader"
        assert node.leader_key == leader_key(TOPO.name)
        assert node.patroni_member == patroni["name"] == member_name(site)


def test_postgresql_runs_without_jit() -> None:
    """#11 target 5: JIT off in each member's own parameters (applied on reload, also to a
    cluster bootstrapped before): a backend that once compiled kept LLVM's 20-30 MiB."""
    for site in ("A", "B"):
        assert _patroni(site)["postgresql"]["parameters"]["jit"] == "off"


def test_postgresql_memory_and_checkpoints_follow_the_topology() -> None:
    """#11: shared_buffers, max_wal_size, checkpoint_timeout and wal_compression are each
    member's own parameters, from the topology's `postgresql` section (the local sizes without
    one), so a changed topology reaches a running cluster on reload; the bootstrap's cluster-wide
    parameters no longer carry a second copy of any of them, and a read replica gets the same."""
    production = load_topology(REPO_ROOT / "deploy" / "topology.production.yaml")
    tuned = ("shared_buffers", "max_wal_size", "checkpoint_timeout", "wal_compression")
    for topo, want in (
        (TOPO, ("32MB", "4GB", "15min", "lz4")),
        (production, ("4GB", "16GB", "15min", "lz4")),
    ):
        for site in ("A", "B"):
            cfg = configgen.patroni_config(topo, site, Path(f"/rt/pg-{site}"), MEMBER_PASSWORDS)
            local = cfg["postgresql"]["parameters"]
            assert tuple(local[k] for k in tuned) == want
            assert not set(tuned) & set(cfg["bootstrap"]["dcs"]["postgresql"]["parameters"])
        replica = configgen.read_replica_patroni_config(
            topo.with_read_replica("B", postgres_port=25532, patroni_port=28108),
            "B",
            Path("/rt/pg-B-replica"),
            dict(MEMBER_PASSWORDS),
        )
        assert tuple(replica["postgresql"]["parameters"][k] for k in tuned) == want


def test_postgresql_serves_tls_only_and_patroni_checks_its_certificate() -> None:
    """#12 item 2: ssl on with the member's own copy of its certificate (PostgreSQL runs as
    another user and must own its key), TLS 1.2 at least, and each of Patroni's connections
    (local, replication, pg_rewind) verifying the server against the CA by name."""
    cfg = _patroni("A")
    params = cfg["postgresql"]["parameters"]
    assert params["ssl"] == "on"
    assert params["ssl_min_protocol_version"] == "TLSv1.2"
    assert params["ssl_key_file"] == "/rt/pg-A/tls/server.key"
    assert params["ssl_ca_file"] == "/rt/pg-A/tls/ca.pem"
    for account in ("superuser", "replication", "rewind"):
        auth = cfg["postgresql"]["authentication"][account]
        assert auth["sslmode"] == "verify-full", account
        assert auth["sslrootcert"] == "/rt/pg-A/tls/ca.pem", account


def test_the_phone_entry_reaches_only_the_active_node_over_tcp() -> None:
    """#16 item 6: HAProxy's FastAGI entry is `mode tcp`, on the topology's phone port, and
    sends calls to the node the API backend finds ready (the active one): each phone server
    tracks its node's server in `nodes` instead of checking again (#11: one readiness check
    per node, not two), and calls to a node marked down are cut so Asterisk calls again."""
    text = configgen.haproxy_config(TOPO, HAPROXY_TLS)
    front = text.split("frontend phone\n", 1)[1].split("\n\n", 1)[0]
    back = text.split("backend phone_nodes\n", 1)[1].split("\n\n", 1)[0]
    nodes = text.split("\nbackend nodes\n", 1)[1].split("\n\n", 1)[0]
    assert "    mode tcp" in front
    assert "    mode tcp" in back
    assert f"    bind {TOPO.entry_host()}:{TOPO.entry.phone_port}" in front
    assert "on-marked-down shutdown-sessions" in back
    assert " check" not in back  # no check of its own: the tracked one decides
    assert "    option httpchk GET /health/ready" in nodes
    for name in TOPO.data_sites:
        site = TOPO.sites[name]
        assert site.phone is not None
        assert site.node is not None
        assert f"    server node-{name} {site.host}:{site.node.port} check" in nodes
        assert (
            f"    server phone-{name} {site.host}:{site.phone.port} track nodes/node-{name}" in back
        )
