"""#12 item 2 for the control plane: etcd (clients and peers) and Patroni's REST API speak TLS
only, with client certificates from the system's CA, and every client of theirs is given the
context to dial with (no silent fallback to plain HTTP or the machine's trust store)."""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID

from deploy import configgen, control_tls, etcd_auth, pki
from deploy.state import DEFAULT_TOPOLOGY, NETNS_TOPOLOGY, StateDir
from deploy.topology import Topology, load_topology
from kernel import tls
from kernel.errors import ConfigError
from replication.etcd_gateway import EtcdGateway
from replication.patroni_rest import PatroniRest

TOPO = load_topology(DEFAULT_TOPOLOGY)
PKI = pki.PkiDir(Path("/state/pki"))
PASSWORDS = {
    "superuser": "su",
    "replication": "rep",
    "rewind": "rw",
    "patroni-rest": "rest",
    "etcd-patroni": "etcd",
}


@pytest.fixture(params=[DEFAULT_TOPOLOGY, NETNS_TOPOLOGY], ids=["loopback", "netns"])
def topo(request: pytest.FixtureRequest) -> Topology:
    path: Path = request.param
    return load_topology(path)


def test_etcd_serves_clients_and_peers_over_tls_with_client_certificates(topo: Topology) -> None:
    """#12 item 2: every etcd URL (client, peer, the initial cluster) is https; both sides
    present their own certificate (`etcd-<site>`, `etcd-peer-<site>`), trust the CA bundle and
    require a certificate from it (`client-cert-auth`); no automatic self-signed TLS."""
    for site, s in topo.sites.items():
        cfg = yaml.safe_load(configgen.etcd_config(topo, site, Path("/d"), PKI))
        client = f"https://{s.host}:{s.etcd.client_port}"
        peer = f"https://{s.host}:{s.etcd.peer_port}"
        assert (cfg["listen-client-urls"], cfg["advertise-client-urls"]) == (client, client)
        assert (cfg["listen-peer-urls"], cfg["initial-advertise-peer-urls"]) == (peer, peer)
        members = cfg["initial-cluster"].split(",")
        assert len(members) == len(topo.sites)
        assert all("=https://" in m for m in members), members
        for section, name in (
            ("client-transport-security", f"etcd-{site}"),
            ("peer-transport-security", f"etcd-peer-{site}"),
        ):
            assert cfg[section] == {
                "cert-file": f"/state/pki/{name}.crt",
                "key-file": f"/state/pki/{name}.key",
                "trusted-ca-file": "/state/pki/ca-bundle.pem",
                "client-cert-auth": True,
                "auto-tls": False,
            }


def test_etcd_offers_only_tls12_ecdsa_aead_suites() -> None:
    """#12 item 2 (TLS 1.2+ only): etcd 3.4 has no minimum-version setting, so its cipher
    suites are only ones that exist from TLS 1.2 on (ECDHE-ECDSA with AES-GCM or ChaCha20),
    which leaves a TLS 1.0/1.1 client nothing to agree on."""
    cfg = yaml.safe_load(configgen.etcd_config(TOPO, "A", Path("/d"), PKI))
    assert cfg["cipher-suites"]
    for suite in cfg["cipher-suites"]:
        assert suite.startswith("TLS_ECDHE_ECDSA_WITH_"), suite
        assert suite.endswith(("_GCM_SHA256", "_GCM_SHA384", "_CHACHA20_POLY1305")), suite


def test_every_certificate_etcd_is_given_is_planned() -> None:
    """The files etcd's configuration names are certificates deploy.pki issues (server and
    client usage for both: the JSON gateway and the peers dial with them)."""
    planned = {spec.name: spec for spec in pki.plan(TOPO)}
    for site in TOPO.sites:
        for name in (f"etcd-{site}", f"etcd-peer-{site}"):
            assert planned[name].usage is pki.Usage.SERVER_AND_CLIENT


def _patroni(topo: Topology, site: str) -> dict[str, Any]:
    return configgen.patroni_config(topo, site, Path(f"/rt/pg-{site}"), PASSWORDS)


def test_patroni_rest_api_is_https_only_and_asks_every_client_for_a_certificate(
    topo: Topology,
) -> None:
    """#12 item 2: Patroni's REST API serves its own certificate (the member's copy, which
    the postgres user can read) and requires a client certificate from the CA; the password
    still guards the unsafe methods; its own calls to the other member (`ctl`) present the
    same certificate and check the other's."""
    for site in topo.data_sites:
        cfg = _patroni(topo, site)
        tls_dir = f"/rt/pg-{site}/tls"
        rest = cfg["restapi"]
        assert rest["certfile"] == f"{tls_dir}/rest.crt"
        assert rest["keyfile"] == f"{tls_dir}/rest.key"
        assert rest["cafile"] == f"{tls_dir}/ca.pem"
        assert rest["verify_client"] == "required"
        assert rest["authentication"]["password"] == PASSWORDS["patroni-rest"]
        assert cfg["ctl"] == {
            "certfile": f"{tls_dir}/rest.crt",
            "keyfile": f"{tls_dir}/rest.key",
            "cacert": f"{tls_dir}/ca.pem",
        }


def test_patroni_dials_etcd_over_https_with_its_client_certificate(topo: Topology) -> None:
    """#12 item 2: Patroni's etcd3 section uses https, checks etcd against the CA and presents
    `client-patroni` (its copy in the member folder), besides its password user."""
    for site in topo.data_sites:
        etcd = _patroni(topo, site)["etcd3"]
        tls_dir = f"/rt/pg-{site}/tls"
        assert etcd["protocol"] == "https"
        assert etcd["cacert"] == f"{tls_dir}/ca.pem"
        assert (etcd["cert"], etcd["key"]) == (
            f"{tls_dir}/etcd-client.crt",
            f"{tls_dir}/etcd-client.key",
        )
        assert etcd["username"] == etcd_auth.PATRONI_USER


def test_member_folder_gets_patronis_certificates_with_private_keys() -> None:
    """Patroni runs as the postgres user, who cannot enter the 0700 pki folder: the member's
    tls folder gets copies of its REST certificate and its etcd client certificate, keys 0600,
    from the right pki files."""
    member = configgen.MemberTls.of(Path("/rt/pg-B"))
    copies = {dst: (src, mode) for src, dst, mode in member.copies(PKI, "B")}
    assert copies[member.rest_cert] == (PKI.cert("patroni-B"), 0o644)
    assert copies[member.rest_key] == (PKI.key("patroni-B"), 0o600)
    assert copies[member.etcd_cert] == (PKI.cert("etcd-client-patroni"), 0o644)
    assert copies[member.etcd_key] == (PKI.key("etcd-client-patroni"), 0o600)
    assert copies[member.ca] == (PKI.bundle, 0o644)
    keys = [dst for src, dst, mode in member.copies(PKI, "B") if src.suffix == ".key"]
    assert all(copies[k][1] == 0o600 for k in keys)
    assert len(keys) == 3


def test_control_plane_urls_are_https(topo: Topology) -> None:
    """#12 item 2: the topology names etcd and Patroni by https URLs, for every client."""
    assert all(u.startswith("https://") for u in topo.etcd_urls())
    for site in topo.data_sites:
        assert topo.patroni_url(site).startswith("https://")
        node = configgen.node_config(topo, site, state_root=Path("/s"))
        assert all(u.startswith("https://") for u in node["etcd_urls"])
        assert node["patroni_url"].startswith("https://")
        assert node["etcd_witness_url"].startswith("https://")


def test_each_etcd_user_dials_with_a_planned_client_certificate() -> None:
    """Every etcd user of deploy.etcd_auth has a client certificate the CA issues without a
    CommonName (etcd 3.4.23's gateway refuses one with a CN); root's is its own."""
    planned = {spec.name: spec for spec in pki.plan(TOPO)}
    assert set(etcd_auth.CERT_ROLE_OF) == set(etcd_auth.plan().users)
    for user in etcd_auth.CERT_ROLE_OF:
        spec = planned[etcd_auth.cert_of(user)]
        assert spec.common_name == ""
        assert spec.usage is pki.Usage.CLIENT
    assert etcd_auth.cert_of(etcd_auth.ROOT_USER) == "etcd-client-etcd-root"
    assert len({etcd_auth.cert_of(u) for u in etcd_auth.CERT_ROLE_OF}) == 4
    assert "prometheus" in pki.CLIENT_ROLES


async def test_clients_refuse_https_urls_without_a_tls_context() -> None:
    """#12 item 2: an etcd gateway or Patroni client given an https URL and no SSLContext
    is a ConfigError, never a call with the machine's public trust store."""
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ConfigError, match="TLS context"):
            EtcdGateway(session, ["https://127.0.0.1:1"])
        rest = PatroniRest(session)
        for call in (rest.member, rest.cluster, rest.is_primary):
            with pytest.raises(ConfigError, match="TLS context"):
                await call("https://127.0.0.1:1")
        with pytest.raises(ConfigError, match="TLS context"):
            await rest.reload("https://127.0.0.1:1")


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> StateDir:
    state = StateDir(tmp_path_factory.mktemp("state"))
    pki.issue_all(pki.PkiDir(state.pki), pki.plan(TOPO))
    return state


async def _mutual_tls_server(state: StateDir) -> AsyncIterator[str]:
    """A stand-in for etcd's gateway and Patroni's API on 127.0.0.1, with their TLS settings:
    `etcd-A`'s certificate, client certificates from the CA required."""
    folder = pki.PkiDir(state.pki)
    app = web.Application()

    async def kv_range(_: web.Request) -> web.Response:
        return web.json_response({"kvs": []})

    async def primary(_: web.Request) -> web.Response:
        return web.json_response({"role": "primary"})

    app.router.add_post("/v3/kv/range", kv_range)
    app.router.add_get("/primary", primary)
    runner = web.AppRunner(app)
    await runner.setup()
    ctx = tls.server_context(folder.cert("etcd-A"), folder.key("etcd-A"), client_ca=folder.bundle)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def mutual_tls_url(issued: StateDir) -> AsyncIterator[str]:
    async for url in _mutual_tls_server(issued):
        yield url


async def test_gateway_and_rest_client_talk_tls_with_the_role_certificate(
    issued: StateDir, mutual_tls_url: str
) -> None:
    """#12 item 2: with the operator's context (CA bundle plus `rocars-admin`'s certificate)
    the etcd gateway and the Patroni client reach a server that requires client
    certificates; the same session without a client certificate is turned away."""
    async with aiohttp.ClientSession() as session:
        ctx = control_tls.context(issued)
        assert await EtcdGateway(session, [mutual_tls_url], ssl=ctx).get("/k") is None
        assert await control_tls.patroni(session, issued).is_primary(mutual_tls_url)
        no_cert = tls.client_context(issued.ca_bundle)
        with pytest.raises(Exception, match="no etcd member answered"):
            await EtcdGateway(session, [mutual_tls_url], ssl=no_cert).get("/k")


def test_operator_context_is_reused_and_rebuilt_when_the_certificate_changes(
    issued: StateDir,
) -> None:
    """Readiness polls and drills make many clients: one context per role, rebuilt only when
    the role's certificate files change on disk (`rocars certs rotate`)."""
    first = control_tls.context(issued, "client-rocars-admin")
    assert control_tls.context(issued, "client-rocars-admin") is first
    assert control_tls.context(issued, "etcd-client-etcd-root") is not first
    pki.rotate_leaves(
        pki.PkiDir(issued.pki), [s for s in pki.plan(TOPO) if s.name == "client-rocars-admin"]
    )
    assert control_tls.context(issued, "client-rocars-admin") is not first


def test_without_certificates_the_operator_context_trusts_no_one(tmp_path: Path) -> None:
    """Before the system has a CA, an operator command's context verifies no server (its
    calls fail as unreachable, which is the truth), rather than raising or trusting the
    machine's public CAs."""
    ctx = control_tls.context(StateDir(tmp_path))
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert ctx.get_ca_certs() == []
    assert not os.listdir(tmp_path)


def test_etcd_client_certificates_carry_no_common_name(issued: StateDir) -> None:
    """#12 item 2: etcd 3.4.23's JSON gateway refuses every request (logins too) from a client
    certificate with a CommonName, so etcd's client certificates, and the certificate its
    gateway dials the member with, are issued without one."""
    folder = pki.PkiDir(issued.pki)
    names = [f"etcd-client-{r}" for r in pki.ETCD_CLIENT_ROLES] + ["etcd-A", "etcd-C"]
    for name in names:
        cert = x509.load_pem_x509_certificate(folder.cert(name).read_bytes())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME) == [], name
    report = pki.issue_all(folder, pki.plan(TOPO))
    assert not report.issued  # a CN-less certificate matches its spec: kept on a rerun
