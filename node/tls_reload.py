"""The node's TLS files reloaded without a restart (#12 item 1): SIGHUP makes the node load
its certificate, key and CA bundle again into the contexts it already uses.

The node holds three long-lived contexts (node.config.NodeTls): the HTTPS server's, and the
client contexts of its aiohttp links (etcd; Patroni and the peers). Python's
`SSLContext.load_cert_chain` on a context in use applies to every handshake that starts
afterwards (each TLS connection copies the certificate when it is made), and
`load_verify_locations` adds the bundle's CAs to those trusted, so `rocars certs rotate` can
reissue every certificate, or start a CA rotation, with the node serving throughout. A context
can learn a CA but not forget one: after `rocars certs rotate --drop-old-ca` the node's links
to etcd and Patroni still accept the old CA until the node restarts (its HTTPS server checks no
client certificate, so it is not concerned). PostgreSQL (libpq) and Redis (node.redis_client)
read their files at each new connection and need nothing here.

The certificate and key are read once into a memory file and loaded from there, into a
throwaway context first: a pair caught half-way through a rotation (deploy/pki.py replaces the
two files back to back) is refused without touching the live context, and the reload is tried
again a moment later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from node.config import NodeTls

log = logging.getLogger("rocars.node.tls")
RETRY_DELAY_S = 0.2
RETRIES = 10


@dataclass(frozen=True)
class _Files:
    cert: Path
    key: Path
    ca: Path | None  # the CA bundle a client context trusts; None for the server's


# Every context this process made through the functions below: the reload finds them here.
_CONTEXTS: weakref.WeakKeyDictionary[ssl.SSLContext, _Files] = weakref.WeakKeyDictionary()


def server_context(tls: NodeTls) -> ssl.SSLContext:
    """The HTTPS server's context (NodeTls.server_context), reloaded on SIGHUP."""
    ctx = tls.server_context()
    _CONTEXTS[ctx] = _Files(tls.cert, tls.key, None)
    return ctx


def client_context(tls: NodeTls) -> ssl.SSLContext:
    """The client context of the node's links (NodeTls.client_context), reloaded on SIGHUP."""
    ctx = tls.client_context()
    _CONTEXTS[ctx] = _Files(tls.client_cert, tls.client_key, tls.ca)
    return ctx


def etcd_context(tls: NodeTls) -> ssl.SSLContext:
    """The context the node dials etcd with (NodeTls.etcd_context), reloaded on SIGHUP."""
    ctx = tls.etcd_context()
    cert = tls.etcd_client_cert or tls.client_cert
    key = tls.etcd_client_key or tls.client_key
    _CONTEXTS[ctx] = _Files(cert, key, tls.ca)
    return ctx


@contextlib.contextmanager
def _in_memory(data: bytes) -> Iterator[str]:
    """A path to `data` held in memory only (the key never lands in another file)."""
    fd = os.memfd_create("rocars-tls", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _reload_one(ctx: ssl.SSLContext, files: _Files) -> None:
    pair = files.cert.read_bytes() + b"\n" + files.key.read_bytes()
    with _in_memory(pair) as path:
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT if files.ca else ssl.PROTOCOL_TLS_SERVER)
        probe.load_cert_chain(path)  # raises on a mismatched pair: the live context is untouched
        if files.ca is not None:
            bundle = files.ca.read_text()
            probe.load_verify_locations(cadata=bundle)
            ctx.load_verify_locations(cadata=bundle)
        ctx.load_cert_chain(path)


def reload_all() -> int:
    """Load the files again into every context made here; how many were reloaded. Raises
    OSError or ssl.SSLError when a file is missing or a pair does not match."""
    items = list(_CONTEXTS.items())
    for ctx, files in items:
        _reload_one(ctx, files)
    return len(items)


async def _reload_with_retries() -> None:
    for attempt in range(1, RETRIES + 1):
        try:
            count = reload_all()
        except (OSError, ssl.SSLError) as exc:
            if attempt == RETRIES:
                log.error(
                    "TLS files not reloaded: %s; the node keeps its previous certificates",
                    exc,
                    extra={"event": "tls_reload_failed"},
                )
                return
            await asyncio.sleep(RETRY_DELAY_S)
            continue
        log.warning("reloaded %d TLS contexts", count, extra={"event": "tls_reloaded"})
        return


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Reload every context on SIGHUP (deploy.cert_reload sends it after a rotation)."""
    tasks: set[asyncio.Task[None]] = set()

    def on_sighup() -> None:
        task = loop.create_task(_reload_with_retries(), name="tls-reload")
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)


async def on_startup(_app: object) -> None:
    """aiohttp startup hook: `install` on the serving loop."""
    install(asyncio.get_running_loop())
