"""#12 item 2 on the real cluster, the control plane: etcd serves clients and peers over TLS
only and lets in only clients with a certificate from the system's CA; Patroni's REST API
answers only HTTPS, with a certificate that verifies against the CA for the site's address,
and only to clients with a certificate of their own."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import warnings
from pathlib import Path

import aiohttp
import pytest

from deploy import control_tls, etcd_auth, pki
from deploy.harness import LocalCluster
from kernel import tls

pytestmark = pytest.mark.integration

TIMEOUT = aiohttp.ClientTimeout(total=5)


def _admin(cluster: LocalCluster) -> ssl.SSLContext:
    return control_tls.context(cluster.state)


def _no_client_cert(cluster: LocalCluster) -> ssl.SSLContext:
    """Trusts the system's CA (so the server is checked) but presents nothing."""
    return tls.client_context(cluster.state.ca_bundle)


@pytest.fixture(scope="module")
def foreign_client(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> ssl.SSLContext:
    """A client certificate with the right name (`rocars-admin`) from another CA: trusts the
    system's CA for the server, presents the stranger's certificate."""
    other = pki.PkiDir(tmp_path_factory.mktemp("other-ca") / "pki")
    ca = pki.ensure_ca(other, label="somebody else")
    spec = pki.CertSpec("client-rocars-admin", "rocars-admin", pki.Usage.CLIENT)
    pki.issue(other, spec, ca, dt.datetime.now(dt.UTC))
    return tls.client_context(
        cluster.state.ca_bundle, cert=other.cert(spec.name), key=other.key(spec.name)
    )


async def _get(url: str, ctx: ssl.SSLContext | bool) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as s,
        s.get(url, ssl=ctx) as r,
    ):
        return r.status, await r.text()


async def _refused(url: str, ctx: ssl.SSLContext | bool) -> str:
    """The error a GET of `url` with `ctx` ends in (it must end in one)."""
    try:
        status, text = await _get(url, ctx)
    except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
        return repr(exc)
    raise AssertionError(f"{url} answered {status}: {text[:200]}")


def _etcd_version_urls(cluster: LocalCluster) -> list[str]:
    return [f"{url}/version" for url in cluster.topo.etcd_urls()]


async def test_etcd_answers_a_client_with_a_certificate_from_the_ca(cluster: LocalCluster) -> None:
    """#12 item 2, the control: every etcd member answers https with the operator's
    certificate, and its own certificate verifies against the CA for the member's address."""
    for url in _etcd_version_urls(cluster):
        status, text = await _get(url, _admin(cluster))
        assert status == 200, (url, text)
        assert "etcdserver" in text


async def test_etcd_refuses_a_client_without_a_certificate(cluster: LocalCluster) -> None:
    """#12 item 2 (client-cert-auth): a client that trusts the right CA but shows no
    certificate of its own cannot even get an answer from any member, password or not."""
    for url in _etcd_version_urls(cluster):
        await _refused(url, _no_client_cert(cluster))


async def test_etcd_refuses_a_client_certificate_from_another_ca(
    cluster: LocalCluster, foreign_client: ssl.SSLContext
) -> None:
    """#12 item 2: a certificate naming the right role but signed by another CA is refused."""
    for url in _etcd_version_urls(cluster):
        error = await _refused(url, foreign_client)
        assert any(w in error.lower() for w in ("alert", "disconnect", "reset")), error


async def test_etcd_has_no_plain_http_listener(cluster: LocalCluster) -> None:
    """#12 item 2: plain HTTP to etcd's client port gets nothing of etcd's (at most Go's
    "HTTP request to an HTTPS server" 400)."""
    for url in _etcd_version_urls(cluster):
        plain = url.replace("https://", "http://", 1)
        try:
            status, text = await _get(plain, False)
        except aiohttp.ClientError:
            continue
        assert status == 400, (plain, status, text)
        assert "etcdserver" not in text


def _old_client(cluster: LocalCluster) -> ssl.SSLContext:
    """A client with the operator's certificate whose TLS settings are set by the caller."""
    state = cluster.state
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(cafile=str(state.ca_bundle))
    old.load_cert_chain(
        state.pki / "client-rocars-admin.crt", state.pki / "client-rocars-admin.key"
    )
    return old


async def test_etcd_refuses_tls12_suites_without_forward_secret_aead(cluster: LocalCluster) -> None:
    """#12 item 2: over TLS 1.2, a client offering only CBC suites (which Go would accept by
    default) finds none etcd allows (its `cipher-suites`: ECDHE with AES-GCM or ChaCha20)."""
    old = _old_client(cluster)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    old.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA")
    for url in _etcd_version_urls(cluster):
        error = await _refused(url, old)
        assert "handshake failure" in error.lower(), error


async def test_etcd_refuses_tls_older_than_1_2(cluster: LocalCluster) -> None:
    """#12 item 2 (TLS 1.2+ only): a TLS 1.0/1.1 client with a valid certificate is refused
    (etcd 3.4's own floor, which its configuration cannot lower; a guard against a change)."""
    old = _old_client(cluster)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 offers TLS 1.0/1.1 only at level 0
    with warnings.catch_warnings():  # deprecated on purpose: this client is the old one
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    for url in _etcd_version_urls(cluster):
        error = await _refused(url, old)
        assert "handshake failure" in error.lower() or "version" in error.lower(), error


async def test_etcd_peers_talk_tls(cluster: LocalCluster) -> None:
    """#12 item 2: every member's peer URL is https (the member list, from a quorum), and a
    peer port lets in no client without a certificate from the CA."""
    async with cluster.session() as s:
        gw = etcd_auth.operator_gateway(s, cluster.topo)
        data = await gw.call("/v3/cluster/member/list", {})
    peers = sorted(u for m in data["members"] for u in m["peerURLs"])
    expected = sorted(f"https://{x.host}:{x.etcd.peer_port}" for x in cluster.topo.sites.values())
    assert peers == expected
    clients = sorted(u for m in data["members"] for u in m["clientURLs"])
    assert clients == sorted(cluster.topo.etcd_urls())
    for x in cluster.topo.sites.values():
        await _refused(f"https://{x.host}:{x.etcd.peer_port}/members", _no_client_cert(cluster))


async def test_patroni_serves_https_with_a_certificate_for_the_site_address(
    cluster: LocalCluster,
) -> None:
    """#12 item 2: each Patroni's REST API completes a TLS handshake that checks its
    certificate against the CA and the site's address, and answers GET /patroni."""
    for site in cluster.topo.data_sites:
        s = cluster.topo.sites[site]
        assert s.patroni is not None
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                s.host, s.patroni.port, ssl=_admin(cluster), server_hostname=s.host
            ),
            5,
        )
        peer = writer.get_extra_info("peercert")
        writer.close()
        await writer.wait_closed()
        sans = {v for _k, v in peer["subjectAltName"]}
        assert s.host in sans, sans
        status, text = await _get(f"{cluster.topo.patroni_url(site)}/patroni", _admin(cluster))
        assert status == 200, text


async def test_patroni_answers_neither_plain_http_nor_a_client_without_certificate(
    cluster: LocalCluster, foreign_client: ssl.SSLContext
) -> None:
    """#12 item 2: plain HTTP to Patroni's REST port gets no answer; over TLS, a client
    without a certificate, or with one from another CA, is turned away even for a GET."""
    for site in cluster.topo.data_sites:
        url = f"{cluster.topo.patroni_url(site)}/patroni"
        await _refused(url.replace("https://", "http://", 1), False)
        await _refused(url, _no_client_cert(cluster))
        await _refused(url, foreign_client)


def test_no_control_plane_url_is_plain_http(cluster: LocalCluster) -> None:
    """#12 item 2: the generated etcd, Patroni and node files name no http:// URL of etcd
    or Patroni."""
    config = cluster.state.config
    files = [*config.glob("etcd-*.yaml"), *config.glob("node-*.yaml")]
    files += [cluster.state.member_dir(s) / "patroni.yaml" for s in cluster.topo.data_sites]
    assert files
    for path in files:
        text = Path(path).read_text()
        for x in cluster.topo.sites.values():
            for port in (x.etcd.client_port, x.etcd.peer_port):
                assert f"http://{x.host}:{port}" not in text, path
            if x.patroni is not None:
                assert f"http://{x.host}:{x.patroni.port}" not in text, path
