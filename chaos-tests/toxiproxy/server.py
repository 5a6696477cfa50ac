"""A small Toxiproxy-compatible server (HTTP API + TCP proxies + toxics) in asyncio.

Why it exists: the chaos suite drives faults through the `toxiproxy-python` client, and the Go
`toxiproxy-server` cannot be installed here (DESIGN.md section 5). `launch.py` in this directory
prefers a real `toxiproxy-server` on PATH and falls back to this file.

How to use it
-------------
* As a script::

      python chaos-tests/toxiproxy/server.py --host 127.0.0.1 --port 8474

  `--port 0` picks a free port. Once the API is listening, one JSON line is printed on stdout:
  ``{"event": "ready", "host": "127.0.0.1", "port": 8474}``. `--exit-on-stdin-eof` makes the
  server exit when its stdin closes, so it cannot outlive a launcher that dies (launch.py uses it).

* By path (this directory is deliberately NOT a package: `chaos-tests` has a hyphen, and a package
  called `toxiproxy` on sys.path would shadow the `toxiproxy` client library)::

      spec = importlib.util.spec_from_file_location("rocars_toxiproxy_server", path_to_this_file)
      module = importlib.util.module_from_spec(spec)
      sys.modules[spec.name] = module  # dataclasses look their module up in sys.modules
      spec.loader.exec_module(module)
      server = module.ToxiproxyServer(); port = await server.start("127.0.0.1", 0)

Supported API (JSON; errors are ``{"error": "...", "status": N}`` like the Go server)
-----------------------------------------------------------------------------------
GET /version                                   -> {"version": "..."}
GET /proxies                                   -> {name: proxy, ...}
POST /proxies {name, listen, upstream, enabled} -> 201 proxy (enabled defaults to true;
                                                  listen defaults to 127.0.0.1:0)
GET /proxies/{name}                            -> proxy
POST|PATCH /proxies/{name} {listen?, upstream?, enabled?} -> proxy (restarts on address change)
DELETE /proxies/{name}                         -> 204
POST /reset                                    -> 204 (enable every proxy, remove every toxic)
GET /proxies/{name}/toxics                     -> [toxic, ...]
POST /proxies/{name}/toxics {name?, type, stream?, toxicity?, attributes?} -> toxic
GET /proxies/{name}/toxics/{toxic}             -> toxic
POST|PATCH /proxies/{name}/toxics/{toxic} {toxicity?, attributes?} -> toxic (attributes merged)
DELETE /proxies/{name}/toxics/{toxic}          -> 204

A proxy is ``{name, listen, upstream, enabled, toxics: [...]}``; a toxic is
``{name, type, stream, toxicity, attributes}``. Status codes: 400 bad JSON / invalid field / a
listen or upstream address that is not loopback, 404 unknown proxy or toxic, 409 duplicate name,
500 when a listener cannot be bound. Requests whose User-Agent starts with "Mozilla/" get 403, as
in the Go server, so a web page cannot reconfigure the proxies.

Only loopback addresses (127.0.0.0/8, ::1, "localhost") are accepted for `listen`, `upstream`
and the API itself: this project may never send traffic anywhere else.

Toxics (times in ms, rate in KB/s; `toxicity` is the probability, rolled per connection when the
toxic starts applying to it, that the toxic is active on that connection)
----------------------------------------------------------------------------------------
latency    {latency, jitter}  each chunk is delivered latency±jitter after it was read.
bandwidth  {rate}             at most `rate` KB/s (0 = unlimited), sent in 100 ms slices.
timeout    {timeout}          drop all data; close the connection `timeout` ms after the toxic
                              started applying (0 = never close, data is dropped until the toxic
                              is removed). Removing it closes affected connections, as in the Go
                              server, because their byte streams have lost data.
reset_peer {timeout}          on the first chunk in its stream: drop it, wait `timeout`, then reset
                              both TCP connections (SO_LINGER 0 -> RST). Idle connections are not
                              reset until data flows, like the Go server.
slow_close {delay}            delay propagating the end of the stream (FIN) by `delay`.
limit_data {bytes}            pass `bytes` bytes in that stream, then close the connection.

Toxics apply to new AND existing connections: every chunk is run through the proxy's current
toxic chain (in the order the toxics were added), and timers start when a toxic is added. A chunk
that was already read when a latency toxic was added is delayed relative to when it was read.
Disabling a proxy closes its listener and all of its connections. Unlike the Go server,
half-closes are forwarded (FIN in one direction keeps the other direction open).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import itertools
import json
import logging
import random
import re
import signal
import socket
import struct
import sys
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger("rocars.toxiproxy")

VERSION: Final = "2.9.0-rocars-py"
STREAMS: Final = ("upstream", "downstream")
# Every supported toxic type with its attributes and their defaults (all non-negative integers).
TOXIC_ATTRIBUTES: Final[dict[str, dict[str, int]]] = {
    "latency": {"latency": 0, "jitter": 0},
    "bandwidth": {"rate": 0},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 0},
    "slow_close": {"delay": 0},
    "limit_data": {"bytes": 0},
}
READ_CHUNK: Final = 32 * 1024
# Chunks read ahead of a slow toxic per direction; beyond this the reader waits (backpressure).
QUEUE_CHUNKS: Final = 256
UPSTREAM_CONNECT_TIMEOUT: Final = 5.0
# How long a graceful close may take to flush before the socket is simply aborted.
CLOSE_GRACE: Final = 1.0


class ApiError(Exception):
    """An error answered as {"error": message, "status": status}, like the Go server's ApiError."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def proxy_not_found() -> ApiError:
    return ApiError("proxy not found", 404)


def toxic_not_found() -> ApiError:
    return ApiError("toxic not found", 404)


# --------------------------------------------------------------------------- addresses


@dataclass(frozen=True)
class Address:
    """A validated loopback host:port. `host` is what we bind/connect to."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


_PORT_RE: Final = re.compile(r"[0-9]{1,5}")


def loopback_host(host: str) -> str:
    """Return the host to use if `host` is a loopback address; raise ValueError otherwise."""
    if host == "localhost":
        # Pin the name to 127.0.0.1 so a modified hosts file cannot point us elsewhere.
        return "127.0.0.1"
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not a loopback IP address") from None
    if not ip.is_loopback:
        raise ValueError(f"{host!r} is not a loopback address")
    return str(ip)


def check_not_self_loop(listen: Address, upstream: Address) -> None:
    """A proxy whose upstream is its own listener would multiply connections until fds run out."""
    if listen == upstream:
        raise ApiError("upstream must not be the proxy's own listen address", 400)


def parse_address(value: object, what: str, *, allow_port_zero: bool) -> Address:
    """Parse "host:port" ("[::1]:port" for IPv6) and insist the host is loopback."""
    if not isinstance(value, str) or not value:
        raise ApiError(f"missing required field: {what}", 400)
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not _PORT_RE.fullmatch(port_text):
        raise ApiError(f"{what}: expected host:port, got {value!r}", 400)
    port = int(port_text)
    if port > 65535 or (port == 0 and not allow_port_zero):
        raise ApiError(f"{what}: invalid port in {value!r}", 400)
    try:
        return Address(loopback_host(host), port)
    except ValueError as exc:
        raise ApiError(f"{what}: only loopback addresses are allowed: {exc}", 400) from None


# --------------------------------------------------------------------------- toxics

_toxic_ids = itertools.count(1)


@dataclass
class Toxic:
    name: str
    type: str
    stream: str
    toxicity: float
    attributes: dict[str, int]
    # Identity of this toxic instance: a toxic removed and re-added under the same name is new.
    uid: int = field(default_factory=lambda: next(_toxic_ids))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": dict(self.attributes),
        }


def _parse_toxicity(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ApiError("toxicity must be a number between 0 and 1", 400)
    return float(value)


def _parse_attributes(toxic_type: str, value: object, base: dict[str, int]) -> dict[str, int]:
    """Merge `value` into `base`. Unknown attribute names are rejected to catch typos."""
    if value is None:
        return dict(base)
    if not isinstance(value, dict):
        raise ApiError("attributes must be an object", 400)
    known = TOXIC_ATTRIBUTES[toxic_type]
    merged = dict(base)
    for key, raw in value.items():
        if key not in known:
            raise ApiError(f"unknown attribute {key!r} for toxic type {toxic_type}", 400)
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ApiError(f"attribute {key!r} must be a number", 400)
        if isinstance(raw, float) and not raw.is_integer():
            raise ApiError(f"attribute {key!r} must be an integer", 400)
        if raw < 0:
            raise ApiError(f"attribute {key!r} must not be negative", 400)
        merged[key] = int(raw)
    return merged


def parse_new_toxic(body: dict[str, Any]) -> Toxic:
    toxic_type = body.get("type")
    if not isinstance(toxic_type, str) or toxic_type not in TOXIC_ATTRIBUTES:
        raise ApiError("invalid toxic type", 400)
    stream = body.get("stream", "downstream")
    if stream not in STREAMS:
        raise ApiError("stream was invalid, can be either upstream or downstream", 400)
    name = body.get("name") or f"{toxic_type}_{stream}"
    if not isinstance(name, str):
        raise ApiError("name must be a string", 400)
    toxicity = _parse_toxicity(body.get("toxicity", 1.0))
    attributes = _parse_attributes(toxic_type, body.get("attributes"), TOXIC_ATTRIBUTES[toxic_type])
    return Toxic(name, toxic_type, stream, toxicity, attributes)


# --------------------------------------------------------------------------- connections


class _CloseLink(Exception):
    """Raised inside a pipe when a toxic decides the whole connection ends."""

    def __init__(self, reset: bool) -> None:
        super().__init__("reset" if reset else "close")
        self.reset = reset


@dataclass
class _ToxicState:
    """Per-connection state of one toxic."""

    active: bool
    bytes_sent: int = 0
    timer: asyncio.Task[None] | None = None


def _set_linger_zero(writer: asyncio.StreamWriter) -> None:
    """Make the next close send RST instead of FIN (what "connection reset by peer" is)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class Link:
    """One proxied client connection: two one-way pipes (upstream = client to server,
    downstream = server to client), each a reader task feeding a queue and a writer task that
    runs every chunk through the proxy's current toxic chain."""

    def __init__(
        self, proxy: Proxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.proxy = proxy
        self._client_reader = reader
        self._client_writer = writer
        self._upstream_writer: asyncio.StreamWriter | None = None
        self._states: dict[int, _ToxicState] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._finished = asyncio.Event()
        self._writers_done = 0

    # -- toxic bookkeeping, called by Proxy when its toxics change

    def _state(self, toxic: Toxic) -> _ToxicState:
        state = self._states.get(toxic.uid)
        if state is None:
            state = self._states[toxic.uid] = _ToxicState(self._roll(toxic))
            self._start_timer(toxic, state)
        return state

    @staticmethod
    def _roll(toxic: Toxic) -> bool:
        # Like the Go server: one roll per toxic per connection (re-rolled on update).
        return random.random() < toxic.toxicity

    def _start_timer(self, toxic: Toxic, state: _ToxicState) -> None:
        if not state.active or self._closing:
            return
        if toxic.type == "timeout" and toxic.attributes["timeout"] > 0:
            state.timer = asyncio.create_task(self._close_after(toxic.attributes["timeout"]))

    async def _close_after(self, ms: int) -> None:
        await asyncio.sleep(ms / 1000)
        self.close()

    def toxic_added(self, toxic: Toxic) -> None:
        self._state(toxic)

    def toxic_updated(self, toxic: Toxic) -> None:
        state = self._state(toxic)
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        state.active = self._roll(toxic)
        self._start_timer(toxic, state)

    def toxic_removed(self, toxic: Toxic) -> None:
        state = self._states.pop(toxic.uid, None)
        if state is None:
            return
        if state.timer is not None:
            state.timer.cancel()
        if toxic.type == "timeout" and state.active:
            # Data was dropped, so the byte stream is corrupt; the Go server closes too.
            self.close()

    # -- lifecycle

    def close(self, *, reset: bool = False) -> None:
        """End the connection now (both sides); with reset=True the peers receive RST."""
        if self._closing:
            return
        self._closing = True
        for writer in (self._client_writer, self._upstream_writer):
            if writer is None:
                continue
            if reset:
                _set_linger_zero(writer)
                writer.transport.abort()
            else:
                writer.close()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for state in self._states.values():
            if state.timer is not None and state.timer is not current:
                state.timer.cancel()
        self._finished.set()

    async def run(self) -> None:
        upstream = self.proxy.upstream_address
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(upstream.host, upstream.port), UPSTREAM_CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            log.info("proxy %s: upstream %s unreachable: %s", self.proxy.name, upstream, exc)
            self.close()
            await self._finish()
            return
        self._upstream_writer = up_writer
        if self._closing:  # disabled while we were connecting
            up_writer.close()
            await self._finish()
            return
        for toxic in list(self.proxy.toxics.values()):
            self.toxic_added(toxic)
        up_q: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE_CHUNKS)
        down_q: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE_CHUNKS)
        for coro in (
            self._read(self._client_reader, up_q),
            self._write("upstream", up_q, up_writer),
            self._read(up_reader, down_q),
            self._write("downstream", down_q, self._client_writer),
        ):
            task = asyncio.create_task(coro)
            self._tasks.add(task)
        try:
            await self._finished.wait()
        finally:
            self.close()
            await self._finish()

    async def _finish(self) -> None:
        """Wait for our tasks and sockets to be gone, aborting sockets that will not flush."""
        tasks = list(self._tasks) + [s.timer for s in self._states.values() if s.timer]
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in (self._client_writer, self._upstream_writer):
            if writer is None:
                continue
            try:
                await asyncio.wait_for(writer.wait_closed(), CLOSE_GRACE)
            except (OSError, TimeoutError):
                writer.transport.abort()

    async def _read(
        self, reader: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes] | None]
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(READ_CHUNK):
                # Stamp arrival time: latency is measured from here, so queued chunks do not
                # accumulate each other's delays (same as the Go server's StreamChunk.Timestamp).
                await queue.put((loop.time(), data))
        except OSError:
            self.close()
            return
        await queue.put(None)

    async def _write(
        self,
        stream: str,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        writer: asyncio.StreamWriter,
    ) -> None:
        try:
            while (item := await queue.get()) is not None:
                stamp, data = item
                await self._pipe(self._chain(stream), 0, stamp, data, writer)
            for toxic, _ in self._chain(stream):
                if toxic.type == "slow_close":
                    await asyncio.sleep(toxic.attributes["delay"] / 1000)
            if writer.can_write_eof():
                writer.write_eof()
            else:
                self.close()
        except _CloseLink as exc:
            self.close(reset=exc.reset)
            return
        except OSError:
            self.close()
            return
        self._writers_done += 1
        if self._writers_done == 2:
            self.close()

    def _chain(self, stream: str) -> list[tuple[Toxic, _ToxicState]]:
        chain = []
        for toxic in list(self.proxy.toxics.values()):
            if toxic.stream == stream:
                state = self._state(toxic)
                if state.active:
                    chain.append((toxic, state))
        return chain

    async def _pipe(
        self,
        chain: list[tuple[Toxic, _ToxicState]],
        index: int,
        stamp: float,
        data: bytes,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Pass `data` through chain[index:] and write whatever comes out to `writer`."""
        if index == len(chain):
            writer.write(data)
            await writer.drain()
            return
        toxic, state = chain[index]
        attrs = toxic.attributes
        loop = asyncio.get_running_loop()
        match toxic.type:
            case "latency":
                jitter = attrs["jitter"]
                delay_ms = attrs["latency"] + (random.uniform(-jitter, jitter) if jitter else 0)
                wait = stamp + max(delay_ms, 0) / 1000 - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._pipe(chain, index + 1, stamp, data, writer)
            case "bandwidth":
                rate = attrs["rate"]  # KB/s == bytes per ms
                if rate <= 0:
                    await self._pipe(chain, index + 1, stamp, data, writer)
                    return
                # Slices of 100 ms worth of data keep the flow smooth for big chunks.
                step = rate * 100
                for start in range(0, len(data), step):
                    piece = data[start : start + step]
                    await asyncio.sleep(len(piece) / rate / 1000)
                    await self._pipe(chain, index + 1, stamp, piece, writer)
            case "timeout":
                return  # data is dropped; the timer (if any) closes the connection
            case "reset_peer":
                await asyncio.sleep(attrs["timeout"] / 1000)
                raise _CloseLink(reset=True)
            case "slow_close":
                await self._pipe(chain, index + 1, stamp, data, writer)
            case "limit_data":
                remaining = attrs["bytes"] - state.bytes_sent
                piece = data[: max(remaining, 0)]
                if piece:
                    state.bytes_sent += len(piece)
                    await self._pipe(chain, index + 1, stamp, piece, writer)
                if state.bytes_sent >= attrs["bytes"]:
                    raise _CloseLink(reset=False)
            case _:  # pragma: no cover - types are validated on creation
                raise AssertionError(toxic.type)


# --------------------------------------------------------------------------- proxies


class Proxy:
    def __init__(self, name: str, listen: Address, upstream: Address) -> None:
        self.name = name
        self.listen_address = listen
        self.upstream_address = upstream
        self.enabled = False
        self.toxics: dict[str, Toxic] = {}  # insertion order is chain order
        self._server: asyncio.Server | None = None
        self._links: set[Link] = set()
        self._link_tasks: set[asyncio.Task[None]] = set()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": str(self.listen_address),
            "upstream": str(self.upstream_address),
            "enabled": self.enabled,
            "toxics": [t.to_json() for t in self.toxics.values()],
        }

    async def start(self) -> None:
        if self._server is not None:
            return
        try:
            self._server = await asyncio.start_server(
                self._accept, self.listen_address.host, self.listen_address.port
            )
        except OSError as exc:
            msg = f"proxy {self.name}: cannot listen on {self.listen_address}: {exc}"
            raise ApiError(msg, 500) from exc
        # Record the real port so that re-enabling a "port 0" proxy reuses the same address.
        sockname = self._server.sockets[0].getsockname()
        self.listen_address = Address(self.listen_address.host, int(sockname[1]))
        self.enabled = True

    async def stop(self) -> None:
        """Stop listening and close every existing connection."""
        self.enabled = False
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for link in list(self._links):
            link.close()
        if self._link_tasks:
            await asyncio.gather(*self._link_tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = Link(self, reader, writer)
        task = asyncio.current_task()
        assert task is not None
        self._links.add(link)
        self._link_tasks.add(task)
        try:
            await link.run()
        except Exception:
            log.exception("proxy %s: connection failed", self.name)
            link.close(reset=True)
        finally:
            self._links.discard(link)
            self._link_tasks.discard(task)

    def add_toxic(self, toxic: Toxic) -> None:
        if toxic.name in self.toxics:
            raise ApiError("toxic already exists", 409)
        self.toxics[toxic.name] = toxic
        for link in list(self._links):
            link.toxic_added(toxic)

    def update_toxic(self, name: str, body: dict[str, Any]) -> Toxic:
        toxic = self.toxics.get(name)
        if toxic is None:
            raise toxic_not_found()
        # Validate everything before changing anything.
        toxicity = _parse_toxicity(body.get("toxicity", toxic.toxicity))
        attributes = _parse_attributes(toxic.type, body.get("attributes"), toxic.attributes)
        toxic.toxicity, toxic.attributes = toxicity, attributes
        for link in list(self._links):
            link.toxic_updated(toxic)
        return toxic

    def remove_toxic(self, name: str) -> None:
        toxic = self.toxics.pop(name, None)
        if toxic is None:
            raise toxic_not_found()
        for link in list(self._links):
            link.toxic_removed(toxic)

    def remove_all_toxics(self) -> None:
        for name in list(self.toxics):
            self.remove_toxic(name)


# --------------------------------------------------------------------------- HTTP API


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(f"bad request body: {exc}", 400) from None
    if not isinstance(body, dict):
        raise ApiError("bad request body: expected a JSON object", 400)
    return body


def _error_response(message: str, status: int) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.headers.get("User-Agent", "").startswith("Mozilla/"):
        # Same guard as the Go server: browsers must not be able to drive this API (CSRF).
        return _error_response("User agent not allowed", 403)
    try:
        return await handler(request)
    except ApiError as exc:
        return _error_response(exc.message, exc.status)
    except web.HTTPException as exc:  # unknown route, wrong method: keep the JSON shape
        if exc.status < 400:
            raise
        return _error_response(exc.reason, exc.status)


class ToxiproxyServer:
    """The proxies plus the aiohttp application that manages them."""

    def __init__(self) -> None:
        self.proxies: dict[str, Proxy] = {}
        # One lock for every mutation: API calls must not interleave halfway through a change.
        self._lock = asyncio.Lock()
        self._runner: web.AppRunner | None = None

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[_errors])
        app.router.add_get("/version", self.version)
        app.router.add_post("/reset", self.reset)
        app.router.add_get("/proxies", self.proxy_index)
        app.router.add_post("/proxies", self.proxy_create)
        app.router.add_get("/proxies/{proxy}", self.proxy_show)
        app.router.add_post("/proxies/{proxy}", self.proxy_update)
        app.router.add_patch("/proxies/{proxy}", self.proxy_update)
        app.router.add_delete("/proxies/{proxy}", self.proxy_delete)
        app.router.add_get("/proxies/{proxy}/toxics", self.toxic_index)
        app.router.add_post("/proxies/{proxy}/toxics", self.toxic_create)
        app.router.add_get("/proxies/{proxy}/toxics/{toxic}", self.toxic_show)
        app.router.add_post("/proxies/{proxy}/toxics/{toxic}", self.toxic_update)
        app.router.add_patch("/proxies/{proxy}/toxics/{toxic}", self.toxic_update)
        app.router.add_delete("/proxies/{proxy}/toxics/{toxic}", self.toxic_delete)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 8474) -> int:
        """Serve the API on host:port (host must be loopback); return the bound port."""
        host = loopback_host(host)
        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        return int(self._runner.addresses[0][1])

    async def close(self) -> None:
        async with self._lock:
            for proxy in list(self.proxies.values()):
                await proxy.stop()
            self.proxies.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _proxy(self, request: web.Request) -> Proxy:
        proxy = self.proxies.get(request.match_info["proxy"])
        if proxy is None:
            raise proxy_not_found()
        return proxy

    # -- handlers

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": VERSION})

    async def reset(self, request: web.Request) -> web.Response:
        async with self._lock:
            for proxy in self.proxies.values():
                proxy.remove_all_toxics()
                await proxy.start()
        return web.Response(status=204)

    async def proxy_index(self, request: web.Request) -> web.Response:
        return web.json_response({name: p.to_json() for name, p in self.proxies.items()})

    async def proxy_create(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError("missing required field: name", 400)
        upstream = parse_address(body.get("upstream"), "upstream", allow_port_zero=False)
        listen = parse_address(body.get("listen", "127.0.0.1:0"), "listen", allow_port_zero=True)
        check_not_self_loop(listen, upstream)
        enabled = body.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ApiError("enabled must be true or false", 400)
        async with self._lock:
            if name in self.proxies:
                raise ApiError("proxy already exists", 409)
            proxy = Proxy(name, listen, upstream)
            if enabled:
                await proxy.start()
            self.proxies[name] = proxy
        return web.json_response(proxy.to_json(), status=201)

    async def proxy_show(self, request: web.Request) -> web.Response:
        return web.json_response(self._proxy(request).to_json())

    async def proxy_update(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        async with self._lock:
            proxy = self._proxy(request)
            listen = proxy.listen_address
            if "listen" in body:
                listen = parse_address(body["listen"], "listen", allow_port_zero=True)
            upstream = proxy.upstream_address
            if "upstream" in body:
                upstream = parse_address(body["upstream"], "upstream", allow_port_zero=False)
            check_not_self_loop(listen, upstream)
            enabled = body.get("enabled", proxy.enabled)
            if not isinstance(enabled, bool):
                raise ApiError("enabled must be true or false", 400)
            if listen != proxy.listen_address or upstream != proxy.upstream_address:
                # Address changes need a fresh listener and fresh upstream connections.
                await proxy.stop()
                proxy.listen_address, proxy.upstream_address = listen, upstream
            if enabled:
                await proxy.start()
            else:
                await proxy.stop()
            return web.json_response(proxy.to_json())

    async def proxy_delete(self, request: web.Request) -> web.Response:
        async with self._lock:
            proxy = self._proxy(request)
            await proxy.stop()
            del self.proxies[proxy.name]
        return web.Response(status=204)

    async def toxic_index(self, request: web.Request) -> web.Response:
        return web.json_response([t.to_json() for t in self._proxy(request).toxics.values()])

    async def toxic_create(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        async with self._lock:
            proxy = self._proxy(request)
            toxic = parse_new_toxic(body)
            proxy.add_toxic(toxic)
        return web.json_response(toxic.to_json())

    async def toxic_show(self, request: web.Request) -> web.Response:
        toxic = self._proxy(request).toxics.get(request.match_info["toxic"])
        if toxic is None:
            raise toxic_not_found()
        return web.json_response(toxic.to_json())

    async def toxic_update(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        async with self._lock:
            toxic = self._proxy(request).update_toxic(request.match_info["toxic"], body)
        return web.json_response(toxic.to_json())

    async def toxic_delete(self, request: web.Request) -> web.Response:
        async with self._lock:
            self._proxy(request).remove_toxic(request.match_info["toxic"])
        return web.Response(status=204)


# --------------------------------------------------------------------------- script


async def _wait_for_stdin_eof(stop: asyncio.Event) -> None:
    """Set `stop` when stdin reaches EOF, i.e. when the process that launched us is gone."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        # Needs stdin to be a pipe (launch.py passes one); anything else ends the server.
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
        )
        try:
            while await reader.read(4096):
                pass
        finally:
            transport.close()
    finally:
        stop.set()


async def serve(host: str, port: int, *, exit_on_stdin_eof: bool = False) -> None:
    """Run until SIGTERM/SIGINT (or stdin EOF when asked), then close every proxy."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = ToxiproxyServer()
    bound = await server.start(host, port)
    watcher = asyncio.create_task(_wait_for_stdin_eof(stop)) if exit_on_stdin_eof else None
    # The launcher reads this line to learn the port (needed with --port 0).
    print(json.dumps({"event": "ready", "host": host, "port": bound}), flush=True)
    log.info("toxiproxy API listening on %s:%d", host, bound)
    try:
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        await server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Toxiproxy-compatible server (loopback only)")
    parser.add_argument("--host", default="127.0.0.1", help="API address (loopback only)")
    parser.add_argument("--port", type=int, default=8474, help="API port (0 picks a free one)")
    parser.add_argument(
        "--exit-on-stdin-eof", action="store_true", help="exit when stdin (a pipe) is closed"
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log connections")
    args = parser.parse_args(argv)
    try:
        host = loopback_host(args.host)
    except ValueError as exc:
        parser.error(f"--host: {exc}")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s toxiproxy-py %(levelname)s %(message)s",
    )
    asyncio.run(serve(host, args.port, exit_on_stdin_eof=args.exit_on_stdin_eof))
    return 0


if __name__ == "__main__":
    sys.exit(main())
