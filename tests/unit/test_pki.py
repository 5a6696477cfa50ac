"""The private CA (#12 item 1): the certificate plan, issuing into a folder, rotation, a
production CA, expiry, the `rocars certs` commands and a real TLS handshake with the result."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from deploy import etcd_auth, pg_roles, pki, redis_acl
from deploy.cli import cli
from deploy.pki import CertSpec, PkiDir, PkiError, Usage
from deploy.state import DEFAULT_TOPOLOGY, NETNS_TOPOLOGY
from deploy.topology import Topology, load_topology, parse_topology

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
SERVER_AUTH, CLIENT_AUTH = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH


@pytest.fixture
def loopback() -> Topology:
    return load_topology(DEFAULT_TOPOLOGY)


@pytest.fixture
def netns() -> Topology:
    return load_topology(NETNS_TOPOLOGY)


@pytest.fixture
def folder(tmp_path: Path) -> PkiDir:
    return PkiDir(tmp_path / "pki")


@pytest.fixture
def issued(folder: PkiDir, loopback: Topology) -> PkiDir:
    pki.issue_all(folder, pki.plan(loopback), now=T0)
    return folder


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _ekus(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _by_name(specs: tuple[CertSpec, ...]) -> dict[str, CertSpec]:
    return {s.name: s for s in specs}


@pytest.fixture
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    value: int = request.param
    old = os.umask(value)
    try:
        yield value
    finally:
        os.umask(old)


# -- the plan --------------------------------------------------------------------------------


def test_plan_lists_every_process_of_every_site_and_each_client_role(loopback: Topology) -> None:
    """#12 item 1: the plan holds HAProxy, then per site etcd (server and peer) and Sentinel,
    per data site the node, PostgreSQL, Patroni's REST API and Redis, and one client
    certificate per role with `client-<role>` as CN; names are unique."""
    specs = pki.plan(loopback)
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    expected = {"haproxy"}
    for site in ("A", "B", "C"):
        expected |= {f"etcd-{site}", f"etcd-peer-{site}", f"sentinel-{site}"}
    for site in ("A", "B"):
        expected |= {f"node-{site}", f"postgres-{site}", f"patroni-{site}", f"redis-{site}"}
    expected |= {f"client-{role}" for role in pki.CLIENT_ROLES}
    expected |= {f"etcd-client-{role}" for role in pki.ETCD_CLIENT_ROLES}
    # The monitoring processes' pages (#12 item 2), where the topology runs them.
    w = loopback.witness_site
    expected |= {f"prometheus-{w}", f"alertmanager-{w}", f"redis-exporter-{w}"}
    expected |= {f"postgres-exporter-{s}" for s in loopback.data_sites}
    assert set(names) == expected
    by = _by_name(specs)
    for role in ("rocars-node", "patroni", "replicator", "rewind", "etcd-root", "haproxy"):
        spec = by[f"client-{role}"]
        assert spec.common_name == f"client-{role}"
        assert spec.usage is Usage.CLIENT
        assert spec.sans == ()
    assert not any(s.site == "C" and s.name.startswith(("node", "postgres")) for s in specs)


def test_plan_usages_follow_who_also_dials_with_its_own_certificate(loopback: Topology) -> None:
    """#12 item 1: etcd (gRPC gateway, peers), Redis (replication), Sentinel and Patroni's REST
    API present their certificate as clients too; HAProxy, the node and PostgreSQL only serve."""
    by = _by_name(pki.plan(loopback))
    for name in ("etcd-A", "etcd-peer-B", "redis-A", "sentinel-C", "patroni-B"):
        assert by[name].usage is Usage.SERVER_AND_CLIENT, name
    for name in ("haproxy", "node-A", "postgres-B"):
        assert by[name].usage is Usage.SERVER, name
    assert by["haproxy"].combined_pem
    assert by["client-haproxy"].combined_pem
    assert not by["node-A"].combined_pem


def test_plan_names_the_loopback_address_and_localhost_locally(loopback: Topology) -> None:
    """#12 item 1: on the loopback topology every server certificate names 127.0.0.1 (an IP
    SAN) and localhost."""
    for spec in pki.plan(loopback):
        if spec.usage is not Usage.CLIENT:
            assert spec.ip_addresses == (ipaddress.ip_address("127.0.0.1"),), spec.name
            assert spec.dns_names == ("localhost",), spec.name


def test_plan_names_each_sites_namespace_address(netns: Topology) -> None:
    """#12 item 1: in the namespaced topology each site's certificates name that site's own
    address (and not loopback), and HAProxy's names the hub address clients dial."""
    by = _by_name(pki.plan(netns))
    assert by["haproxy"].sans == ("10.77.13.254",)
    for site in ("A", "B", "C"):
        host = netns.sites[site].host
        assert by[f"etcd-peer-{site}"].sans == (host,)
        assert by[f"sentinel-{site}"].sans == (host,)
    assert by["postgres-B"].sans == (netns.sites["B"].host,)


def test_plan_puts_a_host_name_in_a_dns_san() -> None:
    """#12 item 1: a production topology naming hosts by DNS name gets DNS SANs, not IPs."""
    raw = yaml.safe_load((DEFAULT_TOPOLOGY.parent / "topology.production.yaml").read_text())
    raw["sites"]["A"]["host"] = "db-a.customs.example"
    by = _by_name(pki.plan(parse_topology(raw)))
    assert by["postgres-A"].dns_names == ("db-a.customs.example",)
    assert by["postgres-A"].ip_addresses == ()
    assert by["postgres-B"].sans == ("198.51.100.10",)


# -- issuing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o077, 0o022], indirect=True)
def test_keys_are_0600_certificates_0644_and_the_folder_0700(
    folder: PkiDir, loopback: Topology, umask: int
) -> None:
    """#12 item 1: whatever the umask, every private key (CA's, leaves', HAProxy's combined
    file) is 0600, every certificate and the bundle 0644, the folder 0700."""
    pki.issue_all(folder, pki.plan(loopback), now=T0)
    assert _mode(folder.root) == 0o700
    files = list(folder.root.iterdir())
    assert files
    for path in files:
        secret = path.suffix in (".key", ".pem") and path.name != "ca-bundle.pem"
        assert _mode(path) == (0o600 if secret else 0o644), path.name
    assert _mode(folder.ca_key) == 0o600
    assert _mode(folder.combined("haproxy")) == 0o600
    assert not [p for p in files if p.name.endswith(".tmp")]


def test_an_existing_wider_folder_is_narrowed_to_0700(folder: PkiDir, loopback: Topology) -> None:
    """#12 item 1: a pki folder created earlier with mode 0755 becomes 0700."""
    folder.root.mkdir(mode=0o755)
    os.chmod(folder.root, 0o755)
    pki.issue_all(folder, pki.plan(loopback), now=T0)
    assert _mode(folder.root) == 0o700


def test_private_keys_are_created_0600_never_chmodded_after(
    folder: PkiDir, loopback: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#12 item 1: key files are opened with mode 0600 at creation (O_EXCL), so no moment
    exists where a key is on disk with a wider mode."""
    created: list[tuple[str, int]] = []
    real_open = os.open

    def spy(path: str | os.PathLike[str], flags: int, mode: int = 0o777, **kw: object) -> int:
        if flags & os.O_CREAT:
            created.append((os.fspath(path), mode))
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", spy)
    pki.issue_all(folder, pki.plan(loopback), now=T0)
    keys = [(p, m) for p, m in created if ".key." in p or (".pem." in p and "bundle" not in p)]
    assert len(keys) == len(pki.plan(loopback)) + 1 + 2  # leaves, the CA, two combined files
    assert all(m == 0o600 for _, m in keys), keys


def test_server_certificates_verify_for_their_address_with_server_auth(
    issued: PkiDir, loopback: Topology
) -> None:
    """#12 item 1: each server certificate chains to the bundle's CA under cryptography's
    verifier for the address in its SAN (127.0.0.1 and localhost), and carries serverAuth."""
    store = verification.Store(pki.load_bundle(issued))
    for spec in pki.plan(loopback):
        if spec.usage is Usage.CLIENT:
            continue
        cert = _cert(issued.cert(spec.name))
        for subject in (
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.DNSName("localhost"),
        ):
            verifier = (
                verification.PolicyBuilder()
                .store(store)
                .time(T0 + dt.timedelta(days=1))
                .build_server_verifier(subject)
            )
            chain = verifier.verify(cert, [])
            assert chain[-1] == pki.load_bundle(issued)[0]
        assert SERVER_AUTH in _ekus(cert)
        serves_only = spec.name.startswith(
            ("haproxy", "node-", "postgres-", "prometheus-", "alertmanager-", "redis-exporter-")
        )
        assert (CLIENT_AUTH in _ekus(cert)) != serves_only, spec.name


def test_server_certificate_does_not_verify_for_another_address(issued: PkiDir) -> None:
    """#12 item 1: node-A's certificate is refused for an address it does not name."""
    store = verification.Store(pki.load_bundle(issued))
    verifier = (
        verification.PolicyBuilder()
        .store(store)
        .time(T0 + dt.timedelta(days=1))
        .build_server_verifier(x509.IPAddress(ipaddress.ip_address("10.0.0.9")))
    )
    with pytest.raises(verification.VerificationError):
        verifier.verify(_cert(issued.cert("node-A")), [])


def test_client_certificates_carry_the_role_and_only_client_auth(
    issued: PkiDir, loopback: Topology
) -> None:
    """#12 item 1: each role's certificate is signed by the CA, has CN `client-<role>` and
    only the clientAuth EKU (it cannot serve TLS), and its key belongs to it."""
    ca = _cert(issued.ca_cert)
    for role in pki.CLIENT_ROLES:
        cert = _cert(issued.cert(f"client-{role}"))
        cert.verify_directly_issued_by(ca)
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert cn == f"client-{role}"
        assert _ekus(cert) == {CLIENT_AUTH}
        key = serialization.load_pem_private_key(
            issued.key(f"client-{role}").read_bytes(), password=None
        )
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.curve.name == "secp256r1"
        assert key.public_key() == cert.public_key()


def test_combined_pem_holds_the_certificate_and_its_key(issued: PkiDir) -> None:
    """#12 item 1: HAProxy's combined file is its certificate followed by its key."""
    data = issued.combined("haproxy").read_bytes()
    assert data == issued.cert("haproxy").read_bytes() + issued.key("haproxy").read_bytes()


def test_issue_again_keeps_the_ca_and_every_key(issued: PkiDir, loopback: Topology) -> None:
    """#12 item 1: issuing twice changes nothing: same CA, same keys, same certificates."""
    before = {p.name: p.read_bytes() for p in issued.root.iterdir()}
    report = pki.issue_all(issued, pki.plan(loopback), now=T0 + dt.timedelta(days=3))
    assert report.issued == ()
    assert len(report.kept) == len(pki.plan(loopback))
    assert {p.name: p.read_bytes() for p in issued.root.iterdir()} == before


def test_issue_replaces_only_what_is_missing_or_no_longer_matches(
    issued: PkiDir, loopback: Topology, netns: Topology
) -> None:
    """#12 item 1: a deleted key, and certificates whose addresses changed in the topology,
    are reissued; the rest and the CA stay."""
    ca_key = issued.ca_key.read_bytes()
    issued.key("redis-B").unlink()
    report = pki.issue_all(issued, pki.plan(loopback), now=T0)
    assert report.issued == ("redis-B",)
    report = pki.issue_all(issued, pki.plan(netns), now=T0)
    assert "etcd-A" in report.issued
    assert set(report.kept) == {f"client-{r}" for r in pki.CLIENT_ROLES} | {
        f"etcd-client-{r}" for r in pki.ETCD_CLIENT_ROLES
    }
    assert issued.ca_key.read_bytes() == ca_key


def test_expired_certificates_are_reissued(issued: PkiDir, loopback: Topology) -> None:
    """#12 item 1: after a leaf's expiry, `issue` reissues it under the same CA."""
    ca = issued.ca_cert.read_bytes()
    report = pki.issue_all(issued, pki.plan(loopback), now=T0 + pki.LEAF_VALIDITY)
    assert len(report.issued) == len(pki.plan(loopback))
    assert issued.ca_cert.read_bytes() == ca


def test_half_a_ca_is_refused_with_what_to_do(issued: PkiDir, loopback: Topology) -> None:
    """#12 item 1: a CA certificate without its key is not silently replaced (that would
    orphan every certificate): the error names the missing file and the way out."""
    issued.ca_key.unlink()
    with pytest.raises(PkiError, match=r"ca\.key is missing: restore it from a backup"):
        pki.issue_all(issued, pki.plan(loopback), now=T0)


# -- rotation --------------------------------------------------------------------------------


def test_rotate_gives_every_leaf_a_new_key_and_keeps_the_ca(
    issued: PkiDir, loopback: Topology
) -> None:
    """#12 item 1: `rotate` reissues every leaf with a new key from the unchanged CA."""
    specs = pki.plan(loopback)
    ca = (issued.ca_cert.read_bytes(), issued.ca_key.read_bytes(), issued.bundle.read_bytes())
    keys = {s.name: issued.key(s.name).read_bytes() for s in specs}
    names = pki.rotate_leaves(issued, specs, now=T0 + dt.timedelta(days=1))
    assert set(names) == set(keys)
    assert (issued.ca_cert.read_bytes(), issued.ca_key.read_bytes()) == ca[:2]
    assert issued.bundle.read_bytes() == ca[2]
    ca_cert = _cert(issued.ca_cert)
    for spec in specs:
        assert issued.key(spec.name).read_bytes() != keys[spec.name], spec.name
        _cert(issued.cert(spec.name)).verify_directly_issued_by(ca_cert)
    assert _mode(issued.key("node-A")) == 0o600


def test_rotate_replaces_files_and_never_rewrites_them_in_place(
    issued: PkiDir, loopback: Topology
) -> None:
    """#12 item 1: a reader holding the old file keeps reading the whole old file (a new inode
    is moved into place), and no temporary file is left behind."""
    path = issued.cert("postgres-A")
    old = path.read_bytes()
    inode = path.stat().st_ino
    with path.open("rb") as held:
        pki.rotate_leaves(issued, (_by_name(pki.plan(loopback))["postgres-A"],), now=T0)
        assert held.read() == old
    assert path.stat().st_ino != inode
    assert path.read_bytes() != old
    assert not [p for p in issued.root.iterdir() if p.name.endswith(".tmp")]


def test_a_failed_write_leaves_the_old_files_whole(
    issued: PkiDir, loopback: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#12 item 1: when writing fails midway (disk full), the key and certificate in place
    are the old pair and no temporary file remains."""
    spec = _by_name(pki.plan(loopback))["redis-A"]
    before = (issued.key("redis-A").read_bytes(), issued.cert("redis-A").read_bytes())
    real_write = os.write
    calls = {"n": 0}

    def failing(fd: int, data: bytes | memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", failing)
    with pytest.raises(OSError, match="No space"):
        pki.rotate_leaves(issued, (spec,), now=T0)
    monkeypatch.undo()
    assert (issued.key("redis-A").read_bytes(), issued.cert("redis-A").read_bytes()) == before
    assert not [p for p in issued.root.iterdir() if p.name.endswith(".tmp")]


def test_rotate_ca_bundles_new_and_old_then_leaves_move_then_old_is_dropped(
    issued: PkiDir, loopback: Topology
) -> None:
    """#12 item 1: `rotate --ca` makes a new CA and a bundle of new + old in which the current
    leaves still verify; `rotate` then signs leaves with the new CA; `--drop-old-ca` leaves
    only the new CA in the bundle."""
    specs = pki.plan(loopback)
    old_ca = _cert(issued.ca_cert)
    old_key = issued.ca_key.read_bytes()
    leaf_before = issued.cert("etcd-A").read_bytes()
    pki.rotate_ca(issued, now=T0 + dt.timedelta(days=1))
    new_ca = _cert(issued.ca_cert)
    assert new_ca != old_ca
    assert issued.ca_key.read_bytes() != old_key
    assert pki.load_bundle(issued) == [new_ca, old_ca]
    assert new_ca.subject != old_ca.subject
    assert issued.cert("etcd-A").read_bytes() == leaf_before  # step a leaves leaves alone
    assert pki.issue_all(issued, specs, now=T0 + dt.timedelta(days=1)).issued == ()

    pki.rotate_leaves(issued, specs, now=T0 + dt.timedelta(days=2))
    for spec in specs:
        _cert(issued.cert(spec.name)).verify_directly_issued_by(new_ca)
    pki.drop_old_ca(issued)
    assert pki.load_bundle(issued) == [new_ca]


def test_rotate_before_any_ca_says_to_issue_first(folder: PkiDir, loopback: Topology) -> None:
    """#12 item 1: rotating an empty folder fails with the command to run first."""
    with pytest.raises(PkiError, match="run 'rocars certs issue' first"):
        pki.rotate_leaves(folder, pki.plan(loopback))
    with pytest.raises(PkiError, match="run 'rocars certs issue' first"):
        pki.rotate_ca(folder)


# -- a production CA -------------------------------------------------------------------------


def _external_ca(where: Path, *, rsa_key: bool = False, ca: bool = True) -> pki.ExternalCa:
    where.mkdir(parents=True, exist_ok=True)
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if rsa_key
        else ec.generate_private_key(ec.SECP384R1())
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Customs Root {where.name}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0 - dt.timedelta(days=10))
        .not_valid_after(T0 + dt.timedelta(days=200))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    paths = pki.ExternalCa(where / "root.crt", where / "root.key")
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.mark.parametrize("rsa_key", [False, True], ids=["ecdsa", "rsa"])
def test_a_production_ca_signs_everything_and_its_key_stays_where_it_is(
    folder: PkiDir, loopback: Topology, tmp_path: Path, rsa_key: bool
) -> None:
    """#12 item 1: given a production CA's files, every leaf is signed by it, the folder holds
    its certificate (trusted via the bundle) but no CA key, and later runs reuse it unasked;
    leaves do not outlive it."""
    ext = _external_ca(tmp_path / "corp", rsa_key=rsa_key)
    specs = pki.plan(loopback)
    pki.issue_all(folder, specs, external=ext, now=T0)
    root = _cert(ext.cert)
    assert _cert(folder.ca_cert) == root
    assert pki.load_bundle(folder) == [root]
    assert not folder.ca_key.exists()
    for spec in specs:
        leaf = _cert(folder.cert(spec.name))
        leaf.verify_directly_issued_by(root)
        assert leaf.not_valid_after_utc <= root.not_valid_after_utc
    pki.rotate_leaves(folder, specs, now=T0)  # no --ca-cert needed again
    _cert(folder.cert("node-B")).verify_directly_issued_by(root)
    assert pki.issue_all(folder, specs, now=T0).issued == ()


def test_switching_to_a_production_ca_keeps_the_old_one_trusted(
    issued: PkiDir, loopback: Topology, tmp_path: Path
) -> None:
    """#12 item 1: moving a generated CA to a production one is a CA rotation: the old CA
    stays in the bundle, its key is removed, and rotating a production CA without its new
    files says how."""
    generated = _cert(issued.ca_cert)
    ext = _external_ca(tmp_path / "corp")
    pki.rotate_ca(issued, external=ext, now=T0)
    assert pki.load_bundle(issued) == [_cert(ext.cert), generated]
    assert not issued.ca_key.exists()
    with pytest.raises(PkiError, match=r"rotate --ca --ca-cert NEW\.crt --ca-key NEW\.key"):
        pki.rotate_ca(issued, now=T0)


def test_a_production_ca_that_is_not_a_ca_or_not_its_key_is_refused(
    folder: PkiDir, loopback: Topology, tmp_path: Path
) -> None:
    """#12 item 1: a leaf given as CA, a key of another certificate, or files from the pki
    folder itself are refused with what is wrong."""
    not_ca = _external_ca(tmp_path / "leaf", ca=False)
    with pytest.raises(PkiError, match="is not a CA certificate"):
        pki.issue_all(folder, pki.plan(loopback), external=not_ca, now=T0)
    one, two = _external_ca(tmp_path / "one"), _external_ca(tmp_path / "two")
    with pytest.raises(PkiError, match="is not the key of"):
        pki.issue_all(folder, (), external=pki.ExternalCa(one.cert, two.key), now=T0)
    pki.issue_all(folder, (), now=T0)
    own = pki.ExternalCa(folder.ca_cert, folder.ca_key)
    with pytest.raises(PkiError, match="not from"):
        pki.issue_all(folder, (), external=own, now=T0)


# -- expiry ----------------------------------------------------------------------------------


def test_days_left_follow_the_injected_clock(issued: PkiDir, loopback: Topology) -> None:
    """#12 item 1: days left are whole days to expiry at the given time: 265 for a leaf 100
    days into its 365, the CA's own count, negative once expired; `expiring` names what is
    within the renewal window or missing."""
    specs = pki.plan(loopback)
    rows = {r.name: r for r in pki.inventory(issued, specs, now=T0 + dt.timedelta(days=100))}
    assert rows["node-A"].days_left == 265
    hour_later = pki.inventory(issued, specs, now=T0 + dt.timedelta(days=100, hours=1))
    assert {r.name: r.days_left for r in hour_later}["node-A"] == 264  # whole days only
    assert rows["ca"].days_left == 3650 - 100
    assert rows["client-patroni"].subject == "client-patroni"
    assert rows["redis-B"].sans == ("localhost", "127.0.0.1")
    late = pki.inventory(issued, specs, now=T0 + dt.timedelta(days=340))
    assert set(pki.expiring(late)) == {s.name for s in specs}
    gone = {r.name: r for r in pki.inventory(issued, specs, now=T0 + dt.timedelta(days=400))}
    assert gone["node-A"].days_left == -35
    assert pki.expiring(pki.inventory(issued, specs, now=T0 + dt.timedelta(days=1))) == []


def test_inventory_marks_missing_certificates_and_the_bundles_old_ca(
    issued: PkiDir, loopback: Topology
) -> None:
    """#12 item 1: a planned certificate without a file is listed with no dates (and is
    `expiring`); during a CA rotation the old CA is listed too."""
    issued.cert("sentinel-B").unlink()
    pki.rotate_ca(issued, now=T0)
    rows = {r.name: r for r in pki.inventory(issued, pki.plan(loopback), now=T0)}
    assert rows["sentinel-B"].missing
    assert rows["sentinel-B"].days_left is None
    assert "sentinel-B" in pki.expiring(rows.values())
    assert "ca-bundle[1]" in rows


# -- the command line ------------------------------------------------------------------------


def test_certs_commands_issue_list_and_rotate(tmp_path: Path) -> None:
    """#12 item 1: `rocars certs issue` creates everything, a second run keeps it all, `list
    --json` shows every certificate with days left, `rotate` reissues, `rotate --ca` bundles."""
    runner = CliRunner()
    state = ["--state-dir", str(tmp_path / "var")]
    first = runner.invoke(cli, ["certs", "issue", *state])
    assert first.exit_code == 0, first.output
    assert "haproxy" in first.output
    again = runner.invoke(cli, ["certs", "issue", *state])
    assert again.exit_code == 0, again.output
    assert "issued: nothing" in again.output
    listed = runner.invoke(cli, ["certs", "list", "--json", *state])
    assert listed.exit_code == 0, listed.output
    doc = json.loads(listed.output)
    names = {row["name"] for row in doc}
    assert names == {"ca"} | {s.name for s in pki.plan(load_topology(DEFAULT_TOPOLOGY))}
    assert all(row["days_left"] >= 364 for row in doc)
    table = runner.invoke(cli, ["certs", "list", *state])
    assert "DAYS LEFT" in table.output
    assert "etcd-peer-C" in table.output
    key = (tmp_path / "var" / "pki" / "node-A.key").read_bytes()
    rotated = runner.invoke(cli, ["certs", "rotate", *state])
    assert rotated.exit_code == 0, rotated.output
    assert (tmp_path / "var" / "pki" / "node-A.key").read_bytes() != key
    key = (tmp_path / "var" / "pki" / "node-A.key").read_bytes()
    new_ca = runner.invoke(cli, ["certs", "rotate", "--ca", *state])
    assert new_ca.exit_code == 0, new_ca.output
    assert (tmp_path / "var" / "pki" / "node-A.key").read_bytes() == key  # leaves wait
    assert "rocars certs rotate --drop-old-ca" in new_ca.output
    assert len(pki.load_bundle(PkiDir(tmp_path / "var" / "pki"))) == 2


def test_certs_errors_say_what_to_do(tmp_path: Path) -> None:
    """#12 item 1: rotating before issuing, half a production CA, and contradictory flags exit
    2 with a message naming the fix."""
    runner = CliRunner()
    state = ["--state-dir", str(tmp_path / "var")]
    early = runner.invoke(cli, ["certs", "rotate", *state])
    assert early.exit_code == 2
    assert "run 'rocars certs issue' first" in early.output
    ext = _external_ca(tmp_path / "corp")
    half = runner.invoke(cli, ["certs", "issue", "--ca-cert", str(ext.cert), *state])
    assert half.exit_code == 2
    assert "give both --ca-cert and --ca-key" in half.output
    both = runner.invoke(cli, ["certs", "rotate", "--ca", "--drop-old-ca", *state])
    assert both.exit_code == 2
    assert "pick one" in both.output
    adopted = runner.invoke(
        cli, ["certs", "issue", "--ca-cert", str(ext.cert), "--ca-key", str(ext.key), *state]
    )
    assert adopted.exit_code == 0, adopted.output
    own = runner.invoke(cli, ["certs", "rotate", "--ca", *state])
    assert own.exit_code == 2
    assert "--ca-cert NEW.crt --ca-key NEW.key" in own.output


# -- a real TLS handshake --------------------------------------------------------------------


def _server_context(folder: PkiDir, name: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(folder.bundle))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(str(folder.cert(name)), str(folder.key(name)))
    return ctx


def _client_context(trust: PkiDir, identity: tuple[PkiDir, str] | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(trust.bundle))
    if identity is not None:
        where, name = identity
        ctx.load_cert_chain(str(where.cert(name)), str(where.key(name)))
    return ctx


async def _exchange(port: int, ctx: ssl.SSLContext) -> str:
    """One line to the server and its answer; the error's name when TLS refuses."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"), 10
        )
    except (ssl.SSLError, ConnectionError) as exc:
        return f"refused: {exc!r}"
    try:
        writer.write(b"hello\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.readline(), 10)
        return answer.decode().strip() or "refused: closed"
    except (ssl.SSLError, ConnectionError) as exc:
        return f"refused: {exc!r}"
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()


async def test_tls_handshake_with_issued_certificates(tmp_path: Path) -> None:
    """#12 item 1: a TLS server with node-A's certificate that requires client certificates
    accepts a client presenting the `haproxy` role certificate (and sees its CN), and refuses
    a client without a certificate and one whose certificate comes from another CA."""
    specs = pki.plan(load_topology(DEFAULT_TOPOLOGY))
    issued, other = PkiDir(tmp_path / "pki"), PkiDir(tmp_path / "other-pki")
    pki.issue_all(issued, specs)  # valid now, for the handshake's own clock
    pki.issue_all(other, specs)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, _ctx: None)  # refused handshakes are expected

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readline()
            peer = writer.get_extra_info("peercert")
            # Without a verified client certificate there is no subject: say so, so that a
            # server accepting anonymous clients is seen.
            cn = dict(item[0] for item in peer["subject"])["commonName"] if peer else "nobody"
            writer.write(f"hello {cn}\n".encode())
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(
        answer, "127.0.0.1", 0, ssl=_server_context(issued, "node-A")
    )
    port = server.sockets[0].getsockname()[1]
    try:
        good = await _exchange(port, _client_context(issued, (issued, "client-haproxy")))
        anonymous = await _exchange(port, _client_context(issued, None))
        foreign = await _exchange(port, _client_context(issued, (other, "client-haproxy")))
    finally:
        server.close()
        await server.wait_closed()
    assert good == "hello client-haproxy"
    assert anonymous.startswith("refused"), anonymous
    assert foreign.startswith("refused"), foreign


@pytest.mark.parametrize(
    "path",
    [
        DEFAULT_TOPOLOGY,
        NETNS_TOPOLOGY,
        DEFAULT_TOPOLOGY.parent / "topology.netns-vip.yaml",
        DEFAULT_TOPOLOGY.parent / "topology.production.yaml",
    ],
)
def test_no_certificate_is_named_after_a_user_of_etcd_postgresql_or_redis(path: Path) -> None:
    """#12 item 3 (found by the audit): etcd with client-cert-auth logs a gRPC client in as the
    user its certificate's CN names, without a password, so a node's certificate with CN
    `rocars-node` could write the contingency keys. No certificate of the plan may carry the
    name of an etcd user (root included), a PostgreSQL role or a Redis or Sentinel ACL user:
    the certificate admits a member of the system, the password says which."""
    users = set(etcd_auth.plan().users) | {etcd_auth.ROOT_USER}
    users |= {
        pg_roles.APP_USER,
        pg_roles.OWNER_USER,
        pg_roles.MONITOR_USER,
        pg_roles.READER_USER,
        pg_roles.SUPERUSER,
        pg_roles.REPLICATION_USER,
        pg_roles.REWIND_USER,
    }
    users |= {u.name for u in (*redis_acl.REDIS_USERS, *redis_acl.SENTINEL_USERS)}
    named = {s.name: s.common_name for s in pki.plan(load_topology(path)) if s.common_name}
    assert {name: cn for name, cn in named.items() if cn in users} == {}
    assert named["client-rocars-node"] == "client-rocars-node"
