"""The local two-site system from nothing to running to nothing, through the real CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis

from deploy import processes
from deploy.harness import TEST_PORT_OFFSETS, LocalCluster
from replication.etcd_gateway import EtcdGateway

pytestmark = pytest.mark.integration

LIFECYCLE_PORT_OFFSET = TEST_PORT_OFFSETS["lifecycle"]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster.create(tmp_path_factory.mktemp("lifecycle"), port_offset=LIFECYCLE_PORT_OFFSET)
    try:
        yield c
    finally:
        c.close()


def _wait_status(c: LocalCluster, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    code, doc = c.status()
    while code != 0 and time.monotonic() < deadline:
        time.sleep(0.5)
        code, doc = c.status()
    assert code == 0, doc.get("problems")
    return doc


def test_starts_from_nothing_and_is_healthy(fresh: LocalCluster) -> None:
    """`cluster up` from an empty state folder brings every component up and reports ready."""
    t0 = time.monotonic()
    out = fresh.up()
    elapsed = time.monotonic() - t0
    print(f"\n[measure] cluster up from empty data: {elapsed:.1f}s")
    assert "HEALTHY" in out
    assert "API (HAProxy):" in out
    assert "logs:" in out


def test_status_shows_one_leader_and_a_streaming_sync_standby(fresh: LocalCluster) -> None:
    """Patroni has one leader on the primary site and the DR member streams synchronously."""
    code, doc = fresh.status()
    assert code == 0, doc["problems"]
    pg = doc["postgres"]
    assert pg["leader"] == "pg-A"
    roles = {m["name"]: (m["role"], m["state"]) for m in pg["members"]}
    assert roles == {"pg-A": ("leader", "running"), "pg-B": ("sync_standby", "streaming")}
    assert all(m["timeline"] == 1 for m in pg["members"])


def test_status_shows_three_healthy_etcd_members_and_redis_replication(
    fresh: LocalCluster,
) -> None:
    """etcd has three healthy members, led by the witness's (so losing a data site never loses
    etcd's leader too); Redis A replicates to Redis B."""
    _, doc = fresh.status()
    etcd = doc["etcd"]
    assert etcd["healthy"] is True
    assert len(etcd["members"]) == 3
    assert etcd["leader"] == "etcd-C"
    a, b = (fresh.topo.sites[s].redis for s in "AB")
    assert a is not None
    assert b is not None
    assert doc["redis"] == {"primary": f"127.0.0.1:{a.port}", "replicas": [f"127.0.0.1:{b.port}"]}
    r = redis.Redis(port=a.port, socket_timeout=2)
    r.set("rocars:test:replication", "x")
    rb = redis.Redis(port=b.port, socket_timeout=2)
    deadline = time.monotonic() + 5
    while rb.get("rocars:test:replication") != b"x" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rb.get("rocars:test:replication") == b"x"


async def test_active_node_hands_etcd_leadership_back_to_the_witness(
    fresh: LocalCluster,
) -> None:
    """After etcd's leadership lands on a data site (here moved there on purpose), the active
    node hands it back to the witness within a few seconds."""
    async with aiohttp.ClientSession() as s:
        gw = EtcdGateway(s, fresh.topo.etcd_urls())
        assert await gw.move_leader(fresh.topo.etcd_url("A"))
        t0 = time.monotonic()
        leader = None
        while time.monotonic() - t0 < 30:
            statuses = await gw.member_statuses()
            names = await gw.member_names()
            leader = names.get(str(statuses[0].leader_id))
            if leader == "etcd-C":
                break
            await asyncio.sleep(0.5)
        print(f"\n[measure] etcd leadership back on the witness after {time.monotonic() - t0:.1f}s")
        assert leader == "etcd-C"


async def test_exactly_one_node_ready_and_haproxy_reaches_it(fresh: LocalCluster) -> None:
    """Only the node on the leader's site answers /health/ready; HAProxy routes there."""
    async with aiohttp.ClientSession() as s:
        ready = {}
        for site in ("A", "B"):
            async with s.get(f"{fresh.topo.node_url(site)}/health/ready") as r:
                ready[site] = r.status
            async with s.get(f"{fresh.topo.node_url(site)}/health/live") as r:
                assert r.status == 200
        assert ready == {"A": 200, "B": 503}
        for _ in range(5):
            # /health/ready (unlike the public /health and /v1/status) goes to the active node.
            async with s.get(f"{fresh.topo.entry_url()}/health/ready") as r:
                assert r.status == 200
                assert r.headers["X-Rocars-Node"] == "A"
            async with s.get(f"{fresh.topo.entry_url()}/openapi.json") as r:
                assert r.status == 200
                assert r.headers["X-Rocars-Node"] == "A"
        async with s.get(f"{fresh.topo.node_url('A')}/health") as r:
            assert r.content_type == "application/health+json"
            doc = await r.json(content_type=None)
            assert doc["role"] == "active"
            assert doc["leader"] == "pg-A"
        async with s.get(f"{fresh.topo.node_url('B')}/health") as r:
            doc = await r.json(content_type=None)
            assert doc["role"] == "standby"
            assert doc["ready"] is False
        async with s.get(f"{fresh.topo.node_url('A')}/metrics") as r:
            text = await r.text()
            assert 'rocars_node_role{role="active",site="A"} 1.0' in text


def test_up_again_is_harmless(fresh: LocalCluster) -> None:
    """Running `cluster up` on a running system starts nothing and changes no pid."""
    before = {n: fresh.pid(n) for n in ("etcd-A", "patroni-A", "node-B", "haproxy")}
    out = fresh.up()
    assert "everything was already running" in out
    assert {n: fresh.pid(n) for n in before} == before


def test_killed_member_comes_back_and_rejoins(fresh: LocalCluster) -> None:
    """After SIGKILL of the DR site's Patroni+PostgreSQL and etcd, `up` restarts just those."""
    patroni_pid = fresh.pid("patroni-B")
    etcd_pid = fresh.pid("etcd-C")
    assert patroni_pid
    assert etcd_pid
    pm = processes.postmaster_pid(fresh.state.member_dir("B") / "data")
    for pid in (patroni_pid, etcd_pid, pm):
        if pid:
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while fresh.pid("patroni-B") is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fresh.pid("patroni-B") is None
    keep = fresh.pid("node-A")
    out = fresh.up()
    assert "started patroni-B" in out
    assert "started etcd-C" in out
    assert "started node-A" not in out
    assert fresh.pid("node-A") == keep
    doc = _wait_status(fresh)
    roles = {m["name"]: m["role"] for m in doc["postgres"]["members"]}  # type: ignore[index]
    assert roles == {"pg-A": "leader", "pg-B": "sync_standby"}


def test_port_already_taken_is_named(fresh: LocalCluster, tmp_path: Path) -> None:
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


def test_restart_with_existing_data(fresh: LocalCluster) -> None:
    """`down` then `up` with the data kept comes back healthy (timed for the note)."""
    fresh.down()
    t0 = time.monotonic()
    fresh.up()
    print(f"\n[measure] cluster up with existing data: {time.monotonic() - t0:.1f}s")
    doc = _wait_status(fresh)
    assert doc["healthy"] is True
    time.sleep(3)  # let start-up allocations settle before reading idle memory
    rss = fresh.memory_bytes()
    detail = ", ".join(f"{k} {v / 2**20:.0f}" for k, v in sorted(rss.items()))
    total = sum(rss.values()) / 2**20
    print(f"[measure] idle memory (PSS) of the whole system: {total:.0f} MiB ({detail})")


def test_down_leaves_no_process_and_frees_every_port(fresh: LocalCluster) -> None:
    """`cluster down` stops every process of the system and every topology port is free."""
    fresh.down()
    assert fresh.leftovers() == []
    busy = [
        f"{what} {host}:{port}"
        for what, host, port in fresh.topo.endpoints()
        if processes.port_in_use(host, port)
    ]
    assert busy == []
