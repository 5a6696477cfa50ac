"""The private certificate authority behind every TLS link of the system (#12 item 1).

One CA per system, generated into the state folder (`<state>/pki/`, mode 0700, never in git),
issues a certificate per process and site and one per client role, all ECDSA P-256:

    ca.crt, ca.key          the current CA (key 0600); absent key: a production CA's own files,
                            whose paths `ca-source.json` records (its key is never copied here)
    ca-bundle.pem           what every component trusts: the current CA, plus the previous one
                            during a CA rotation
    <name>.crt, <name>.key  a process's certificate (e.g. `etcd-A`, `etcd-peer-A`, `haproxy`) or
                            a client role's (`client-patroni`); keys 0600, certificates 0644
    <name>.pem              certificate and key in one file (0600) for HAProxy, which reads both
                            from one path

`plan(topology)` lists every certificate the system needs; it is pure, so the generated
configuration and the tests share one list. Server certificates name the address clients dial
(the site's host from the topology, or the hub address for HAProxy in the namespaced layout;
`localhost` too when that is loopback). A client certificate's CN is `client-<role>`
(`client_common_name`), never the name of a user of etcd, PostgreSQL or Redis: etcd with
`--client-cert-auth` logs a gRPC client in as the user its certificate's CN names, with no
password (found by the #12 audit: the nodes' certificate with CN `rocars-node` read Patroni's
leader key through etcdctl), so the certificates prove membership of the system and the
passwords decide who the client is. Processes that also dial their peers with their own
certificate get both serverAuth and clientAuth: etcd (its gRPC gateway dials the server with
the server certificate, etcd #9785), etcd peers, Redis (replication), Sentinel and Patroni's
REST API.

Every file is written to a temporary file in the same folder (created with its final mode),
fsynced, then moved into place with os.replace: a process reading a certificate mid-rotation
sees the old file or the new one, never half of one. A key and its certificate are two files:
both are staged first and replaced back to back, so the window in which a per-handshake reader
(etcd) can see a new key with the old certificate is two system calls wide; that handshake
fails and the next one succeeds.

Rotation (`rocars certs rotate`), no downtime where the component allows. Every step below
is automatic on a running system: after writing the files, `rotate` (and `--ca`,
`--drop-old-ca`) tells each component as listed here (deploy/cert_reload.py), waits for each
(a listener presenting the new serial, a restarted member back in its quorum) and prints one
line per component; `--files-only` leaves that to `rocars certs reload [--trust]`.

1. Leaf certificates (`rocars certs rotate`): every leaf gets a new key and certificate from
   the current CA, whose trust is unchanged. Then tell each component:
   - PostgreSQL: re-reads ssl_cert_file/ssl_key_file/ssl_ca_file on reload (SIGHUP, `pg_ctl
     reload`) since PostgreSQL 10. Patroni manages it: a SIGHUP to Patroni (or
     `patronictl reload`, i.e. POST /reload, which runs the same handler) rewrites the
     configuration and reloads PostgreSQL.
   - Patroni REST API: the same SIGHUP; Patroni 4 compares the serial number of the certificate
     on disk with the one it serves (`reload_local_certificate`) and rebuilds its TLS listener
     when they differ (every reissue has a new serial).
   - etcd: reads its certificate and key again on every new connection (since 3.2, etcd
     #7829; for IP-only certificates since etcd #9570, in 3.2 and 3.3 releases): nothing to
     do. It does NOT re-read its trusted CA file (etcd #11555, open), see 2.
   - Redis: `CONFIG SET tls-cert-file <same path>` re-reads all TLS files (tls-* settings are
     "volatile" since 7.0.0, redis #10713; 7.0.0 alone skipped an unchanged path).
   - Redis Sentinel: cannot change TLS settings at runtime (redis #12028, #12691): restart each
     sentinel in turn (a quorum of the others stays).
   - HAProxy: reload. It runs without master-worker mode (`-db`), so a new process started
     with `-sf <old>` binds beside the old one, which stops listening and finishes its
     connections (in master-worker mode it would be SIGUSR2 to the master).
   - API nodes: SIGHUP (to the node, not its supervisor) reloads the HTTPS server's context
     and the client contexts of its etcd/Patroni/peer links in place (node/tls_reload.py);
     PostgreSQL (libpq) and Redis connections read their files per connection anyway.
   - Prometheus, Alertmanager and the exporters: nothing; they read their files per
     connection (the Redis exporter is restarted after a CA change).
2. The CA (`rocars certs rotate --ca`), in three steps so that at every moment each side trusts
   what the other presents:
   a. `rotate --ca` makes a new CA and writes ca-bundle.pem = new + old. Leaves are untouched
      (still signed by the old CA, still trusted). Make every component load the bundle:
      reloads as in 1 for PostgreSQL, Redis, HAProxy and the nodes; a rolling restart for
      etcd (one member at a time, the raft leader last; quorum holds) and Sentinel. A node's
      context learns the new CA but cannot forget the old one: after c, its links still
      accept the old CA until it restarts. Patroni rebuilds its listener
      (and so its trust) only when its certificate changes, which step b does; until then no
      one presents a certificate from the new CA.
   b. `rotate`: reissue every leaf from the new CA; reload as in 1. Old and new leaves are both
      trusted through the bundle, in whatever order components reload, except by Patroni's
      REST API, which takes the new CA now: Patroni reloads first.
   c. `rotate --drop-old-ca`: ca-bundle.pem = the new CA only; reload/restart as in a.
   A production CA is rotated the same way with `--ca --ca-cert NEW --ca-key NEW`.
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import json
import math
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from deploy.topology import MONITORING_SERVICES, Topology
from kernel.errors import ConfigError

DIR_MODE = 0o700
KEY_MODE = 0o600
CERT_MODE = 0o644
CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=365)
# Hosts' clocks differ a little: a certificate issued on one is valid on the others at once.
BACKDATE = dt.timedelta(hours=1)
# Monitoring warns when a certificate has fewer days left than this (`rocars certs rotate`).
RENEW_WITHIN_DAYS = 30
ORGANIZATION = "rocars"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Client roles (each one's certificate CN: client_common_name), and who uses it.
CLIENT_ROLES: dict[str, str] = {
    "rocars-node": "API nodes: PostgreSQL (application role), etcd (contingency keys), Redis",
    "rocars-admin": "operator commands: migrations (owner role), switchover, contingency",
    "patroni": "Patroni: etcd (its namespace only)",
    "replicator": "PostgreSQL streaming replication",
    "rewind": "pg_rewind",
    "etcd-root": "etcd administration (RBAC set-up), not daily use",
    "haproxy": "HAProxy to the API nodes (requests and health checks)",
    "prometheus": "Prometheus' scrapes of etcd and Patroni (both require a client certificate)",
    "redis-exporter": "the Redis exporter: every Redis and Sentinel (their monitor user)",
}


def client_common_name(role: str) -> str:
    """A client role's certificate CN: the file's name, which no user of etcd, PostgreSQL or
    Redis has (the module's docstring says why that matters)."""
    return f"client-{role}"


# keepalived's leader check (#17 item 2: Patroni's REST API wants a client certificate); only
# in a topology with a floating address.
FLOATING_CLIENT_ROLE = "floating-address"

# etcd's clients (#12 item 2). They dial its JSON gateway, and etcd 3.4.23 (Debian's; measured)
# with client-cert-auth answers every gateway request from a certificate that has a CommonName,
# logins included, with "CommonName of client sending a request against gateway will be
# ignored and not used as expected": so these certificates have no CN (the file name says whose
# it is), and the password login decides the etcd user, as before.
ETCD_CLIENT_ROLES = ("rocars-node", "patroni", "rocars-admin", "etcd-root")


class PkiError(ConfigError):
    """The CA or a certificate cannot be used; the message says what to do."""


class Usage(enum.Enum):
    SERVER = "server"
    CLIENT = "client"
    SERVER_AND_CLIENT = "server+client"

    @property
    def server_auth(self) -> bool:
        return self is not Usage.CLIENT

    @property
    def client_auth(self) -> bool:
        return self is not Usage.SERVER


@dataclass(frozen=True)
class CertSpec:
    """One certificate the system needs: file stem, subject, usage and names."""

    name: str
    common_name: str
    usage: Usage
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[IPAddress, ...] = ()
    site: str | None = None
    combined_pem: bool = False

    @property
    def sans(self) -> tuple[str, ...]:
        return self.dns_names + tuple(str(ip) for ip in self.ip_addresses)


@dataclass(frozen=True)
class PkiDir:
    """Paths inside the pki folder (see the module docstring for what each holds)."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def bundle(self) -> Path:
        return self.root / "ca-bundle.pem"

    @property
    def ca_source(self) -> Path:
        return self.root / "ca-source.json"

    def cert(self, name: str) -> Path:
        return self.root / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.root / f"{name}.key"

    def combined(self, name: str) -> Path:
        return self.root / f"{name}.pem"


@dataclass(frozen=True)
class ExternalCa:
    """A production CA's own certificate and (unencrypted PEM) key, used where they are."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class CertificateAuthority:
    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes = field(repr=False)
    external: ExternalCa | None = None


@dataclass(frozen=True)
class CertStatus:
    """What one certificate file holds, for `rocars certs list` and monitoring."""

    name: str
    path: Path
    subject: str | None
    sans: tuple[str, ...]
    not_after: dt.datetime | None
    days_left: int | None

    @property
    def missing(self) -> bool:
        return self.not_after is None

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": str(self.path),
            "subject": self.subject,
            "sans": list(self.sans),
            "expires": self.not_after.isoformat() if self.not_after else None,
            "days_left": self.days_left,
        }


# -- the plan (pure) -------------------------------------------------------------------------


def _names_for(host: str) -> tuple[tuple[str, ...], tuple[IPAddress, ...]]:
    """The SANs for a host from the topology: an address (plus `localhost` when loopback) or a
    DNS name."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return (host,), ()
    return (("localhost",) if ip.is_loopback else ()), (ip,)


def _server(
    name: str, usage: Usage, host: str, site: str | None, combined: bool = False
) -> CertSpec:
    dns, ips = _names_for(host)
    return CertSpec(name, name, usage, dns, ips, site, combined)


def plan(topo: Topology) -> tuple[CertSpec, ...]:
    """Every certificate the system described by `topo` needs, in a stable order."""
    both, server = Usage.SERVER_AND_CLIENT, Usage.SERVER
    out = [_server("haproxy", server, topo.entry_host(), None, combined=True)]
    if topo.entry.floating is not None:
        # The sites' HAProxy answers on the floating address with the same certificate, and
        # keepalived's check asks its site's Patroni with a client certificate (#17 item 2).
        floating = ipaddress.ip_address(topo.entry.floating.address)
        out[0] = replace(out[0], ip_addresses=(*out[0].ip_addresses, floating))
        role = FLOATING_CLIENT_ROLE
        out.append(CertSpec(f"client-{role}", client_common_name(role), Usage.CLIENT))
    for name in sorted(topo.sites):
        host = topo.sites[name].host
        out += [
            # No CN: etcd's JSON gateway dials the member with this certificate (see
            # ETCD_CLIENT_ROLES); clients check it by its SANs.
            replace(_server(f"etcd-{name}", both, host, name), common_name=""),
            _server(f"etcd-peer-{name}", both, host, name),
            _server(f"sentinel-{name}", both, host, name),
        ]
        if topo.sites[name].node is not None:
            out += [
                _server(f"node-{name}", server, host, name),
                _server(f"postgres-{name}", server, host, name),
                _server(f"patroni-{name}", both, host, name),
                _server(f"redis-{name}", both, host, name),
            ]
        # The monitoring processes' own pages (Prometheus, Alertmanager, the exporters).
        site = topo.sites[name]
        out += [
            _server(f"{svc.replace('_', '-')}-{name}", server, host, name)
            for svc in MONITORING_SERVICES
            if getattr(site, svc, None) is not None
        ]
    out += [
        CertSpec(
            f"client-{role}", client_common_name(role), Usage.CLIENT, combined_pem=role == "haproxy"
        )
        for role in CLIENT_ROLES
    ]
    out += [CertSpec(f"etcd-client-{role}", "", Usage.CLIENT) for role in ETCD_CLIENT_ROLES]
    return tuple(out)


# -- files -----------------------------------------------------------------------------------


def _ensure_dir(root: Path) -> None:
    root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(root, DIR_MODE)  # a folder made earlier by hand or a wider umask is narrowed too


def _stage(path: Path, data: bytes, mode: int) -> Path:
    """`data` in a new temporary file beside `path`, created with `mode`, synced to disk."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask only narrows; certificates must stay world-readable
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def _write_together(files: Sequence[tuple[Path, bytes, int]]) -> None:
    """Write several files so that each one changes atomically, all staged before any replaces."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data, mode in files:
            staged.append((_stage(path, data, mode), path))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in staged:
        os.replace(tmp, path)
    dirs = {path.parent for _, path in staged}
    for d in dirs:
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the renames themselves survive a crash
        finally:
            os.close(dfd)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise PkiError(f"cannot read certificate {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise PkiError(f"{path} is not a PEM certificate ({exc})") from exc


def _load_issuer_key(path: Path) -> CertificateIssuerPrivateKeyTypes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read CA key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise PkiError(
            f"CA key {path} is encrypted: give an unencrypted copy readable only by this user "
            "(mode 0600)"
        ) from exc
    except ValueError as exc:
        raise PkiError(f"{path} is not a PEM private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError(f"CA key {path}: only ECDSA and RSA CA keys are supported")
    return key


def load_bundle(pki: PkiDir) -> list[x509.Certificate]:
    """The CA certificates components trust (current first)."""
    if not pki.bundle.exists():
        return []
    try:
        return x509.load_pem_x509_certificates(pki.bundle.read_bytes())
    except ValueError as exc:
        raise PkiError(f"{pki.bundle} is damaged ({exc}); run 'rocars certs issue'") from exc


# -- the CA ----------------------------------------------------------------------------------


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _sign_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256:
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError("only ECDSA and RSA CA keys are supported")
    return hashes.SHA256()


def _new_ca(label: str, now: dt.datetime) -> CertificateAuthority:
    key = ec.generate_private_key(ec.SECP256R1())
    # A distinct name per CA: during a rotation the bundle holds two, and verifiers pick the
    # issuer by name.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"{label} CA {now:%Y-%m-%d} {secrets.token_hex(4)}"
            ),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(cert, key)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bc.ca


def _spki(pub: PublicKeyTypes) -> bytes:
    return pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _load_external(ext: ExternalCa, pki: PkiDir | None = None) -> CertificateAuthority:
    if pki is not None and pki.root.resolve() in (
        ext.cert.resolve().parent,
        ext.key.resolve().parent,
    ):
        raise PkiError(
            f"{ext.cert} / {ext.key}: give your own CA's files from where you keep them, not "
            f"from {pki.root} (its CA is used without --ca-cert/--ca-key)"
        )
    cert = _load_cert(ext.cert)
    key = _load_issuer_key(ext.key)
    if not _is_ca(cert):
        raise PkiError(f"{ext.cert} is not a CA certificate (basicConstraints CA:TRUE missing)")
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise PkiError(f"{ext.key} is not the key of {ext.cert}: give the CA's own key")
    return CertificateAuthority(cert, key, ExternalCa(ext.cert.resolve(), ext.key.resolve()))


def _recorded_external(pki: PkiDir) -> ExternalCa | None:
    if not pki.ca_source.exists():
        return None
    try:
        doc = json.loads(pki.ca_source.read_text())
        return ExternalCa(Path(doc["cert"]), Path(doc["key"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PkiError(
            f"{pki.ca_source} is damaged ({exc}); run 'rocars certs issue "
            "--ca-cert PATH --ca-key PATH' again"
        ) from exc


def _current_ca(pki: PkiDir) -> CertificateAuthority | None:
    """The CA this folder uses now, or None when it has none yet."""
    ext = _recorded_external(pki)
    if ext is not None:
        return _load_external(ext)
    has_cert, has_key = pki.ca_cert.exists(), pki.ca_key.exists()
    if has_cert and has_key:
        cert, key = _load_cert(pki.ca_cert), _load_issuer_key(pki.ca_key)
        if _spki(key.public_key()) != _spki(cert.public_key()):
            raise PkiError(
                f"{pki.ca_key} does not belong to {pki.ca_cert}; restore both from "
                "a backup, or rotate with 'rocars certs rotate --ca'"
            )
        return CertificateAuthority(cert, key)
    if has_cert or has_key:
        missing = pki.ca_key if has_cert else pki.ca_cert
        raise PkiError(
            f"{missing} is missing: restore it from a backup, or delete {pki.root} and run "
            "'rocars certs issue' to start a new CA (every certificate is then reissued)"
        )
    return None


def _install_ca(
    pki: PkiDir, new: CertificateAuthority, old: x509.Certificate | None, now: dt.datetime
) -> None:
    """Make `new` the current CA; `old` (if another) stays trusted in the bundle beside it."""
    trusted = [new.cert]
    if old is not None and old != new.cert and old.not_valid_after_utc > now:
        trusted.append(old)
    files: list[tuple[Path, bytes, int]] = []
    if new.external is None:
        assert isinstance(new.key, ec.EllipticCurvePrivateKey)
        files.append((pki.ca_key, _key_pem(new.key), KEY_MODE))
    files += [
        (pki.ca_cert, _pem(new.cert), CERT_MODE),
        (pki.bundle, b"".join(_pem(c) for c in trusted), CERT_MODE),
    ]
    if new.external is not None:
        source = {"cert": str(new.external.cert), "key": str(new.external.key)}
        files.append((pki.ca_source, json.dumps(source).encode(), CERT_MODE))
    _write_together(files)
    if new.external is not None:
        pki.ca_key.unlink(missing_ok=True)  # a generated CA's key is no use once replaced
    else:
        pki.ca_source.unlink(missing_ok=True)


def ensure_ca(
    pki: PkiDir,
    *,
    external: ExternalCa | None = None,
    label: str = ORGANIZATION,
    now: dt.datetime | None = None,
) -> CertificateAuthority:
    """The folder's CA: reused when there is one, else generated (or `external` adopted)."""
    now = now or _utcnow()
    _ensure_dir(pki.root)
    current = _current_ca(pki)
    if external is not None:
        adopted = _load_external(external, pki)
        if current is None or current.cert != adopted.cert or current.external != adopted.external:
            _install_ca(pki, adopted, current.cert if current else None, now)
        return adopted
    if current is None:
        current = _new_ca(label, now)
        _install_ca(pki, current, None, now)
    elif not pki.bundle.exists():
        _write_together([(pki.bundle, _pem(current.cert), CERT_MODE)])
    return current


def rotate_ca(
    pki: PkiDir,
    *,
    external: ExternalCa | None = None,
    label: str = ORGANIZATION,
    now: dt.datetime | None = None,
) -> CertificateAuthority:
    """Step a of a CA rotation: a new CA (generated, or `external`), the old one kept in the
    bundle; leaf certificates are left as they are (run `rotate_leaves` after every component
    trusts the bundle)."""
    now = now or _utcnow()
    current = _current_ca(pki)
    if current is None:
        raise PkiError(f"no CA in {pki.root} yet: run 'rocars certs issue' first")
    if current.external is not None and external is None:
        raise PkiError(
            f"this system uses your own CA ({current.external.cert}): rotate it there, then run "
            "'rocars certs rotate --ca --ca-cert NEW.crt --ca-key NEW.key'"
        )
    new = _load_external(external, pki) if external is not None else _new_ca(label, now)
    if new.cert == current.cert:
        raise PkiError(f"{external.cert if external else 'the new CA'} is the current CA already")
    _install_ca(pki, new, current.cert, now)
    return new


def drop_old_ca(pki: PkiDir) -> None:
    """Step c of a CA rotation: the bundle trusts only the current CA again."""
    current = _current_ca(pki)
    if current is None:
        raise PkiError(f"no CA in {pki.root} yet: run 'rocars certs issue' first")
    _write_together([(pki.bundle, _pem(current.cert), CERT_MODE)])


# -- leaf certificates ------------------------------------------------------------------------


def _build_leaf(
    spec: CertSpec, ca: CertificateAuthority, key: ec.EllipticCurvePrivateKey, now: dt.datetime
) -> x509.Certificate:
    ekus = [
        oid
        for oid, wanted in (
            (ExtendedKeyUsageOID.SERVER_AUTH, spec.usage.server_auth),
            (ExtendedKeyUsageOID.CLIENT_AUTH, spec.usage.client_auth),
        )
        if wanted
    ]
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                    *(
                        [x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name)]
                        if spec.common_name  # "" for none (etcd's gateway, see plan)
                        else []
                    ),
                ]
            )
        )
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + LEAF_VALIDITY, ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False
        )
    )
    if spec.sans:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in spec.dns_names]
        names += [x509.IPAddress(ip) for ip in spec.ip_addresses]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca.key, _sign_hash(ca.key))


def issue(pki: PkiDir, spec: CertSpec, ca: CertificateAuthority, now: dt.datetime) -> None:
    """A new key and certificate for `spec`, replacing any there were (atomically, per file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _build_leaf(spec, ca, key, now)
    key_pem, cert_pem = _key_pem(key), _pem(cert)
    files = [(pki.key(spec.name), key_pem, KEY_MODE), (pki.cert(spec.name), cert_pem, CERT_MODE)]
    if spec.combined_pem:
        files.append((pki.combined(spec.name), cert_pem + key_pem, KEY_MODE))
    _write_together(files)


def _sans_of(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    dns = tuple(ext.get_values_for_type(x509.DNSName))
    return dns + tuple(str(ip) for ip in ext.get_values_for_type(x509.IPAddress))


def _ekus_of(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    try:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return set()


def _common_name(cert: x509.Certificate) -> str | None:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else None


def _signed_by_one_of(cert: x509.Certificate, cas: Iterable[x509.Certificate]) -> bool:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def _still_good(
    pki: PkiDir, spec: CertSpec, trusted: list[x509.Certificate], now: dt.datetime
) -> bool:
    """The files for `spec` exist, belong together, match the spec and are trusted and valid."""
    paths = [pki.cert(spec.name), pki.key(spec.name)]
    if spec.combined_pem:
        paths.append(pki.combined(spec.name))
    if not all(p.exists() for p in paths):
        return False
    try:
        cert = x509.load_pem_x509_certificate(pki.cert(spec.name).read_bytes())
        key = serialization.load_pem_private_key(pki.key(spec.name).read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return False
    wanted_ekus = {
        oid
        for oid, on in (
            (ExtendedKeyUsageOID.SERVER_AUTH, spec.usage.server_auth),
            (ExtendedKeyUsageOID.CLIENT_AUTH, spec.usage.client_auth),
        )
        if on
    }
    return (
        _spki(key.public_key()) == _spki(cert.public_key())
        and (_common_name(cert) or "") == spec.common_name
        and set(_sans_of(cert)) == set(spec.sans)
        and _ekus_of(cert) == wanted_ekus
        and cert.not_valid_after_utc > now
        and _signed_by_one_of(cert, trusted)
    )


@dataclass(frozen=True)
class IssueReport:
    ca: CertificateAuthority
    issued: tuple[str, ...]
    kept: tuple[str, ...]


def issue_all(
    pki: PkiDir,
    specs: Sequence[CertSpec],
    *,
    external: ExternalCa | None = None,
    label: str = ORGANIZATION,
    now: dt.datetime | None = None,
) -> IssueReport:
    """The CA and every certificate of `specs`; what is already there and still right (same
    names, trusted, not expired) is kept, keys included, so this is safe to rerun."""
    now = now or _utcnow()
    ca = ensure_ca(pki, external=external, label=label, now=now)
    trusted = load_bundle(pki)
    issued: list[str] = []
    kept: list[str] = []
    for spec in specs:
        if _still_good(pki, spec, trusted, now):
            kept.append(spec.name)
        else:
            issue(pki, spec, ca, now)
            issued.append(spec.name)
    return IssueReport(ca, tuple(issued), tuple(kept))


def rotate_leaves(
    pki: PkiDir, specs: Sequence[CertSpec], *, now: dt.datetime | None = None
) -> tuple[str, ...]:
    """New keys and certificates for every spec, from the current CA (which is left alone)."""
    now = now or _utcnow()
    ca = _current_ca(pki)
    if ca is None:
        raise PkiError(f"no CA in {pki.root} yet: run 'rocars certs issue' first")
    for spec in specs:
        issue(pki, spec, ca, now)
    return tuple(spec.name for spec in specs)


# -- expiry ----------------------------------------------------------------------------------


def days_left(cert: x509.Certificate, now: dt.datetime) -> int:
    """Whole days until `cert` expires (negative once it has)."""
    return math.floor((cert.not_valid_after_utc - now).total_seconds() / 86400)


def _status(name: str, path: Path, now: dt.datetime) -> CertStatus:
    if not path.exists():
        return CertStatus(name, path, None, (), None, None)
    cert = _load_cert(path)
    return CertStatus(
        name,
        path,
        _common_name(cert),
        _sans_of(cert),
        cert.not_valid_after_utc,
        days_left(cert, now),
    )


def inventory(
    pki: PkiDir, specs: Sequence[CertSpec], *, now: dt.datetime | None = None
) -> list[CertStatus]:
    """The CA, the other CAs the bundle trusts, then every planned certificate (missing ones
    with no dates)."""
    now = now or _utcnow()
    out = [_status("ca", pki.ca_cert, now)]
    current = _load_cert(pki.ca_cert) if pki.ca_cert.exists() else None
    for i, cert in enumerate(load_bundle(pki)):
        if cert == current:
            continue
        out.append(
            CertStatus(
                f"ca-bundle[{i}]",
                pki.bundle,
                _common_name(cert),
                (),
                cert.not_valid_after_utc,
                days_left(cert, now),
            )
        )
    out += [_status(spec.name, pki.cert(spec.name), now) for spec in specs]
    return out


def expiring(statuses: Iterable[CertStatus], within_days: int = RENEW_WITHIN_DAYS) -> list[str]:
    """Names of certificates that are missing or expire within `within_days`."""
    return [s.name for s in statuses if s.days_left is None or s.days_left < within_days]
