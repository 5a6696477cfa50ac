"""The operator tools' HTTP client for the system's links (#12 item 2).

Every link speaks TLS with certificates from the system's private CA (deploy/pki.py): the
client checks each server against the state folder's CA bundle and presents the operator's
client certificate (`rocars-admin`; etcd asks every client for one). One way to make that
client, so no tool is left talking plain HTTP or trusting the machine's public CAs instead.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from deploy import control_tls, etcd_auth
from deploy.state import DEFAULT_STATE_DIR, StateDir
from deploy.topology import Topology


def state_for(topo: Topology, state: StateDir | None = None) -> StateDir:
    """`state`, else the state folder registered for `topo` (etcd_auth.use_state), else the
    default one."""
    return state or etcd_auth.state_of(topo) or StateDir(DEFAULT_STATE_DIR)


def session(topo: Topology, state: StateDir | None = None, **kwargs: Any) -> aiohttp.ClientSession:
    """An aiohttp session for `topo`'s links; `kwargs` go to aiohttp.ClientSession (timeout,
    ...), `limit` to its connector. The operator's context is deploy.control_tls's (built once
    per certificate, rebuilt after a rotation; before the system has a CA, one that trusts no
    server, so HTTPS calls fail as unreachable, which is the truth)."""
    limit = kwargs.pop("limit", 100)
    ssl_ctx = control_tls.context(state_for(topo, state))
    connector = aiohttp.TCPConnector(limit=limit, ssl=ssl_ctx)
    return aiohttp.ClientSession(connector=connector, **kwargs)
