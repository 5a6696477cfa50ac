"""TLS contexts for every link of the system (#12 item 2), built one way.

The certificates come from the private CA (deploy/pki.py): each server presents its own, each
client checks it against the CA bundle and the name it dialled; clients that authenticate by
certificate (etcd's client-cert-auth, HAProxy to the nodes) present their role's. TLS 1.2 is the
floor everywhere. Contexts are built once per process (a handshake reads them, not the disk), so
a rotated certificate is picked up by a restart or by building a new context.
"""

from __future__ import annotations

import ssl
from pathlib import Path

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def client_context(
    ca: Path, *, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A client's context: the server's certificate must chain to `ca` (a file of one or more
    CA certificates) and name the host dialled; with `cert`/`key`, this client presents them."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    ctx.minimum_version = MINIMUM_VERSION
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key is not None else None)
    return ctx


def server_context(cert: Path, key: Path, *, client_ca: Path | None = None) -> ssl.SSLContext:
    """A server's context presenting `cert`; with `client_ca`, clients must present a
    certificate chaining to it (mutual TLS)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = MINIMUM_VERSION
    ctx.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        ctx.load_verify_locations(cafile=str(client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
