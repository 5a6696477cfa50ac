"""#12 "How it is checked", the testssl-style part, on the session cluster: every listener of
the system speaks TLS 1.2 or later and nothing older, no plain listener is left, and the
cluster's processes listen on the topology's ports and no others.

Per-component tests pin parts of this (test_tls_control_live.py for etcd, test_pg_tls_live.py,
test_tls_redis_live.py, test_control_exposure_live.py for HAProxy); this sweep walks
`Topology.endpoints()` so a listener added later is checked without anyone remembering to.

The old-protocol client asks for OpenSSL security level 0: at Debian 12's default level
OpenSSL 3 itself refuses to offer TLS 1.0/1.1 ("legacy sigalg disallowed"), so without it a
refused handshake would prove nothing about the server.

Plain by design, and named here so that no other plain listener slips in: the phone channel
(Asterisk's FastAGI has no TLS; README, Certificates) and HAProxy's HTTP port, which only
redirects (test_control_exposure_live.py checks that).

Last, etcd's client-certificate login: a certificate whose CN is an etcd user's name logs in as
that user over gRPC without a password, so no certificate of the system is named after one.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import struct
import subprocess
import warnings
from collections.abc import Iterator
from typing import cast

import psutil
import pytest

from deploy.harness import LocalCluster
from kernel import tls
from kernel.names import leader_key

pytestmark = pytest.mark.integration

PLAIN_BY_DESIGN = ("entry.http_port", "entry.phone_port", ".phone.port", "chaos.toxiproxy_port")
PG_SSL_REQUEST = struct.pack("!ii", 8, 80877103)  # PostgreSQL's SSLRequest startup packet
GO_HTTPS_ONLY = b"Client sent an HTTP request to an HTTPS server."
WAIT_S = 5.0


def _tls_endpoints(cluster: LocalCluster) -> list[tuple[str, str, int]]:
    return [e for e in cluster.topo.endpoints() if not any(p in e[0] for p in PLAIN_BY_DESIGN)]


def _is_postgres(what: str) -> bool:
    return what.endswith(".postgres.port")


@contextlib.contextmanager
def _tcp(what: str, host: str, port: int) -> Iterator[socket.socket]:
    """A connection to the listener, past PostgreSQL's SSLRequest when it is PostgreSQL's."""
    with socket.create_connection((host, port), timeout=WAIT_S) as sock:
        if _is_postgres(what):
            sock.sendall(PG_SSL_REQUEST)
            assert sock.recv(1) == b"S", f"{what}: PostgreSQL declined TLS"
        yield sock


def _handshake(what: str, host: str, port: int, ctx: ssl.SSLContext) -> str:
    """The TLS version the listener agrees to with `ctx`."""
    with _tcp(what, host, port) as sock, ctx.wrap_socket(sock, server_hostname=host) as conn:
        version = conn.version()
        assert version is not None
        return version


def _client(cluster: LocalCluster, *, old: bool) -> ssl.SSLContext:
    """The operator's client context (trusts the CA, presents `rocars-admin`), capped at TLS
    1.2, or, `old`, allowed only TLS 1.0 and 1.1 (at security level 0, see above)."""
    pki = cluster.state.pki
    ctx = tls.client_context(
        cluster.state.ca_bundle,
        cert=pki / "client-rocars-admin.crt",
        key=pki / "client-rocars-admin.key",
    )
    if old:
        with warnings.catch_warnings():  # naming the old versions is deprecated: the point
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    else:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _plain_answer(host: str, port: int) -> bytes:
    """What the listener sends back to a plain HTTP request (and a Redis inline command)."""
    with socket.create_connection((host, port), timeout=WAIT_S) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: probe\r\n\r\nPING\r\n")
        chunks = []
        with contextlib.suppress(OSError):
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    return b"".join(chunks)


def test_every_listener_agrees_to_tls_1_2(cluster: LocalCluster) -> None:
    """#12 item 2: every endpoint of the topology (but the plain-by-design ones) completes a
    TLS 1.2 handshake with a client that trusts the system's CA and checks the name it
    dialled, so each one is a TLS listener with a certificate for its address."""
    ctx = _client(cluster, old=False)
    versions = {what: _handshake(what, h, p, ctx) for what, h, p in _tls_endpoints(cluster)}
    assert len(versions) > 15, versions
    assert set(versions.values()) == {"TLSv1.2"}, versions


def test_no_listener_agrees_to_tls_older_than_1_2(cluster: LocalCluster) -> None:
    """#12 "testssl-style checks: TLS 1.2+ only": a client offering only TLS 1.0 and 1.1
    (and able to: security level 0) gets no session from any endpoint."""
    ctx = _client(cluster, old=True)
    agreed = {}
    for what, host, port in _tls_endpoints(cluster):
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            agreed[what] = _handshake(what, host, port, ctx)
    assert agreed == {}


def test_no_plain_listener_is_left(cluster: LocalCluster) -> None:
    """#12 "no plain listener left": a plain HTTP request (with a Redis inline PING after it)
    to any endpoint but PostgreSQL's gets nothing back, a TLS alert, or Go's fixed "HTTP
    request to an HTTPS server" line (etcd); never an answer of the service itself.
    PostgreSQL always negotiates in plain, and refuses a plain session before
    authentication (test_pg_tls_live.py)."""
    served = {}
    for what, host, port in _tls_endpoints(cluster):
        if _is_postgres(what):
            continue
        answer = _plain_answer(host, port)
        if answer == b"" or answer[:1] == b"\x15" or GO_HTTPS_ONLY in answer:
            continue
        served[what] = answer[:120]
    assert served == {}


def _ours(cluster: LocalCluster) -> set[int]:
    """The cluster's processes: those whose command line names its state folder, PostgreSQL's
    postmasters among them, and all their children."""
    roots = (str(cluster.state.root), str(cluster.state.runtime))
    pids: set[int] = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        argv = " ".join(proc.info["cmdline"] or [])
        if any(r in argv for r in roots):
            pids.add(proc.info["pid"])
            with contextlib.suppress(psutil.NoSuchProcess):
                pids |= {c.pid for c in proc.children(recursive=True)}
    return pids


def test_the_cluster_listens_only_on_the_topologys_endpoints(cluster: LocalCluster) -> None:
    """#12 items 2 and 5: every TCP socket a cluster process listens on is an endpoint of the
    topology on its host (loopback locally): no wildcard address, no extra port (a metrics or
    debug listener beside the service would be a plain one)."""
    assert os.geteuid() == 0, "reading other users' sockets needs root"
    pids = _ours(cluster)
    assert len(pids) >= 10, pids
    expected = {(h, p) for _, h, p in cluster.topo.endpoints()}
    listening = [
        (c.pid, *cast(tuple[str, int], tuple(c.laddr)))
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]
    extra = sorted(s for s in listening if s[1:] not in expected)
    names = {pid: psutil.Process(pid).name() for pid, _, _ in extra}
    assert extra == [], names


def _etcdctl_get(cluster: LocalCluster, cert: str, key: str) -> subprocess.CompletedProcess[str]:
    """etcdctl (gRPC, no --user: no password) reading `key` with the pki's `cert`."""
    pki, site = cluster.state.pki, cluster.topo.sites[cluster.topo.witness_site]
    return subprocess.run(
        [
            "etcdctl",
            f"--endpoints=https://{site.host}:{site.etcd.client_port}",
            f"--cacert={cluster.state.ca_bundle}",
            f"--cert={pki / f'{cert}.crt'}",
            f"--key={pki / f'{cert}.key'}",
            "--command-timeout=5s",
            "get",
            "--print-value-only",
            key,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"ETCDCTL_API": "3", "PATH": os.environ["PATH"]},
    )


def test_etcd_wants_a_password_from_a_cn_less_certificate(cluster: LocalCluster) -> None:
    """#12 item 3, the control for the test below: over gRPC, the nodes' etcd certificate
    (no CN) without a user and password reads nothing (etcd 3.4: "permission denied")."""
    done = _etcdctl_get(cluster, "etcd-client-rocars-node", leader_key(cluster.topo.name))
    assert done.returncode != 0
    assert "permission denied" in done.stderr or "user name is empty" in done.stderr, done.stderr


@pytest.mark.parametrize("cert", ["client-rocars-node", "client-patroni"])
def test_a_client_certificate_is_no_etcd_login(cluster: LocalCluster, cert: str) -> None:
    """#12 item 3: etcd with client-cert-auth takes a gRPC client certificate's CN as the
    user, without a password. The role certificates of the nodes and of Patroni (whose roles
    are etcd users' names), presented alone (etcdctl, no --user), must not read Patroni's
    leader key: their CN is `client-<role>`, no etcd user (deploy.pki.client_common_name;
    before the #12 audit it was the role, and both read it)."""
    done = _etcdctl_get(cluster, cert, leader_key(cluster.topo.name))
    assert done.returncode != 0, f"read as {cert}'s CN: {done.stdout!r}"
