"""#12 item 2 on the real session cluster: Redis and Sentinel speak TLS only, to clients, to
each other and for replication, and accept only clients with a certificate from the system's
CA; the nodes still use Redis. The generated settings themselves: tests/unit/test_tls_redis.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import redis.asyncio as aioredis
from apikit import Account, Api, until
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from deploy import pki, redis_acl
from deploy.configgen import REDIS_MASTER_NAME
from deploy.harness import LocalCluster
from kernel import tls
from node import ratelimit
from node.redis_client import tls_redis

pytestmark = pytest.mark.integration

Address = tuple[str, int]


def _redis(cluster: LocalCluster) -> dict[str, Address]:
    """Every Redis and Sentinel by process name, with the address the topology gives it."""
    out: dict[str, Address] = {}
    for name, s in cluster.topo.sites.items():
        out[f"sentinel-{name}"] = (s.host, s.sentinel.port)
        if s.redis is not None:
            out[f"redis-{name}"] = (s.host, s.redis.port)
    return out


async def _plain_answer(address: Address) -> bytes:
    """What a plain TCP client sending PING gets back before the server closes (b"" when
    the connection is refused or closed without a word)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 2)
    except OSError:
        return b""
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        return await asyncio.wait_for(reader.read(1024), 5)
    except OSError:
        return b""
    finally:
        writer.close()


async def test_no_plain_listener_is_left(cluster: LocalCluster) -> None:
    """#12 item 2: every Redis and Sentinel listens only on its topology port, and there it
    answers a plain client nothing a Redis client could read (no +PONG, no -NOAUTH: the TLS
    handshake fails first); redis-py without TLS gets a connection error."""
    for process, (host, port) in _redis(cluster).items():
        pid = cluster.pid(process)
        assert pid is not None, process
        listening = {
            (c.laddr.ip, c.laddr.port)
            for c in psutil.Process(pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        }
        assert listening == {(host, port)}, (process, listening)
        answer = await _plain_answer((host, port))
        assert not answer.startswith((b"+", b"-", b"$", b"*")), (process, answer)
        # No retries: redis-py's default is ten, with backoff (4 s a listener, measured).
        plain = aioredis.Redis(
            host=host, port=port, socket_timeout=2, protocol=2, retry=Retry(NoBackoff(), 0)
        )
        try:
            with pytest.raises((RedisError, OSError)):
                await plain.ping()
        finally:
            await plain.aclose()


def _foreign_client(tmp: Path) -> tuple[pki.PkiDir, str]:
    """Another CA, and a client certificate it issued with the operators' name on it."""
    other = pki.PkiDir(tmp / "pki")
    ca = pki.ensure_ca(other, label="somebody else")
    spec = pki.CertSpec(f"client-{redis_acl.OPERATOR_ROLE}", "rocars-admin", pki.Usage.CLIENT)
    pki.issue(other, spec, ca, dt.datetime.now(dt.UTC))
    return other, spec.name


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and what caused it (redis-py wraps the ssl error in its own)."""
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


async def _ping(address: Address, ctx: ssl.SSLContext, cluster: LocalCluster) -> object:
    c = tls_redis(
        *address, ctx, socket_timeout=2, **redis_acl.login(cluster.state, redis_acl.ADMIN)
    )
    try:
        return await c.ping()
    finally:
        await c.aclose()


async def test_only_clients_with_a_certificate_from_our_ca_are_served(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """#12 item 2: with the right password, a client whose certificate another CA issued, or
    that presents none, is refused by every Redis and Sentinel (`tls-auth-clients yes`); a
    client that trusts another CA refuses their certificate; the operators' own client is
    served."""
    other, name = _foreign_client(tmp_path_factory.mktemp("other-ca"))
    state = cluster.state
    foreign_cert = tls.client_context(state.ca_bundle, cert=other.cert(name), key=other.key(name))
    no_cert = tls.client_context(state.ca_bundle)
    own_cert_other_trust = tls.client_context(
        other.bundle,
        cert=state.pki / f"client-{redis_acl.OPERATOR_ROLE}.crt",
        key=state.pki / f"client-{redis_acl.OPERATOR_ROLE}.key",
    )
    for process, address in _redis(cluster).items():
        for ctx in (foreign_cert, no_cert):
            with pytest.raises((RedisError, OSError)):
                await _ping(address, ctx, cluster)
        with pytest.raises((RedisError, OSError)) as refused:
            await _ping(address, own_cert_other_trust, cluster)
        assert any(isinstance(e, ssl.SSLCertVerificationError) for e in _chain(refused.value))
        assert await _ping(address, redis_acl.operator_tls(state), cluster) is True, process


async def test_replication_and_sentinels_run_over_tls(cluster: LocalCluster) -> None:
    """#12 item 2: the replica's link to the primary is up (it can only be TLS: there is no
    plain port to reach) with `tls-replication yes`, and every Sentinel sees the primary, its
    replica and the two other Sentinels on their TLS ports."""
    addresses = _redis(cluster)
    redis_ports = {port for name, (_, port) in addresses.items() if name.startswith("redis-")}
    sentinel_ports = {port for name, (_, port) in addresses.items() if name.startswith("sent")}

    async def replication() -> tuple[dict[str, object], dict[str, object]] | None:
        infos: dict[str, dict[str, object]] = {}
        for name, (host, port) in addresses.items():
            if name.startswith("redis-"):
                async with redis_acl.connect(cluster.state, host, port, socket_timeout=2) as r:
                    infos[name] = await r.info("replication")
                    assert (await r.config_get("tls-replication")) == {"tls-replication": "yes"}
        roles = {str(i["role"]): i for i in infos.values()}
        if set(roles) != {"master", "slave"}:
            return None
        primary, replica = roles["master"], roles["slave"]
        if replica.get("master_link_status") != "up" or primary.get("connected_slaves") != 1:
            return None
        return primary, replica

    (primary, replica), _ = await until("the replica's link up", replication, 30)
    assert replica["master_port"] in redis_ports
    slave0 = primary["slave0"]
    assert isinstance(slave0, dict)
    assert slave0["state"] == "online"
    assert slave0["port"] in redis_ports  # it announces its TLS port

    async def sentinel_view(name: str, host: str, port: int) -> dict[str, object] | None:
        """The sentinel's master entry once it knows the replica and both other sentinels
        (it learns the replica from the primary's INFO, every 10 s: a cluster just started may
        not be there yet)."""
        async with redis_acl.connect(cluster.state, host, port, socket_timeout=2) as s:
            master = await s.sentinel_master(REDIS_MASTER_NAME)
            peers = await s.sentinel_sentinels(REDIS_MASTER_NAME)
        assert isinstance(master, dict)
        assert isinstance(peers, list)
        if master["num-slaves"] != 1 or master["num-other-sentinels"] != 2:
            return None
        assert {int(p["port"]) for p in peers} == sentinel_ports - {port}, (name, peers)
        return master

    for name, (host, port) in addresses.items():
        if not name.startswith("sentinel-"):
            continue
        master, _ = await until(
            f"{name} seeing the replica and both other sentinels",
            functools.partial(sentinel_view, name, host, port),
            30,
        )
        assert not master["is_sdown"], (name, master)


async def test_the_nodes_still_count_requests_in_redis(
    cluster: LocalCluster, new_account: Callable[[str], Account]
) -> None:
    """#12 item 2: through HAProxy, an authenticated request is counted in Redis by the
    active node (its rate-limit counter appears on the primary), and both nodes report Redis
    ok with the primary the Sentinels name."""
    trader = new_account("trader")
    async with cluster.session() as session:
        api = Api(session, cluster.topo.entry_url().rstrip("/"))
        assert (await api.get("/v1/consignments", trader.key)).status == 200
        index = ratelimit.window_at(time.time()).index
        witness = cluster.topo.sites[cluster.topo.witness_site]
        async with redis_acl.connect(
            cluster.state, witness.host, witness.sentinel.port, socket_timeout=2
        ) as s:
            host, port = await s.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "get-master-addr-by-name", REDIS_MASTER_NAME
            )
        async with redis_acl.connect(cluster.state, host.decode(), int(port)) as r:
            keys = [ratelimit.counter_key(trader.id, i) for i in (index - 1, index, index + 1)]
            counts = [v for v in await r.mget(keys) if v is not None]
        assert counts, keys
        primary = f"{host.decode()}:{int(port)}"

        async def nodes_ok() -> bool:
            for site in cluster.topo.data_sites:
                async with session.get(f"{cluster.topo.node_url(site).rstrip('/')}/health") as h:
                    doc = await h.json(content_type=None)
                if not (doc["redis"]["ok"] is True and doc["redis"]["primary"] == primary):
                    return False
            return True

        await until("both nodes using Redis over TLS", nodes_ok, 10)
