"""#12 item 1: the node loads rotated certificates without a restart (node/tls_reload.py): its
HTTPS server's context and its client contexts are reloaded in place on SIGHUP."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import ssl
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509

from deploy import pki
from deploy.cert_reload import file_serial, presented_serial
from deploy.pki import PkiDir
from deploy.state import DEFAULT_TOPOLOGY
from deploy.topology import load_topology
from kernel import tls
from node import tls_reload
from node.config import NodeTls


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test reloads only the contexts it made."""
    monkeypatch.setattr(tls_reload, "_CONTEXTS", weakref.WeakKeyDictionary())


@pytest.fixture(scope="module")
def _issued(tmp_path_factory: pytest.TempPathFactory) -> PkiDir:
    folder = PkiDir(tmp_path_factory.mktemp("pki-template") / "pki")
    pki.issue_all(folder, pki.plan(load_topology(DEFAULT_TOPOLOGY)))
    return folder


@pytest.fixture
def folder(_issued: PkiDir, tmp_path: Path) -> PkiDir:
    """A fresh copy of an issued pki folder (issuing all of it per test is slow)."""
    shutil.copytree(_issued.root, tmp_path / "pki")
    return PkiDir(tmp_path / "pki")


def _node_tls(folder: PkiDir) -> NodeTls:
    return NodeTls(
        cert=folder.cert("node-A"),
        key=folder.key("node-A"),
        ca=folder.bundle,
        client_cert=folder.cert("client-rocars-node"),
        client_key=folder.key("client-rocars-node"),
        etcd_client_cert=folder.cert("etcd-client-rocars-node"),
        etcd_client_key=folder.key("etcd-client-rocars-node"),
    )


def _spec(name: str) -> pki.CertSpec:
    return next(s for s in pki.plan(load_topology(DEFAULT_TOPOLOGY)) if s.name == name)


async def _serve(ctx: ssl.SSLContext) -> AsyncIterator[int]:
    async def handle(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    async with server:
        yield server.sockets[0].getsockname()[1]


@pytest.fixture
async def served(folder: PkiDir) -> AsyncIterator[int]:
    """A TLS server on loopback with the node's reloadable server context; its port."""
    async for port in _serve(tls_reload.server_context(_node_tls(folder))):
        yield port


async def _serial(port: int, ctx: ssl.SSLContext) -> int:
    return await asyncio.to_thread(presented_serial, "127.0.0.1", port, ctx)


async def test_reload_makes_new_handshakes_present_the_rotated_certificate(
    folder: PkiDir, served: int
) -> None:
    """#12 item 1: after `rotate`, a reload makes the running server present the new
    certificate (same context object, no new listener)."""
    client = tls.client_context(folder.bundle)
    before = await _serial(served, client)
    assert before == file_serial(folder, "node-A")
    pki.rotate_leaves(folder, (_spec("node-A"),))
    assert await _serial(served, client) == before  # nothing reloaded yet
    assert tls_reload.reload_all() == 1
    assert await _serial(served, client) == file_serial(folder, "node-A") != before


async def test_a_mismatched_pair_is_refused_and_the_live_context_keeps_serving(
    folder: PkiDir, served: int
) -> None:
    """#12 item 1: a key that is not the certificate's (a pair caught mid-rotation) is
    refused before the live context is touched: handshakes go on with the old pair."""
    client = tls.client_context(folder.bundle)
    before = await _serial(served, client)
    pki.rotate_leaves(folder, (_spec("node-A"),))
    shutil.copy(folder.key("node-B"), folder.key("node-A"))  # a new certificate, a wrong key
    with pytest.raises(ssl.SSLError):
        tls_reload.reload_all()
    assert await _serial(served, client) == before


async def _client_serial_seen(port: int, ctx: ssl.SSLContext) -> int:
    """The serial of the client certificate `ctx` presents, as the server saw it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        return int(await reader.readline())
    finally:
        writer.close()


async def test_client_contexts_learn_a_new_ca_and_present_their_new_certificate(
    folder: PkiDir,
) -> None:
    """#12 item 1: after `rotate --ca` and `rotate`, the node's client contexts (built with
    the old bundle) trust a server whose certificate the new CA signed once reloaded, and
    present their own reissued client certificates."""
    node_tls = _node_tls(folder)
    clients = {
        "client-rocars-node": tls_reload.client_context(node_tls),
        "etcd-client-rocars-node": tls_reload.etcd_context(node_tls),
    }
    pki.rotate_ca(folder)
    pki.rotate_leaves(folder, tuple(_spec(n) for n in ("node-A", *clients)))

    async def tell_serial(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
        w.write(b"%d\n" % x509.load_der_x509_certificate(der).serial_number)
        await w.drain()
        w.close()

    # A server already on the new CA's certificate, asking for a client certificate.
    server_ctx = tls.server_context(
        folder.cert("node-A"), folder.key("node-A"), client_ca=folder.bundle
    )
    server = await asyncio.start_server(tell_serial, "127.0.0.1", 0, ssl=server_ctx)
    async with server:
        port = server.sockets[0].getsockname()[1]
        for ctx in clients.values():
            with pytest.raises(ssl.SSLCertVerificationError):
                await _client_serial_seen(port, ctx)  # the old bundle knows no new CA
        assert tls_reload.reload_all() == 2
        for name, ctx in clients.items():
            assert await _client_serial_seen(port, ctx) == file_serial(folder, name)


async def test_sighup_reloads_on_the_running_loop(folder: PkiDir, served: int) -> None:
    """#12 item 1: `install` makes SIGHUP reload every context (deploy.cert_reload sends it
    to the node after a rotation)."""
    client = tls.client_context(folder.bundle)
    loop = asyncio.get_running_loop()
    tls_reload.install(loop)
    try:
        pki.rotate_leaves(folder, (_spec("node-A"),))
        want = file_serial(folder, "node-A")
        os.kill(os.getpid(), signal.SIGHUP)
        deadline = loop.time() + 10
        while (seen := await _serial(served, client)) != want:
            assert loop.time() < deadline, f"still {seen}, not {want}"
            await asyncio.sleep(0.05)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
