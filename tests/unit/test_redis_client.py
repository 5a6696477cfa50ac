"""The Redis adapter's failure handling (node.redis_client) and the rate-limit glue in node.auth.

No Redis runs here: "unreachable" is a closed loopback port, and the glue is driven with a bus
whose answers are scripted. The adapter against real Redis and Sentinel, failover included, is
tests/integration/test_redis_follow.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request, unused_port
from aiohttp.web import Application
from unit_fakes import node_config

from kernel.errors import ComponentUnavailable, RedisUnavailable
from monitoring.metrics import NodeMetrics
from node import appkeys
from node.account import Account
from node.auth import enforce_rate_limit
from node.problems import Problem
from node.ratelimit import RateDecision
from node.redis_client import RedisClient


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def dead_bus(clock: FakeClock) -> Any:
    """A bus whose only Sentinel is a closed port (connection refused at once)."""
    errors: list[RedisUnavailable] = []
    bus = RedisClient(
        [("127.0.0.1", unused_port())],
        "rocars",
        name="test",
        timeout_s=0.25,
        backoff_s=1.0,
        on_error=errors.append,
        clock=clock,
    )
    bus.seen_errors = errors  # type: ignore[attr-defined]
    yield bus
    await bus.aclose()


async def test_unreachable_redis_fails_fast_with_our_own_error(dead_bus: RedisClient) -> None:
    """With no Sentinel answering, counting raises RedisUnavailable (a ComponentUnavailable,
    chained from redis-py's error) in well under a second, and the failure is recorded."""
    started = time.monotonic()
    with pytest.raises(RedisUnavailable) as info:
        await dead_bus.count_request(1, limit=10)
    assert time.monotonic() - started < 0.5
    assert isinstance(info.value, ComponentUnavailable)
    assert info.value.__cause__ is not None
    view = dead_bus.view()
    assert view.ok is False
    assert view.errors_total == 1
    assert view.primary is None
    assert view.last_error is not None
    assert view.last_error.startswith("rate-limit count:")
    assert view.last_error_age_s == 0.0
    assert len(dead_bus.seen_errors) == 1  # type: ignore[attr-defined]


async def test_after_a_failure_requests_skip_redis_until_the_backoff_ends(
    dead_bus: RedisClient, clock: FakeClock
) -> None:
    """Once Redis failed, requests fail open at once for backoff_s (no I/O, no new error
    counted); after it, they try Redis again."""
    with pytest.raises(RedisUnavailable):
        await dead_bus.count_request(1, limit=10)
    clock.now += 0.9
    with pytest.raises(RedisUnavailable, match="skipped"):
        await dead_bus.count_request(1, limit=10)
    assert dead_bus.errors_total == 1
    clock.now += 0.2
    with pytest.raises(RedisUnavailable, match="failed"):
        await dead_bus.count_request(1, limit=10)
    assert dead_bus.errors_total == 2


async def test_the_probe_is_never_skipped(dead_bus: RedisClient) -> None:
    """The background probe always tries (it is what notices Redis is back), and its own
    failures are counted like any other."""
    with pytest.raises(RedisUnavailable):
        await dead_bus.count_request(1, limit=10)
    with pytest.raises(RedisUnavailable, match="probe"):
        await dead_bus.probe()
    assert dead_bus.errors_total == 2
    assert dead_bus.last_error is not None
    assert dead_bus.last_error.startswith("probe:")


async def test_the_probe_loop_ends_on_stop_even_without_a_cancel(dead_bus: RedisClient) -> None:
    """stop() alone ends the probe loop within one round, so the node's shutdown can never
    hang on a cancellation that got lost inside the Redis client."""
    task = asyncio.create_task(dead_bus.run(0.01))
    await asyncio.sleep(0.05)
    dead_bus.stop()
    await asyncio.wait_for(task, 2.0)
    assert dead_bus.errors_total >= 1


async def test_aclose_is_idempotent_and_stops_the_probe(dead_bus: RedisClient) -> None:
    """Closing twice is harmless (the fixture closes again), and a closed bus's loop ends."""
    await dead_bus.aclose()
    await asyncio.wait_for(dead_bus.run(0.01), 2.0)


# -- the glue in node.auth ----------------------------------------------------------------


class ScriptedBus(RedisClient):
    """A RedisClient whose count_request answers from a script instead of Redis."""

    def __init__(self, answer: RateDecision | RedisUnavailable) -> None:
        super().__init__([("127.0.0.1", 1)], "rocars", name="scripted")
        self.answer = answer
        self.calls: list[tuple[int, int]] = []

    async def count_request(
        self, account_id: int, *, limit: int, cost: int = 1, paid: int = 0
    ) -> RateDecision:
        self.calls.append((account_id, limit))
        if isinstance(self.answer, RedisUnavailable):
            raise self.answer
        return self.answer


def _app(tmp_path: Path, bus: RedisClient, *, limit: int) -> Application:
    app = Application()
    app[appkeys.CONFIG] = node_config(tmp_path, rate_limit_per_s=limit)
    app[appkeys.METRICS] = NodeMetrics()
    app[appkeys.REDIS] = bus
    return app


ACCOUNT = Account(id=42, kind="trader", name="t", status="active")


def _sample(app: Application, name: str) -> float | None:
    return app[appkeys.METRICS].registry.get_sample_value(name)


async def test_over_the_limit_is_a_429_problem_with_retry_after(tmp_path: Path) -> None:
    """A refused count becomes 429 Too Many Requests as a problem document with Retry-After
    (whole seconds), the exact wait in retry_after_ms and the limit, and
    rocars_rate_limited_total counts it."""
    bus = ScriptedBus(RateDecision(False, 11.0, 10, 2, 1500))
    app = _app(tmp_path, bus, limit=10)
    with pytest.raises(Problem) as info:
        await enforce_rate_limit(make_mocked_request("GET", "/v1/x", app=app), ACCOUNT)
    p = info.value
    assert p.status == 429
    assert p.headers == {"Retry-After": "2"}
    assert p.type == "https://rocars.example/problems/rate-limited"
    assert p.extra == {"limit_per_s": 10, "retry_after_s": 2, "retry_after_ms": 1500}
    response = p.response("/v1/x")
    assert response.content_type == "application/problem+json"
    assert bus.calls == [(42, 10)]
    await bus.aclose()
    assert _sample(app, "rocars_rate_limited_total") == 1.0


async def test_allowed_requests_pass_untouched(tmp_path: Path) -> None:
    """An allowed count lets the request on and counts nothing as limited."""
    bus = ScriptedBus(RateDecision(True, 3.0, 10, 0))
    app = _app(tmp_path, bus, limit=10)
    await enforce_rate_limit(make_mocked_request("GET", "/v1/x", app=app), ACCOUNT)
    await bus.aclose()
    assert _sample(app, "rocars_rate_limited_total") == 0.0
    assert _sample(app, "rocars_rate_limit_fail_open_total") == 0.0


async def test_redis_unavailable_fails_open_and_is_counted(tmp_path: Path) -> None:
    """When Redis cannot count, the request goes through and the fail-open counter says so."""
    bus = ScriptedBus(RedisUnavailable("Redis rate-limit count failed: refused"))
    app = _app(tmp_path, bus, limit=10)
    await enforce_rate_limit(make_mocked_request("GET", "/v1/x", app=app), ACCOUNT)
    await bus.aclose()
    assert _sample(app, "rocars_rate_limit_fail_open_total") == 1.0
    assert _sample(app, "rocars_rate_limited_total") == 0.0


async def test_limit_zero_never_asks_redis(tmp_path: Path) -> None:
    """rate_limit_per_s = 0 switches the limit off: Redis is not even asked."""
    bus = ScriptedBus(RateDecision(False, 99.0, 1, 1))
    app = _app(tmp_path, bus, limit=0)
    await enforce_rate_limit(make_mocked_request("GET", "/v1/x", app=app), ACCOUNT)
    await bus.aclose()
    assert bus.calls == []
