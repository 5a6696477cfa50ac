"""Redis and Sentinel over TLS only (#12 item 2), without processes: the generated redis.conf
and sentinel.conf, the certificates they name, the node's settings and client, the exporter's
command line and targets, and the regeneration of the files Redis and Sentinel rewrite. The
same against the real cluster: tests/integration/test_tls_redis_live.py."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest
from redis.asyncio.sentinel import SentinelConnectionPool

from deploy import config_files, configgen, monitoring_config, pki, redis_acl
from deploy.process_specs import specs
from deploy.state import DEFAULT_TOPOLOGY, NETNS_TOPOLOGY, REPO_ROOT, SECRET_NAMES, DbUser, StateDir
from deploy.topology import Topology, load_topology
from node import redis_client
from node.config import NodeConfig, RedisTlsSettings

TOPOLOGIES = {
    "local": load_topology(DEFAULT_TOPOLOGY),
    "netns": load_topology(NETNS_TOPOLOGY),
    "production": load_topology(REPO_ROOT / "deploy" / "topology.production.yaml"),
}
PASSWORDS = {k: f"pw-{k}" for k in SECRET_NAMES}
PKI = pki.PkiDir(Path("/state/pki"))


def _settings(text: str) -> dict[str, list[str]]:
    """A redis.conf's directives: name -> every value it is given, in order."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            out.setdefault(name, []).append(value)
    return out


def _configs(topo: Topology) -> dict[str, tuple[int, str]]:
    """Every Redis and Sentinel file of `topo`, by certificate name, with its topology port."""
    out: dict[str, tuple[int, str]] = {}
    for site, s in topo.sites.items():
        text = configgen.sentinel_config(topo, site, Path("/d"), PASSWORDS, pki=PKI)
        out[f"sentinel-{site}"] = (s.sentinel.port, text)
        if s.redis is not None:
            text = configgen.redis_config(topo, site, Path("/d"), PASSWORDS, pki=PKI)
            out[f"redis-{site}"] = (s.redis.port, text)
    return out


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_redis_and_sentinel_listen_only_for_tls_and_require_our_certificates(name: str) -> None:
    """#12 item 2: every Redis and Sentinel of every topology has no plain listener (`port 0`,
    its topology port as `tls-port`), presents its own certificate, trusts the CA bundle,
    requires a client certificate, uses TLS for what it dials (replication, Sentinel to Redis
    and to its peers) and speaks TLS 1.2 or later."""
    topo = TOPOLOGIES[name]
    configs = _configs(topo)
    assert len(configs) == len(topo.sites) + len(topo.data_sites)
    for cert, (port, text) in configs.items():
        cfg = _settings(text)
        assert cfg["port"] == ["0"], cert
        assert cfg["tls-port"] == [str(port)], cert
        assert cfg["tls-cert-file"] == [str(PKI.cert(cert))], cert
        assert cfg["tls-key-file"] == [str(PKI.key(cert))], cert
        assert cfg["tls-ca-cert-file"] == [str(PKI.bundle)], cert
        assert cfg["tls-auth-clients"] == ["yes"], cert
        assert cfg["tls-replication"] == ["yes"], cert
        assert cfg["tls-protocols"] == ['"TLSv1.2 TLSv1.3"'], cert


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_each_certificate_they_name_is_planned_for_serving_and_dialling(name: str) -> None:
    """#12 item 2: the CA plans a certificate for every Redis and Sentinel, for the address
    clients dial, usable as server and as client (a replica and a Sentinel present it when
    they dial); the exporter has its own client certificate."""
    topo = TOPOLOGIES[name]
    plan = {spec.name: spec for spec in pki.plan(topo)}
    for cert in _configs(topo):
        spec = plan[cert]
        assert spec.usage is pki.Usage.SERVER_AND_CLIENT, cert
        host = topo.sites[cert.split("-", 1)[1]].host
        assert host in spec.sans, (cert, spec.sans)
    for role in (redis_acl.NODE_ROLE, redis_acl.OPERATOR_ROLE, redis_acl.EXPORTER_ROLE):
        assert plan[f"client-{role}"].usage is pki.Usage.CLIENT


def test_the_node_dials_redis_and_sentinel_with_tls_and_its_certificate(tmp_path: Path) -> None:
    """#12 item 2: the node's settings name the CA bundle and its own client certificate (no
    secret: paths), and its client uses our TLS connection for the Sentinels and for the
    primary, with contexts that trust only the system's CA, check the name dialled and start
    at TLS 1.2."""
    state = StateDir(tmp_path)
    folder = pki.PkiDir(state.pki)
    pki.issue_all(folder, pki.plan(TOPOLOGIES["local"]))
    for site in TOPOLOGIES["local"].data_sites:
        raw = configgen.node_config(TOPOLOGIES["local"], site, state_root=tmp_path)
        tls = NodeConfig.model_validate(raw).redis_tls
        assert tls == RedisTlsSettings(
            ca_file=folder.bundle,
            cert_file=folder.cert("client-rocars-node"),
            key_file=folder.key("client-rocars-node"),
        )
    bus = redis_client.RedisClient(
        [("127.0.0.1", 1), ("127.0.0.1", 2)], "rocars", name="t", tls_settings=tls
    )
    assert len(bus._sentinel.sentinels) == 2
    sources = []
    for sentinel in bus._sentinel.sentinels:
        kwargs = sentinel.connection_pool.connection_kwargs
        assert sentinel.connection_pool.connection_class is redis_client.TlsConnection
        sources.append(kwargs["tls_source"])
    pool = bus._client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.connection_class is redis_client.SentinelManagedTlsConnection
    sources.append(pool.connection_kwargs["tls_source"])
    for source in sources:
        ctx = source() if callable(source) else source
        assert isinstance(ctx, ssl.SSLContext)
        assert ctx.verify_mode is ssl.CERT_REQUIRED
        assert ctx.check_hostname
        assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
        # Only our CA: not the host's public ones.
        assert ctx.cert_store_stats()["x509_ca"] == len(pki.load_bundle(folder))


def test_the_exporter_scrapes_rediss_targets_with_its_own_certificate(tmp_path: Path) -> None:
    """#12 item 2: Prometheus asks the exporter about rediss:// addresses only, the exporter's
    password file is keyed by those, and it checks servers against the CA bundle and presents
    its own client certificate."""
    topo, state = TOPOLOGIES["local"], StateDir(tmp_path)
    targets = [t for _, t in monitoring_config.scrape_targets(topo)["redis"]]
    assert targets
    assert all(t.startswith("rediss://") for t in targets)
    argv = specs(topo, state)["redis-exporter"].argv
    assert f"-tls-ca-cert-file={state.ca_bundle}" in argv
    assert f"-tls-client-cert-file={state.pki / 'client-redis-exporter.crt'}" in argv
    assert f"-tls-client-key-file={state.pki / 'client-redis-exporter.key'}" in argv
    assert not any("skip-tls" in a for a in argv)


def test_a_tls_change_regenerates_the_files_redis_and_sentinel_rewrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#12 item 2: Redis's and Sentinel's files, which they rewrite themselves and which are
    otherwise kept as they are, are generated anew when their TLS settings change (so a
    running system's old plain files do not survive an upgrade)."""
    me = DbUser("me", os.getuid(), os.getgid())
    monkeypatch.setattr(DbUser, "current", classmethod(lambda cls: me))
    monkeypatch.setattr(StateDir, "runtime", property(lambda self: self.root / "pg"))
    state = StateDir(tmp_path / "state")
    topo = TOPOLOGIES["local"]
    config_files.write_configs(topo, state)
    files = [state.config / "redis-A.conf", state.config / "sentinel-C.conf"]
    for path in files:
        path.write_text(path.read_text() + "# rewritten by the process itself\n")
    config_files.write_configs(topo, state)
    assert all(p.read_text().endswith("itself\n") for p in files), "kept when nothing changed"
    real = configgen.redis_tls_lines

    def changed(port: int, folder: pki.PkiDir, cert: str) -> list[str]:
        return [*real(port, folder, cert), "tls-session-caching no"]

    monkeypatch.setattr(configgen, "redis_tls_lines", changed)
    config_files.write_configs(topo, state)
    for path in files:
        text = path.read_text()
        assert not text.endswith("itself\n"), path
        assert "tls-session-caching no" in text, path
