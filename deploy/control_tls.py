"""The operator tools' TLS to the control plane, etcd and Patroni's REST API (#12 item 2).

Both serve TLS only and require a client certificate from the system's CA (etcd's
`client-cert-auth`, Patroni's `restapi.verify_client: required`), and their clients
(replication.etcd_gateway, replication.patroni_rest) take the SSLContext explicitly. This
module makes those contexts from the state folder's pki (deploy/pki.py): each client role's
certificate (`rocars-admin` for the operator commands, `etcd-root` for etcd's RBAC set-up...)
and the CA bundle.

A context is built once per role and reused (drills and readiness polls make many short-lived
clients); it is built again when the role's certificate, key or the CA bundle changes on disk
(`rocars certs rotate`), so a long-running tool presents the current certificate.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp

from deploy.state import StateDir
from kernel import tls
from replication.patroni_rest import DEFAULT_TIMEOUT, PatroniRest, RestCredentials

# The operator commands' client role (deploy.pki.CLIENT_ROLES), and its certificate's stem.
OPERATOR_ROLE = "rocars-admin"
OPERATOR_CERT = f"client-{OPERATOR_ROLE}"

_Stamp = tuple[int, ...]
_CONTEXTS: dict[tuple[Path, str], tuple[_Stamp, ssl.SSLContext]] = {}


def _stamp(paths: tuple[Path, ...]) -> _Stamp:
    out: list[int] = []
    for p in paths:
        st = p.stat()
        out += [st.st_mtime_ns, st.st_ino, st.st_size]
    return tuple(out)


def context(state: StateDir, cert: str = OPERATOR_CERT) -> ssl.SSLContext:
    """A client context trusting `state`'s CA bundle and presenting the certificate `cert`
    (a file stem in the pki folder: `client-rocars-admin`, `etcd-client-etcd-root`...).
    Before the pki folder has them (nothing set up yet), a context that trusts no one: every
    call then fails as unreachable, which is the truth (`rocars cluster status` describes the
    system rather than raising)."""
    pki = state.pki
    files = (state.ca_bundle, pki / f"{cert}.crt", pki / f"{cert}.key")
    key = (pki.resolve(), cert)
    try:
        stamp = _stamp(files)
    except FileNotFoundError:
        return trusts_no_one()
    cached = _CONTEXTS.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    ctx = tls.client_context(state.ca_bundle, cert=files[1], key=files[2])
    _CONTEXTS[key] = (stamp, ctx)
    return ctx


def trusts_no_one() -> ssl.SSLContext:
    """A client context with no CA at all: no server's certificate verifies."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = tls.MINIMUM_VERSION
    return ctx


def patroni(
    session: aiohttp.ClientSession,
    state: StateDir,
    *,
    auth: RestCredentials | None = None,
    timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
) -> PatroniRest:
    """Patroni's REST API as the operator: TLS with `rocars-admin`'s certificate; `auth` for
    the unsafe methods (deploy.failover_ops)."""
    return PatroniRest(session, timeout=timeout, auth=auth, ssl=context(state))
