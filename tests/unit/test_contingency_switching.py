"""Switching manual clearance: contingency.runtime's mode changes fail with kernel errors (so the
HTTP table and the CLI answer them alike), `await_nodes` waits until every node applies a
change, and the officers' endpoints (node/api/contingency.py, in process with a peer node
served by a test server) answer with the statuses of node.problems and say which node
applies which mode."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from psycopg_pool import PoolTimeout
from unit_fakes import MemoryEtcd, node_config

from contingency import state as cstate
from contingency.journal import AuditEvent, Journal
from contingency.reconcile import ReconcileReport
from contingency.runtime import ContingencyRuntime, Propagation, applies, await_nodes
from kernel.errors import (
    ComponentUnavailable,
    EtcdUnavailable,
    InvalidInput,
    InvalidTransition,
    JournalError,
)
from kernel.names import CONTINGENCY_STATE_KEY, WRITE_HEARTBEAT_KEY
from node import appkeys
from node.account import Account
from node.api import contingency as contingency_api
from node.problems import PROBLEM_JSON, problem_middleware

AiohttpClient = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]
AiohttpServer = Callable[[web.Application], Awaitable[TestServer]]

AT = datetime(2030, 1, 7, 8, 0, tzinfo=UTC)


def _runtime(etcd: MemoryEtcd) -> ContingencyRuntime:
    return ContingencyRuntime(etcd=etcd, override_path=None)  # type: ignore[arg-type]


async def test_activate_writes_the_state_for_every_node() -> None:
    """A change is one compare-and-swap of the state document other nodes read."""
    etcd = MemoryEtcd()
    new = await _runtime(etcd).activate(
        actor="officer:1", reason="outage", lbcps=frozenset({"LMC"}), message="Manual."
    )
    stored = cstate.from_dict(json.loads(etcd.data[CONTINGENCY_STATE_KEY].value))
    assert stored == new
    assert stored.scope == frozenset({"LMC"})


class _CountingEtcd(MemoryEtcd):
    """MemoryEtcd that counts the calls made to it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def get(self, key: str) -> Any:
        self.calls += 1
        return await super().get(key)

    async def get_many(self, keys: Any) -> Any:
        self.calls += 1
        return await super().get_many(keys)


async def test_a_refresh_reads_the_state_and_the_heartbeat_in_one_call() -> None:
    """Every node polls every 0.25 s: one etcd call a poll (a transaction of two reads) brings
    both the mode another node switched on and the active node's last good write."""
    etcd = _CountingEtcd()
    writer = _runtime(etcd)
    await writer.activate(actor="officer:1", reason="r", lbcps=frozenset({"LMC"}), message="m")
    await etcd.put(WRITE_HEARTBEAT_KEY, "1234.5")
    reader = ContingencyRuntime(etcd=etcd, override_path=None, clock=lambda: 1000.0)  # type: ignore[arg-type]
    etcd.calls = 0
    await reader.refresh()
    assert etcd.calls == 1
    assert reader.state.scope == frozenset({"LMC"})
    assert reader.last_write_ok_at == 1234.5
    assert reader.etcd_ok
    assert reader.loaded


async def test_a_blank_message_is_invalid_input_naming_message() -> None:
    """A blank public notice is the caller's mistake (422 naming `message`), not an outage."""
    with pytest.raises(InvalidInput) as caught:
        await _runtime(MemoryEtcd()).activate(
            actor="officer:1", reason="r", lbcps=None, message="  "
        )
    assert caught.value.field == "message"


async def test_deactivating_normal_mode_is_an_invalid_transition() -> None:
    """Switching off what is not on is refused because of the state (409), not the input."""
    with pytest.raises(InvalidTransition, match="already normal"):
        await _runtime(MemoryEtcd()).deactivate(actor="officer:1", reason="r", lbcps=None)


async def test_releasing_an_lbcp_that_is_not_manual_is_an_invalid_transition() -> None:
    """Releasing SBC while only LMC is manual tells the caller the state moved (409)."""
    rt = _runtime(MemoryEtcd())
    await rt.activate(actor="officer:1", reason="r", lbcps=frozenset({"LMC"}), message="m")
    with pytest.raises(InvalidTransition, match="not in manual mode"):
        await rt.deactivate(actor="officer:1", reason="r", lbcps=frozenset({"SBC"}))


@pytest.mark.parametrize("on", [True, False])
async def test_etcd_outage_is_etcd_unavailable_with_the_local_way_out(on: bool) -> None:
    """With no etcd member answering, both switching on and off fail as EtcdUnavailable (503),
    and the message names the local override that still works."""
    etcd = MemoryEtcd()
    rt = _runtime(etcd)
    await rt.activate(actor="officer:1", reason="r", lbcps=None, message="m")
    etcd.down = True
    change = (
        rt.activate(actor="officer:1", reason="r", lbcps=None, message="m")
        if on
        else rt.deactivate(actor="officer:1", reason="r", lbcps=None)
    )
    with pytest.raises(EtcdUnavailable, match="--local") as caught:
        await change
    assert isinstance(caught.value.__cause__, EtcdUnavailable)


async def test_ten_lost_races_in_a_row_are_a_conflict() -> None:
    """A change that keeps losing its compare-and-swap gives up as a conflict (409, retry)."""
    etcd = MemoryEtcd()
    etcd.races = 10
    with pytest.raises(InvalidTransition, match="concurrently"):
        await _runtime(etcd).activate(actor="officer:1", reason="r", lbcps=None, message="m")
    etcd.races = 9
    await _runtime(etcd).activate(actor="officer:1", reason="r", lbcps=None, message="m")


async def test_an_unreadable_stored_state_is_unavailable_not_bad_input() -> None:
    """A damaged document under the contingency key is the store's fault: switching answers
    503 (ComponentUnavailable), never 422 blaming the caller, and the key is left as it was."""
    etcd = MemoryEtcd()
    damaged = b'{"version": 1, "mode": "sideways"}'
    await etcd.put(CONTINGENCY_STATE_KEY, damaged)
    with pytest.raises(ComponentUnavailable, match="unreadable") as info:
        await _runtime(etcd).activate(actor="officer:1", reason="r", lbcps=None, message="m")
    assert not isinstance(info.value, InvalidInput)
    assert etcd.data[CONTINGENCY_STATE_KEY].value == damaged


# --- await_nodes ------------------------------------------------------------------------------

MANUAL_LMC = cstate.activate(
    cstate.NORMAL, actor="officer:1", reason="r", lbcps=frozenset({"LMC"}), at=AT, message="m"
)


def _section(mode: str, scope: Any) -> dict[str, Any]:
    return {"mode": mode, "scope": scope}


def _applies_lmc(section: Mapping[str, Any]) -> bool:
    return applies(section, MANUAL_LMC)


class Nodes:
    """Scripted /health answers: each call pops the next round (the last one repeats)."""

    def __init__(self, *rounds: Mapping[str, Mapping[str, Any] | None]) -> None:
        self.rounds = list(rounds)
        self.calls = 0

    async def __call__(self) -> Mapping[str, Mapping[str, Any] | None]:
        self.calls += 1
        return self.rounds.pop(0) if len(self.rounds) > 1 else self.rounds[0]


def test_applies_compares_scope_and_mode() -> None:
    """A node applies a state when its scope and its mode match: the same mode with another
    scope is not enough, and a local override (manual) does not apply normal."""
    assert applies(_section("manual", ["LMC"]), MANUAL_LMC)
    assert not applies(_section("manual", "all"), MANUAL_LMC)
    assert not applies(_section("normal", []), MANUAL_LMC)
    assert applies(_section("normal", []), cstate.NORMAL)
    assert not applies(_section("manual", []), cstate.NORMAL)  # forced manual locally


async def test_returns_at_once_when_every_node_applies() -> None:
    """Nodes that already agree cost one round."""
    read = Nodes({"A": _section("manual", ["LMC"]), "B": _section("manual", ["LMC"])})
    got = await await_nodes(read, _applies_lmc, deadline_s=5, interval_s=0.01)
    assert got == Propagation({"A": "manual", "B": "manual"}, ())
    assert read.calls == 1


async def test_waits_for_a_node_that_has_not_re_read_the_state_yet() -> None:
    """A node still on the old state is asked again until it applies the new one."""
    read = Nodes(
        {"A": _section("manual", ["LMC"]), "B": _section("normal", [])},
        {"A": _section("manual", ["LMC"]), "B": _section("normal", [])},
        {"A": _section("manual", ["LMC"]), "B": _section("manual", ["LMC"])},
    )
    got = await await_nodes(read, _applies_lmc, deadline_s=5, interval_s=0.01)
    assert got.not_applied == ()
    assert got.nodes == {"A": "manual", "B": "manual"}
    assert read.calls == 3


async def test_names_a_node_that_does_not_follow_by_the_deadline() -> None:
    """A node that keeps another state is named with the mode it applies once time is up."""
    read = Nodes({"A": _section("manual", ["LMC"]), "B": _section("normal", [])})
    got = await await_nodes(read, _applies_lmc, deadline_s=0.05, interval_s=0.01)
    assert got.nodes == {"A": "manual", "B": "normal"}
    assert got.not_applied == ("B",)
    assert got.as_dict() == {"nodes": {"A": "manual", "B": "normal"}, "not_applied": ["B"]}
    assert read.calls >= 2


async def test_does_not_wait_for_an_unreachable_node() -> None:
    """A node that does not answer reads the state when it starts again: it is named, not
    waited for."""
    read = Nodes({"A": _section("manual", ["LMC"]), "B": None})
    got = await await_nodes(read, _applies_lmc, deadline_s=5, interval_s=0.01)
    assert got == Propagation({"A": "manual", "B": "unreachable"}, ("B",))
    assert read.calls == 1


# --- the officers' endpoints, in process ------------------------------------------------------

OFFICER = {"Authorization": "Bearer officer"}


class Conn:
    """Records the statements an audit runs."""

    def __init__(self, executed: list[tuple[str, Any]]) -> None:
        self.executed = executed

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield

    async def execute(self, sql: str, params: Any = None) -> None:
        self.executed.append((sql, params))


class Pool:
    """A database that is up (`error` None) or down (every connection raises `error`)."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.executed: list[tuple[str, Any]] = []

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Conn]:
        if self.error is not None:
            raise self.error
        yield Conn(self.executed)


@dataclass
class Peer:
    """Node B's /health: it applies `mode`/`scope` once it has been asked `lag` times."""

    mode: str = "normal"
    scope: Any = field(default_factory=list)
    lag: int = 0
    asked: int = 0

    def app(self) -> web.Application:
        async def health(request: web.Request) -> web.Response:
            self.asked += 1
            section = {"mode": self.mode, "scope": self.scope} if self.asked > self.lag else {}
            return web.json_response({"status": "fail", "contingency": section}, status=503)

        app = web.Application()
        app.router.add_get("/health", health)
        return app


@dataclass
class Node:
    etcd: MemoryEtcd
    pool: Pool
    runtime: ContingencyRuntime
    client: TestClient[web.Request, web.Application]


@pytest.fixture
def officer(monkeypatch: pytest.MonkeyPatch) -> Account:
    """Authentication is auth.py's business (tested with it): here every caller is an officer."""
    account = Account(7, "officer", "Officer Chan", "active")

    async def require(request: web.Request, *kinds: str) -> Account:
        return account

    monkeypatch.setattr(contingency_api, "require", require)

    async def reconcile(conn: Any, paths: list[Path]) -> ReconcileReport:
        return ReconcileReport(journals=[str(p) for p in paths])

    monkeypatch.setattr(contingency_api, "reconcile", reconcile)
    monkeypatch.setattr(contingency_api, "NODES_DEADLINE_S", 1.0)  # a lagging peer costs less
    return account


async def _node(
    tmp_path: Path,
    aiohttp_client: AiohttpClient,
    *,
    peers: dict[str, str],
    role: str = "active",
) -> AsyncIterator[Node]:
    etcd, pool = MemoryEtcd(), Pool()
    runtime = _runtime(etcd)
    app = web.Application(middlewares=[problem_middleware])
    app[appkeys.CONFIG] = node_config(tmp_path, peers={"A": "http://127.0.0.1:1", **peers})
    app[appkeys.CONTINGENCY] = runtime
    app[appkeys.ROLE] = SimpleNamespace(role=role)  # type: ignore[assignment]
    app[appkeys.POOL] = pool  # type: ignore[assignment]
    app[appkeys.JOURNAL] = Journal(tmp_path / "journal-A.sqlite")
    contingency_api.add_routes(app)
    async with aiohttp.ClientSession() as session:
        app[appkeys.HTTP] = session
        yield Node(etcd, pool, runtime, await aiohttp_client(app))
    app[appkeys.JOURNAL].close()


@pytest.fixture
async def peer(aiohttp_server: AiohttpServer) -> tuple[Peer, str]:
    b = Peer()
    server = await aiohttp_server(b.app())
    return b, str(server.make_url("")).rstrip("/")


@pytest.fixture
async def node(
    tmp_path: Path, aiohttp_client: AiohttpClient, peer: tuple[Peer, str], officer: Account
) -> AsyncIterator[Node]:
    async for n in _node(tmp_path, aiohttp_client, peers={"B": peer[1]}):
        yield n


async def _problem(r: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    assert r.status == status, await r.text()
    assert r.content_type == PROBLEM_JSON
    doc: dict[str, Any] = await r.json(content_type=None)
    assert doc["status"] == status
    return doc


async def test_activate_answers_once_every_node_applies_the_mode(
    node: Node, peer: tuple[Peer, str]
) -> None:
    """The answer waits for node B, which re-reads the state a few rounds later, and lists the
    mode each node applies; this node applies the change before answering."""
    b, _ = peer
    b.mode, b.scope, b.lag = "manual", ["LMC"], 2
    r = await node.client.post(
        "/v1/contingency/activate", json={"reason": "outage", "lbcps": ["LMC"]}, headers=OFFICER
    )
    doc = await r.json()
    assert r.status == 200, doc
    assert doc["nodes"] == {"A": "manual", "B": "manual"}
    assert doc["not_applied"] == []
    assert b.asked == 3
    assert doc["mode"] == "manual"
    assert doc["audited_to"] == "database"
    assert [params[1] for _, params in node.pool.executed] == ["contingency.activate"]


async def test_activate_names_a_peer_that_does_not_follow(
    node: Node, peer: tuple[Peer, str]
) -> None:
    """A peer still normal when the few-second deadline passes is named, not hidden."""
    r = await node.client.post("/v1/contingency/activate", json={"reason": "r"}, headers=OFFICER)
    doc = await r.json()
    assert r.status == 200, doc
    assert doc["nodes"] == {"A": "manual", "B": "normal"}
    assert doc["not_applied"] == ["B"]


async def test_an_unreachable_peer_is_named_and_not_waited_for(
    tmp_path: Path, aiohttp_client: AiohttpClient, officer: Account
) -> None:
    """A peer that refuses connections is reported `unreachable` at once."""
    async for n in _node(tmp_path, aiohttp_client, peers={"B": "http://127.0.0.1:9"}):
        r = await n.client.post("/v1/contingency/activate", json={"reason": "r"}, headers=OFFICER)
        doc = await r.json()
        assert r.status == 200, doc
        assert doc["nodes"] == {"A": "manual", "B": "unreachable"}
        assert doc["not_applied"] == ["B"]


@pytest.mark.parametrize("message", ["", "   "])
async def test_a_blank_message_is_422_naming_message(node: Node, message: str) -> None:
    """A blank public notice is refused as input (it used to answer 503), and nothing changes."""
    r = await node.client.post(
        "/v1/contingency/activate", json={"reason": "r", "message": message}, headers=OFFICER
    )
    doc = await _problem(r, 422)
    assert [e["field"] for e in doc["errors"]] == ["message"]
    assert CONTINGENCY_STATE_KEY not in node.etcd.data


async def test_activate_with_etcd_down_is_503(node: Node) -> None:
    """No etcd member: 503 with Retry-After, naming the local override that still works."""
    node.etcd.down = True
    r = await node.client.post("/v1/contingency/activate", json={"reason": "r"}, headers=OFFICER)
    doc = await _problem(r, 503)
    assert r.headers["Retry-After"] == "1"
    assert "--local" in doc["detail"]


async def test_deactivate_with_etcd_down_is_503(node: Node, peer: tuple[Peer, str]) -> None:
    """An etcd outage during deactivation is an outage (503), not a conflict (it was 409); the
    mode stays manual."""
    await node.runtime.activate(actor="officer:7", reason="r", lbcps=None, message="m")
    node.etcd.down = True
    r = await node.client.post("/v1/contingency/deactivate", json={"reason": "r"}, headers=OFFICER)
    doc = await _problem(r, 503)
    assert "etcd is unreachable" in doc["detail"]
    assert node.runtime.state.mode == "manual"


async def test_deactivate_answers_once_every_node_is_normal(
    node: Node, peer: tuple[Peer, str]
) -> None:
    """Switching off reconciles first, then answers once node B applies normal again."""
    b, _ = peer
    await node.runtime.activate(actor="officer:7", reason="r", lbcps=None, message="m")
    b.mode, b.scope, b.lag = "normal", [], 2
    r = await node.client.post("/v1/contingency/deactivate", json={"reason": "r"}, headers=OFFICER)
    doc = await r.json()
    assert r.status == 200, doc
    assert doc["nodes"] == {"A": "normal", "B": "normal"}
    assert doc["not_applied"] == []
    assert doc["reconciliation"]["imported"] == 0


async def test_deactivating_normal_mode_is_409(node: Node) -> None:
    """Switching off what is not on is a conflict with the current state."""
    r = await node.client.post("/v1/contingency/deactivate", json={"reason": "r"}, headers=OFFICER)
    doc = await _problem(r, 409)
    assert "already normal" in doc["detail"]


async def test_deactivate_without_a_database_keeps_manual_mode_on(node: Node) -> None:
    """The database down: 503 saying manual mode stays on (officers get no trade-user notice),
    and the state in etcd is untouched."""
    await node.runtime.activate(actor="officer:7", reason="r", lbcps=None, message="m")
    node.pool.error = PoolTimeout("no connection in 5 s")
    r = await node.client.post("/v1/contingency/deactivate", json={"reason": "r"}, headers=OFFICER)
    doc = await _problem(r, 503)
    assert doc["detail"].endswith("manual mode stays on")
    assert doc["retry_after_ms"] == 200
    assert "mode" not in doc
    assert node.runtime.state.mode == "manual"


async def test_activate_without_a_database_audits_to_the_journal(
    node: Node, peer: tuple[Peer, str]
) -> None:
    """With PostgreSQL down the switch still works and its audit goes to the journal."""
    peer[0].mode, peer[0].scope = "manual", "all"
    node.pool.error = PoolTimeout("no connection in 5 s")
    r = await node.client.post("/v1/contingency/activate", json={"reason": "r"}, headers=OFFICER)
    doc = await r.json()
    assert r.status == 200, doc
    assert doc["audited_to"] == "journal"
    assert doc["not_applied"] == []
    assert node.pool.executed == []


async def test_a_clearance_goes_to_the_journal_while_the_database_is_down(node: Node) -> None:
    """A truck cleared by hand is kept on the node's disk (202) when PostgreSQL is down."""
    node.pool.error = PoolTimeout("no connection in 5 s")
    r = await node.client.post(
        "/v1/contingency/clearances",
        json={"lbcp": "LMC", "vrn": "AB1234", "decision": "release", "documents": ["manifest"]},
        headers=OFFICER,
    )
    doc = await r.json()
    assert r.status == 202, doc
    assert doc["stored"] == "journal"


def test_a_failing_journal_disk_is_a_journal_error(tmp_path: Path) -> None:
    """SQLite's own errors (disk full, I/O error) leave the journal as JournalError, which the
    HTTP table answers 503 naming the journal, never as a driver error (500)."""

    class BrokenDisk:
        in_transaction = False

        def execute(self, sql: str, *args: object) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        def close(self) -> None:
            pass

    journal = Journal(tmp_path / "journal-A.sqlite")
    journal._conn = BrokenDisk()  # type: ignore[assignment]
    event = AuditEvent(at=AT, actor="officer:7", action="contingency.activate", subject="c")
    with pytest.raises(JournalError, match="disk I/O error") as caught:
        journal.append_audit(event)
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
