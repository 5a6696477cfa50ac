"""Fixtures for the e-ACI API tests (issue 3): accounts of every kind, an HTTP client (apikit.Api,
which refuses any 5xx), a direct PostgreSQL connection to the leader, and the standby's URL.

Every test talks to the real service through HAProxy on the session cluster (`cluster` in
tests/conftest.py); the database connection is only for what HTTP cannot show or do: reading
the audit log and simulating the passage of time (the app's clock cannot be set over HTTP).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
import webkit
from apikit import Account, Accounts, Api

from deploy.admin import leader_site
from deploy.harness import LocalCluster, SharedCluster
from node.config import load_node_config

WEB_STORIES = SharedCluster("web_story_cluster", Path(__file__).parent)


@pytest.fixture(scope="session")
def web_story_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The cluster of the browser tests whose stories break it (webkit.cluster_fixture): one
    start for the officer's, SRE's and status page's modules instead of one each (15-18 s
    each in CI, and 4-5 s to stop), stopped after the last of them."""
    root = tmp_path_factory.mktemp("web-stories")
    started = LocalCluster.running(root, port_offset=webkit.PORT_OFFSET)
    with WEB_STORIES.running(started) as c:
        yield c


def _create_account(cluster: LocalCluster, kind: str, name: str) -> Account:
    account_id, key = cluster.create_account(kind, name)
    return Account(account_id, kind, name, key)


@pytest.fixture(scope="session")
def new_account(cluster: LocalCluster) -> Callable[[str], Account]:
    """Factory: a fresh approved account of the given kind, made by `rocars admin`."""

    def make(kind: str) -> Account:
        return _create_account(cluster, kind, f"test {kind} {uuid.uuid4().hex[:8]}")

    return make


@pytest.fixture(scope="session")
def accounts(new_account: Callable[[str], Account]) -> Accounts:
    """One officer, two traders and two truckers shared by the API tests."""
    return Accounts(
        officer=new_account("officer"),
        trader=new_account("trader"),
        trader2=new_account("trader"),
        trucker=new_account("trucker"),
        trucker2=new_account("trucker"),
    )


@pytest.fixture
async def api(cluster: LocalCluster) -> AsyncIterator[Api]:
    """An HTTP client on the HAProxy entry point (one aiohttp session per test)."""
    timeout = aiohttp.ClientTimeout(total=60)
    async with cluster.session(timeout=timeout, limit=50) as session:
        yield Api(session, cluster.topo.entry_url().rstrip("/"))


@pytest.fixture
async def db(cluster: LocalCluster) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """An autocommit connection to the PostgreSQL leader, with the node's own credentials."""
    site = await leader_site(cluster.topo)
    cfg = load_node_config(cluster.state.node_config(site))
    conn = await psycopg.AsyncConnection.connect(
        cfg.database.conninfo(application_name="test"), autocommit=True
    )
    async with conn:
        yield conn


@pytest.fixture
async def standby_url(cluster: LocalCluster) -> str:
    """The URL of the API node on the site that does not hold the PostgreSQL leader."""
    leader = await leader_site(cluster.topo)
    other = next(s for s in cluster.topo.data_sites if s != leader)
    return cluster.topo.node_url(other).rstrip("/")


@pytest.fixture(autouse=True)
async def _tls_connections_close() -> AsyncIterator[None]:
    """aiohttp's graceful shutdown: a closed session's TLS connections finish their TLS
    shutdown on the event loop a moment later; give them that moment before the test's loop
    ends (aiohttp's documentation, "Graceful Shutdown"). Until no socket of the loop is open,
    0.25 s at most: a fixed 0.25 s after each of some 400 tests was 100 s of every CI run."""
    yield
    loop = asyncio.get_running_loop()
    for _ in range(TLS_SHUTDOWN_POLLS):
        if not _sockets_open(loop):
            break
        await asyncio.sleep(0.002)


TLS_SHUTDOWN_POLLS = 125  # of 2 ms: 0.25 s at most


def _sockets_open(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether a transport of `loop` still holds its socket. asyncio's selector loop keeps
    each transport it made in `_transports` (weakly) and closes the socket when the transport
    is done; another loop cannot be asked, so it gets the whole wait."""
    transports = getattr(loop, "_transports", None)
    if transports is None:
        return True
    for transport in list(transports.values()):
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.fileno() != -1:
            return True
    return False
