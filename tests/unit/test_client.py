"""RocarsClient against a real local aiohttp server scripted to fail the way a failover does:
503 with Retry-After from the standby, dropped connections, slow answers, a closed port. Time is
faked (a clock that advances only when the client sleeps) so backoff and deadlines are exact."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import unused_port
from pytest_aiohttp import AiohttpServer

from node.client import ApiError, ClientError, RocarsClient, Unavailable

DROP = "drop"  # close the connection without answering
SLOW = "slow"  # answer only after the client's request timeout


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


Action = Reply | str


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Script:
    actions: list[Action] = field(default_factory=list)
    default: Action = field(default_factory=lambda: Reply(200, {"ok": True}))
    seen: list[Seen] = field(default_factory=list)


SCRIPT = web.AppKey("script", Script)


async def scripted(request: web.Request) -> web.StreamResponse:
    script = request.app[SCRIPT]
    body = await request.read()
    script.seen.append(Seen(request.method, request.raw_path, dict(request.headers), body))
    action = script.actions.pop(0) if script.actions else script.default
    if action == DROP:
        assert request.transport is not None
        request.transport.close()
        return web.Response()
    if action == SLOW:
        await asyncio.sleep(0.5)
        return web.json_response({"late": True})
    assert isinstance(action, Reply)
    named = any(k.lower() == "x-rocars-node" for k in action.headers)
    return web.json_response(
        action.body,
        status=action.status,
        headers={**({} if named else {"X-Rocars-Node": "A"}), **action.headers},
        content_type=action.content_type,
    )


class FakeTime:
    """A clock that moves only when the client sleeps, recording every wait."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


MakeClient = Callable[..., RocarsClient]


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
async def base_url(aiohttp_server: AiohttpServer, script: Script) -> str:
    app = web.Application()
    app[SCRIPT] = script
    app.router.add_route("*", "/{tail:.*}", scripted)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def make_client(base_url: str, fake: FakeTime) -> AsyncIterator[MakeClient]:
    clients: list[RocarsClient] = []

    def make(url: str = base_url, **kw: Any) -> RocarsClient:
        opts: dict[str, Any] = {
            "deadline_s": 10.0,
            "request_timeout_s": 2.0,
            "clock": fake.clock,
            "sleep": fake.sleep,
            "rng": random.Random(7),
            **kw,
        }
        c = RocarsClient(url, "secret-key", **opts)
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()


def unavailable(retry_after: str = "2") -> Reply:
    problem = {"type": "about:blank", "title": "Service Unavailable", "status": 503}
    return Reply(503, problem, {"Retry-After": retry_after}, "application/problem+json")


async def test_503_retried_with_same_key_until_created(
    make_client: MakeClient, script: Script, fake: FakeTime
) -> None:
    """A standby's 503s are retried with one unchanged Idempotency-Key until the 201 arrives."""
    script.actions = [unavailable(), unavailable(), Reply(201, {"ccrn": "C1"})]
    client = make_client()
    assert await client.submit_consignment({"packages": 1}) == {"ccrn": "C1"}
    keys = {s.headers["Idempotency-Key"] for s in script.seen}
    assert len(script.seen) == 3
    assert len(keys) == 1
    assert uuid.UUID(keys.pop()).version == 4


async def test_retry_after_is_the_minimum_wait(
    make_client: MakeClient, script: Script, fake: FakeTime
) -> None:
    """Retry-After seconds on a 503 win over a shorter jittered backoff."""
    script.actions = [unavailable("2"), unavailable("3"), Reply(201, {"ccrn": "C1"})]
    await make_client().submit_consignment({})
    assert fake.waits == [2.0, 3.0]


async def test_problem_retry_after_ms_is_a_finer_minimum_than_the_header(
    make_client: MakeClient, script: Script, fake: FakeTime
) -> None:
    """During a failover the server's problem says `retry_after_ms` (the header can only say
    whole seconds): that is the minimum wait, so the client comes back within ~0.2 s."""
    problem = {"type": "x", "title": "Service Unavailable", "status": 503, "retry_after_ms": 200}
    hint = Reply(503, problem, {"Retry-After": "1"}, "application/problem+json")
    script.actions = [hint, hint, Reply(201, {"ccrn": "C1"})]
    await make_client(backoff_max_s=0.1).submit_consignment({})
    assert fake.waits == [0.2, 0.2]


@pytest.mark.parametrize("bad", [-1, "200", True, None, 10**9])
async def test_unusable_retry_after_ms_falls_back_to_the_header(
    make_client: MakeClient, script: Script, fake: FakeTime, bad: object
) -> None:
    """A negative, textual, boolean or absurd `retry_after_ms` is ignored for the header."""
    problem = {"title": "Service Unavailable", "status": 503, "retry_after_ms": bad}
    script.actions = [
        Reply(503, problem, {"Retry-After": "2"}, "application/problem+json"),
        Reply(201, {"ccrn": "C1"}),
    ]
    await make_client().submit_consignment({})
    assert fake.waits == [2.0]


async def test_caller_key_is_sent_and_fresh_keys_differ(
    make_client: MakeClient, script: Script
) -> None:
    """A caller's idempotency key is sent as given; otherwise each logical call gets a new one."""
    client = make_client()
    await client.create_bundle({"vrn": "AB123"}, idempotency_key="bundle-1")
    await client.create_bundle({"vrn": "AB123"})
    await client.create_bundle({"vrn": "AB123"})
    keys = [s.headers["Idempotency-Key"] for s in script.seen]
    assert keys[0] == "bundle-1"
    assert len(set(keys)) == 3


async def test_reads_carry_bearer_but_no_idempotency_key(
    make_client: MakeClient, script: Script
) -> None:
    """GETs send the API key as a bearer token and no Idempotency-Key."""
    script.default = Reply(200, {"ccrn": "C1"})
    await make_client().get_consignment("C1")
    assert script.seen[0].headers["Authorization"] == "Bearer secret-key"
    assert "Idempotency-Key" not in script.seen[0].headers


async def test_dropped_connections_are_retried(
    make_client: MakeClient, script: Script, fake: FakeTime
) -> None:
    """Connections closed without an answer are retried, and each failure is logged."""
    script.actions = [DROP, DROP, Reply(200, {"state": "amended"})]
    client = make_client()
    assert await client.amend_consignment("C1", {"packages": 2}) == {"state": "amended"}
    (record,) = client.attempts
    assert record.attempts == 3
    assert len(record.errors) == 2
    assert all("Disconnected" in e or "Payload" in e for e in record.errors), record.errors
    assert record.status == 200
    assert record.node == "A"
    assert len({s.headers["Idempotency-Key"] for s in script.seen}) == 1


async def test_timeout_is_retried(make_client: MakeClient, script: Script) -> None:
    """An answer slower than request_timeout_s counts as transient and is retried."""
    script.actions = [SLOW, Reply(204)]
    client = make_client(request_timeout_s=0.1)
    assert await client.cancel_consignment("C1") == {}
    (record,) = client.attempts
    assert record.attempts == 2
    assert "Timeout" in record.errors[0]


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_gateway_statuses_are_retried(
    make_client: MakeClient, script: Script, status: int
) -> None:
    """502, 503 and 504 are transient: the call goes on to the next answer."""
    script.actions = [Reply(status, {"title": "x"}), Reply(201, {"ccrn": "C1"})]
    assert await make_client().arrival("LMC", "AB123") == {"ccrn": "C1"}
    assert len(script.seen) == 2


async def test_rate_limited_429_is_retried_after_retry_after(
    make_client: MakeClient, script: Script, fake: FakeTime
) -> None:
    """A 429 from the per-account rate limit is retried (same Idempotency-Key) no sooner than
    its Retry-After."""
    problem = {"type": "https://rocars.example/problems/rate-limited", "status": 429}
    script.actions = [
        Reply(429, problem, {"Retry-After": "2"}, "application/problem+json"),
        Reply(201, {"ccrn": "C1"}),
    ]
    assert await make_client().submit_consignment({}) == {"ccrn": "C1"}
    assert fake.waits == [2.0]
    assert len({s.headers["Idempotency-Key"] for s in script.seen}) == 1


async def test_422_raises_problem_without_retry(
    make_client: MakeClient, script: Script, fake: FakeTime
) -> None:
    """A 422 is not retried; ApiError carries the problem fields and names the bad fields."""
    problem = {
        "type": "https://rocars.example/problems/validation",
        "title": "Unprocessable Content",
        "status": 422,
        "detail": "2 fields are invalid",
        "errors": [
            {"field": "packages", "message": "must be at least 1"},
            {"field": "consignee_name", "message": "is required"},
        ],
    }
    script.default = Reply(422, problem, content_type="application/problem+json")
    client = make_client()
    with pytest.raises(ApiError) as info:
        await client.submit_consignment({"packages": 0})
    assert info.value.status == 422
    assert info.value.problem == problem
    assert "packages: must be at least 1" in str(info.value)
    assert "consignee_name" in str(info.value)
    assert len(script.seen) == 1
    assert fake.waits == []
    assert client.attempts[0].status == 422


@pytest.mark.parametrize("status", [400, 401, 404, 409, 500])
async def test_client_errors_and_500_are_not_retried(
    make_client: MakeClient, script: Script, status: int
) -> None:
    """4xx and 500 are final answers: exactly one request, then ApiError."""
    script.default = Reply(status, {"title": "no"}, content_type="application/problem+json")
    with pytest.raises(ApiError) as info:
        await make_client().request("POST", "/v1/consignments", json={})
    assert info.value.status == status
    assert len(script.seen) == 1


async def test_unreachable_raises_unavailable_at_deadline(
    make_client: MakeClient, fake: FakeTime
) -> None:
    """A closed port is retried with capped jittered backoff until the deadline, cause chained."""
    client = make_client(f"http://127.0.0.1:{unused_port()}", deadline_s=5.0)
    with pytest.raises(Unavailable) as info:
        await client.submit_consignment({})
    assert isinstance(info.value.__cause__, aiohttp.ClientConnectionError)
    assert sum(fake.waits) == pytest.approx(5.0)
    for n, wait in enumerate(fake.waits[:-1], start=1):
        ceiling = min(0.05 * 2 ** (n - 1), 1.0)
        assert ceiling / 2 <= wait <= ceiling
    (record,) = client.attempts
    assert record.attempts == len(fake.waits) + 1
    assert len(record.errors) == record.attempts
    assert record.status is None
    assert record.ended is not None
    assert record.ended - record.started == pytest.approx(5.0)


async def test_retry_after_is_capped_by_deadline(
    make_client: MakeClient, script: Script, fake: FakeTime
) -> None:
    """A Retry-After longer than the time left is cut to the deadline, then Unavailable."""
    script.default = unavailable("30")
    with pytest.raises(Unavailable) as info:
        await make_client(deadline_s=5.0).submit_consignment({})
    assert fake.waits == [5.0]
    assert len(script.seen) == 2
    cause = info.value.__cause__
    assert isinstance(cause, ApiError)
    assert cause.status == 503


async def test_retry_false_makes_one_attempt(make_client: MakeClient, script: Script) -> None:
    """With retry=False a 503 is raised as ApiError after a single request."""
    script.default = unavailable()
    with pytest.raises(ApiError) as info:
        await make_client().request("POST", "/v1/bundles", json={}, retry=False)
    assert info.value.status == 503
    assert info.value.retry_after == 2.0
    assert len(script.seen) == 1


async def test_response_fields_and_path_quoting(make_client: MakeClient, script: Script) -> None:
    """Response exposes status, headers, parsed body and node; identifiers are path-quoted."""
    script.default = Reply(200, {"items": []})
    client = make_client()
    resp = await client.request("GET", "/v1/consignments?page=2")
    assert (resp.status, resp.body, resp.node) == (200, {"items": []}, "A")
    assert resp.headers["X-Rocars-Node"] == "A"
    await client.get_consignment("../admin")
    await client.list_consignments(state="open", limit=5)
    assert script.seen[1].raw_path == "/v1/consignments/..%2Fadmin"
    assert script.seen[2].raw_path == "/v1/consignments?state=open&limit=5"


async def test_health_returns_failing_document(make_client: MakeClient, script: Script) -> None:
    """A failing node's 503 health document is returned, not raised, and not retried."""
    doc = {"status": "fail", "role": "standby"}
    script.default = Reply(503, doc, content_type="application/health+json")
    assert await make_client().health() == doc
    assert len(script.seen) == 1


async def test_non_object_body_is_a_client_error(make_client: MakeClient, script: Script) -> None:
    """A typed helper refuses a 2xx body that is not a JSON object with ClientError."""
    script.default = Reply(200, [1, 2])
    with pytest.raises(ClientError):
        await make_client().get_consignment("C1")


async def test_given_session_is_left_open(base_url: str, script: Script) -> None:
    """A caller's session is used and left open; an owned one is closed on exit."""
    async with aiohttp.ClientSession() as session:
        async with RocarsClient(base_url, session=session) as client:
            await client.health()
        assert not session.closed
    async with RocarsClient(base_url) as owned:
        await owned.health()
        inner = owned._session
    assert inner is not None
    assert inner.closed
    assert all("Authorization" not in s.headers for s in script.seen)


async def test_the_answering_node_is_read_whatever_the_header_case(
    make_client: MakeClient, script: Script
) -> None:
    """The node named by the answer is found however a proxy spelled the header's name
    (HAProxy sends `x-rocars-node`): drills and the history checker rely on it (I3)."""
    script.default = Reply(200, {"ok": True}, headers={"x-rocars-node": "B"})
    resp = await make_client().request("GET", "/v1/status")
    assert resp.node == "B"
