"""The one path every write takes: role check, idempotency, one transaction.

- A standby node refuses writes with 503 and `Retry-After` (promise I3); so does a node whose
  database turns out read-only or unreachable mid-request (the database fences the API tier).
  Both are kernel errors (`DatabaseReadOnly`, `DatabaseUnavailable`) answered by the error
  boundary in `node.problems`, which also translates the driver's errors: nothing here catches
  them.
- `Idempotency-Key`: the key and the record are written in the same transaction. A repeat with
  the same key and body returns the first answer; a different body is 422. Concurrent repeats
  are serialised by a transaction-scoped advisory lock on (account, key).
- A replay never answers on the strength of reading the stored row alone: a commit cancelled
  while waiting for the synchronous standby is local-only (DESIGN.md section 6). So the replay
  itself commits a small write (`replayed_at`); that commit returns only once the standby has
  flushed WAL past it, and so past the original record.
- No timeout wraps COMMIT: cancelling it is what creates local-only commits.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from aiohttp import web

from kernel.errors import DatabaseReadOnly
from node import appkeys
from node.account import Account
from node.problems import PROBLEM_JSON, Problem

MAX_KEY_LENGTH = 200
Conn = psycopg.AsyncConnection[Any]
WriteFn = Callable[[Conn], Awaitable[tuple[int, dict[str, Any]]]]


def ensure_active(request: web.Request) -> None:
    watcher = request.app[appkeys.ROLE]
    if watcher.role != "active":
        raise DatabaseReadOnly(
            f"this node (site {request.app[appkeys.CONFIG].site}) is the standby and does not"
            " accept writes; retry through the API entry point"
        )


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
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
    h = hashlib.sha256()
    h.update(request.method.encode())
    h.update(b"\0")
    h.update(request.path.encode())
    h.update(b"\0")
    h.update(body)
    return h.hexdigest()


def _respond(status: int, body: dict[str, Any], *, replayed: bool) -> web.Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    ctype = PROBLEM_JSON if status >= 400 else "application/json"
    return web.Response(status=status, text=json.dumps(body), content_type=ctype, headers=headers)


def _key_sql(account: Account | None) -> tuple[str, str, str, tuple[Any, ...]]:
    """(lookup, touch, insert, key params): keys are per account, or global for the one
    unauthenticated write (registration)."""
    if account is None:
        return (
            "SELECT request_hash, status, response FROM public_idempotency_keys WHERE key = %s",
            "UPDATE public_idempotency_keys SET replayed_at = now() WHERE key = %s",
            "INSERT INTO public_idempotency_keys (key, request_hash, status, response)"
            " VALUES (%s, %s, %s, %s)",
            (),
        )
    return (
        "SELECT request_hash, status, response FROM idempotency_keys"
        " WHERE account_id = %s AND key = %s",
        "UPDATE idempotency_keys SET replayed_at = now() WHERE account_id = %s AND key = %s",
        "INSERT INTO idempotency_keys (account_id, key, request_hash, status, response)"
        " VALUES (%s, %s, %s, %s, %s)",
        (account.id,),
    )


async def run_write(
    request: web.Request,
    account: Account | None,
    body: bytes,
    fn: WriteFn,
) -> web.Response:
    """Run `fn(conn)` inside one transaction, under the request's idempotency key if any.

    `account` None: an unauthenticated write, whose keys live in a table of their own."""
    ensure_active(request)
    key = idempotency_key(request)
    fingerprint = request_fingerprint(request, body)
    pool = request.app[appkeys.POOL]
    lookup, touch, insert, who = _key_sql(account)
    async with pool.connection() as conn, conn.transaction():
        if key is not None:
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, %s))",
                (key, account.id if account else 0),
            )
            cur = await conn.execute(lookup, (*who, key))
            row = await cur.fetchone()
            if row is not None:
                if row[0] != fingerprint:
                    raise Problem(
                        422,
                        "Unprocessable Content",
                        "this Idempotency-Key was already used with a different request",
                        errors=[
                            {
                                "field": "Idempotency-Key",
                                "message": "reused with a different body",
                            }
                        ],
                    )
                # The touch makes this commit a real one that waits for the synchronous
                # standby.
                await conn.execute(touch, (*who, key))
                stored_status, stored = int(row[1]), row[2]
                replay = True
            else:
                replay = False
        if key is None or not replay:
            status, result = await fn(conn)
            if key is not None:
                await conn.execute(insert, (*who, key, fingerprint, status, json.dumps(result)))
            stored_status, stored = status, result
            replay = False
    if appkeys.CONTINGENCY in request.app and request.app[appkeys.CONTINGENCY].any_manual:
        stored = {**stored, "mode": "manual"}
    return _respond(stored_status, stored, replayed=replay)
