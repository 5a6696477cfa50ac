"""Redis ACL users per role and Sentinel authentication (#12 item 3) on the real session cluster:
without credentials nothing is served; each role may do what it uses and nothing more; with
every link authenticated the cluster is healthy, the nodes use Redis, the Sentinels agree and
the exporter still scrapes every Redis and Sentinel. The generated rules themselves:
tests/unit/test_redis_acl.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from apikit import until
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError, ResponseError

from deploy import processes, redis_acl
from deploy.configgen import REDIS_MASTER_NAME
from deploy.harness import LocalCluster
from deploy.process_specs import specs
from deploy.state import StateDir
from node import ratelimit
from node.config import load_node_config
from node.redis_client import HEARTBEAT_KEY_PREFIX, RedisClient, tls_redis

pytestmark = pytest.mark.integration

Address = tuple[str, int]


def _redis(cluster: LocalCluster) -> list[Address]:
    return [(s.host, s.redis.port) for s in cluster.topo.sites.values() if s.redis is not None]


def _sentinels(cluster: LocalCluster) -> list[Address]:
    return [(s.host, s.sentinel.port) for s in cluster.topo.sites.values()]


@asynccontextmanager
async def _client(
    state: StateDir, address: Address, login: redis_acl.Login | None = None
) -> AsyncIterator[aioredis.Redis]:
    """A client over TLS with the operators' certificate (#12 item 2), logged in as `login`."""
    host, port = address
    tls = redis_acl.operator_tls(state)
    if login is None:
        # RESP2: with RESP3 redis-py's HELLO would be refused first, and no command sent.
        c = tls_redis(host, port, tls, socket_timeout=2, protocol=2)
    else:
        c = tls_redis(host, port, tls, socket_timeout=2, **login)
    try:
        yield c
    finally:
        await c.aclose()


async def _primary(cluster: LocalCluster) -> Address:
    admin = redis_acl.login(cluster.state, redis_acl.ADMIN)
    async with _client(cluster.state, _sentinels(cluster)[0], admin) as s:
        host, port = await s.execute_command(  # type: ignore[no-untyped-call]
            "SENTINEL", "get-master-addr-by-name", REDIS_MASTER_NAME
        )
    return host.decode(), int(port)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@asynccontextmanager
async def _refusals_forgotten(cluster: LocalCluster) -> AsyncIterator[None]:
    """The ACL LOG entries a test makes on purpose are cleared afterwards, so that
    `test_no_role_is_refused_what_it_uses` sees only real ones."""
    try:
        yield
    finally:
        admin = redis_acl.login(cluster.state, redis_acl.ADMIN)
        for address in _redis(cluster) + _sentinels(cluster):
            async with _client(cluster.state, address, admin) as c:
                await c.acl_log_reset()


async def test_without_credentials_redis_and_sentinel_refuse(cluster: LocalCluster) -> None:
    """#12 item 3: a connection that does not log in gets NOAUTH for anything from every Redis
    and every Sentinel, and a wrong password (or the default user's) is refused."""
    async with _refusals_forgotten(cluster):
        on_redis = [(a, ("GET", "k")) for a in _redis(cluster)]
        on_sentinel = [(a, ("SENTINEL", "MASTERS")) for a in _sentinels(cluster)]
        for address, own in on_redis + on_sentinel:
            async with _client(cluster.state, address) as anonymous:
                for command in (("PING",), ("INFO",), own):
                    # NOAUTH, which redis-py turns into this error with the message after it.
                    with pytest.raises(AuthenticationError, match="Authentication required"):
                        await anonymous.execute_command(*command)  # type: ignore[no-untyped-call]
            for login in (
                redis_acl.Login(username="admin", password="wrong"),
                redis_acl.Login(username="default", password=""),
            ):
                async with _client(cluster.state, address, login) as c:
                    with pytest.raises(AuthenticationError):
                        await c.ping()


async def test_the_node_user_may_count_and_nothing_else(cluster: LocalCluster) -> None:
    """#12 item 3: logged in as the nodes' user, the rate-limit script and the heartbeat work
    (as the real client uses them), but FLUSHALL, CONFIG SET, KEYS *, EVAL, a key outside its
    patterns (directly or from inside a script), reading a heartbeat, and any Sentinel command
    but finding the primary are refused."""
    cfg = load_node_config(cluster.state.node_config(cluster.topo.data_sites[0]))
    assert cfg.redis_auth is not None
    bus = RedisClient(
        cfg.redis_sentinels,
        cfg.redis_master_name,
        name="acl-test",
        auth=cfg.redis_auth,
        tls_settings=cfg.redis_tls,
    )
    try:
        assert (await bus.count_request(-7, limit=100)).allowed
        await bus.probe()
        assert bus.ok is True
    finally:
        await bus.aclose()
    node = redis_acl.login(cluster.state, redis_acl.NODE)
    counter = ratelimit.counter_key(-7, 1)
    async with (
        _refusals_forgotten(cluster),
        _client(cluster.state, await _primary(cluster), node) as r,
    ):
        await r.incrby(counter, 1)
        await r.pexpire(counter, 1000)
        await r.set(f"{HEARTBEAT_KEY_PREFIX}acl-test", "1", px=1000)
        for refused in (
            ("FLUSHALL",),
            ("CONFIG", "SET", "maxmemory", "1"),
            ("KEYS", "*"),
            ("SET", "rocars:other", "1"),
            ("GET", "rocars:other"),
            ("GET", f"{HEARTBEAT_KEY_PREFIX}acl-test"),
            ("EVAL", "return 1", "0"),
            ("INFO",),
            ("ACL", "LIST"),
        ):
            with pytest.raises(NoPermissionError):
                await r.execute_command(*refused)  # type: ignore[no-untyped-call]
        outside = await r.script_load("return redis.call('SET', 'rocars:other', '1')")
        with pytest.raises(ResponseError, match="can't access"):
            await r.evalsha(outside, 0)
        async with _client(cluster.state, _sentinels(cluster)[0], node) as s:
            addr = await s.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "get-master-addr-by-name", REDIS_MASTER_NAME
            )
            assert addr
            for command in (
                ("SENTINEL", "FAILOVER", REDIS_MASTER_NAME),
                ("SENTINEL", "SET", REDIS_MASTER_NAME, "quorum", "1"),
                ("SENTINEL", "REMOVE", REDIS_MASTER_NAME),
                ("SENTINEL", "CONFIG", "GET", "*"),
            ):
                with pytest.raises(NoPermissionError):
                    await s.execute_command(*command)  # type: ignore[no-untyped-call]


async def test_the_exporter_user_reads_and_cannot_write(cluster: LocalCluster) -> None:
    """#12 item 3: the monitor user (the exporter's) reads INFO on Redis and the master's state
    on Sentinel, but cannot write a key, flush, read a key, read the configuration (it holds
    the replica password), or change or fail over anything through Sentinel."""
    monitor = redis_acl.login(cluster.state, redis_acl.MONITOR)
    async with _refusals_forgotten(cluster):
        for address in _redis(cluster):
            async with _client(cluster.state, address, monitor) as r:
                assert "role" in await r.info("replication")
                for refused in (
                    ("SET", "rocars:rl:x", "1"),
                    ("DEL", "rocars:rl:x"),
                    ("FLUSHALL",),
                    ("GET", "rocars:rl:x"),
                    ("CONFIG", "GET", "masterauth"),
                    ("REPLICAOF", "NO", "ONE"),
                ):
                    with pytest.raises(NoPermissionError):
                        await r.execute_command(*refused)  # type: ignore[no-untyped-call]
        for address in _sentinels(cluster):
            async with _client(cluster.state, address, monitor) as s:
                assert await s.execute_command("SENTINEL", "MASTERS")  # type: ignore[no-untyped-call]
                for command in (
                    ("SENTINEL", "FAILOVER", REDIS_MASTER_NAME),
                    ("SENTINEL", "SET", REDIS_MASTER_NAME, "quorum", "1"),
                    ("SENTINEL", "RESET", "*"),
                ):
                    with pytest.raises(NoPermissionError):
                        await s.execute_command(*command)  # type: ignore[no-untyped-call]


async def test_no_role_is_refused_what_it_uses(cluster: LocalCluster) -> None:
    """#12 item 3: while the cluster works (nodes counting and probing, replication, Sentinels
    watching Redis and each other, the exporter scraping), no Redis and no Sentinel logs an
    ACL refusal, except the exporter's CONFIG GET, refused on purpose."""
    await until(
        "a healthy cluster", lambda: asyncio.to_thread(lambda: cluster.status()[0] == 0), 90
    )
    admin = redis_acl.login(cluster.state, redis_acl.ADMIN)
    # A few seconds of everything: probes every 0.5 s, Sentinel hellos every 2 s, scrapes.
    await asyncio.sleep(6)
    refused: dict[str, list[str]] = {}
    for host, port in _redis(cluster) + _sentinels(cluster):
        async with _client(cluster.state, (host, port), admin) as c:
            log = await c.acl_log()
        for entry in log:
            who = (_text(entry["username"]), _text(entry["object"]))
            if who != ("monitor", "config|get"):
                refused.setdefault(f"{host}:{port}", []).append(f"{who} {entry['reason']!r}")
    assert refused == {}


async def test_the_cluster_is_healthy_with_every_link_authenticated(cluster: LocalCluster) -> None:
    """#12 item 3: `rocars cluster status` (which logs in as the operators' user) is healthy,
    the Redis primary has an online replica (the replica user's PSYNC works), each node reports
    Redis ok on /health with the primary the Sentinels name, and every Sentinel sees the other
    two and a quorum."""
    code, doc = await asyncio.to_thread(cluster.status)
    assert code == 0, doc["problems"]
    primary = doc["redis"]["primary"]
    assert primary, doc["redis"]
    assert doc["redis"]["replicas"], doc["redis"]
    async with cluster.session() as session:

        async def nodes_ok() -> bool:
            for site in cluster.topo.data_sites:
                url = cluster.topo.node_url(site).rstrip("/")
                async with session.get(f"{url}/health") as r:
                    health = await r.json(content_type=None)
                if not (health["redis"]["ok"] is True and health["redis"]["primary"] == primary):
                    return False
            return True

        await until("both nodes using Redis", nodes_ok, 10)
    admin = redis_acl.login(cluster.state, redis_acl.ADMIN)
    for address in _sentinels(cluster):
        async with _client(cluster.state, address, admin) as s:
            master = await s.sentinel_master(REDIS_MASTER_NAME)
            assert isinstance(master, dict), master
            assert master["num-other-sentinels"] == 2, master
            assert master["num-slaves"] == 1, master
            ok = await s.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "CKQUORUM", REDIS_MASTER_NAME
            )
            assert ok.startswith(b"OK"), ok


def test_redis_and_sentinel_files_stay_private(cluster: LocalCluster) -> None:
    """#12 item 3: Redis's and Sentinel's files hold passwords; after Sentinel has rewritten
    its own (it does on start and on every failover) they are still 0600, because both run
    with umask 077."""
    all_specs = specs(cluster.topo, cluster.state)
    for name, spec in all_specs.items():
        if not name.startswith(("redis-", "sentinel-")) or name == "redis-exporter":
            continue
        path = cluster.state.config / f"{name}.conf"
        assert oct(path.stat().st_mode & 0o777) == oct(0o600), path
        pid = processes.running_pid(cluster.state, spec)
        assert pid is not None, name
        status = Path(f"/proc/{pid}/status").read_text()
        assert "\nUmask:\t0077\n" in status, name
    sentinel = (cluster.state.config / f"sentinel-{cluster.topo.witness_site}.conf").read_text()
    assert "Generated by CONFIG REWRITE" in sentinel  # the check above saw a rewritten file


async def test_the_exporter_scrapes_every_redis_and_sentinel(cluster: LocalCluster) -> None:
    """#12 item 3: through its password file the exporter logs in to all five (two Redis,
    three Sentinels): Prometheus shows redis_up 1 for each, the primary's replica count and
    each Sentinel's view of the master."""
    prom = cluster.topo.monitoring_url("prometheus")
    targets = {f"rediss://{h}:{p}" for h, p in _redis(cluster) + _sentinels(cluster)}

    async with cluster.session() as s:

        async def query(q: str) -> dict[str, float]:
            async with s.get(f"{prom}/api/v1/query", params={"query": q}) as r:
                doc = await r.json()
            return {x["metric"]["instance"]: float(x["value"][1]) for x in doc["data"]["result"]}

        async def all_up() -> dict[str, float] | None:
            up = await query('redis_up{job="redis"}')
            return up if set(up) == targets and all(v == 1 for v in up.values()) else None

        await until("redis_up 1 for every Redis and Sentinel", all_up, 60)
        slaves = await query('redis_connected_slaves{job="redis"}')
        assert sorted(v for k, v in slaves.items() if k in targets) == [0, 1], slaves
        ok_sentinels = await query('redis_sentinel_master_ok_sentinels{job="redis"}')
        assert len(ok_sentinels) == 3, ok_sentinels
        assert all(v == 3 for v in ok_sentinels.values()), ok_sentinels


async def test_redis_failover_is_authenticated_end_to_end(cluster: LocalCluster) -> None:
    """#12 item 3: a planned Sentinel failover (SENTINEL FAILOVER as the operators' user) goes
    through with only the Sentinel user's rights on Redis (SLAVEOF, CONFIG REWRITE, CLIENT KILL
    in MULTI/EXEC) and the replica user's on the new primary; it is then moved back."""
    admin = redis_acl.login(cluster.state, redis_acl.ADMIN)
    witness = cluster.topo.sites[cluster.topo.witness_site]
    for _ in range(2):
        old = await _primary(cluster)

        async def failover() -> bool:
            async with _client(cluster.state, (witness.host, witness.sentinel.port), admin) as s:
                try:
                    await s.execute_command(  # type: ignore[no-untyped-call]
                        "SENTINEL", "FAILOVER", REDIS_MASTER_NAME
                    )
                except ResponseError:  # NOGOODSLAVE / INPROG while it settles
                    return False
            return True

        await until("Sentinel accepting a failover", failover, 30)

        async def moved(old: Address = old) -> bool:
            try:
                new = await _primary(cluster)
                async with _client(cluster.state, new, admin) as r:
                    info = await r.info("replication")
            except RedisError:
                return False
            return new != old and info["role"] == "master" and info["connected_slaves"] == 1

        await until("the other Redis primary, with the old one as its replica", moved, 30)
