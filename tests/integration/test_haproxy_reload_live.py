"""An HAProxy reload (a new process with `-sf <old>`, as `rocars certs rotate` and `rocars certs
reload` do) loses no request, on the real session cluster: the old process answers the next
request on each kept-alive client connection before closing it, and must forward it, not refuse
it.

Found by CI: under load during a rotation, one write got HAProxy's own "no API node is active"
503 from the stopping process, in which `nbsrv` reads 0 for every backend. The unit side of the
fix: tests/unit/test_overload_config.py."""

from __future__ import annotations

import http.client
import json
import re
import time
from datetime import timedelta
from typing import Any

import psutil
import pytest
from apikit import consignment_body

from deploy import processes
from deploy.harness import LocalCluster
from deploy.process_specs import specs
from kernel import tls

pytestmark = pytest.mark.integration

WAIT_S = 30.0


def _post(conn: http.client.HTTPSConnection, key: str) -> http.client.HTTPResponse:
    body = json.dumps(consignment_body(timedelta(hours=3)))
    conn.request(
        "POST",
        "/v1/consignments",
        body=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    r = conn.getresponse()
    r.read()
    return r


def _wait(what: str, fact: Any, explain: Any = lambda: "") -> None:
    deadline = time.monotonic() + WAIT_S
    while not fact():
        assert time.monotonic() < deadline, f"not within {WAIT_S} s: {what}{explain()}"
        time.sleep(0.05)


def _holders(pid: int) -> str:
    """The TCP connections process `pid` still has, each with the process at its other end
    (when that is on this host): what keeps a stopping HAProxy alive."""
    try:
        mine = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error as exc:
        return f"; its connections could not be read: {exc!r}"
    owners = {c.laddr: c.pid for c in psutil.net_connections(kind="tcp") if c.laddr}
    lines = []
    for c in mine:
        peer = owners.get(c.raddr) if c.raddr else None
        try:
            who = " ".join(psutil.Process(peer).cmdline()[:4]) if peer else "?"
        except psutil.Error:
            who = f"pid {peer}, gone"
        lines.append(f"\n  {c.laddr} -> {c.raddr or '-'} {c.status} ({who})")
    return "; it still holds:" + "".join(lines)


def test_the_stopping_process_forwards_the_next_request_on_a_kept_alive_connection(
    cluster: LocalCluster, new_account: Any
) -> None:
    """#12 item 1: a client holds a kept-alive connection to HAProxy; `rocars certs reload`
    reloads HAProxy and the old process has stopped its listeners (its log says so); the
    client's next write on that same connection is forwarded to the active node (201, not
    HAProxy's "no API node is active" 503), and the old process closes the connection with that
    answer and exits."""
    account = new_account("trader")
    spec = specs(cluster.topo, cluster.state)["haproxy"]
    old = processes.running_pid(cluster.state, spec)
    assert old is not None
    host, port = cluster.topo.entry_host(), cluster.topo.entry.port
    conn = http.client.HTTPSConnection(
        host, port, context=tls.client_context(cluster.state.ca_bundle), timeout=10
    )
    try:
        first = _post(conn, account.key)
        assert first.status == 201
        assert first.getheader("Connection", "").lower() != "close"
        sock = conn.sock

        log = cluster.state.logfile("haproxy")
        start = log.stat().st_size
        out = cluster.rocars("certs", "reload", "--state-dir", str(cluster.state.root))
        assert re.search(r"^haproxy: reloaded", out, re.MULTILINE), out

        def old_stopped() -> bool:
            with log.open("rb") as f:
                f.seek(start)
                return f"({old}) : Proxy api stopped".encode() in f.read()

        _wait(f"the old HAProxy (pid {old}) stops its listeners", old_stopped)
        assert conn.sock is sock  # the next request goes on the same connection
        second = _post(conn, account.key)
        assert second.status == 201, second.status
        assert second.getheader("Connection", "").lower() == "close"  # the old process answered
    finally:
        conn.close()
    _wait(f"the old HAProxy (pid {old}) exits", lambda: not _alive(old), lambda: _holders(old))
    assert processes.running_pid(cluster.state, spec) not in (None, old)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
