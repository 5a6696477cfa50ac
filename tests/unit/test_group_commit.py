"""node.group_commit against a scripted pool: who shares a statement, who hears which error,
and that no item is ever left waiting (#11 target 1)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest

from node.group_commit import GroupCommit


class FakeConn:
    def __init__(self) -> None:
        self.autocommit = False
        self.closed = False
        self.modes: list[bool] = []

    async def set_autocommit(self, value: bool) -> None:
        self.autocommit = value
        self.modes.append(value)


class FakePool:
    def __init__(self) -> None:
        self.conns: list[FakeConn] = []

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[FakeConn]:
        conn = FakeConn()
        self.conns.append(conn)
        yield conn


class Writer:
    """Records each statement's items; `gate` holds statements until a test releases them;
    items named in `refuse` make the statement holding them fail like PostgreSQL would."""

    def __init__(self) -> None:
        self.statements: list[list[str]] = []
        self.gate: asyncio.Event | None = None
        self.refuse: dict[str, BaseException] = {}
        self.autocommit_seen: list[bool] = []

    async def __call__(self, conn: Any, items: Sequence[str]) -> list[str]:
        self.autocommit_seen.append(conn.autocommit)
        self.statements.append(list(items))
        if self.gate is not None:
            await self.gate.wait()
        for item in items:
            if item in self.refuse:
                raise self.refuse[item]
        return [f"stored {i}" for i in items]


def unique_violation() -> BaseException:
    return psycopg.errors.UniqueViolation("duplicate key value violates unique constraint")


async def until(fact: Any, *, timeout: float = 2.0) -> None:
    """Let the loop run until `fact()` holds (the fake statements only ever yield)."""
    async with asyncio.timeout(timeout):
        while not fact():  # noqa: ASYNC110 - no event to wait on: the fact is a counter
            await asyncio.sleep(0)


async def test_an_item_alone_is_sent_at_once_in_autocommit() -> None:
    """#11 target 1: with a statement slot free nothing waits for company: one item is one
    statement, on a connection switched to autocommit and back before it returns to the pool."""
    pool, writer = FakePool(), Writer()
    sizes: list[int] = []
    group: GroupCommit[str, str] = GroupCommit(pool, writer, on_statement=sizes.append)
    assert await group.run("a") == "stored a"
    assert writer.statements == [["a"]]
    assert writer.autocommit_seen == [True]
    assert pool.conns[0].modes == [True, False]
    assert sizes == [1]


async def test_items_arriving_while_every_slot_is_busy_share_the_next_statement() -> None:
    """#11 target 1: while `max_statements` statements are under way, new items wait and then
    go together, at most `max_items` per statement, each request getting its own result."""
    pool, writer = FakePool(), Writer()
    writer.gate = asyncio.Event()
    sizes: list[int] = []
    group: GroupCommit[str, str] = GroupCommit(
        pool, writer, max_statements=2, max_items=3, on_statement=sizes.append
    )
    first = [asyncio.create_task(group.run("a"))]
    await until(lambda: len(writer.statements) == 1)
    first.append(asyncio.create_task(group.run("b")))
    await until(lambda: len(writer.statements) == 2)  # both slots taken, one item each
    rest = [asyncio.create_task(group.run(x)) for x in ("c", "d", "e", "f", "g")]
    await asyncio.sleep(0)
    assert len(writer.statements) == 2  # nothing more is sent while the slots are busy
    writer.gate.set()
    results = await asyncio.gather(*first, *rest)
    assert results == [f"stored {x}" for x in "abcdefg"]
    assert writer.statements[:2] == [["a"], ["b"]]
    later = writer.statements[2:]
    assert sorted(x for s in later for x in s) == list("cdefg")
    assert max(len(s) for s in later) == 3
    assert len(later) == 2
    assert sorted(sizes) == [1, 1, 2, 3]


async def test_a_refused_shared_statement_is_written_again_item_by_item() -> None:
    """#11 target 1: when PostgreSQL refuses a shared statement for its content (here one
    item's idempotency key is taken), each item is written alone: the others are stored and
    answered, only the one at fault hears the error."""
    pool, writer = FakePool(), Writer()
    writer.gate = asyncio.Event()
    splits: list[int] = []
    group: GroupCommit[str, str] = GroupCommit(
        pool, writer, max_statements=1, on_split=lambda: splits.append(1)
    )
    blocker = asyncio.create_task(group.run("x"))
    await until(lambda: len(writer.statements) == 1)
    waiting = [asyncio.create_task(group.run(i)) for i in ("a", "bad", "c")]
    await asyncio.sleep(0)
    writer.refuse["bad"] = unique_violation()
    writer.gate.set()
    assert await blocker == "stored x"
    a, bad, c = await asyncio.gather(*waiting, return_exceptions=True)
    assert (a, c) == ("stored a", "stored c")
    assert isinstance(bad, psycopg.errors.UniqueViolation)
    assert writer.statements[1:] == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    assert splits == [1]


async def test_other_errors_reach_every_request_and_nothing_is_retried() -> None:
    """#11 target 1 and I1: a connection lost (or any error not about the statement's
    content) may have committed locally: every request of the statement hears it, and the
    statement is not sent again behind their back."""
    pool, writer = FakePool(), Writer()
    writer.gate = asyncio.Event()
    group: GroupCommit[str, str] = GroupCommit(pool, writer, max_statements=1)
    blocker = asyncio.create_task(group.run("x"))
    await until(lambda: len(writer.statements) == 1)
    waiting = [asyncio.create_task(group.run(i)) for i in ("a", "b")]
    await asyncio.sleep(0)
    writer.refuse["a"] = psycopg.OperationalError("server closed the connection unexpectedly")
    writer.gate.set()
    await blocker
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, psycopg.OperationalError) for r in results)
    assert writer.statements[1:] == [["a", "b"]]


async def test_a_lone_refused_item_hears_its_error_once() -> None:
    """#11 target 1: an item alone in its statement is not written a second time when it is
    refused: its request hears the error (and takes its own fallback)."""
    pool, writer = FakePool(), Writer()
    writer.refuse["bad"] = unique_violation()
    group: GroupCommit[str, str] = GroupCommit(pool, writer)
    with pytest.raises(psycopg.errors.UniqueViolation):
        await group.run("bad")
    assert writer.statements == [["bad"]]


async def test_a_request_that_went_away_does_not_disturb_its_statement() -> None:
    """#11 target 1: a request cancelled while its item is in a statement (client gone) does
    not stop the statement: the others are answered, and the next run works."""
    pool, writer = FakePool(), Writer()
    writer.gate = asyncio.Event()
    group: GroupCommit[str, str] = GroupCommit(pool, writer, max_statements=1)
    blocker = asyncio.create_task(group.run("x"))
    await until(lambda: len(writer.statements) == 1)
    gone, stays = asyncio.create_task(group.run("a")), asyncio.create_task(group.run("b"))
    await asyncio.sleep(0)
    gone.cancel()
    writer.gate.set()
    async with asyncio.timeout(2):
        assert await blocker == "stored x"
        assert await stays == "stored b"
        assert ["a", "b"] in writer.statements
        assert await group.run("c") == "stored c"


async def test_a_client_sending_one_after_the_other_is_never_left_waiting() -> None:
    """#11 target 1: a request that sends its next item the moment its previous one is
    answered (before the flush task that answered it has quite ended) still gets a statement."""
    pool, writer = FakePool(), Writer()
    group: GroupCommit[str, str] = GroupCommit(pool, writer, max_statements=1)
    async with asyncio.timeout(2):
        for item in "abc":
            assert await group.run(item) == f"stored {item}"
    assert writer.statements == [["a"], ["b"], ["c"]]


async def test_no_item_is_ever_left_waiting() -> None:
    """#11 target 1: items arriving at every moment, also just as a flush task finds the
    queue empty and ends, are all written: a thousand runs with random pauses finish."""
    rng = random.Random(7)
    pool = FakePool()

    async def write(conn: Any, items: Sequence[int]) -> list[int]:
        for _ in range(rng.randrange(3)):
            await asyncio.sleep(0)
        return [i * 2 for i in items]

    group: GroupCommit[int, int] = GroupCommit(pool, write, max_statements=2, max_items=5)

    async def one(i: int) -> int:
        for _ in range(rng.randrange(4)):
            await asyncio.sleep(0)
        return await group.run(i)

    async with asyncio.timeout(5):
        results = await asyncio.gather(*(one(i) for i in range(1000)))
    assert results == [i * 2 for i in range(1000)]


async def test_close_waits_for_the_statements_under_way() -> None:
    """#11 target 1 and DESIGN.md 6: shutting down never cancels a statement waiting for its
    commit; close() returns once it has answered."""
    pool, writer = FakePool(), Writer()
    writer.gate = asyncio.Event()
    group: GroupCommit[str, str] = GroupCommit(pool, writer)
    task = asyncio.create_task(group.run("a"))
    await until(lambda: len(writer.statements) == 1)
    closing = asyncio.create_task(group.close())
    await asyncio.sleep(0)
    assert not closing.done()
    writer.gate.set()
    await closing
    assert task.done()
    assert task.result() == "stored a"


def test_a_group_needs_room_for_one_item() -> None:
    """#11 target 1: a configuration with no statement or no item per statement is refused."""
    with pytest.raises(ValueError, match="at least one"):
        GroupCommit(FakePool(), Writer(), max_statements=0)
