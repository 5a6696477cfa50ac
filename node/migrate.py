"""Versioned SQL migrations (`node/migrations/NNNN_name.sql`), applied in order, each once.

Applied as the owner role (`rocars db migrate`, and `rocars cluster up`): the application role
the nodes use may not change the schema (#12 item 4), so when a node calls `migrate` it only
learns that nothing is pending, or fails with "permission denied" naming what is. An advisory
lock makes two callers at the same moment safe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_ID = 0x524F43415253  # "ROCARS"
# The ledger; deploy.database_bootstrap creates it as the owner role too, before its grants.
LEDGER_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version integer PRIMARY KEY, name text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())"
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    out = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        m = _NAME.match(path.name)
        if m is None:
            raise ValueError(f"migration file name {path.name} is not NNNN_name.sql")
        out.append(Migration(int(m.group(1)), path.name, path.read_text()))
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {MIGRATIONS_DIR}")
    return out


async def pending(conn: psycopg.AsyncConnection[object]) -> list[str]:
    """The migrations this code has that the database has not applied (reads only: what a
    node, whose role may not change the schema, can ask)."""
    cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NULL")
    if (await cur.fetchone()) == (True,):
        return [m.name for m in available()]
    cur = await conn.execute("SELECT version FROM schema_migrations")
    done = {int(r[0]) for r in await cur.fetchall()}  # type: ignore[index]
    return [m.name for m in available() if m.version not in done]


async def migrate(conn: psycopg.AsyncConnection[object]) -> list[str]:
    """Apply pending migrations; returns the names applied (empty when up to date)."""
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        # Only when missing: even CREATE ... IF NOT EXISTS needs CREATE on the schema, which
        # the application role has not, and it only reads the ledger.
        cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NULL")
        if (await cur.fetchone()) == (True,):
            await conn.execute(LEDGER_DDL)
        cur = await conn.execute("SELECT version FROM schema_migrations")
        done = {int(r[0]) for r in await cur.fetchall()}  # type: ignore[index]
        for m in available():
            if m.version in done:
                continue
            await conn.execute(m.sql.encode())
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (m.version, m.name)
            )
            applied_now.append(m.name)
    return applied_now
