"""#12 item 5 on the namespaced topology: a machine outside the system, on the same network as
the sites, reaches HAProxy's client ports and nothing else.

An "outsider" namespace is plugged into the sites' bridge with an address of its own (not one
of the system's). From there every site's service (etcd, PostgreSQL, Patroni, Redis, Sentinel,
the nodes, the exporters, Prometheus) and HAProxy's stats port are unreachable; HTTPS answers
with HSTS, plain HTTP only redirects, and plain HTTP to the HTTPS port serves nothing, a stolen
key or not. What a caller holding a system address but no credentials meets (each component
refusing) is pinned per component by the integration tests (test_etcd_rbac.py,
test_patroni_auth_live.py, test_redis_acl_live.py, test_least_privilege.py, the TLS tests).
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator

import pytest

from deploy import netns
from deploy.harness import LocalCluster
from deploy.topology import Topology

pytestmark = pytest.mark.integration

OUTSIDER_HOST_NUMBER = 200  # the outsider's address: this host number in the sites' network
CONNECT_WAIT_S = 2.0


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def outsider(topo: Topology) -> Iterator[str]:
    """A namespace on the sites' bridge with an address outside the system; removed after."""
    ns = topo.namespaces
    assert ns is not None
    name, hub = f"{ns.prefix}-out", ns.hub()
    net = ns.hub_host.rsplit(".", 1)[0]
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    try:
        _ip("netns", "add", name)
        _ip("-n", name, "link", "set", "lo", "up")
        _ip(
            "-n", hub, "link", "add", "v-out", "type", "veth", "peer", "name", "eth0", "netns", name
        )
        _ip("-n", hub, "link", "set", "v-out", "master", netns.BRIDGE, "up")
        _ip(
            "-n",
            name,
            "addr",
            "add",
            f"{net}.{OUTSIDER_HOST_NUMBER}/{ns.prefix_len}",
            "dev",
            "eth0",
        )
        _ip("-n", name, "link", "set", "eth0", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def _reachable(targets: list[tuple[str, str, int]]) -> list[str]:
    """Which of `targets` accept a TCP connection within CONNECT_WAIT_S, tried all at once
    (non-blocking connects: the namespace's sockets are made on this thread)."""
    socks: dict[int, tuple[socket.socket, str]] = {}
    try:
        for what, host, port in targets:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            code = s.connect_ex((host, port))
            assert code in (0, errno.EINPROGRESS, errno.ECONNREFUSED), (what, code)
            socks[s.fileno()] = (s, what)
        deadline = time.monotonic() + CONNECT_WAIT_S
        connected: list[str] = []
        pending = dict(socks)
        while pending and (left := deadline - time.monotonic()) > 0:
            _, writable, _ = select.select([], list(pending), [], left)
            for fd in writable:
                s, what = pending.pop(fd)
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    connected.append(what)
        return sorted(connected)
    finally:
        for s, _ in socks.values():
            s.close()


def _exchange(host: str, port: int, request: bytes, ctx: ssl.SSLContext | None = None) -> bytes:
    """Send `request` (plain, or over TLS with `ctx`) and read the answer until closed."""
    with socket.create_connection((host, port), timeout=5) as plain:
        conn = ctx.wrap_socket(plain, server_hostname=host) if ctx else plain
        with conn:
            conn.sendall(request)
            chunks = []
            with contextlib.suppress(OSError):
                while chunk := conn.recv(65536):
                    chunks.append(chunk)
    return b"".join(chunks)


def test_an_outsider_reaches_only_the_client_ports(netns_cluster: LocalCluster) -> None:
    """#12 item 5: from an address on the sites' own network that is not the system's, every
    site's port and HAProxy's stats port are closed; the API answers over HTTPS (TLS 1.2+,
    HSTS); plain HTTP gets a redirect and nothing else, and plain HTTP to the HTTPS port with
    a stolen key gets no HTTP answer at all."""
    topo = netns_cluster.topo
    entry_host, entry = topo.entry_host(), topo.entry
    closed = [
        (what, host, port)
        for what, host, port in topo.endpoints()
        if host != entry_host or what == "entry.stats_port"
    ]
    ctx = netns_cluster.state.tls_client()  # trusts the CA, presents no client certificate
    stolen = b"Authorization: Bearer rk_stolen_0000\r\n"
    with outsider(topo) as name, netns.inside(name):
        assert _reachable(closed) == []
        assert _reachable([("entry.port", entry_host, entry.port)]) == ["entry.port"]
        answer = _exchange(
            entry_host,
            entry.port,
            b"GET /v1/status HTTP/1.1\r\nHost: rocars\r\nConnection: close\r\n\r\n",
            ctx,
        )
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert b"\r\nstrict-transport-security: max-age=" in answer.lower()
        assert entry.http_port is not None
        redirect = _exchange(
            entry_host,
            entry.http_port,
            b"GET /v1/consignments HTTP/1.1\r\nHost: rocars\r\nConnection: close\r\n"
            + stolen
            + b"\r\n",
        )
        head, _, body = redirect.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 308"), head
        assert f"location: https://{entry_host}:{entry.port}/v1/consignments".encode() in (
            head.lower()
        )
        assert body == b""
        plain = _exchange(
            entry_host,
            entry.port,
            b"GET /v1/consignments HTTP/1.1\r\nHost: rocars\r\n" + stolen + b"\r\n",
        )
        assert not plain.startswith(b"HTTP/"), plain[:200]
