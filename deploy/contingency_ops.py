"""What `rocars contingency ...` does: mode changes through etcd, the local override on a
node's host when etcd is unreachable, status, and reconciliation of every node's journal."""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime
from typing import Any

import aiohttp

from contingency import state as cstate
from contingency.override import clear_override, read_override, write_override
from contingency.reconcile import journal_paths, reconcile
from contingency.runtime import ContingencyRuntime
from deploy import admin
from deploy.state import StateDir
from deploy.topology import Topology
from replication.etcd_gateway import EtcdGateway


def actor(officer: str | None) -> str:
    return f"cli:{officer or getpass.getuser()}"


def _override_path(state: StateDir, site: str) -> Any:
    return state.root / "contingency" / f"override-{site}.json"


def set_local(
    state: StateDir, sites: list[str], *, who: str, reason: str, lbcps: frozenset[str] | None
) -> list[str]:
    out = []
    for site in sites:
        path = _override_path(state, site)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_override(path, actor=who, reason=reason, lbcps=lbcps, at=datetime.now(UTC))
        out.append(str(path))
    return out


def clear_local(state: StateDir, sites: list[str]) -> list[str]:
    return [
        str(_override_path(state, s)) for s in sites if clear_override(_override_path(state, s))
    ]


async def change(
    topo: Topology, *, on: bool, who: str, reason: str, lbcps: frozenset[str] | None, message: str
) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        rt = ContingencyRuntime(etcd=EtcdGateway(session, topo.etcd_urls()), override_path=None)
        if on:
            new = await rt.activate(actor=who, reason=reason, lbcps=lbcps, message=message)
        else:
            new = await rt.deactivate(actor=who, reason=reason, lbcps=lbcps)
    return cstate.to_dict(new)


async def status(topo: Topology, state: StateDir) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        rt = ContingencyRuntime(etcd=EtcdGateway(session, topo.etcd_urls()), override_path=None)
        await rt.refresh()
        doc: dict[str, Any] = {
            "etcd_reachable": rt.etcd_ok,
            "state": cstate.to_dict(rt.state) if rt.etcd_ok else None,
            "mode": rt.state.mode if rt.etcd_ok else "unknown",
            "recommendation": rt.recommendation().reason,
            "local_overrides": {},
        }
    for site in topo.data_sites:
        o = read_override(_override_path(state, site))
        doc["local_overrides"][site] = (
            {"actor": o.actor, "reason": o.reason, "at": o.at.isoformat()} if o else None
        )
    return doc


async def run_reconcile(topo: Topology, state: StateDir) -> dict[str, Any]:
    conn = await admin.connect_leader(topo, state)
    async with conn:
        report = await reconcile(conn, journal_paths(state.root))
    return report.as_dict()


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, default=str)
