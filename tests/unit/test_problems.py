"""node.problems: the one error boundary. Third-party errors become kernel errors
(`TRANSLATIONS`), kernel errors become problem documents (`STATUS_OF`), pinned here class by
class through a tiny aiohttp app in process (no cluster)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout

from contingency import state as cstate
from contingency.journal import JournalConflict
from contingency.runtime import ContingencyRuntime
from kernel import errors
from kernel.errors import (
    DatabaseReadOnly,
    DatabaseUnavailable,
    EtcdUnavailable,
    InvalidInput,
    RocarsError,
)
from node import appkeys
from node.account import Account
from node.driver_errors import TRANSLATIONS, translate, translated
from node.problems import PROBLEM_JSON, STATUS_OF, answer_for, problem_middleware
from node.writes import run_write

AiohttpClient = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]
PROBLEMS = "https://rocars.example/problems/"
UNREACHABLE = "the database is not reachable from this node; retry shortly"
READ_ONLY = "the database member of this site is no longer the primary; retry shortly"

# Every kernel error class, and what it must answer: (status, type, Retry-After, retry_after_ms).
EXPECTED: dict[type[RocarsError], tuple[int, str, str | None, int | None]] = {
    errors.InvalidInput: (422, PROBLEMS + "validation", None, None),
    errors.InvalidTransition: (409, PROBLEMS + "conflict", None, None),
    errors.DatabaseReadOnly: (503, PROBLEMS + "not-writable", "1", 200),
    errors.DatabaseUnavailable: (503, PROBLEMS + "not-writable", "1", 200),
    errors.EtcdUnavailable: (503, PROBLEMS + "unavailable", "1", None),
    errors.PatroniUnavailable: (503, PROBLEMS + "unavailable", "1", None),
    errors.RedisUnavailable: (503, PROBLEMS + "unavailable", "1", None),
    errors.ComponentUnavailable: (503, PROBLEMS + "unavailable", "1", None),
    JournalConflict: (409, PROBLEMS + "journal-conflict", None, None),
    errors.JournalError: (503, PROBLEMS + "journal-unavailable", "1", None),
    errors.ConfigError: (500, "about:blank", None, None),
    errors.LaunchError: (500, "about:blank", None, None),
    errors.DrillError: (500, "about:blank", None, None),
    errors.RocarsError: (500, "about:blank", None, None),
}


def _kernel_classes() -> set[type[RocarsError]]:
    return {v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, RocarsError)}


def _raising(exc: BaseException) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        raise exc

    return handler


async def _answer(
    aiohttp_client: AiohttpClient, exc: BaseException, *, manual: ContingencyRuntime | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    app = web.Application(middlewares=[problem_middleware])
    if manual is not None:
        app[appkeys.CONTINGENCY] = manual
    app.router.add_get("/boom", _raising(exc))
    client = await aiohttp_client(app)
    r = await client.get("/boom")
    assert r.content_type == PROBLEM_JSON
    return r.status, dict(r.headers), json.loads(await r.text())


def _manual_runtime(tmp_path: Path) -> ContingencyRuntime:
    rt = ContingencyRuntime(etcd=SimpleNamespace(), override_path=None)  # type: ignore[arg-type]
    rt.state = cstate.activate(
        cstate.NORMAL,
        actor="officer:1",
        reason="both database members down",
        lbcps=None,
        at=datetime(2030, 1, 7, 8, 0, tzinfo=UTC),
        message="Manual clearance in force.",
    )
    return rt


def test_every_kernel_error_class_has_its_own_row() -> None:
    """Adding an error class to kernel.errors means choosing its HTTP answer in STATUS_OF; the
    journal's classes are in the table too."""
    assert set(STATUS_OF) == _kernel_classes() | {JournalConflict}
    assert set(EXPECTED) == set(STATUS_OF)


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.__name__)
async def test_each_class_answers_its_status(
    cls: type[RocarsError], aiohttp_client: AiohttpClient
) -> None:
    """Raised by a handler, each kernel error answers the status, problem type and retry hints
    of its row: 422 invalid input, 409 invalid transition (and a journal conflict), 503 with
    Retry-After for every outage (the database's also with retry_after_ms), 500 for the
    operations errors that have no business inside a request."""
    status, type_, retry_after, retry_after_ms = EXPECTED[cls]
    exc = cls("the reason, in words", field="vrn") if cls is InvalidInput else cls("the reason")
    got, headers, doc = await _answer(aiohttp_client, exc)
    assert got == status
    assert doc["status"] == status
    assert doc["type"] == type_
    assert doc["instance"] == "/boom"
    assert headers.get("Retry-After") == retry_after
    assert doc.get("retry_after_ms") == retry_after_ms
    if status == 500:
        assert doc["detail"] == "an unexpected error was logged"  # no internals
    else:
        assert "the reason" in doc["detail"]


async def test_invalid_input_names_its_field(aiohttp_client: AiohttpClient) -> None:
    """A 422 lists the offending field and the message (promise I5)."""
    _, _, doc = await _answer(
        aiohttp_client, InvalidInput("message: must not be blank", field="message")
    )
    assert doc["title"] == "Unprocessable Content"
    assert doc["errors"] == [{"field": "message", "message": "message: must not be blank"}]


async def test_journal_error_names_the_journal(aiohttp_client: AiohttpClient) -> None:
    """A journal that cannot be used is an outage of this node's journal, and says so."""
    _, _, doc = await _answer(aiohttp_client, errors.JournalError("j.sqlite: journal is closed"))
    assert doc["detail"].startswith("the manual-clearance journal of this node cannot be used")
    assert "journal is closed" in doc["detail"]


THIRD_PARTY: list[tuple[BaseException, type[RocarsError], str]] = [
    (pg_errors.ReadOnlySqlTransaction("cannot execute INSERT"), DatabaseReadOnly, READ_ONLY),
    (PoolTimeout("couldn't get a connection after 5.00 sec"), DatabaseUnavailable, UNREACHABLE),
    (psycopg.OperationalError("connection refused"), DatabaseUnavailable, UNREACHABLE),
    (pg_errors.AdminShutdown("terminating connection"), DatabaseUnavailable, UNREACHABLE),
]


@pytest.mark.parametrize(("exc", "kernel", "detail"), THIRD_PARTY, ids=lambda v: type(v).__name__)
async def test_database_errors_answer_exactly_like_a_standby(
    exc: BaseException, kernel: type[RocarsError], detail: str, aiohttp_client: AiohttpClient
) -> None:
    """A driver error that escapes a handler (a read, a write) is translated once at the
    boundary: 503, Retry-After 1, retry_after_ms 200, the not-writable problem type; never 500."""
    assert type(translate(exc)) is kernel
    status, headers, doc = await _answer(aiohttp_client, exc)
    assert status == 503
    assert headers["Retry-After"] == "1"
    assert doc == {
        "type": PROBLEMS + "not-writable",
        "title": "Service Unavailable",
        "status": 503,
        "detail": detail,
        "instance": "/boom",
        "retry_after_ms": 200,
    }


async def test_manual_mode_replaces_the_retry_hint_by_the_notice(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """While manual clearance is in force a database outage tells the user to present the cargo
    documents: `mode: manual` and `since`, Retry-After stays, no sub-second hint."""
    status, headers, doc = await _answer(
        aiohttp_client, PoolTimeout("timeout"), manual=_manual_runtime(tmp_path)
    )
    assert status == 503
    assert headers["Retry-After"] == "1"
    assert doc["mode"] == "manual"
    assert doc["since"] == "2030-01-07T08:00:00+00:00"
    assert "retry_after_ms" not in doc
    assert doc["detail"].startswith(UNREACHABLE + ". Manual customs clearance is in effect")
    assert "present your cargo documents" in doc["detail"]


@pytest.mark.parametrize(
    "exc",
    [RuntimeError("bug"), psycopg.ProgrammingError("syntax error"), KeyError("x")],
    ids=lambda e: type(e).__name__,
)
async def test_what_is_not_an_outage_stays_a_500(
    exc: BaseException, aiohttp_client: AiohttpClient
) -> None:
    """Only the errors TRANSLATIONS knows become 503: a bug (even one raised by the driver, such
    as bad SQL) answers 500 without internals, so it is seen and fixed."""
    assert translate(exc) is None
    status, _, doc = await _answer(aiohttp_client, exc)
    assert status == 500
    assert doc["detail"] == "an unexpected error was logged"


def test_translations_list_subclasses_before_their_bases() -> None:
    """First match wins, so no row is shadowed by an earlier, wider one."""
    sources = [source for source, _, _ in TRANSLATIONS]
    for i, later in enumerate(sources):
        assert not any(issubclass(later, earlier) for earlier in sources[:i]), later


def test_translated_raises_the_kernel_error_from_the_driver_error() -> None:
    """Call sites that act on an outage catch the kernel class; the driver's error is kept as
    the cause. Kernel errors and unknown errors pass through unchanged."""
    cause = psycopg.OperationalError("server closed the connection")
    with pytest.raises(DatabaseUnavailable) as caught, translated():
        raise cause
    assert caught.value.__cause__ is cause
    with pytest.raises(EtcdUnavailable), translated():
        raise EtcdUnavailable("no member")
    with pytest.raises(ValueError, match="plain"), translated():
        raise ValueError("plain")


def test_answer_for_takes_the_nearest_row() -> None:
    """A subclass without a row of its own answers like its nearest ancestor."""

    class SentinelUnavailable(errors.RedisUnavailable):
        pass

    assert answer_for(SentinelUnavailable) is STATUS_OF[errors.RedisUnavailable]


# --- the write path goes through the boundary, too --------------------------------------------


class _Pool:
    """A pool whose connection fails with `error` (as psycopg_pool would)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Any]:
        raise self.error
        yield  # pragma: no cover


def _write_app(role: str, pool: _Pool) -> web.Application:
    app = web.Application(middlewares=[problem_middleware])
    app[appkeys.ROLE] = SimpleNamespace(role=role)  # type: ignore[assignment]
    app[appkeys.CONFIG] = SimpleNamespace(site="B")  # type: ignore[assignment]
    app[appkeys.POOL] = pool  # type: ignore[assignment]

    async def write(request: web.Request) -> web.Response:
        async def fn(conn: Any) -> tuple[int, dict[str, Any]]:
            return 201, {"ok": True}

        return await run_write(request, Account(1, "trader", "t", "active"), b"{}", fn)

    app.router.add_post("/w", write)
    return app


@pytest.mark.parametrize(
    ("error", "detail"),
    [
        (PoolTimeout("no connection in 5 s"), UNREACHABLE),
        (pg_errors.ReadOnlySqlTransaction("read-only"), READ_ONLY),
    ],
    ids=["pool-timeout", "read-only"],
)
async def test_run_write_outage_answers_503(
    error: BaseException, detail: str, aiohttp_client: AiohttpClient
) -> None:
    """run_write catches nothing: the driver's error reaches the boundary and answers 503."""
    client = await aiohttp_client(_write_app("active", _Pool(error)))
    r = await client.post("/w")
    doc = await r.json(content_type=None)
    assert (r.status, r.headers["Retry-After"], doc["detail"]) == (503, "1", detail)
    assert doc["retry_after_ms"] == 200


async def test_a_standby_refuses_writes_before_the_database(aiohttp_client: AiohttpClient) -> None:
    """A standby node answers 503 naming itself, without touching its database."""
    client = await aiohttp_client(_write_app("standby", _Pool(AssertionError("not reached"))))
    r = await client.post("/w")
    doc = await r.json(content_type=None)
    assert r.status == 503
    assert doc["type"] == PROBLEMS + "not-writable"
    assert doc["detail"].startswith("this node (site B) is the standby")
    assert doc["retry_after_ms"] == 200
