"""#13 item 5 on the real cluster: a client's X-Request-Id passes through HAProxy, comes back,
and names the request's JSON line in the active node's `<state>/log/node-<site>.jsonl`; the
role/leader events of start-up are there; the supervisor's own lines are JSON too."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from apikit import Account, Api

from deploy.admin import leader_site
from deploy.harness import LocalCluster
from kernel.domain.ccrn import make_ccrn

pytestmark = pytest.mark.integration
DEADLINE_S = 15.0


def _lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSON log (each must parse: one object per line)."""
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


async def _until(path: Path, match: Any) -> list[dict[str, Any]]:
    """The lines of `path` matching `match`, once there is one (lines are flushed as written,
    but the node writes its access line after the answer has left)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        found = [x for x in _lines(path) if match(x)]
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.1)


async def test_a_request_id_goes_through_haproxy_and_into_the_active_nodes_log(
    cluster: LocalCluster, api: Api, new_account: Any
) -> None:
    """#13 item 5: an authenticated request sent to HAProxy with X-Request-Id is answered
    (here a 404 problem) with the same id; the active node's .jsonl has its access line with
    the id, route template, status, method, duration and account id, and never the key."""
    trader: Account = new_account("trader")
    rid = f"it-{uuid.uuid4().hex}"
    ccrn = make_ccrn(987_654_321)
    reply = await api.get(f"/v1/consignments/{ccrn}", trader.key, headers={"X-Request-Id": rid})
    assert reply.status == 404, reply.text
    assert reply.headers["X-Request-Id"] == rid
    active = await leader_site(cluster.topo)
    assert reply.node == active
    path = cluster.state.logs / f"node-{active}.jsonl"

    def access_line(x: dict[str, Any]) -> bool:
        return x.get("request_id") == rid and x["logger"] == "rocars.access"

    [line] = await _until(path, access_line)
    assert line["route"] == "/v1/consignments/{ccrn}"
    assert line["status"] == 404
    assert line["method"] == "GET"
    assert line["duration_ms"] > 0
    assert line["account_id"] == trader.id
    assert (line["site"], line["node"]) == (active, f"node-{active}")
    assert ccrn not in json.dumps(line)  # the template, not the path
    assert trader.key[len("rk_0123abcd_") :] not in path.read_text()


async def test_start_up_events_are_in_the_nodes_logs(cluster: LocalCluster) -> None:
    """#13 item 5: after start-up the active node's .jsonl has node_started, the leader it saw
    (leader_changed) and its role change to active (role_changed); each node's
    supervisor wrote a JSON supervisor_started_node line to node-<site>.log."""
    active = await leader_site(cluster.topo)
    path = cluster.state.logs / f"node-{active}.jsonl"
    await _until(path, lambda x: x.get("event") == "role_changed")
    events = {x.get("event") for x in _lines(path)}
    assert {"node_started", "leader_changed", "role_changed"} <= events, events
    roles = [x for x in _lines(path) if x.get("event") == "role_changed"]
    assert "-> active" in roles[-1]["message"]
    for site in cluster.topo.data_sites:
        out = cluster.state.logfile(f"node-{site}").read_text().splitlines()
        mine = [json.loads(x) for x in out if x.startswith("{")]
        started = [x for x in mine if x.get("event") == "supervisor_started_node"]
        assert started, out[-20:]
        assert started[-1]["node"] == f"node-{site}"


def test_patroni_and_postgresql_logs_are_collected_under_the_log_folder(
    cluster: LocalCluster,
) -> None:
    """#13 item 5: Patroni's and PostgreSQL's logs keep their own formats and are found under
    the state folder's log/ (PostgreSQL's through a link to its member's log folder)."""
    for site in cluster.topo.data_sites:
        patroni = cluster.state.logfile(f"patroni-{site}").read_text()
        assert "INFO:" in patroni, patroni[-500:]
        pg = cluster.state.logs / f"postgresql-{site}" / "postgresql.log"
        assert "database system is ready" in pg.read_text(errors="replace"), pg
