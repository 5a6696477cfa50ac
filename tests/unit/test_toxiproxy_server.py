"""The Python Toxiproxy server of the chaos suite, driven through the real `toxiproxy` client.

chaos-tests/toxiproxy is not an importable package (the hyphen, and a package named `toxiproxy`
would shadow the client library), so server.py and launch.py are loaded by file path. The server
runs as a subprocess started by launch.py with prefer_binary=False, so these tests always exercise
the Python implementation even where a Go `toxiproxy-server` is installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
from toxiproxy import Proxy, Toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

TOXIPROXY_DIR = Path(__file__).resolve().parents[2] / "chaos-tests" / "toxiproxy"
# asyncio timers may fire up to a clock tick early; measured delays get this much slack.
TOLERANCE = 0.02

pytestmark = pytest.mark.timeout(30)


def _load(module_name: str, filename: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, TOXIPROXY_DIR / filename)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


launch = _load("rocars_toxiproxy_launch", "launch.py")
server = _load("rocars_toxiproxy_server", "server.py")


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(5)
        # A peer reset is a normal outcome in these tests (reset_peer, disable).
        with contextlib.suppress(OSError):
            while data := self.request.recv(65536):
                self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    """A threaded TCP echo server on loopback."""
    srv = _EchoServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield int(srv.server_address[1])
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def toxiproxy_server() -> Iterator[Any]:
    """The Python server as a subprocess on a free port; always stopped and reaped."""
    with pytest.MonkeyPatch.context() as mp:
        # The client uses `requests`, which honours proxy variables; loopback must stay local.
        mp.setenv("NO_PROXY", "127.0.0.1,localhost,::1")
        mp.setenv("no_proxy", "127.0.0.1,localhost,::1")
        handle = launch.start_toxiproxy("127.0.0.1", 0, prefer_binary=False)
        try:
            assert handle.kind == "python"
            yield handle
        finally:
            handle.stop()
            assert not handle.running(), "toxiproxy server process left behind"


@pytest.fixture
def client(toxiproxy_server: Any) -> Iterator[Toxiproxy]:
    """A toxiproxy client pointed at the server; every proxy is destroyed afterwards."""
    toxi = Toxiproxy()
    toxi.update_api_consumer(toxiproxy_server.host, toxiproxy_server.port)
    try:
        yield toxi
    finally:
        toxi.destroy_all()
        assert toxi.proxies() == {}


@pytest.fixture
def proxy(client: Toxiproxy, echo_port: int) -> Proxy:
    """A proxy in front of the echo server."""
    return client.create(upstream=f"127.0.0.1:{echo_port}", name="echo")


def _connect(p: Proxy) -> socket.socket:
    host, port = p.listen.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=3)


def _round_trip(p: Proxy, payload: bytes = b"ping") -> float:
    with _connect(p) as sock:
        start = time.monotonic()
        sock.sendall(payload)
        assert _recv_exactly(sock, len(payload)) == payload
        return time.monotonic() - start


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"connection closed after {len(data)} of {n} bytes"
        data += chunk
    return data


def _recv_until_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_data_flows_through_proxy(client: Toxiproxy, proxy: Proxy) -> None:
    """Bytes sent to the proxy reach the echo server and come back unchanged."""
    assert b'"version"' in client.version()
    assert set(client.proxies()) == {"echo"}
    assert proxy.enabled is True
    with _connect(proxy) as sock:
        for payload in (b"hello", b"x" * 100_000):
            sock.sendall(payload)
            assert _recv_exactly(sock, len(payload)) == payload


def test_latency_toxic_delays_new_and_existing_connections(proxy: Proxy) -> None:
    """A latency toxic delays delivery by at least its latency, also on open connections."""
    assert _round_trip(proxy) < 0.1
    with _connect(proxy) as existing:
        proxy.add_toxic(type="latency", stream="downstream", attributes={"latency": 150})
        start = time.monotonic()
        existing.sendall(b"a")
        assert existing.recv(1) == b"a"
        assert time.monotonic() - start >= 0.150 - TOLERANCE
    proxy.add_toxic(type="latency", stream="upstream", attributes={"latency": 100, "jitter": 0})
    elapsed = _round_trip(proxy)
    assert 0.250 - TOLERANCE <= elapsed < 1.5


def test_toxicity_zero_never_applies(proxy: Proxy) -> None:
    """A toxic with toxicity 0 is listed but never applied to a connection."""
    proxy.add_toxic(type="latency", toxicity=0.0, attributes={"latency": 2000})
    assert proxy.get_toxic("latency_downstream") is not None
    assert _round_trip(proxy) < 0.5


def test_disabled_proxy_refuses_connections(proxy: Proxy) -> None:
    """Disabling closes the listener and open connections; enabling restores the same port."""
    with _connect(proxy) as existing:
        proxy.disable()
        with contextlib.suppress(ConnectionResetError):
            assert existing.recv(1) == b""
    with pytest.raises(ConnectionRefusedError):
        _connect(proxy).close()
    proxy.enable()
    assert _round_trip(proxy) < 0.5
    with proxy.down(), pytest.raises(ConnectionRefusedError):
        _connect(proxy).close()
    assert _round_trip(proxy) < 0.5


def test_reset_peer_resets_connection(proxy: Proxy) -> None:
    """reset_peer drops the data and resets the connection after its timeout."""
    proxy.add_toxic(type="reset_peer", attributes={"timeout": 100})
    with _connect(proxy) as sock:
        start = time.monotonic()
        sock.sendall(b"ping")
        with pytest.raises(ConnectionResetError):
            sock.recv(16)
        assert time.monotonic() - start >= 0.100 - TOLERANCE


def test_limit_data_closes_after_n_bytes(proxy: Proxy) -> None:
    """limit_data passes exactly N bytes and then closes the connection."""
    proxy.add_toxic(type="limit_data", attributes={"bytes": 10})
    payload = bytes(range(100))
    with _connect(proxy) as sock:
        sock.sendall(payload)
        assert _recv_until_eof(sock) == payload[:10]


def test_timeout_toxic_stalls_and_closes(proxy: Proxy) -> None:
    """timeout=0 holds data indefinitely; timeout>0 closes the connection after that time."""
    proxy.add_toxic(type="timeout", name="hold", attributes={"timeout": 0})
    with _connect(proxy) as sock:
        sock.sendall(b"ping")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(16)
        # Removing a timeout toxic closes the stalled connection (its stream lost data).
        proxy.destroy_toxic("hold")
        sock.settimeout(3)
        assert _recv_until_eof(sock) == b""

    proxy.add_toxic(type="timeout", attributes={"timeout": 200})
    with _connect(proxy) as sock:
        start = time.monotonic()
        sock.sendall(b"ping")
        assert _recv_until_eof(sock) == b""
        assert time.monotonic() - start >= 0.200 - TOLERANCE
    proxy.destroy_toxic("timeout_downstream")
    assert _round_trip(proxy) < 0.5


def test_bandwidth_limits_rate(proxy: Proxy) -> None:
    """bandwidth delivers no faster than its rate in KB/s."""
    proxy.add_toxic(type="bandwidth", attributes={"rate": 10})  # 10 KB/s
    assert _round_trip(proxy, b"b" * 3000) >= 0.300 - TOLERANCE


def test_slow_close_delays_fin(proxy: Proxy) -> None:
    """slow_close delays the end of the stream by its delay."""
    proxy.add_toxic(type="slow_close", attributes={"delay": 200})
    with _connect(proxy) as sock:
        start = time.monotonic()
        sock.sendall(b"bye")
        sock.shutdown(socket.SHUT_WR)
        assert _recv_until_eof(sock) == b"bye"
        assert time.monotonic() - start >= 0.200 - TOLERANCE


def test_toxic_crud_and_reset(client: Toxiproxy, proxy: Proxy) -> None:
    """Toxics can be listed, updated and deleted; /reset enables proxies and drops toxics."""
    proxy.add_toxic(type="latency", name="lag", attributes={"latency": 10, "jitter": 5})
    lag = proxy.toxics()["lag"]
    assert (lag.type, lag.stream, lag.toxicity) == ("latency", "downstream", 1.0)
    assert lag.attributes == {"latency": 10, "jitter": 5}
    APIConsumer.post("/proxies/echo/toxics/lag", json={"attributes": {"latency": 20}})
    assert proxy.get_toxic("lag").attributes == {"latency": 20, "jitter": 5}
    with pytest.raises(ProxyExists):
        proxy.add_toxic(type="latency", name="lag")
    proxy.destroy_toxic("lag")
    assert proxy.get_toxic("lag") is None
    with pytest.raises(NotFound):
        proxy.destroy_toxic("lag")

    proxy.add_toxic(type="timeout", attributes={"timeout": 0})
    proxy.disable()
    assert client.reset() is True
    restored = client.get_proxy("echo")
    assert restored is not None
    assert restored.enabled
    assert proxy.toxics() == {}
    assert _round_trip(proxy) < 0.5


def test_duplicates_and_unknown_names(client: Toxiproxy, proxy: Proxy, echo_port: int) -> None:
    """Duplicate proxies are refused with 409 and unknown ones give 404."""
    with pytest.raises(ProxyExists):
        client.create(upstream=f"127.0.0.1:{echo_port}", name="echo")
    with pytest.raises(ProxyExists):  # bypass the client's own pre-check: the server says 409
        APIConsumer.post("/proxies", json={"name": "echo", "upstream": f"127.0.0.1:{echo_port}"})
    assert client.get_proxy("nope") is None
    with pytest.raises(NotFound):
        APIConsumer.get("/proxies/nope")
    proxy.destroy()
    with pytest.raises(NotFound):
        proxy.destroy()


@pytest.mark.parametrize(
    ("listen", "upstream"),
    [
        ("127.0.0.1:0", "10.0.0.1:80"),
        ("127.0.0.1:0", "192.0.2.7:5432"),
        ("127.0.0.1:0", "example.com:80"),
        ("127.0.0.1:0", "0.0.0.0:80"),
        ("127.0.0.1:0", "[2001:db8::1]:80"),
        ("0.0.0.0:0", "127.0.0.1:80"),
        ("[::]:0", "127.0.0.1:80"),
    ],
)
def test_non_loopback_addresses_rejected(client: Toxiproxy, listen: str, upstream: str) -> None:
    """A listen or upstream address outside loopback is refused with 400 and nothing is made."""
    with pytest.raises(InvalidToxic) as excinfo:
        client.create(upstream=upstream, name="outside", listen=listen)
    assert b"loopback" in excinfo.value.args[0]
    assert client.proxies() == {}


def test_error_responses_have_toxiproxy_shape(toxiproxy_server: Any, proxy: Proxy) -> None:
    """Errors are JSON {"error", "status"} with 400/404/409 like the Go server."""
    base = toxiproxy_server.url
    cases = [
        (requests.get(f"{base}/proxies/nope", timeout=5), 404, "proxy not found"),
        (requests.get(f"{base}/proxies/echo/toxics/nope", timeout=5), 404, "toxic not found"),
        (requests.post(f"{base}/proxies", data=b"{not json", timeout=5), 400, "bad request body"),
        (
            requests.post(f"{base}/proxies/echo/toxics", json={"type": "nope"}, timeout=5),
            400,
            "invalid toxic type",
        ),
        (
            requests.post(
                f"{base}/proxies/echo/toxics",
                json={"type": "latency", "attributes": {"latency": -1}},
                timeout=5,
            ),
            400,
            "must not be negative",
        ),
        (
            requests.post(
                f"{base}/proxies", json={"name": "echo", "upstream": "127.0.0.1:1"}, timeout=5
            ),
            409,
            "proxy already exists",
        ),
    ]
    for response, status, message in cases:
        body = response.json()
        assert response.status_code == status
        assert body["status"] == status
        assert message in body["error"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:80", "127.0.0.1:80"),
        ("127.5.6.7:1", "127.5.6.7:1"),
        ("localhost:8474", "127.0.0.1:8474"),
        ("[::1]:9000", "[::1]:9000"),
    ],
)
def test_parse_address_accepts_loopback(value: str, expected: str) -> None:
    """Loopback forms parse; 'localhost' is pinned to 127.0.0.1."""
    assert str(server.parse_address(value, "upstream", allow_port_zero=False)) == expected


@pytest.mark.parametrize("value", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", ":80", 5, ""])
def test_parse_address_rejects_malformed(value: object) -> None:
    """Malformed upstream addresses are a 400 ApiError."""
    with pytest.raises(server.ApiError) as excinfo:
        server.parse_address(value, "upstream", allow_port_zero=False)
    assert excinfo.value.status == 400


def test_launcher_stops_server_and_orphan_guard() -> None:
    """The launcher's handle stops the process; a server whose stdin closes exits by itself."""
    with launch.start_toxiproxy("127.0.0.1", 0, prefer_binary=False) as handle:
        assert handle.running()
        assert requests.get(f"{handle.url}/version", timeout=5).json()["version"]
    assert not handle.running()

    handle = launch.start_toxiproxy("127.0.0.1", 0, prefer_binary=False)
    try:
        handle.process.stdin.close()  # what happens when the launching process dies
        assert handle.process.wait(5) == 0
    finally:
        handle.stop()
    with pytest.raises(ValueError, match="loopback"):
        launch.start_toxiproxy("0.0.0.0", 0)
