"""What `rocars contingency ...` does: mode changes through etcd, the local override on a
node's host when etcd is unreachable, status, and reconciliation of every node's journal.

A mode change returns once every node applies it (asked through their /health documents), and
names any node that did not, so what an operator reads next is already true everywhere."""

from __future__ import annotations

import getpass
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp

from contingency import state as cstate
from contingency.override import clear_override, read_override, write_override
from contingency.reconcile import journal_paths, reconcile
from contingency.runtime import ContingencyRuntime, applies, await_nodes
from deploy import admin, etcd_auth, http_client
from deploy.state import StateDir
from deploy.status import node_health
from deploy.topology import Topology


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


async def node_sections(
    session: aiohttp.ClientSession, topo: Topology
) -> dict[str, Mapping[str, Any] | None]:
    """Each node's `contingency` section of its /health (the mode it applies), None when the
    node does not answer."""
    out: dict[str, Mapping[str, Any] | None] = {}
    for site, doc in (await node_health(session, topo)).items():
        section = None if isinstance(doc, Exception) else doc.get("contingency")
        out[site] = section if isinstance(section, dict) else None
    return out


async def change(
    topo: Topology, *, on: bool, who: str, reason: str, lbcps: frozenset[str] | None, message: str
) -> dict[str, Any]:
    """Change the mode in etcd, then wait until the nodes apply it; the new state with `nodes`
    (the mode each applies, or "unreachable") and `not_applied` (who did not follow)."""
    async with http_client.session(topo) as session:
        rt = ContingencyRuntime(etcd=etcd_auth.operator_gateway(session, topo), override_path=None)
        if on:
            new = await rt.activate(actor=who, reason=reason, lbcps=lbcps, message=message)
        else:
            new = await rt.deactivate(actor=who, reason=reason, lbcps=lbcps)
        spread = await await_nodes(
            lambda: node_sections(session, topo), lambda section: applies(section, new)
        )
    return {**cstate.to_dict(new), **spread.as_dict()}


async def await_local(topo: Topology, sites: list[str], *, on: bool) -> dict[str, Any]:
    """After writing (on) or removing (off) the override files of `sites`: wait until those
    nodes' /health show it (they read the file every 0.25 s, with or without etcd)."""

    def wanted(section: Mapping[str, Any]) -> bool:
        return section.get("local_override") is on and (section.get("mode") == "manual" or not on)

    async with http_client.session(topo) as session:

        async def read() -> dict[str, Mapping[str, Any] | None]:
            sections = await node_sections(session, topo)
            return {site: v for site, v in sections.items() if site in sites}

        return (await await_nodes(read, wanted)).as_dict()


async def status(topo: Topology, state: StateDir) -> dict[str, Any]:
    async with http_client.session(topo) as session:
        rt = ContingencyRuntime(etcd=etcd_auth.operator_gateway(session, topo), override_path=None)
        await rt.refresh()
        doc: dict[str, Any] = {
            "etcd_reachable": rt.etcd_ok,
            "state": cstate.to_dict(rt.state) if rt.etcd_ok else None,
            "mode": rt.state.mode if rt.etcd_ok else "unknown",
            "recommendation": rt.recommendation().reason,
            "nodes": {
                site: "unreachable" if section is None else section.get("mode")
                for site, section in (await node_sections(session, topo)).items()
            },
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


def not_applied_warning(doc: dict[str, Any]) -> str | None:
    """A line for stderr naming the nodes that did not apply a change, None when all did."""
    late = doc.get("not_applied") or []
    if not late:
        return None
    nodes = doc.get("nodes", {})
    named = ", ".join(f"{site} ({nodes.get(site, 'unknown')})" for site in late)
    return (
        f"warning: node(s) {named} did not apply the change yet; a node that is down applies it"
        " when it starts; check 'rocars contingency status'"
    )
