"""The control plane's pages on the running system (#12 item 3): a client off the monitoring
networks (here 127.0.0.2: locally only 127.0.0.1 and the sites' addresses are on them) gets
the API and the public notice through HAProxy but not /metrics or /health, neither through
HAProxy nor from a node directly unless it holds the monitoring key."""

from __future__ import annotations

import ssl
import warnings
from collections.abc import AsyncIterator

import aiohttp
import pytest

from deploy.harness import LocalCluster

pytestmark = pytest.mark.integration

OUTSIDER = "127.0.0.2"


@pytest.fixture
async def outsider(cluster: LocalCluster) -> AsyncIterator[aiohttp.ClientSession]:
    """A client whose connections come from 127.0.0.2; it trusts the system's CA (as `status
    --json` tells clients to) and has no client certificate."""
    connector = aiohttp.TCPConnector(local_addr=(OUTSIDER, 0), ssl=cluster.state.tls_client())
    async with aiohttp.ClientSession(connector=connector) as s:
        yield s


async def test_the_entry_serves_an_outsider_the_notice_but_no_control_page(
    cluster: LocalCluster, outsider: aiohttp.ClientSession
) -> None:
    """#12 item 3: through HAProxy, /v1/status answers anyone; /metrics, /health and the
    probes answer an outsider 404 problem+json (and 127.0.0.1, a monitoring address, 200)."""
    entry = cluster.topo.entry_url()
    async with outsider.get(f"{entry}/v1/status") as r:
        assert r.status == 200
    for path in ("/metrics", "/health", "/health/ready", "/health/live"):
        async with outsider.get(f"{entry}{path}") as r:
            assert r.status == 404, path
            assert r.content_type == "application/problem+json"
            assert "X-Request-Id" in r.headers
    async with cluster.session() as inside, inside.get(f"{entry}/health/ready") as r:
        assert r.status == 200


async def test_a_node_opens_its_control_pages_to_an_outsider_only_with_the_key(
    cluster: LocalCluster, outsider: aiohttp.ClientSession
) -> None:
    """#12 item 3: straight to a node, an outsider gets 403 on /metrics and /health, 200 with
    the monitoring key from the secrets folder; the probes stay open (HAProxy's checks)."""
    key = cluster.state.secret_file("monitoring-key").read_text().strip()
    node = cluster.topo.node_url(cluster.topo.data_sites[0])
    for path in ("/metrics", "/health"):
        async with outsider.get(f"{node}{path}") as r:
            assert r.status == 403, path
        async with outsider.get(f"{node}{path}", headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status == 200, path
    async with outsider.get(f"{node}/health/live") as r:
        assert r.status == 200


async def test_haproxys_stats_port_answers_only_the_inside_and_its_page_a_password(
    cluster: LocalCluster, outsider: aiohttp.ClientSession
) -> None:
    """#12 item 3: HAProxy's stats port refuses an outsider (403); from a monitoring address
    /metrics answers (Prometheus reads it) and the stats page wants the password from the
    secrets folder."""
    topo = cluster.topo
    stats = f"https://{topo.entry_host()}:{topo.entry.stats_port}"
    for path in ("/stats", "/metrics"):
        async with outsider.get(f"{stats}{path}") as r:
            assert r.status == 403, path
    password = cluster.state.secret_file("haproxy-stats").read_text().strip()
    async with cluster.session() as inside:
        async with inside.get(f"{stats}/metrics") as r:
            assert r.status == 200
        async with inside.get(f"{stats}/stats") as r:
            assert r.status == 401
        auth = {"Authorization": aiohttp.encode_basic_auth("rocars-admin", password)}
        async with inside.get(f"{stats}/stats", headers=auth) as r:
            assert r.status == 200


async def test_the_entry_speaks_https_only_and_plain_http_only_redirects(
    cluster: LocalCluster, outsider: aiohttp.ClientSession
) -> None:
    """#12 item 2: the API answers over HTTPS with HSTS; the plain HTTP port answers every
    request, a stolen key and all, with nothing but a redirect to the HTTPS entry; plain HTTP
    to the HTTPS port gets no answer; TLS below 1.2 is refused."""
    topo = cluster.topo
    entry = topo.entry_url()
    assert entry.startswith("https://")
    async with outsider.get(f"{entry}/v1/status") as r:
        assert r.status == 200
        assert r.headers["Strict-Transport-Security"].startswith("max-age=")
    assert topo.entry.http_port is not None
    plain = f"http://{topo.entry_host()}:{topo.entry.http_port}"
    stolen = {"Authorization": "Bearer rk_stolen_key"}
    for method in ("GET", "POST"):
        async with outsider.request(
            method, f"{plain}/v1/consignments?x=1", headers=stolen, allow_redirects=False
        ) as r:
            assert r.status == 308, method
            assert r.headers["Location"] == f"{entry}/v1/consignments?x=1"
            assert await r.read() == b""
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientError):
            async with s.get(f"http://{topo.entry_host()}:{topo.entry.port}/v1/status") as r:
                await r.read()
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(cafile=str(cluster.state.ca_bundle))
    with warnings.catch_warnings():  # naming the old versions is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        # At the default security level OpenSSL 3 itself will not offer TLS 1.0/1.1 ("legacy
        # sigalg disallowed"): level 0 makes the refusal HAProxy's, not this client's.
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.minimum_version = ssl.TLSVersion.TLSv1
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientError):
            async with s.get(f"{entry}/v1/status", ssl=old) as r:
                await r.read()


async def test_status_tells_clients_the_https_entry_and_what_to_trust(
    cluster: LocalCluster,
) -> None:
    """#12 item 5: `rocars cluster status --json` gives the `https://` entry and the CA file;
    a client trusting that file alone (and not the machine's public CAs) reaches the API."""
    _code, doc = cluster.status()
    assert doc["api"] == cluster.topo.entry_url()
    assert doc["api"].startswith("https://")
    ctx = ssl.create_default_context(cafile=doc["tls"]["ca"])
    async with aiohttp.ClientSession() as s, s.get(f"{doc['api']}/v1/status", ssl=ctx) as r:
        assert r.status == 200
