"""#11 `make bench`: the generator's small HTTP/1.1 client reads what HAProxy and the nodes
answer (Content-Length, chunked, Connection: close) and builds well-formed requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from deploy.bench import http
from deploy.bench.http import build_request
from deploy.bench.openloop import ARRIVAL, SUBMISSION, Target, request_for
from deploy.bench.schedule import Phase, Shot, build_schedule, keep_schedule


def _reader(data: bytes) -> asyncio.StreamReader:
    r = asyncio.StreamReader()
    r.feed_data(data)
    r.feed_eof()
    return r


async def test_content_length_answer_keeps_the_connection() -> None:
    """#11 bench: status, body and keep-alive from a Content-Length answer; a second answer on
    the same connection is read after it."""
    r = _reader(
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}"
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\ncontent-length: 0\r\n\r\n"
    )
    a = await http.read_answer(r)
    assert (a.status, a.body, a.keep_alive, a.retry_after) == (201, b"{}", True, False)
    b = await http.read_answer(r)
    assert (b.status, b.retry_after) == (503, True)


async def test_chunked_and_close_answers() -> None:
    """#11 bench: chunked bodies are joined; Connection: close or a body to EOF ends reuse."""
    r = _reader(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\n\r\n"
    )
    a = await http.read_answer(r)
    assert (a.body, a.keep_alive) == (b"abcde", True)
    assert (await http.read_answer(r)).status == 204  # the chunked body was read to its end
    b = await http.read_answer(
        _reader(b"HTTP/1.1 429 Too Many\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx")
    )
    assert (b.status, b.keep_alive) == (429, False)
    c = await http.read_answer(_reader(b"HTTP/1.0 200 OK\r\n\r\nrest"))
    assert (c.body, c.keep_alive) == (b"rest", False)
    with pytest.raises(http.HttpError):
        await http.read_answer(_reader(b"SSH-2.0-x\r\n\r\n"))


def test_requests_carry_unique_keys_and_rotate_accounts() -> None:
    """#11 targets 2 and 3: each shot has its own Idempotency-Key; submissions rotate the
    trader accounts (per-account limit) and arrivals the bundled trucks."""
    t = Target(
        "http://127.0.0.1:18080", "run1", ("k1", "k2"), "ko", b'{"x":1}', "LMC", ("V1", "V2")
    )
    one = request_for(t, Shot(0.0, SUBMISSION, 7), "h:1")
    assert one.startswith(b"POST /v1/consignments HTTP/1.1\r\nHost: h:1\r\nContent-Length: 7\r\n")
    assert b"Authorization: Bearer k2\r\n" in one
    assert b"Idempotency-Key: bench-run1-7\r\n" in one
    assert one.endswith(b'\r\n\r\n{"x":1}')
    arr = request_for(t, Shot(0.0, ARRIVAL, 8), "h:1")
    assert arr.startswith(b"POST /v1/lbcp/LMC/arrivals HTTP/1.1")
    assert b"Bearer ko" in arr
    assert arr.endswith(b'{"vrn":"V1"}')
    with pytest.raises(ValueError, match="unknown"):
        request_for(t, Shot(0.0, "other", 1), "h:1")


async def test_pool_reuses_connections_against_a_real_server(
    aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
) -> None:
    """#11 bench: the pool keeps connections alive and at most `size` open, reads aiohttp's
    answers (JSON, problem+json with Retry-After), and the open loop records each answer."""
    peers: set[tuple[str, int]] = set()

    async def handler(request: web.Request) -> web.Response:
        peers.add(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
        body = await request.read()
        if request.headers.get("Idempotency-Key", "").endswith("-3"):
            return web.Response(status=503, headers={"Retry-After": "1"}, text="busy")
        return web.json_response({"len": len(body)}, status=201)

    app = web.Application()
    app.router.add_post("/v1/consignments", handler)
    server = await aiohttp_server(app)
    pool = http.Pool("127.0.0.1", server.port, 2, timeout=5)
    t = Target(f"http://127.0.0.1:{server.port}", "r", ("k",), "o", b"{}", "LMC", ("V",))

    async def send(shot: Shot) -> tuple[int, bool]:
        a = await pool.request(request_for(t, shot, f"127.0.0.1:{server.port}"))
        return a.status, a.retry_after

    loop = asyncio.get_running_loop()
    shots = build_schedule([Phase(SUBMISSION, 200, 0, 0.05)])
    out = await keep_schedule(shots, send, clock=loop.time, sleep=asyncio.sleep, start=loop.time())
    await pool.close()
    assert [o.status for o in out] == [201, 201, 201, 503, 201, 201, 201, 201, 201, 201]
    assert out[3].retry_after
    assert all(o.latency >= o.lag >= 0 for o in out)
    assert 1 <= len(peers) <= 2


async def test_warm_opens_connections_before_the_load_and_requests_use_them(
    aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
) -> None:
    """#11 target 3: the bench opens its connections before the run (a TLS handshake per new
    connection mid-run measures the generator): after warm(5) five connections exist, and five
    requests at once open no sixth."""
    peers: set[tuple[str, int]] = set()
    release = asyncio.Event()
    all_in = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        peers.add(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
        if len(peers) == 5:
            all_in.set()
        await release.wait()
        return web.json_response({}, status=201)

    app = web.Application()
    app.router.add_post("/v1/consignments", handler)
    server = await aiohttp_server(app)
    pool = http.Pool("127.0.0.1", server.port, 8, timeout=5)
    await pool.warm(5)
    assert len(pool._idle) == 5
    raw = build_request("POST", "/v1/consignments", "h", {}, b"{}")
    tasks = [asyncio.create_task(pool.request(raw)) for _ in range(5)]
    async with asyncio.timeout(5):
        await all_in.wait()
    release.set()
    assert [a.status for a in await asyncio.gather(*tasks)] == [201] * 5
    await pool.close()
    assert len(peers) == 5


RAW = build_request("POST", "/v1/consignments", "h", {}, b"{}")
Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def _one_warm_connection(serve: Serve) -> AsyncIterator[http.Pool]:
    """A pool of one connection, opened ahead, to a scripted server on loopback."""
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = http.Pool("127.0.0.1", port, 1, timeout=5)
    try:
        await pool.warm(1)
        yield pool
    finally:
        await pool.close()
        server.close()
        await server.wait_closed()


async def test_a_connection_closed_while_idle_is_replaced_once() -> None:
    """#11 bench: a kept-alive connection the server closed while it idled (no byte of an
    answer) is replaced by a new one and the request succeeds; an answer cut in the middle is
    still an error."""
    served = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        served += 1
        if served == 1:  # the warmed connection: closed at once, as an idle timeout would
            writer.close()
            return
        await reader.readuntil(b"\r\n\r\n{}")
        if served == 2:
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}")
        else:
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 9\r\n\r\n{}")
        await writer.drain()
        writer.close()

    async with _one_warm_connection(serve) as pool:
        assert (await pool.request(RAW)).status == 201
        assert served == 2
        with pytest.raises(asyncio.IncompleteReadError):
            await pool.request(RAW)


async def test_a_408_closing_an_idle_connection_is_resent_once() -> None:
    """#11 bench: when the server's idle timeout strikes as a request goes out on a kept-alive
    connection, HAProxy answers 408 and closes it; the request is resent once on a new
    connection (as browsers do) instead of counting as an error. A 408 on a new connection is
    the answer."""
    served = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        served += 1
        await reader.readuntil(b"\r\n\r\n{}")
        if served == 2:
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}")
        else:
            writer.write(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    async with _one_warm_connection(serve) as pool:
        assert (await pool.request(RAW)).status == 201
        assert served == 2
        assert (await pool.request(RAW)).status == 408  # a fresh connection: not resent
        assert served == 3
