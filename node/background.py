"""The node's background loops over its database: key cache refresh, write probe, migrations,
expiry of idempotency records.

Each loop is one step (`*_once`, testable with fakes) repeated forever; a failed step is logged
and retried, never fatal. The SQL they run is in `node.stores`, except the idempotency records',
which stays with the rest of their SQL in `node.writes`.
"""

from __future__ import annotations

import asyncio
import logging

from contingency.keycache import KeyCache
from contingency.runtime import ContingencyRuntime
from kernel.errors import DatabaseUnavailable
from node.deps import RoleView
from node.stores import AccountStore, ConnectionPool, apply_migrations, probe_write
from node.writes import IDEMPOTENCY_TABLES, delete_expired_idempotency

log = logging.getLogger("rocars.node")
WRITE_PROBE_INTERVAL_S = 2.0
MIGRATE_INTERVAL_S = 1.0
EXPIRY_INTERVAL_S = 60.0
# Small batches, each its own transaction: short row locks, little WAL per synchronous commit.
EXPIRY_BATCH = 500


async def refresh_keycache_once(accounts: AccountStore, keycache: KeyCache) -> int:
    """Copy every account's key hash to the node's key cache file, so officers can still be
    verified (and switch manual mode on) when both database members are down."""
    entries = await accounts.all_accounts()
    await asyncio.to_thread(keycache.refresh, entries)
    return len(entries)


async def keycache_loop(accounts: AccountStore, keycache: KeyCache, *, every_s: float) -> None:
    while True:
        try:
            await refresh_keycache_once(accounts, keycache)
        except Exception as exc:  # database down or moving: keep the last good cache
            log.debug("key cache refresh skipped: %s", exc)
            await asyncio.sleep(min(every_s, 2.0))
            continue
        await asyncio.sleep(every_s)


async def write_probe_once(
    pool: ConnectionPool, role: RoleView, contingency: ContingencyRuntime
) -> bool:
    """On the active node, prove that the database accepts writes and record it: the heartbeat
    in etcd is what "no node could write for 60 s" is judged by. True when it did."""
    if role.role != "active":
        return False
    try:
        await probe_write(pool)
    except DatabaseUnavailable as exc:
        log.debug("%s", exc)
        return False
    await contingency.note_write_ok()
    return True


async def write_probe_loop(
    pool: ConnectionPool, role: RoleView, contingency: ContingencyRuntime
) -> None:
    while True:
        await asyncio.sleep(WRITE_PROBE_INTERVAL_S)
        try:
            await write_probe_once(pool, role, contingency)
        except Exception:  # a bug in one probe must not stop the heartbeat
            log.exception("write probe failed")


async def migrate_once(pool: ConnectionPool, role: RoleView, done_on: str | None) -> str | None:
    """Apply pending migrations when this node is active and has not done so under the current
    leader (idempotent, advisory-locked). Returns the leader it is now done on."""
    if role.role != "active" or done_on == role.facts_leader:
        return done_on
    try:
        applied = await apply_migrations(pool)
    except Exception as exc:  # retried on the next tick; the database may be moving
        log.warning("migration attempt failed: %s", exc)
        return done_on
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    return role.facts_leader


async def migrate_loop(pool: ConnectionPool, role: RoleView) -> None:
    done_on: str | None = None
    while True:
        done_on = await migrate_once(pool, role, done_on)
        await asyncio.sleep(MIGRATE_INTERVAL_S)


async def expire_idempotency_once(
    pool: ConnectionPool, role: RoleView, *, batch: int = EXPIRY_BATCH
) -> int:
    """On the active node, delete every expired idempotency record, `batch` rows per
    transaction; how many were deleted."""
    if role.role != "active":
        return 0
    total = 0
    for table in IDEMPOTENCY_TABLES:
        while True:
            async with pool.connection() as conn, conn.transaction():
                deleted = await delete_expired_idempotency(conn, table, batch=batch)
            total += deleted
            if deleted < batch:
                break
    return total


async def idempotency_expiry_loop(pool: ConnectionPool, role: RoleView) -> None:
    while True:
        await asyncio.sleep(EXPIRY_INTERVAL_S)
        try:
            deleted = await expire_idempotency_once(pool, role)
        except Exception as exc:  # database down or moving: the next round catches up
            log.debug("idempotency expiry skipped: %s", exc)
            continue
        if deleted:
            log.info("deleted %d expired idempotency records", deleted)
