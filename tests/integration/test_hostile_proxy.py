"""#10 items 5 and 6 through a real HAProxy: its own errors are problem+json (oversized header,
control characters in a header never echoed back), and the per-address abuse limits answer
429 problem+json with Retry-After while a good key is not limited by them.

The session cluster's HAProxy has limits far above what the suites send (every test client is
127.0.0.1), so the limits are tested on an extra HAProxy rendered with LOW limits, on free
loopback ports, in front of the same running nodes; it is stopped afterwards."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from apikit import Accounts

from deploy import configgen, pki
from deploy.harness import LocalCluster
from deploy.topology import AbuseLimits, Entry, Topology

pytestmark = pytest.mark.integration

PROBLEM_JSON = "application/problem+json"
LOW = AbuseLimits(
    unauthenticated_requests=5,
    unauthenticated_window_s=10,
    auth_failures=3,
    auth_failure_window_s=60,
)
BAD_KEY = "rk_0badcafe_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


@dataclass(frozen=True)
class Raw:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self) -> dict[str, Any]:
        assert self.headers.get("content-type", "").startswith(PROBLEM_JSON), self
        doc: dict[str, Any] = json.loads(self.body)
        assert doc["status"] == self.status, doc
        assert doc["title"], doc
        assert doc["detail"], doc
        return doc


# The session cluster's TLS client (HAProxy speaks HTTPS only, #12 item 2); set by `_tls`.
TLS: list[ssl.SSLContext] = []


@pytest.fixture(autouse=True, scope="module")
def _tls(cluster: LocalCluster) -> Iterator[None]:
    TLS.append(cluster.state.tls_client())
    yield
    TLS.clear()


def _exchange(port: int, head: bytes, host: str) -> bytes:
    with (
        socket.create_connection((host, port), timeout=10) as plain,
        TLS[0].wrap_socket(plain, server_hostname=host) as s,
    ):
        s.sendall(head)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def raw_request(port: int, head: bytes, host: str = "127.0.0.1") -> Raw:
    """Send `head` (a request without body) as is, over a fresh TLS connection, and read the
    answer to its end (Connection: close): the client libraries refuse to send such headers.
    A connection closed with no answer at all is tried once more: seen once in CI (1 of 10
    requests, TLS, a loaded machine), cause not found; the note of stop 22 says so."""
    data = _exchange(port, head, host) or _exchange(port, head, host)
    top, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = top.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    return Raw(int(status_line.split()[1]), headers, body)


def get(port: int, path: str, *, key: str | None = None, extra: bytes = b"") -> Raw:
    auth = f"Authorization: Bearer {key}\r\n".encode() if key else b""
    return raw_request(
        port,
        f"GET {path} HTTP/1.1\r\nHost: rocars\r\nConnection: close\r\n".encode()
        + auth
        + extra
        + b"\r\n",
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    give_up = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "haproxy exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            assert time.monotonic() < give_up, f"haproxy not listening on {port}"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def low_limit_port(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """An extra HAProxy with LOW abuse limits in front of the session cluster's nodes."""
    port, stats = _free_port(), _free_port()
    topo: Topology = cluster.topo.model_copy(
        update={
            "entry": Entry(site=cluster.topo.entry.site, port=port, stats_port=stats, limits=LOW)
        }
    )
    cfg = Path(tmp_path_factory.mktemp("low-limit-haproxy")) / "haproxy.cfg"
    folder = pki.PkiDir(cluster.state.pki)
    tls = configgen.HaproxyTls(
        folder.combined("haproxy"), folder.bundle, folder.combined("client-haproxy")
    )
    cfg.write_text(configgen.haproxy_config(topo, tls))
    subprocess.run(["haproxy", "-c", "-q", "-f", str(cfg)], check=True)
    proc = subprocess.Popen(
        ["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_listening(port, proc)
        # Both backends must see a ready node before the counting starts.
        give_up = time.monotonic() + 15
        while get(port, "/health/ready", key="x").status != 200:
            assert time.monotonic() < give_up, "no node ready behind the extra haproxy"
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_an_oversized_header_is_a_problem_json(cluster: LocalCluster) -> None:
    """#10 item 6: a header over the node's limit (8 KiB) but within HAProxy's buffer is
    answered with a problem+json 400 or 431 (the node's plain-text answer is replaced by
    HAProxy), never an HTML page, and without a version."""
    answer = get(cluster.topo.entry.port, "/v1/status", extra=b"X-Big: " + b"a" * 12000 + b"\r\n")
    assert answer.status in (400, 431), answer
    doc = answer.problem()
    assert b"<html" not in answer.body.lower()
    assert "haproxy" not in json.dumps(doc).lower()
    assert b"aaaa" not in answer.body
    # #13 item 5: the answer HAProxy put in place of the node's carries a request id it made.
    assert len(answer.headers["x-request-id"]) == 36, answer.headers


def test_headers_over_haproxys_buffer_get_its_fixed_page(cluster: LocalCluster) -> None:
    """#10 item 6, the part HAProxy 2.6 cannot do: headers larger than its buffer (16 KiB) are
    refused by its HTTP/1 parser before any `http-error` applies (it always sends its built-in
    page there; configurable only from HAProxy 3.2, haproxy issue #3032). The answer is still a
    400 that echoes nothing and names no version."""
    answer = get(cluster.topo.entry.port, "/v1/status", extra=b"X-Big: " + b"a" * 20000 + b"\r\n")
    assert answer.status == 400, answer
    assert b"aaaa" not in answer.body
    assert b"haproxy" not in answer.body.lower()
    assert b"version" not in answer.body.lower()


@pytest.mark.parametrize(
    "header",
    [
        b"X-Note: a\x01b",
        b"X-Note: \x1b[31mred",
        b"Authorization: Bearer rk_0badcafe_SECRET\x7fSECRET",
        b"Authorization: Bearer \x00SECRET",
    ],
    ids=["soh", "escape", "del-in-authorization", "nul-in-authorization"],
)
def test_a_control_character_in_a_header_is_a_problem_json_that_echoes_nothing(
    cluster: LocalCluster, header: bytes
) -> None:
    """#10 item 6: a control character in a header, through HAProxy, is answered with a
    problem+json 400 (whether HAProxy or the node refuses it) that does not echo the header."""
    answer = get(cluster.topo.entry.port, "/v1/consignments", extra=header + b"\r\n")
    assert answer.status == 400, answer
    answer.problem()
    assert b"SECRET" not in answer.body, answer
    assert b"X-Note" not in answer.body, answer


def test_unauthenticated_requests_are_limited_per_address(
    low_limit_port: int, accounts: Accounts
) -> None:
    """#10 item 5: past the topology's limit of requests without credentials per address,
    HAProxy answers 429 problem+json with Retry-After (the window); traffic with a good key is
    not limited by it, and its own requests (more than the limit) count against nothing; nor
    are the monitoring networks' probes of the control pages."""
    port = low_limit_port
    key = accounts.trader.key
    for _ in range(LOW.unauthenticated_requests * 2):
        assert get(port, "/v1/consignments?limit=1", key=key).status == 200
    answers = [
        get(port, "/v1/status", extra=b"X-Request-Id: trace-%d\r\n" % i)
        for i in range(LOW.unauthenticated_requests + 1)
    ]
    assert [a.status for a in answers[:-1]] == [200] * LOW.unauthenticated_requests
    refused = answers[-1]
    assert refused.status == 429, refused
    # #13 item 5: HAProxy's own answer echoes the request id like a node's does.
    assert refused.headers["x-request-id"] == f"trace-{LOW.unauthenticated_requests}"
    assert answers[0].headers["x-request-id"] == "trace-0"
    assert refused.headers["retry-after"] == str(LOW.unauthenticated_window_s)
    assert refused.problem()["retry_after_ms"] == LOW.unauthenticated_window_s * 1000
    assert get(port, "/v1/consignments?limit=1", key=key).status == 200
    # The monitoring networks' probes (this address is one) are neither limited nor counted:
    # `rocars certs reload` checks a new HAProxy with one.
    for _ in range(LOW.unauthenticated_requests + 1):
        assert get(port, "/health/ready").status == 200
    assert get(port, "/v1/status").status == 429


def test_authentication_failures_are_limited_per_address(
    low_limit_port: int, accounts: Accounts
) -> None:
    """#10 item 5: after the topology's number of 401 answers to requests with credentials
    from one address, HAProxy refuses that address's requests with credentials with 429
    problem+json and Retry-After, before any node looks the key up."""
    port = low_limit_port
    key = accounts.trucker.key
    for _ in range(LOW.auth_failures * 2):  # good keys add nothing to the failure count
        assert get(port, "/v1/bundles/1", key=key).status in (200, 404)
    answers = [get(port, "/v1/consignments", key=BAD_KEY) for _ in range(LOW.auth_failures + 1)]
    assert [a.status for a in answers[:-1]] == [401] * LOW.auth_failures
    refused = answers[-1]
    assert refused.status == 429, refused
    assert refused.headers["retry-after"] == str(LOW.auth_failure_window_s)
    assert "failed authentications" in refused.problem()["detail"]
