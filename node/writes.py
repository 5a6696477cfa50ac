"""The one path every write takes: role check, idempotency, one transaction.

- A standby node refuses writes with 503 and `Retry-After` (promise I3); so does a node whose
  database turns out read-only or unreachable mid-request (the database fences the API tier).
  Both are kernel errors (`DatabaseReadOnly`, `DatabaseUnavailable`) answered by the error
  boundary in `node.problems`, which also translates the driver's errors: nothing here catches
  them.
- `Idempotency-Key`: the key and the record are written in the same transaction. A repeat with
  the same key and body returns the first answer; a different body is 422. Concurrent repeats
  are serialised by a transaction-scoped advisory lock on (account, key). Registration has no
  account: its records are keyed by (key, request fingerprint) instead (see `_scope`).
- A record answers replays for IDEMPOTENCY_TTL (24 h), then is ignored and later deleted. What
  it keeps is the answer minus any secret shown once (`redact`): a replayed approval says the
  key was issued instead of repeating it.
- A replay never answers on the strength of reading the stored row alone: a commit cancelled
  while waiting for the synchronous standby is local-only (DESIGN.md section 6). So the replay
  itself commits a small write (`replayed_at`); that commit returns only once the standby has
  flushed WAL past it, and so past the original record.
- No timeout wraps COMMIT: cancelling it is what creates local-only commits.
- A submission (#11) is written by one statement in its own implicit transaction, shared with
  the submissions arriving at the same time (`run_grouped`, node.group_commit): its
  idempotency record is inserted by that statement, without the advisory lock and the lookup.
  The record's primary key does their work: a repeat, concurrent or later, or a key whose
  record expired but is not yet deleted, fails on it, nothing of that statement stays, the
  group is written again item by item, and that request then takes the general path above
  (lock, lookup, replay with its touch).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import psycopg
from aiohttp import web
from psycopg import sql

from kernel.errors import DatabaseReadOnly
from node import appkeys, json_text
from node.account import Account
from node.group_commit import GroupCommit
from node.problems import PROBLEM_JSON, Problem

T = TypeVar("T")
MAX_KEY_LENGTH = 200
Conn = psycopg.AsyncConnection[Any]
WriteFn = Callable[[Conn], Awaitable[tuple[int, dict[str, Any]]]]
# Sends the reads a write decides on (their cursors are the caller's to fetch from in its
# WriteFn); see run_write's `prefetch`.
Prefetch = Callable[[Conn], Awaitable[None]]
Redact = Callable[[dict[str, Any]], dict[str, Any]]
# How long a record answers replays (README, "The API"); older ones are ignored, then deleted
# by the active node (node.background), and their key may be used again.
IDEMPOTENCY_TTL = timedelta(hours=24)
IDEMPOTENCY_TABLES = ("idempotency_keys", "public_idempotency_keys")


def ensure_active(request: web.Request) -> None:
    ensure_app_active(request.app)


def ensure_app_active(app: web.Application) -> None:
    watcher = app[appkeys.ROLE]
    if watcher.role != "active":
        raise DatabaseReadOnly(
            f"this node (site {app[appkeys.CONFIG].site}) is the standby and does not"
            " accept writes; retry through the API entry point"
        )


# An Idempotency-Key a channel gives other than in the header (a web form's token, node.web).
CHANNEL_IDEMPOTENCY_KEY = web.RequestKey("rocars.channel_idempotency_key", str)


def idempotency_key(request: web.Request) -> str | None:
    key = request.get(CHANNEL_IDEMPOTENCY_KEY) or request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise Problem(
            400,
            "Bad Request",
            f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters",
            errors=[{"field": "Idempotency-Key", "message": "invalid idempotency key"}],
        )
    return key


def request_fingerprint(request: web.Request, body: bytes) -> str:
    return fingerprint(request.method, request.path, body)


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What an idempotency record remembers of its request: method, path and body."""
    h = hashlib.sha256()
    h.update(method.encode())
    h.update(b"\0")
    h.update(path.encode())
    h.update(b"\0")
    h.update(body)
    return h.hexdigest()


# An answer with a list longer than this (a batch's results: 10,000 of them are about 4 MB of
# JSON and 40 ms of encoding) is encoded in a worker thread, off the event loop (#10 item 2).
_LARGE_LIST = 256


async def encode(answer: dict[str, Any]) -> str:
    """`answer` as JSON text; a large one encoded in a worker thread."""
    if any(isinstance(v, list) and len(v) > _LARGE_LIST for v in answer.values()):
        return await asyncio.to_thread(json_text.dumps, answer)
    return json_text.dumps(answer)


def _in_manual_mode(request: web.Request) -> bool:
    """Manual clearance is in force somewhere: every write's answer then says `mode: manual`."""
    return appkeys.CONTINGENCY in request.app and request.app[appkeys.CONTINGENCY].any_manual


def _respond(status: int, text: str, *, replayed: bool) -> web.Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    ctype = PROBLEM_JSON if status >= 400 else "application/json"
    return web.Response(status=status, text=text, content_type=ctype, headers=headers)


@dataclass(frozen=True)
class _Scope:
    """Where a request's idempotency record lives and which columns identify it."""

    table: str
    identity: tuple[str, ...]  # the table's primary key
    values: dict[str, Any]  # every column that names the record: owner, key, request_hash
    lock: tuple[str, int]  # hashtextextended's arguments for the advisory lock


def _scope(account: Account | None, key: str, fingerprint: str) -> _Scope:
    values: dict[str, Any] = {"key": key, "request_hash": fingerprint}
    if account is not None:
        return _Scope(
            "idempotency_keys",
            ("account_id", "key"),
            {"account_id": account.id, **values},
            (key, account.id),
        )
    # Registration, the one unauthenticated write: nobody owns its keys, so a key alone would
    # let one applicant's key return (or, with another body, block) another's answer. Keyed by
    # (key, fingerprint of method, path and body) instead, a record is only ever returned to a
    # request carrying the very same bytes, i.e. the same applicant data; the answer holds that
    # data plus the registration's id and times, which grant nothing (no public route takes
    # the id). A different body under a used key is simply another application.
    return _Scope(
        "public_idempotency_keys",
        ("key", "request_hash"),
        values,
        (f"{fingerprint}:{key}", 0),
    )


def _where(scope: _Scope) -> tuple[sql.Composable, tuple[Any, ...]]:
    clause = sql.SQL(" AND ").join(
        sql.SQL("{} = %s").format(sql.Identifier(c)) for c in scope.identity
    )
    return clause, tuple(scope.values[c] for c in scope.identity)


async def _lock_and_look_up(conn: Conn, scope: _Scope) -> psycopg.AsyncCursor[Any]:
    """Takes `scope`'s advisory lock and sends the lookup of its live record; `_found` reads
    it. Expired records are not seen, so their key can be used again."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, %s))", scope.lock)
    where, params = _where(scope)
    return await conn.execute(
        sql.SQL(
            "SELECT request_hash, status, response FROM {} WHERE {} AND created_at > now() - %s"
        ).format(sql.Identifier(scope.table), where),
        (*params, IDEMPOTENCY_TTL),
    )


async def _found(cur: psycopg.AsyncCursor[Any]) -> tuple[str, int, dict[str, Any]] | None:
    """The record `_lock_and_look_up` looked up (request hash, status, stored answer), if any."""
    row = await cur.fetchone()
    return None if row is None else (str(row[0]), int(row[1]), row[2])


async def _touch(conn: Conn, scope: _Scope) -> None:
    where, params = _where(scope)
    await conn.execute(
        sql.SQL("UPDATE {} SET replayed_at = now() WHERE {}").format(
            sql.Identifier(scope.table), where
        ),
        params,
    )


async def _store(conn: Conn, scope: _Scope, status: int, answer: str) -> None:
    # The advisory lock is held and `_find` saw no live record, so a row already under this
    # identity can only be an expired one, not yet deleted: it is replaced.
    columns = [*scope.values, "status", "response"]
    await conn.execute(
        sql.SQL(
            "INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT ({identity})"
            " DO UPDATE SET request_hash = EXCLUDED.request_hash, status = EXCLUDED.status,"
            " response = EXCLUDED.response, created_at = EXCLUDED.created_at, replayed_at = NULL"
        ).format(
            table=sql.Identifier(scope.table),
            columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
            values=sql.SQL(", ").join(sql.Placeholder() * len(columns)),
            identity=sql.SQL(", ").join(map(sql.Identifier, scope.identity)),
        ),
        (*scope.values.values(), status, answer),
    )


async def delete_expired_idempotency(conn: Conn, table: str, *, batch: int) -> int:
    """Delete at most `batch` records of `table` older than IDEMPOTENCY_TTL; how many were."""
    cur = await conn.execute(
        sql.SQL(
            "DELETE FROM {t} WHERE ctid = ANY (ARRAY("
            "SELECT ctid FROM {t} WHERE created_at <= now() - %s ORDER BY created_at LIMIT %s))"
        ).format(t=sql.Identifier(table)),
        (IDEMPOTENCY_TTL, batch),
    )
    return cur.rowcount


def _pipelined(conn: Conn, on: bool) -> AbstractAsyncContextManager[object]:
    return conn.pipeline() if on else nullcontext()


def _reused() -> Problem:
    return Problem(
        422,
        "Unprocessable Content",
        "this Idempotency-Key was already used with a different request",
        errors=[{"field": "Idempotency-Key", "message": "reused with a different body"}],
    )


async def run_write(
    request: web.Request,
    account: Account | None,
    body: bytes,
    fn: WriteFn,
    *,
    redact: Redact | None = None,
    pipeline: bool = False,
    prefetch: Prefetch | None = None,
) -> web.Response:
    """Run `fn(conn)` inside one transaction, under the request's idempotency key if any.

    `account` None: an unauthenticated write, whose keys live in a table of their own.
    `redact`: what of `fn`'s answer may be kept for replays, when the answer carries a secret
    that must be shown once only (an approval's API key).
    `pipeline`: run the transaction in psycopg's pipeline mode: statements whose results are
    not read yet travel together (BEGIN, the lock and the lookup in one round trip; `fn`'s
    writes, the record and COMMIT in another). For `fn`s that never look at a statement's
    outcome (rowcount) before reading a result: an error then surfaces at the next read or at
    COMMIT, and nothing of the transaction stays either way.
    `prefetch`: sends the reads `fn` decides on (it keeps their cursors for `fn`) right after
    the idempotency lookup, so in pipeline mode lock, lookup and reads share one round trip.
    They run on a replay too, whose answer is the stored one: they may only read and lock."""
    ensure_active(request)
    key = idempotency_key(request)
    print_ = None if key is None else request_fingerprint(request, body)
    status, answer, text, replay = await write_once(
        request.app, account, key, print_, fn, redact=redact, pipeline=pipeline, prefetch=prefetch
    )
    if _in_manual_mode(request):
        answer, text = {**answer, "mode": "manual"}, None
    return _respond(status, text or await encode(answer), replayed=replay)


async def write_once(
    app: web.Application,
    account: Account | None,
    key: str | None,
    request_print: str | None,
    fn: WriteFn,
    *,
    redact: Redact | None = None,
    pipeline: bool = False,
    prefetch: Prefetch | None = None,
) -> tuple[int, dict[str, Any], str | None, bool]:
    """`run_write` without the HTTP request, for the other channels (node.phone): `key` the
    idempotency key (None: none), `request_print` the request's `fingerprint`. Answers
    (status, answer, its JSON when already encoded, replayed). The caller checks the role."""
    scope = None if key is None or request_print is None else _scope(account, key, request_print)
    pool = app[appkeys.POOL]
    replay = False
    text: str | None = None  # the answer's JSON, once encoded
    async with pool.connection() as conn, _pipelined(conn, pipeline), conn.transaction():
        # In pipeline mode the lock, the lookup and the prefetched reads travel together.
        lookup = None if scope is None else await _lock_and_look_up(conn, scope)
        if prefetch is not None:
            await prefetch(conn)
        found = None if lookup is None else await _found(lookup)
        if scope is not None and found is not None:
            request_hash, status, answer = found
            if request_hash != scope.values["request_hash"]:
                raise _reused()
            # The touch makes this commit a real one that waits for the synchronous standby.
            await _touch(conn, scope)
            replay = True
        if not replay:
            status, answer = await fn(conn)
            if scope is not None:
                if redact is None:
                    text = stored = await encode(answer)
                else:
                    stored = await encode(redact(answer))
                await _store(conn, scope, status, stored)
    return status, answer, text, replay


@dataclass(frozen=True)
class NewRecord:
    """The idempotency record a grouped write inserts along with its data (a plain INSERT: a
    record already under the key fails the whole statement)."""

    account_id: int
    key: str
    request_hash: str


# A grouped write's result: its status, its answer and the answer's JSON.
Written = tuple[int, dict[str, Any], str]
_RECORD_KEY = "idempotency_keys_pkey"


async def run_grouped(
    request: web.Request,
    account: Account,
    body: bytes,
    group: GroupCommit[T, Written],
    item: Callable[[NewRecord | None], T],
    fallback: WriteFn,
) -> web.Response:
    """Write `item(record)` in `group`'s next statement (node.group_commit), `record` being the
    request's idempotency record (None without an Idempotency-Key), which that statement
    inserts with the data. When the record's key is already taken, the request is run again
    as `run_write(..., fallback)`, which replays or refuses it."""
    ensure_active(request)
    key = idempotency_key(request)
    record = None if key is None else NewRecord(account.id, key, request_fingerprint(request, body))
    try:
        status, answer, text = await group.run(item(record))
    except psycopg.errors.UniqueViolation as exc:
        if record is None or exc.diag.constraint_name != _RECORD_KEY:
            raise
        return await run_write(request, account, body, fallback)
    if _in_manual_mode(request):
        return _respond(status, await encode({**answer, "mode": "manual"}), replayed=False)
    return _respond(status, text, replayed=False)
