"""Versioned SQL migrations (`node/migrations/NNNN_name.sql`), applied in order, each once.

Applied by `rocars db migrate` and at start by the active node. An advisory lock makes two
nodes (or a node and the CLI) applying at the same moment safe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_ID = 0x524F43415253  # "ROCARS"


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


async def migrate(conn: psycopg.AsyncConnection[object]) -> list[str]:
    """Apply pending migrations; returns the names applied (empty when up to date)."""
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
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
