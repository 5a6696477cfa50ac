"""#11 target 3 in process: past its in-flight limit a node answers 503 problem+json with
Retry-After at once (node.admission), health, metrics, the public notice and contingency still
answer, and the in-flight count comes back to 0 whatever happened to the requests it counted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from aiohttp import web
from handler_fakes import Fakes
from problem_checks import AiohttpClient, Client, assert_problem, call
from route_table import BY_KEY

from node import appkeys
from node.admission import BUSY
from node.config import DEFAULT_MAX_IN_FLIGHT
from node.problems import Problem
from node.stores import open_pool

HOLD = "/v1/test/hold"
SUBMIT = BY_KEY[("POST", "/v1/consignments")]
EXEMPT = [
    (BY_KEY[("GET", "/health/live")], None, 200),
    (BY_KEY[("GET", "/health/ready")], None, 200),
    (BY_KEY[("GET", "/health")], None, 200),
    (BY_KEY[("GET", "/metrics")], None, 200),
    (BY_KEY[("GET", "/v1/status")], None, 200),
    (BY_KEY[("GET", "/v1/contingency")], "officer", 200),
]
LIMIT = 2


class Gate:
    """A route that holds each request until the test opens the gate, counting entries."""

    def __init__(self) -> None:
        self.entered = 0
        self.tasks: list[asyncio.Task[object]] = []
        self.open = asyncio.Event()
        self.outcome: Callable[[], web.StreamResponse] = lambda: web.json_response({"ok": 1})

    async def handler(self, request: web.Request) -> web.StreamResponse:
        self.entered += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)
        await self.open.wait()
        return self.outcome()


async def _until(fact: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not fact():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def _value(app: web.Application, name: str) -> float:
    value = app[appkeys.METRICS].registry.get_sample_value(name)
    return 0.0 if value is None else value


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
async def limited(fakes: Fakes, gate: Gate, aiohttp_client: AiohttpClient) -> Client:
    """The node with an in-flight limit of LIMIT and a test route that holds requests."""
    app = fakes.app(max_in_flight=LIMIT)
    app.router.add_post(HOLD, gate.handler)
    return await aiohttp_client(app)


async def _fill(client: Client, gate: Gate) -> list[asyncio.Task[int]]:
    """LIMIT requests held inside the node."""

    async def one() -> int:
        async with client.post(HOLD) as resp:
            await resp.read()
            return resp.status

    tasks = [asyncio.create_task(one()) for _ in range(LIMIT)]
    await _until(lambda: gate.entered == LIMIT)
    return tasks


async def test_past_the_limit_a_request_is_answered_503_at_once(
    fakes: Fakes, gate: Gate, limited: Client
) -> None:
    """#11 target 3: with LIMIT requests in progress the next one (a real submission) is
    answered 503 busy problem+json with Retry-After and retry_after_ms while the others are
    still held, without authenticating it (it costs the node nothing more); once they finish,
    a request is admitted again."""
    held = await _fill(limited, gate)
    lookups = fakes.accounts.lookups
    started = time.monotonic()
    shed = await call(limited, SUBMIT, headers=fakes.auth("trader"))
    assert time.monotonic() - started < 1.0
    assert_problem(shed, 503)
    assert shed.body["type"] == BUSY
    assert shed.headers["Retry-After"] == "1"
    assert shed.body["retry_after_ms"] == 1000
    assert shed.headers["Cache-Control"] == "no-store"
    assert fakes.accounts.lookups == lookups  # not authenticated: refused before anything
    assert not any(t.done() for t in held)
    app = limited.app
    assert _value(app, "rocars_http_shed_total") == 1
    assert _value(app, "rocars_http_in_flight") == LIMIT
    requests = app[appkeys.METRICS].registry.get_sample_value(
        "rocars_http_requests_total",
        {"method": "POST", "route": "/v1/consignments", "status": "503"},
    )
    assert requests == 1  # counted by the request metrics like any answer

    gate.open.set()
    assert await asyncio.gather(*held) == [200] * LIMIT
    assert _value(app, "rocars_http_in_flight") == 0
    async with limited.post(HOLD) as resp:
        assert resp.status == 200


@pytest.mark.parametrize(("route", "kind", "status"), EXEMPT, ids=lambda x: getattr(x, "url", x))
async def test_health_metrics_status_and_contingency_answer_at_the_limit(
    fakes: Fakes, gate: Gate, limited: Client, route: object, kind: str | None, status: int
) -> None:
    """#11 target 3: at the limit HAProxy's checks (/health/ready, /health/live), Prometheus
    (/metrics), the public notice (/v1/status) and contingency (I4) still get their answers,
    and are not counted in flight."""
    held = await _fill(limited, gate)
    headers = fakes.auth(kind) if kind else None
    answer = await call(limited, route, headers=headers)  # type: ignore[arg-type]
    assert answer.status == status, answer
    assert _value(limited.app, "rocars_http_shed_total") == 0
    assert _value(limited.app, "rocars_http_in_flight") == LIMIT
    gate.open.set()
    await asyncio.gather(*held)


async def test_metrics_show_in_flight_and_shed(fakes: Fakes, gate: Gate, limited: Client) -> None:
    """#11 target 3: /metrics exposes the in-flight gauge and the shed counter."""
    held = await _fill(limited, gate)
    await call(limited, SUBMIT, headers=fakes.auth("trader"))
    async with limited.get("/metrics") as resp:
        text = await resp.text()
    assert f"rocars_http_in_flight {LIMIT:.1f}" in text
    assert "rocars_http_shed_total 1.0" in text
    gate.open.set()
    await asyncio.gather(*held)


@pytest.mark.parametrize("failure", ["exception", "problem", "http-exception"])
async def test_in_flight_returns_to_zero_after_errors(
    gate: Gate, limited: Client, failure: str
) -> None:
    """#11 target 3: a request whose handler fails (a bug answered 500, a problem, an aiohttp
    HTTP exception) leaves the in-flight count where it was; the limit is not eaten away."""

    def fail() -> web.StreamResponse:
        if failure == "exception":
            raise RuntimeError("boom")
        if failure == "problem":
            raise Problem(409, "Conflict")
        raise web.HTTPBadRequest()

    gate.outcome = fail
    gate.open.set()
    for _ in range(LIMIT + 2):
        async with limited.post(HOLD) as resp:
            assert resp.status in (400, 409, 500)
    assert _value(limited.app, "rocars_http_in_flight") == 0
    assert _value(limited.app, "rocars_http_shed_total") == 0


async def test_in_flight_returns_to_zero_on_cancellation(gate: Gate, limited: Client) -> None:
    """#11 target 3: requests cancelled while they are handled (the node shutting down, or a
    client gone with handler cancellation on) give their places back."""
    held = await _fill(limited, gate)
    assert _value(limited.app, "rocars_http_in_flight") == LIMIT
    for task in gate.tasks:
        task.cancel()
    await asyncio.gather(*held, return_exceptions=True)  # the client sees the connection drop
    await _until(lambda: _value(limited.app, "rocars_http_in_flight") == 0)
    gate.open.set()
    async with limited.post(HOLD) as resp:
        assert resp.status == 200


async def test_each_app_counts_its_own_requests(
    fakes: Fakes, gate: Gate, limited: Client, aiohttp_client: AiohttpClient
) -> None:
    """#11 target 3: two nodes in one process (as in tests) do not share one count: one at
    its limit does not refuse the other's requests."""
    held = await _fill(limited, gate)
    other = fakes.app(max_in_flight=LIMIT)
    other.router.add_post(HOLD, _ok)
    client = await aiohttp_client(other)
    async with client.post(HOLD) as resp:
        assert resp.status == 200
    gate.open.set()
    await asyncio.gather(*held)


async def _ok(_: web.Request) -> web.StreamResponse:
    return web.Response()


async def test_the_default_limit_is_above_the_pool(fakes: Fakes) -> None:
    """#11 target 3: the node's default limit leaves room above its pool's connections for
    requests that hold none (authentication, parsing, answering)."""
    config = fakes.config()
    assert config.max_in_flight == DEFAULT_MAX_IN_FLIGHT
    assert open_pool(config).max_size < DEFAULT_MAX_IN_FLIGHT


async def test_an_idle_node_lets_go_of_a_busy_spells_connections_within_ten_minutes(
    fakes: Fakes,
) -> None:
    """#11 target 5: psycopg_pool closes one unused connection per `max_idle`, so a pool grown
    to its maximum by a busy spell is back at its minimum after (max - min) periods; with the
    library's default (10 min) that was 90 minutes of nine idle backends, about 7 MiB each."""
    pool = open_pool(fakes.config())
    assert (pool.max_size - pool.min_size) * pool.max_idle <= 10 * 60
