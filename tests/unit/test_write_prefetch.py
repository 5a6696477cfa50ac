"""node.writes' `prefetch`: the reads a write decides on are sent after the idempotency lock
and lookup and before the lookup is read, so in pipeline mode all of them share one round trip
(psycopg sends what is queued when a result is first read); on a replay the write itself does
not run and the stored answer stands."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from node import appkeys
from node.account import Account
from node.writes import write_once

TRADER = Account(7, "trader", "t", "active")


class _Cursor:
    def __init__(self, log: list[str], what: str, row: Any) -> None:
        self.log, self.what, self.row = log, what, row

    async def fetchone(self) -> Any:
        self.log.append(f"read {self.what}")
        return self.row


class _Conn:
    """Records what is sent and what is read, in order; the lookup finds `stored`."""

    def __init__(self, stored: tuple[str, int, dict[str, Any]] | None) -> None:
        self.log: list[str] = []
        self.stored = stored

    async def execute(self, query: Any, params: Any = None) -> _Cursor:
        text = query if isinstance(query, str) else query.as_string(None)
        what = text.split()[0].lower() + (" lock" if "advisory" in text else "")
        if "request_hash, status, response" in text:
            what = "lookup"
        self.log.append(f"send {what}")
        return _Cursor(self.log, what, self.stored if what == "lookup" else None)

    @asynccontextmanager
    async def pipeline(self) -> AsyncIterator[None]:
        yield

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self.log.append("begin")
        yield
        self.log.append("commit")


class _Pool:
    def __init__(self, conn: _Conn) -> None:
        self.conn = conn

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[_Conn]:
        yield self.conn


def _app(conn: _Conn) -> web.Application:
    app = web.Application()
    app[appkeys.POOL] = _Pool(conn)  # type: ignore[assignment]
    return app


async def _prefetch(conn: Any) -> None:
    await conn.execute("SELECT * FROM bundles FOR UPDATE")


async def _write(conn: Any) -> tuple[int, dict[str, Any]]:
    await conn.execute("INSERT INTO arrivals DEFAULT VALUES")
    return 200, {"decision": "release"}


async def test_the_reads_travel_with_the_lock_and_lookup() -> None:
    """Lock, lookup and the prefetched read are all sent before the lookup's answer is read;
    then the write runs, the record is stored, and the transaction commits."""
    conn = _Conn(stored=None)
    status, answer, text, replay = await write_once(
        _app(conn), TRADER, "k1", "hash", _write, pipeline=True, prefetch=_prefetch
    )
    assert (status, answer, replay) == (200, {"decision": "release"}, False)
    assert text == '{"decision":"release"}'
    assert conn.log == [
        "begin",
        "send select lock",
        "send lookup",
        "send select",
        "read lookup",
        "send insert",  # the write's
        "send insert",  # the idempotency record
        "commit",
    ]


async def test_a_replay_answers_the_stored_record_without_writing() -> None:
    """On a replay the prefetched read is sent (it only reads and locks), the write is not
    run, and the stored answer is returned after the touch that makes the commit wait for the
    synchronous standby."""
    stored = ("hash", 200, {"decision": "hold"})
    conn = _Conn(stored=stored)
    status, answer, _, replay = await write_once(
        _app(conn), TRADER, "k1", "hash", _write, pipeline=True, prefetch=_prefetch
    )
    assert (status, answer, replay) == (200, {"decision": "hold"}, True)
    assert conn.log == [
        "begin",
        "send select lock",
        "send lookup",
        "send select",
        "read lookup",
        "send update",  # the touch
        "commit",
    ]


async def test_without_a_key_the_reads_come_first() -> None:
    """No Idempotency-Key: no lock, no lookup, no record; the reads, then the write."""
    conn = _Conn(stored=None)
    await write_once(_app(conn), TRADER, None, None, _write, pipeline=True, prefetch=_prefetch)
    assert conn.log == ["begin", "send select", "send insert", "commit"]
