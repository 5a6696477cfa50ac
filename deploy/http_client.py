"""The operator tools' HTTP client for the system's links (#12 item 2).

Every link speaks TLS with certificates from the system's private CA (deploy/pki.py): the
client checks each server against the state folder's CA bundle and presents the operator's
client certificate (`rocars-admin`; etcd asks every client for one). One way to make that
client, so no tool is left talking plain HTTP or trusting the machine's public CAs instead.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from deploy import etcd_auth
from deploy.state import DEFAULT_STATE_DIR, StateDir
from deploy.topology import Topology

OPERATOR_ROLE = "rocars-admin"


def state_for(topo: Topology, state: StateDir | None = None) -> StateDir:
    """`state`, else the state folder registered for `topo` (etcd_auth.use_state), else the
    default one."""
    return state or etcd_auth.state_of(topo) or StateDir(DEFAULT_STATE_DIR)


def session(topo: Topology, state: StateDir | None = None, **kwargs: Any) -> aiohttp.ClientSession:
    """An aiohttp session for `topo`'s links; `kwargs` go to aiohttp.ClientSession (timeout,
    ...), `limit` to its connector. Before the system has a CA (nothing generated yet), a plain
    session: its HTTPS calls then fail as unreachable, which is the truth."""
    folder = state_for(topo, state)
    limit = kwargs.pop("limit", 100)
    ssl_ctx = folder.tls_client(OPERATOR_ROLE) if folder.ca_bundle.exists() else None
    connector = aiohttp.TCPConnector(limit=limit, ssl=ssl_ctx if ssl_ctx is not None else True)
    return aiohttp.ClientSession(connector=connector, **kwargs)
