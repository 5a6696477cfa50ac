"""The local two-site system from nothing to running to nothing, through the real CLI.

The tests share one cluster (starting one takes a while) but none relies on another having run
first: each asks a fixture for the state it needs (`empty`, `running`, `leader_on_a`), and that
fixture establishes it, so any test also passes alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import agi_standin
import aiohttp
import psutil
import pytest
import redis

from deploy import etcd_auth, processes, redis_acl
from deploy.harness import TEST_PORT_OFFSETS, LocalCluster
from kernel.errors import EtcdUnavailable
from kernel.names import member_name
from replication.etcd_gateway import EtcdGateway

pytestmark = pytest.mark.integration

LIFECYCLE_PORT_OFFSET = TEST_PORT_OFFSETS["lifecycle"]
PG_A, PG_B = member_name("A"), member_name("B")


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The module's cluster, not started here (each test's fixture puts it in the state that
    test needs); stopped and deleted at the end."""
    c = LocalCluster.create(
        tmp_path_factory.mktemp("lifecycle"), port_offset=LIFECYCLE_PORT_OFFSET, monitoring=True
    )
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def empty(lifecycle: LocalCluster) -> LocalCluster:
    """The module's cluster stopped, with no data, logs or configuration (a new checkout)."""
    lifecycle.close()
    assert not lifecycle.state.root.exists()
    return lifecycle


@pytest.fixture
def running(lifecycle: LocalCluster) -> LocalCluster:
    """The module's cluster up and healthy: `cluster up` starts whatever is not running, run
    only when the status is not healthy (LocalCluster.ensure_healthy);
    `test_up_again_is_harmless` runs `up` on a running system itself."""
    lifecycle.ensure_healthy()
    return lifecycle


@pytest.fixture
def leader_on_a(running: LocalCluster) -> LocalCluster:
    """The running cluster with site A active: switched over to A when B leads, then healthy
    with HAProxy routing to A."""
    _, doc = running.status()
    if doc["postgres"]["leader"] != PG_A:
        running.rocars(
            "failover", "switchover", "--to", "A", "--state-dir", str(running.state.root)
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        code, doc = running.status()
        if code == 0 and doc["postgres"]["leader"] == PG_A and _entry_node(running) == "A":
            return running
        time.sleep(0.5)
    raise AssertionError(f"site A did not become active: {doc.get('problems')}")


def _entry_node(c: LocalCluster) -> str | None:
    """The node behind the entry's /health/ready when it answers 200, else None."""
    try:
        url = f"{c.topo.entry_url()}/health/ready"
        with urllib.request.urlopen(url, timeout=2, context=c.state.tls_client()) as r:
            return r.headers.get("X-Rocars-Node")
    except OSError:
        return None


def test_starts_from_nothing_and_is_healthy(empty: LocalCluster) -> None:
    """`cluster up` from an empty state folder brings every component up and reports ready."""
    t0 = time.monotonic()
    out = empty.up()
    elapsed = time.monotonic() - t0
    print(f"\n[measure] cluster up from empty data: {elapsed:.1f}s")
    assert "HEALTHY" in out
    assert "API (HAProxy):" in out
    assert "logs:" in out
    for name in (
        "etcd-A",
        "etcd-C",
        "patroni-A",
        "patroni-B",
        "node-A",
        "haproxy",
        "prometheus",
        "alertmanager",
        "redis-exporter",
        "postgres-exporter-B",
    ):
        assert f"started {name}" in out
    assert "Prometheus: https://" in out


def test_status_shows_one_leader_and_a_streaming_sync_standby(leader_on_a: LocalCluster) -> None:
    """Patroni has one leader on the primary site and the DR member streams synchronously on
    the leader's timeline."""
    code, doc = leader_on_a.status()
    assert code == 0, doc["problems"]
    pg = doc["postgres"]
    assert pg["leader"] == PG_A
    roles = {m["name"]: (m["role"], m["state"]) for m in pg["members"]}
    assert roles == {PG_A: ("leader", "running"), PG_B: ("sync_standby", "streaming")}
    assert len({m["timeline"] for m in pg["members"]}) == 1


def test_status_shows_three_healthy_etcd_members_and_redis_replication(
    running: LocalCluster,
) -> None:
    """After `cluster up` etcd has three healthy members, led by the witness's (so losing a
    data site never loses etcd's leader too); the Redis primary replicates to the other.
    Read once settled: right after the switchover of the test before, the active node may be
    handing etcd's leadership back to the witness, and a status read during that move found
    etcd not healthy (CI, once)."""
    deadline = time.monotonic() + 30
    while True:
        _, doc = running.status()
        etcd = doc["etcd"]
        if (etcd["healthy"] and etcd["leader"] == "etcd-C") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert etcd["healthy"] is True
    assert len(etcd["members"]) == 3
    assert etcd["leader"] == "etcd-C"
    ports = {s: r.port for s in "AB" if (r := running.topo.sites[s].redis) is not None}
    primary = doc["redis"]["primary"]
    assert primary in {f"127.0.0.1:{p}" for p in ports.values()}
    (replica,) = (p for p in ports.values() if f"127.0.0.1:{p}" != primary)
    assert doc["redis"]["replicas"] == [f"127.0.0.1:{replica}"]
    admin = redis_acl.login(running.state, redis_acl.ADMIN)  # #12 item 3
    # TLS only, with the operators' certificate (#12 item 2).
    pki = running.state.pki

    def client(port: int) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=port,
            socket_timeout=2,
            ssl=True,
            ssl_ca_certs=str(running.state.ca_bundle),
            ssl_certfile=str(pki / f"client-{redis_acl.OPERATOR_ROLE}.crt"),
            ssl_keyfile=str(pki / f"client-{redis_acl.OPERATOR_ROLE}.key"),
            **admin,
        )

    primary_client = client(int(primary.rsplit(":", 1)[1]))
    primary_client.set("rocars:test:replication", "x")
    rb = client(replica)
    deadline = time.monotonic() + 5
    while rb.get("rocars:test:replication") != b"x" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rb.get("rocars:test:replication") == b"x"


async def test_active_node_hands_etcd_leadership_back_to_the_witness(
    running: LocalCluster,
) -> None:
    """After etcd's leadership lands on a data site (here moved there on purpose), the active
    node hands it back to the witness within a few seconds."""
    async with running.session() as s:
        # As root: moving etcd's leader is an admin's call on etcd 3.4.42+ (#12 item 3).
        gw = etcd_auth.gateway(s, running.topo, running.state, etcd_auth.ROOT_USER)
        before = await _raft_term(gw)
        for _ in range(3):
            # etcd answers a move once its old leader sees the new one lead; when the node has
            # already moved it back by then, or the host is slow, the answer is a timeout
            # although leadership did move (CI, stop 32). The term says what happened.
            with contextlib.suppress(EtcdUnavailable):
                await gw.move_leader(running.topo.etcd_url("A"))
            if await _raft_term(gw) > before:
                break
        t0 = time.monotonic()
        leader, term = None, before
        while time.monotonic() - t0 < 30:
            statuses = await gw.member_statuses()
            names = await gw.member_names()
            leader, term = names.get(str(statuses[0].leader_id)), await _raft_term(gw)
            if leader == "etcd-C" and term >= before + 2:
                break
            await asyncio.sleep(0.5)
        print(f"\n[measure] etcd leadership back on the witness after {time.monotonic() - t0:.1f}s")
        assert (leader, term >= before + 2) == ("etcd-C", True), (leader, before, term)


async def _raft_term(gw: EtcdGateway) -> int:
    return max(st.raft_term or 0 for st in await gw.member_statuses())


async def test_exactly_one_node_ready_and_haproxy_reaches_it(leader_on_a: LocalCluster) -> None:
    """Only the node on the leader's site answers /health/ready; HAProxy routes there."""
    c = leader_on_a
    async with c.session() as s:
        ready = {}
        for site in ("A", "B"):
            async with s.get(f"{c.topo.node_url(site)}/health/ready") as r:
                ready[site] = r.status
            async with s.get(f"{c.topo.node_url(site)}/health/live") as r:
                assert r.status == 200
        assert ready == {"A": 200, "B": 503}
        for _ in range(5):
            # /health/ready (unlike the public /health and /v1/status) goes to the active node.
            async with s.get(f"{c.topo.entry_url()}/health/ready") as r:
                assert r.status == 200
                assert r.headers["X-Rocars-Node"] == "A"
            async with s.get(f"{c.topo.entry_url()}/openapi.json") as r:
                assert r.status == 200
                assert r.headers["X-Rocars-Node"] == "A"
        async with s.get(f"{c.topo.node_url('A')}/health") as r:
            assert r.content_type == "application/health+json"
            doc = await r.json(content_type=None)
            assert doc["role"] == "active"
            assert doc["leader"] == PG_A
        async with s.get(f"{c.topo.node_url('B')}/health") as r:
            doc = await r.json(content_type=None)
            assert doc["role"] == "standby"
            assert doc["ready"] is False
        async with s.get(f"{c.topo.node_url('A')}/metrics") as r:
            text = await r.text()
            assert 'rocars_node_role{role="active",site="A"} 1.0' in text


async def _role_gauges(s: aiohttp.ClientSession, c: LocalCluster) -> dict[str, str]:
    """Each node's own rocars_node_role: the role whose gauge is 1, by site."""
    out = {}
    for site in c.topo.data_sites:
        async with s.get(f"{c.topo.node_url(site)}/metrics") as r:
            text = await r.text()
        out[site] = next(
            role
            for role in ("active", "standby")
            if f'rocars_node_role{{role="{role}",site="{site}"}} 1.0' in text
        )
    return out


async def _prometheus_active_sites(s: aiohttp.ClientSession, c: LocalCluster) -> list[str]:
    url = f"{c.topo.monitoring_url('prometheus')}/api/v1/query"
    query = 'rocars_node_role{job="rocars-node", role="active"} == 1'
    async with s.get(url, params={"query": query}) as r:
        doc = await r.json()
    return sorted(x["metric"]["site"] for x in doc["data"]["result"])


async def test_role_metrics_probes_and_prometheus_follow_a_switchover(
    leader_on_a: LocalCluster,
) -> None:
    """#13: after a switchover to B, node B's rocars_node_role says active and its
    /health/ready answers 200, node A's says standby and 503, and Prometheus (scraping every
    5 s) sees site B active and only B within a few scrapes."""
    c = leader_on_a
    held = await _call_held_open(c)
    await asyncio.to_thread(
        c.rocars, "failover", "switchover", "--to", "B", "--state-dir", str(c.state.root)
    )
    async with c.session() as s:
        t0 = time.monotonic()
        seen: tuple[dict[str, str], dict[str, int], list[str]] | None = None
        while time.monotonic() - t0 < 60:
            roles = await _role_gauges(s, c)
            probes = {}
            for site in c.topo.data_sites:
                async with s.get(f"{c.topo.node_url(site)}/health/ready") as r:
                    probes[site] = r.status
            scraped = await _prometheus_active_sites(s, c)
            seen = (roles, probes, scraped)
            if seen == ({"A": "standby", "B": "active"}, {"A": 503, "B": 200}, ["B"]):
                break
            await asyncio.sleep(0.5)
        print(f"\n[measure] Prometheus saw B active {time.monotonic() - t0:.1f}s after the switch")
        assert seen == ({"A": "standby", "B": "active"}, {"A": 503, "B": 200}, ["B"])
    # The phone entry follows the API backend's check (its servers track it, #11): the call
    # held on A is cut by HAProxy (A itself would wait REPLY_TIMEOUT_S for the caller), and
    # a new call reaches B, which welcomes it instead of refusing.
    async with asyncio.timeout(10):
        assert await held[0].read() == b""
    held[1].close()
    again = await _call_held_open(c)
    again[1].close()


async def _call_held_open(c: LocalCluster) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A call placed through HAProxy's phone entry and left waiting at its first prompt, which
    must be the active node's welcome (a standby plays service-unavailable); the open
    connection."""
    port = c.topo.entry.phone_port
    assert port is not None
    reader, writer = await asyncio.open_connection(c.topo.entry_host(), port)
    writer.write(agi_standin.environment(c.topo.entry_host(), port))
    await writer.drain()
    async with asyncio.timeout(10):
        first = (await reader.readline()).decode()
    assert first.startswith("STREAM FILE rocars/welcome "), first
    return reader, writer


def test_up_again_is_harmless(running: LocalCluster) -> None:
    """Running `cluster up` on a running system starts nothing and changes no pid."""
    before = {n: running.pid(n) for n in ("etcd-A", "patroni-A", "node-B", "haproxy")}
    assert None not in before.values()
    out = running.up()
    assert "everything was already running" in out
    assert "reloaded" not in out
    assert {n: running.pid(n) for n in before} == before


def test_up_reloads_what_reads_a_changed_configuration(running: LocalCluster) -> None:
    """#12 item 4: a generated file that differs from what the running process read (here
    edited by hand; after an upgrade, a new pg_hba) is rewritten by `up`, and its process is
    asked to reread it (SIGHUP), not restarted. HAProxy, which has no reread, is taken over
    by a new process (`-sf`) that serves the entry, and the old one leaves."""
    cfg = running.state.member_dir("A") / "patroni.yaml"
    prom = running.state.config / "prometheus.yml"
    haproxy = running.state.config / "haproxy.cfg"
    before = {n: running.pid(n) for n in ("patroni-A", "prometheus")}
    old_haproxy = running.pid("haproxy")
    assert old_haproxy is not None
    for path in (cfg, prom, haproxy):
        path.write_text(path.read_text() + "# edited\n")
    out = running.up()
    assert "reloaded patroni-A" in out
    assert "reloaded prometheus" in out
    assert "reloaded haproxy" in out
    assert "reloaded patroni-B" not in out
    assert "# edited" not in cfg.read_text()
    assert "# edited" not in haproxy.read_text()
    assert {n: running.pid(n) for n in before} == before
    assert running.pid("haproxy") not in (None, old_haproxy)
    running.wait_healthy()
    assert _entry_node(running) is not None
    with contextlib.suppress(psutil.NoSuchProcess):  # gone already: fine
        assert psutil.wait_procs([psutil.Process(old_haproxy)], timeout=30)[1] == []


def test_killed_member_comes_back_and_rejoins(leader_on_a: LocalCluster) -> None:
    """After SIGKILL of the DR site's Patroni+PostgreSQL and etcd, `up` restarts just those."""
    c = leader_on_a
    patroni_pid = c.pid("patroni-B")
    etcd_pid = c.pid("etcd-C")
    assert patroni_pid
    assert etcd_pid
    pm = processes.postmaster_pid(c.state.member_dir("B") / "data")
    for pid in (patroni_pid, etcd_pid, pm):
        if pid:
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while c.pid("patroni-B") is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert c.pid("patroni-B") is None
    keep = c.pid("node-A")
    out = c.up()
    assert "started patroni-B" in out
    assert "started etcd-C" in out
    assert "started node-A" not in out
    assert c.pid("node-A") == keep
    doc = c.wait_healthy()
    roles = {m["name"]: m["role"] for m in doc["postgres"]["members"]}
    assert roles == {PG_A: "leader", PG_B: "sync_standby"}


def test_port_already_taken_is_named(running: LocalCluster, tmp_path: Path) -> None:
    """Starting a second system on the same ports fails naming the port and its holder."""
    other = LocalCluster.create(tmp_path / "clash", port_offset=LIFECYCLE_PORT_OFFSET)
    try:
        with pytest.raises(RuntimeError) as info:
            other.up(timeout=20)
        msg = str(info.value)
        assert "already in use" in msg
        assert "etcd" in msg
        assert "change the port in the topology file" in msg
    finally:
        other.close()


def _settled_memory(c: LocalCluster, timeout: float = 15) -> dict[str, int]:
    """Memory per process once start-up allocations stop growing (two readings a second
    apart within 2 MiB in total), or the last reading after `timeout`."""
    deadline = time.monotonic() + timeout
    last = c.memory_bytes()
    while time.monotonic() < deadline:
        time.sleep(1)
        now = c.memory_bytes()
        if abs(sum(now.values()) - sum(last.values())) < 2 * 2**20:
            return now
        last = now
    return last


def test_restart_with_existing_data(running: LocalCluster) -> None:
    """`down` then `up` with the data kept comes back healthy (timed for the note)."""
    running.down()
    assert running.pid("patroni-A") is None
    t0 = time.monotonic()
    running.up()
    print(f"\n[measure] cluster up with existing data: {time.monotonic() - t0:.1f}s")
    doc = running.wait_healthy()
    assert doc["healthy"] is True
    rss = _settled_memory(running)
    detail = ", ".join(f"{k} {v / 2**20:.0f}" for k, v in sorted(rss.items()))
    total = sum(rss.values()) / 2**20
    print(f"[measure] idle memory (PSS) of the whole system: {total:.0f} MiB ({detail})")


def test_down_leaves_no_process_and_frees_every_port(running: LocalCluster) -> None:
    """`cluster down` stops every process of the system and every topology port is free."""
    assert running.leftovers() != []
    running.down()
    assert running.leftovers() == []
    busy = [
        f"{what} {host}:{port}"
        for what, host, port in running.topo.endpoints()
        if processes.port_in_use(host, port)
    ]
    assert busy == []
