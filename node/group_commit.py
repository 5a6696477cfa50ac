"""Group commit (#11): concurrent writes of one kind share one statement and one commit.

Every commit of the active node waits for the synchronous standby to flush WAL, and every
statement costs PostgreSQL a parse, a plan and a backend wake-up; sixteen submissions arriving
together paid that sixteen times. Here a request hands its item to `GroupCommit.run` and waits;
up to `max_statements` flush tasks each take every item waiting (at most `max_items`) and write
them with one statement on one connection in autocommit mode. Nothing waits on a timer: with
a flush task free, an item is sent at once, alone if it is alone; items only pile up while
every flush task is busy, which is exactly when sharing a commit pays.

An item is acknowledged only by its request, after the statement holding it returned, i.e.
after its commit was flushed to the synchronous standby (promise I1): a shared commit changes
how many records one WAL flush covers, not when any of them is acknowledged.

When a shared statement fails with an error of its own content (an integrity or data error:
PostgreSQL then committed nothing of it), one item may be the cause, for instance an
Idempotency-Key used before: each item is written again alone, so it gets its own answer and
the others are not refused for it. Any other error (connection lost, read-only database,
cancelled) reaches every request of the statement as it is: nothing is retried behind their
back, because a statement whose commit was cut off may have committed locally (DESIGN.md
section 6), and only the client's retry with its Idempotency-Key can tell.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import psycopg

from node.stores import ConnectionPool

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
Conn = psycopg.AsyncConnection[Any]
# Writes `items` with one statement on `conn` (autocommit); one result per item, in order.
WriteItems = Callable[[Conn, Sequence[T]], Awaitable[Sequence[R]]]
# Errors that mean PostgreSQL refused the statement's content and committed none of it.
_CONTENT_ERRORS = (psycopg.errors.IntegrityError, psycopg.errors.DataError)

MAX_STATEMENTS = 4
MAX_ITEMS = 64


def _new_future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


@dataclass
class _Waiting(Generic[T, R]):
    item: T
    done: asyncio.Future[R] = field(default_factory=_new_future)

    def settle(self, result: R | None = None, error: BaseException | None = None) -> None:
        if self.done.done():  # the request went away; nobody reads it
            return
        if error is not None:
            self.done.set_exception(error)
        else:
            self.done.set_result(result)  # type: ignore[arg-type]


def _ignore(*_: object) -> None:
    pass


class GroupCommit(Generic[T, R]):
    """Items of one kind waiting for a shared statement (see the module's docstring)."""

    def __init__(
        self,
        pool: ConnectionPool,
        write: WriteItems[T, R],
        *,
        max_statements: int = MAX_STATEMENTS,
        max_items: int = MAX_ITEMS,
        on_statement: Callable[[int], None] = _ignore,
        on_split: Callable[[], None] = _ignore,
    ) -> None:
        """`on_statement(n)`: a statement wrote n items; `on_split()`: a shared statement was
        refused and its items are written one by one (metrics)."""
        if max_statements < 1 or max_items < 1:
            raise ValueError("a group commit needs at least one statement of one item")
        self._pool, self._write = pool, write
        self._max_statements, self._max_items = max_statements, max_items
        self._waiting: list[_Waiting[T, R]] = []
        self._flushers: set[asyncio.Task[None]] = set()
        # Counted by the flush tasks themselves, not by the set above: a task leaves the set
        # only in a later loop iteration, and an item added meanwhile must still find one.
        self._running = 0
        self._on_statement, self._on_split = on_statement, on_split

    async def run(self, item: T) -> R:
        """Write `item` in the next statement and answer its result once committed."""
        waiting: _Waiting[T, R] = _Waiting(item)
        self._waiting.append(waiting)
        if self._running < self._max_statements:
            self._running += 1
            task = asyncio.create_task(self._flush())
            self._flushers.add(task)
            task.add_done_callback(self._flushers.discard)
        return await waiting.done

    async def close(self) -> None:
        """Let the statements under way finish (a commit is never cancelled: DESIGN.md 6)."""
        if self._flushers:
            await asyncio.gather(*self._flushers, return_exceptions=True)

    async def _flush(self) -> None:
        try:
            while self._waiting:
                group = self._waiting[: self._max_items]
                del self._waiting[: self._max_items]
                try:
                    await self._send(group)
                except BaseException as exc:  # every request of the statement must hear it
                    for w in group:
                        w.settle(error=exc)
                    if not isinstance(exc, Exception):
                        raise
        finally:
            self._running -= 1  # no await between the empty queue and this

    async def _send(self, group: list[_Waiting[T, R]]) -> None:
        async with self._pool.connection() as conn:
            await conn.set_autocommit(True)
            try:
                try:
                    results = await self._write(conn, [w.item for w in group])
                except _CONTENT_ERRORS as exc:
                    if len(group) == 1:
                        raise
                    log.info("a shared statement of %d items was refused (%s): each alone",
                             len(group), type(exc).__name__)  # fmt: skip
                    self._on_split()
                    await self._one_by_one(conn, group)
                    return
            finally:
                with suppress(psycopg.Error):  # a broken connection is dropped by the pool
                    await conn.set_autocommit(False)
        self._on_statement(len(group))
        for w, r in zip(group, results, strict=True):
            w.settle(r)

    async def _one_by_one(self, conn: Conn, group: list[_Waiting[T, R]]) -> None:
        for w in group:
            try:
                (r,) = await self._write(conn, [w.item])
            except _CONTENT_ERRORS as exc:
                w.settle(error=exc)
            else:
                self._on_statement(1)
                w.settle(r)
