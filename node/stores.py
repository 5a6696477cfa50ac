"""The node's own PostgreSQL access outside the request handlers, all its SQL in one place: the
connection pool seam, the account store behind authentication and the officers' key cache, the
write probe and the migration run.

`ConnectionPool` and `AccountStore` are the seams: production passes psycopg's pool and
`PgAccountStore`; in-process tests pass fakes (a dict of accounts, a pool that is down).
"""

from __future__ import annotations

import socket
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg import pq
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from contingency.keycache import CachedAccount
from kernel.errors import DatabaseUnavailable
from node import migrate
from node.account import Account
from node.config import NodeConfig
from node.driver_errors import translated


class ConnectionPool(Protocol):
    """What the node needs of psycopg_pool.AsyncConnectionPool: a connection, for a while."""

    def connection(
        self, timeout: float | None = None
    ) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]: ...


@dataclass(frozen=True)
class StoredAccount:
    account: Account
    key_sha256: str


class AccountStore(Protocol):
    """Accounts by API key prefix. Both methods raise DatabaseUnavailable when the database
    cannot answer (authentication then falls back to the node's key cache)."""

    async def find(self, key_prefix: str) -> StoredAccount | None: ...

    async def all_accounts(self) -> list[CachedAccount]: ...


# How long a connection beyond the first may stay unused before the pool closes it (#11 target
# 5, idle memory). psycopg_pool closes one such connection per period, so a pool grown to ten by
# a busy hour takes nine periods to shrink back; with its default of 10 minutes an idle system
# still held ten backends 90 minutes after its load, about 7 MiB of PSS each (measured after a
# `make bench`: 71 MiB of the primary's 90). A minute each brings it back in about nine. What it
# costs: a connection opened again (TLS and SCRAM) when the next busy spell finds too few.
POOL_MAX_IDLE_S = 60.0


def open_pool(config: NodeConfig) -> AsyncConnectionPool:
    """The node's pool to its own site's member only, not yet opened."""
    return AsyncConnectionPool(
        config.database.conninfo(application_name=f"rocars-node-{config.site}"),
        min_size=1,
        max_size=10,
        max_idle=POOL_MAX_IDLE_S,
        open=False,
        timeout=5.0,
        check=check_locally,
        name=f"node-{config.site}",
    )


async def check_locally(conn: psycopg.AsyncConnection[Any]) -> None:
    """The pool's check of a connection it hands out, without a round trip (a query on every
    checkout was one of a submission's eleven): an idle connection is sent nothing by the
    server unless its backend is gone. A backend that was terminated (PostgreSQL restarted,
    switched over, or the connection killed) sent its FATAL error and closed the socket, so a
    peek at the socket that finds anything to read, or the end of the stream, fails the check,
    and the pool drops the connection and hands out another. A server that vanished without a
    word is found by the query's own failure, as it was found by the check's query before."""
    if conn.closed or conn.broken or conn.pgconn.status != pq.ConnStatus.OK:
        raise psycopg.OperationalError("the connection is closed")
    if _server_spoke(conn.pgconn.socket):
        await conn.close()  # so the pool replaces it rather than keeping it for the next one
        raise psycopg.OperationalError("the server closed the connection or sent while idle")


def _server_spoke(fd: int) -> bool:
    """Whether something (or the end of the stream) waits to be read on idle socket `fd`."""
    sock = socket.socket(fileno=fd)
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.detach()  # the socket stays libpq's
    return True


class PgAccountStore:
    """The accounts table. A short pool timeout: a login must not wait long for a database that
    is moving; the key cache answers instead."""

    def __init__(self, pool: ConnectionPool, *, timeout_s: float = 2.0) -> None:
        self._pool = pool
        self._timeout_s = timeout_s

    async def find(self, key_prefix: str) -> StoredAccount | None:
        with translated():
            async with self._pool.connection(timeout=self._timeout_s) as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    "SELECT id, kind, name, status, key_hash FROM accounts WHERE key_prefix = %s",
                    (key_prefix,),
                )
                row = await cur.fetchone()
        if row is None:
            return None
        return StoredAccount(
            Account(row["id"], row["kind"], row["name"], row["status"]), row["key_hash"]
        )

    async def all_accounts(self) -> list[CachedAccount]:
        with translated():
            async with self._pool.connection(timeout=self._timeout_s) as conn:
                cur = await conn.execute(
                    "SELECT key_prefix, key_hash, kind, id, name, status FROM accounts"
                )
                rows = await cur.fetchall()
        return [
            CachedAccount(
                key_id=r[0],
                key_sha256=r[1],
                role=r[2],
                account_id=str(r[3]),
                name=r[4],
                status=r[5],
            )
            for r in rows
        ]


async def probe_write(pool: ConnectionPool, *, timeout_s: float = 2.0) -> None:
    """Prove the database accepts writes (taking a transaction id needs a writable primary);
    DatabaseUnavailable when it does not."""
    try:
        async with pool.connection(timeout=timeout_s) as conn:
            await conn.execute("SELECT txid_current()")
            await conn.rollback()
    except (PoolTimeout, psycopg.Error) as exc:
        raise DatabaseUnavailable(f"write probe failed: {exc}") from exc


async def pending_migrations(pool: ConnectionPool) -> list[str]:
    """Migrations of this code the database lacks (node/migrate.py); empty when up to date."""
    try:
        async with pool.connection() as conn:
            names = await migrate.pending(conn)
            await conn.rollback()
            return names
    except (PoolTimeout, psycopg.Error) as exc:
        raise DatabaseUnavailable(f"reading the migration ledger failed: {exc}") from exc
