"""How `rocars cluster up` tells that a part of the system is ready: one predicate per fact
(etcd has a quorum, Patroni has a leader, a URL answers 200, a synchronous standby streams), and
one wait that polls a predicate until a deadline, showing the relevant logs if it never holds."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import aiohttp
import psycopg
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    wait_fixed,
)

from deploy import control_tls, etcd_auth, processes
from deploy.state import StateDir
from deploy.topology import Topology
from kernel.errors import LaunchError
from kernel.names import (
    QUORUM_PROBE_KEY,
    leader_key,
    member_name,
    member_site,
    read_replica_key,
)

POLL_S = 0.2
_TIMEOUT = aiohttp.ClientTimeout(total=1)


async def wait_until(
    what: str,
    check: Callable[[], Awaitable[bool]],
    *,
    timeout: float,
    state: StateDir,
    logs: Iterable[str],
) -> None:
    """Poll `check` until it returns True; an exception counts as "not yet" (the component
    is still starting). After `timeout` seconds, a LaunchError with the tails of `logs`."""
    retrying = AsyncRetrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(POLL_S),
        retry=retry_if_exception_type(Exception) | retry_if_result(lambda ok: not ok),
        retry_error_callback=lambda _state: False,
    )

    async def attempt() -> bool:
        # tenacity awaits only what is a coroutine function; a lambda returning a coroutine
        # would read as an immediate (truthy) success, so the check is always awaited here.
        return await check()

    if await retrying(attempt):
        return
    tails = "\n".join(f"  last lines of {n}.log:\n{processes.log_tail(state, n)}" for n in logs)
    raise LaunchError(
        f"{what} did not become ready within {timeout:.0f}s (logs in {state.logs})\n{tails}"
    )


async def http_ok(session: aiohttp.ClientSession, url: str) -> bool:
    async with session.get(url, timeout=_TIMEOUT) as r:
        return r.status == 200


async def etcd_quorum(session: aiohttp.ClientSession, topo: Topology) -> bool:
    await etcd_auth.operator_gateway(session, topo).get(QUORUM_PROBE_KEY)  # linearizable: a quorum
    return True


async def leader_site(session: aiohttp.ClientSession, topo: Topology) -> str | None:
    """The site whose member holds Patroni's leader key, if any."""
    kv = await etcd_auth.operator_gateway(session, topo).get(leader_key(topo.name))
    return member_site(kv.value.decode()) if kv else None


async def accepts_writes(topo: Topology, state: StateDir, site: str) -> bool:
    """The site's PostgreSQL is out of recovery. Patroni's /primary answers 200 as soon as it
    asks for the promotion, a moment before the server takes writes (seen on `up` with
    existing data, where migrations then failed with "read-only transaction")."""
    pg = topo.sites[site].postgres
    assert pg is not None
    async with await psycopg.AsyncConnection.connect(
        host=topo.sites[site].host,
        port=pg.port,
        user="postgres",
        password=state.secrets()["superuser"],
        dbname="postgres",
        connect_timeout=2,
        autocommit=True,
        sslmode="verify-full",  # #12 item 2, as StateDir.pg_tls says
        sslrootcert=str(state.ca_bundle),
    ) as conn:
        row = await (await conn.execute("SELECT pg_is_in_recovery()")).fetchone()
    return row is not None and row[0] is False


async def serving_leader(
    session: aiohttp.ClientSession, topo: Topology, state: StateDir
) -> str | None:
    """The leader's site once its PostgreSQL serves as primary and takes writes, else None."""
    site = await leader_site(session, topo)
    rest = control_tls.patroni(session, state, timeout=_TIMEOUT)  # TLS (#12 item 2)
    if site is None or not await rest.is_primary(topo.patroni_url(site)):
        return None
    return site if await accepts_writes(topo, state, site) else None


async def sync_standby_streams(
    session: aiohttp.ClientSession, topo: Topology, state: StateDir, leader: str
) -> bool:
    """The leader's Patroni lists a synchronous standby that is streaming."""
    rest = control_tls.patroni(session, state, timeout=_TIMEOUT)
    view = await rest.cluster(topo.patroni_url(leader))
    return any(m.is_streaming_sync_standby for m in view.members)


async def read_replicas_stream(
    session: aiohttp.ClientSession, topo: Topology, state: StateDir, leader: str
) -> bool:
    """The leader's Patroni lists every read replica (#17 item 5) as a streaming replica."""
    rest = control_tls.patroni(session, state, timeout=_TIMEOUT)
    view = await rest.cluster(topo.patroni_url(leader))
    streaming = {m.name for m in view.members if m.role == "replica" and m.state == "streaming"}
    return all(member_name(read_replica_key(s)) in streaming for s in topo.read_replica_sites)
