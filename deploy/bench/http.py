"""A small keep-alive HTTP/1.1 client on asyncio streams, for the open-loop generator.

Why not aiohttp's client: at the rates the bench offers (up to a few thousand requests a second
on a 2-core machine shared with the service) the generator's own CPU must stay small, and a
pre-built request and a status-line parse cost a fraction of a full client. It speaks just what
HAProxy and the nodes answer: Content-Length or chunked bodies, `Connection: close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass


class HttpError(Exception):
    """The answer was not HTTP/1.1 as this client reads it."""


def build_request(method: str, path: str, host: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass(frozen=True)
class Answer:
    status: int
    retry_after: bool
    keep_alive: bool
    body: bytes


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """One response from `reader` (status line, headers, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpError(f"not an HTTP/1.x status line: {lines[0]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    keep_alive = headers.get("connection", "").lower() != "close" and parts[0] == "HTTP/1.1"
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif status in (204, 304) or 100 <= status < 200:
        body = b""
    else:  # body until the connection closes
        body = await reader.read()
        keep_alive = False
    return Answer(status, "retry-after" in headers, keep_alive, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers are sent to us
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readexactly(2)


_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
WARM_AT_ONCE = 32


class Pool:
    """At most `size` keep-alive connections to host:port; a request waits for a free one (the
    wait is part of its latency in the open loop)."""

    def __init__(
        self,
        host: str,
        port: int,
        size: int,
        *,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.ssl_context = ssl_context
        self.size = size
        self._idle: list[_Conn] = []
        self._slots = asyncio.Semaphore(size)

    async def _open(self) -> _Conn:
        return await asyncio.open_connection(self.host, self.port, ssl=self.ssl_context)

    async def warm(self, count: int) -> None:
        """Open `count` connections ahead of the load, `WARM_AT_ONCE` at a time: a TLS handshake
        per new connection in the middle of the run would measure the generator, not the
        system (and HAProxy spends its CPU on handshakes instead of requests)."""
        count = min(count, self.size) - len(self._idle)
        while count > 0:
            batch = min(count, WARM_AT_ONCE)
            async with asyncio.timeout(self.timeout):
                opened = await asyncio.gather(*(self._open() for _ in range(batch)))
            self._idle.extend(opened)
            count -= batch

    async def request(self, raw: bytes) -> Answer:
        """Send `raw` and read the answer; raises OSError, TimeoutError, HttpError or
        asyncio.IncompleteReadError when no answer came. A kept-alive connection that the
        server had closed while idle (no byte of an answer, or a 408 closing it: HAProxy's
        answer when its idle timeout strikes as the request goes) is replaced once, as HTTP
        clients do; the bench's requests carry Idempotency-Keys, so a resend is safe."""
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            try:
                async with asyncio.timeout(self.timeout):
                    if conn is not None:
                        try:
                            answer = await self._exchange(conn, raw)
                            if answer.status != 408 or answer.keep_alive:
                                return self._keep(conn, answer)
                        except (ConnectionError, asyncio.IncompleteReadError) as exc:
                            if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                                raise
                        conn[1].close()
                    conn = await self._open()
                    return self._keep(conn, await self._exchange(conn, raw))
            except BaseException:
                if conn is not None:
                    conn[1].close()
                raise

    @staticmethod
    async def _exchange(conn: _Conn, raw: bytes) -> Answer:
        conn[1].write(raw)
        return await read_answer(conn[0])

    def _keep(self, conn: _Conn, answer: Answer) -> Answer:
        if answer.keep_alive:
            self._idle.append(conn)
        else:
            conn[1].close()
        return answer

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
