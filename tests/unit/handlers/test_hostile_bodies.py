"""Hostile request bodies through the real app in process (handler fakes): per-route body caps
(413 naming `body`, before reading when Content-Length says so, at the cap when chunked), batch
parse errors as 4xx, the stop at item 10,001, the batch's item cost against the rate limit, and
an event loop that keeps running while 10 MiB hostile batches are handled (#10 items 2, 3, 5).
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from handler_fakes import Fakes, MemoryRedis, operational_error
from problem_checks import PROBLEM_JSON, AiohttpClient, Answer, Client, assert_problem
from route_table import BY_KEY, CONSIGNMENT

from node.ratelimit import RateDecision, decide
from node.validation import MAX_BODY

SINGLE = BY_KEY[("POST", "/v1/consignments")]
BATCH = BY_KEY[("POST", "/v1/consignments:batch")]
SUSPEND = BY_KEY[("POST", "/v1/accounts/{id}/suspend")]
BATCH_CAP = 10 * 1024 * 1024
MiB = 1024 * 1024
CSV = {"Content-Type": "text/csv"}
JSON = {"Content-Type": "application/json"}


async def send(client: Client, method: str, url: str, headers: dict[str, str], data: Any) -> Answer:
    async with asyncio.timeout(30), client.request(method, url, data=data, headers=headers) as r:
        raw = await r.read()
        body = json.loads(raw) if raw and r.content_type.endswith("json") else None
        return Answer(r.status, dict(r.headers), r.content_type, body)


async def endless(sent: list[int]) -> AsyncIterator[bytes]:
    """A chunked body that never ends (counts what it handed over)."""
    chunk = b" " * 65536
    while True:
        sent[0] += len(chunk)
        yield chunk


async def stalled(sent: list[int]) -> AsyncIterator[bytes]:
    """64 KiB, then nothing: the rest of a declared Content-Length never comes."""
    sent[0] += 65536
    yield b" " * 65536
    await asyncio.Event().wait()


# --- body caps ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "cap"), [(SINGLE, MAX_BODY), (BATCH, BATCH_CAP)], ids=["one", "batch"]
)
async def test_a_declared_oversize_body_is_413_before_it_is_read(
    fakes: Fakes, client: Client, route: Any, cap: int
) -> None:
    """#10 item 2: a Content-Length over the route's cap (1 MiB, 10 MiB for the batch) is
    answered 413 naming `body` at once: the client has sent 64 KiB of it and sends no more."""
    sent = [0]
    headers = {**fakes.auth("trader"), **JSON, "Content-Length": str(cap + 1)}
    answer = await send(client, route.method, route.url, headers, stalled(sent))
    assert_problem(answer, 413, field="body")
    assert sent[0] == 65536


@pytest.mark.parametrize(
    ("route", "cap"), [(SINGLE, MAX_BODY), (BATCH, BATCH_CAP)], ids=["one", "batch"]
)
async def test_an_endless_chunked_body_is_cut_off_at_the_cap(
    fakes: Fakes, client: Client, route: Any, cap: int
) -> None:
    """#10 item 2: a chunked body without end is answered 413 naming `body` once it crosses the
    route's cap (the server stops reading; it does not wait for the end)."""
    sent = [0]
    headers = {**fakes.auth("trader"), **JSON}
    answer = await send(client, route.method, route.url, headers, endless(sent))
    assert_problem(answer, 413, field="body")
    assert sent[0] > cap
    assert f"{cap} bytes" in answer.body["detail"]


async def test_exactly_the_cap_is_not_too_large(fakes: Fakes, client: Client) -> None:
    """#10 item 2: a single body of exactly 1 MiB is read and validated (422 for its unknown
    field), not refused as too large."""
    pad = MAX_BODY - len(json.dumps({**CONSIGNMENT, "pad": ""}).encode())
    body = json.dumps({**CONSIGNMENT, "pad": "x" * pad}).encode()
    assert len(body) == MAX_BODY
    headers = {**fakes.auth("trader"), **JSON}
    answer = await send(client, "POST", SINGLE.url, headers, io.BytesIO(body))
    assert_problem(answer, 422, field="pad")


async def test_a_raw_read_over_the_app_cap_is_a_413_problem(fakes: Fakes, client: Client) -> None:
    """#10 item 2: a route that calls request.read() itself (suspend) is capped by the app's
    1 MiB too, and the error boundary answers aiohttp's 413 as problem+json naming `body`, not
    a text/plain page."""
    sent = [0]
    headers = {**fakes.auth("officer"), **JSON}
    answer = await send(client, "POST", SUSPEND.url, headers, endless(sent))
    assert_problem(answer, 413, field="body")
    assert answer.content_type == PROBLEM_JSON
    assert str(MAX_BODY) in answer.body["detail"]


# --- batch parse errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "status", "field"),
    [
        pytest.param(b"a\n" + b"x\n" * 2_000_000, CSV, 422, "body", id="csv-one-cell-rows"),
        pytest.param(b"[" + b"{}," * 2_000_000 + b"{}]", JSON, 422, "body", id="json-10001"),
        pytest.param(b"[" * BATCH_CAP, JSON, 400, "body", id="json-deep"),
        pytest.param(b'a\n"' + b"x" * 200_000 + b'"\n', CSV, 400, "body[row 2]", id="csv-cell"),
        pytest.param(b"a,b\nx,y\nx\ry,z\n", CSV, 400, "body[row 3]", id="csv-bare-cr"),
        pytest.param(b"a,b\nx\x00y,z\n", CSV, 400, "body[row 2]", id="csv-nul"),
        pytest.param(b"[]", JSON, 422, "body", id="empty"),
    ],
)
async def test_hostile_batches_are_4xx_naming_body_or_row(
    fakes: Fakes, client: Client, body: bytes, headers: dict[str, str], status: int, field: str
) -> None:
    """#10 items 2, 3: a batch of more than 10,000 items (a 4 MiB CSV of one-cell rows, a JSON
    array of two million objects) is 422 "at most 10000 consignments"; nesting, a cell over the
    field size limit, a bare CR or a NUL in a CSV are 400 naming the body or the row; never a
    500. Only the request itself is counted against the rate limit."""
    answer = await send(
        client, "POST", BATCH.url, {**fakes.auth("trader"), **headers}, io.BytesIO(body)
    )
    assert_problem(answer, status, field=field)
    if field == "body" and status == 422 and body != b"[]":
        assert answer.body["errors"][0]["message"] == "at most 10000 consignments"
    assert len(fakes.redis.counted) == 1


# --- the item cost ------------------------------------------------------------------------------


class WindowRedis(MemoryRedis):
    """Redis with real counters, frozen half-way into a window with nothing before it."""

    def __init__(self) -> None:
        super().__init__()
        self.current = 0

    async def count_request(
        self, account_id: int, *, limit: int, cost: int = 1, paid: int = 0
    ) -> RateDecision:
        self.counted.extend([account_id] * cost)
        self.current += cost
        return decide(limit=limit, current=self.current, previous=0, fraction=0.5, cost=paid + cost)


def batch_of(n: int) -> bytes:
    return json.dumps([CONSIGNMENT] * n).encode()


async def test_a_batch_counts_its_items_against_the_rate_limit(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """#10 item 5: with a limit of 5 per second, a 3-item batch counts 3 (then meets the
    database, down here: 503); a second one no longer fits (429 with Retry-After, saying it
    counts as 3) while a single request still would have."""
    fakes.redis = WindowRedis()
    fakes.pool.error = operational_error
    client = await aiohttp_client(fakes.app(rate_limit_per_s=5))
    headers = {**fakes.auth("trader"), **JSON}
    first = await send(client, "POST", BATCH.url, headers, batch_of(3))
    assert_problem(first, 503)
    assert len(fakes.redis.counted) == 3
    second = await send(client, "POST", BATCH.url, headers, batch_of(3))
    assert_problem(second, 429)
    assert "counts as 3" in second.body["detail"]
    assert int(second.headers["Retry-After"]) >= 1


async def test_a_batch_larger_than_the_limit_counts_as_the_whole_limit(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """#10 item 5: 10,000 items against a limit of 5 count as 5 (node.ratelimit.weight): in
    an empty window the batch is let through (503 here: no database), not refused for ever."""
    fakes.redis = WindowRedis()
    fakes.pool.error = operational_error
    client = await aiohttp_client(fakes.app(rate_limit_per_s=5))
    headers = {**fakes.auth("trader"), **JSON}
    answer = await send(client, "POST", BATCH.url, headers, io.BytesIO(batch_of(10_000)))
    assert_problem(answer, 503)
    assert len(fakes.redis.counted) == 5


# --- the event loop keeps running ---------------------------------------------------------------


def _pad_to(rows: list[bytes], size: int) -> list[bytes]:
    per = size // len(rows)
    return [r + b"y" * max(0, per - len(r) - 1) + b"\n" for r in rows]


def hostile_csv_rows() -> bytes:
    """10 MiB: a header and 10,000 rows of invalid consignments, each about 1 KiB."""
    header = b"direction,lbcp,package_count,package_description,consignor_name\n"
    rows = [b"sideways,NOPE,many,,%d" % i for i in range(10_000)]
    return header + b"".join(_pad_to(rows, BATCH_CAP - len(header) - 1))


def hostile_json_items() -> bytes:
    """10 MiB: 10,000 invalid consignments, each about 1 KiB."""
    pad = "y" * 940
    item = {"direction": "sideways", "lbcp": "NOPE", "package_count": "many", "consignor": pad}
    body = json.dumps([item] * 10_000).encode()
    assert len(body) <= BATCH_CAP
    return body


async def tick(done: asyncio.Event, gaps: list[float]) -> None:
    """Sleep 2 ms at a time until `done`, recording how much later than asked each wake was."""
    loop = asyncio.get_running_loop()
    while not done.is_set():
        t0 = loop.time()
        await asyncio.sleep(0.002)
        gaps.append(loop.time() - t0 - 0.002)


async def test_hostile_batches_do_not_hold_the_event_loop(
    fakes: Fakes, client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """#10 items 2, 3: while 10 MiB hostile batches are handled (a CSV of one-cell rows, a CSV
    and a JSON array of 10,000 invalid consignments each, `[[[[...`), a ticker on the same
    event loop never waits 100 ms (parsing and validation run in worker threads)."""
    fakes.pool.error = operational_error
    bodies = {
        "csv one-cell rows": (b"a\n" + b"x\n" * (BATCH_CAP // 2 - 2), CSV, 422),
        "csv 10,000 invalid rows": (hostile_csv_rows(), CSV, 503),
        "json 10,000 invalid items": (hostile_json_items(), JSON, 503),
        "json [[[[": (b"[" * BATCH_CAP, JSON, 400),
    }
    headers = fakes.auth("trader")
    worst: dict[str, float] = {}
    for name, (body, ctype, status) in bodies.items():
        assert len(body) <= BATCH_CAP
        # Leftovers of earlier tests must not set off a full collection (about 70 ms of the
        # interpreter lock here, whoever triggers it) in the middle: measure this batch alone.
        gc.collect()
        gaps: list[float] = []
        done = asyncio.Event()
        ticker = asyncio.create_task(tick(done, gaps))
        started = time.perf_counter()
        answer = await send(client, "POST", BATCH.url, {**headers, **ctype}, io.BytesIO(body))
        took = time.perf_counter() - started
        done.set()
        await ticker
        assert answer.status == status, answer
        worst[name] = max(gaps)
        with capsys.disabled():
            print(
                f"\n  {name}: {len(body) / MiB:.1f} MiB, answered {answer.status} in {took:.2f} s,"
                f" loop lag max {max(gaps) * 1000:.1f} ms over {len(gaps)} ticks"
            )
    assert max(worst.values()) < 0.100, worst


async def test_batches_beyond_the_nodes_slots_are_told_to_come_back(
    fakes: Fakes, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#10 item 2: a node parses at most BATCH_SLOTS batches at once (each may hold 10 MiB);
    one more waits a bounded time for a slot, then gets 503 with Retry-After, and the slot it
    waited for serves the next batch once freed."""
    from node import appkeys
    from node.api import consignments

    monkeypatch.setattr(consignments, "BATCH_SLOT_WAIT_S", 0.05)
    slots = client.server.app[appkeys.BATCH_SLOTS]
    for _ in range(consignments.BATCH_SLOTS):
        await slots.acquire()
    headers = {**fakes.auth("trader"), **JSON}
    busy = await send(client, BATCH.method, BATCH.url, headers, b"[]")
    assert_problem(busy, 503)
    assert busy.headers["Retry-After"] == "2"
    slots.release()
    freed = await send(client, BATCH.method, BATCH.url, headers, b"[]")
    assert freed.status == 422  # past the slot: the empty batch is refused on its merits
