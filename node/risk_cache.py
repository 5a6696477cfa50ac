"""The active risk rules kept in the node's memory, with the version they were read at.

Serves `kernel.domain.risk` (assessment at submission). Why a cache is safe: the database keeps
a version number that a trigger bumps in the same transaction as any change to `risk_rules`
(migration 0005), and a submission's insert statement only inserts when the version it reads
is the one the node assessed with (`VERSION_MATCHES`). A rule committed before that statement's
snapshot (so any rule whose 201 was sent before the submission arrived) is therefore always
applied: a stale cache makes the insert do nothing, the node reloads and assesses again. The
same holds on the other node after a failover, which may hold rules from long ago.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import psycopg

from kernel.domain import risk

Conn = psycopg.AsyncConnection[Any]

# A SQL condition true when the rules' version is still %(rules_version)s.
VERSION_MATCHES = "(SELECT version FROM risk_rules_version) = %(rules_version)s"


@dataclass(frozen=True)
class RuleSet:
    version: int
    rules: tuple[risk.Rule, ...]


class RulesCache:
    """The last rule set read; `current` None until the first read."""

    def __init__(self) -> None:
        self.current: RuleSet | None = None

    async def load(self, conn: Conn) -> RuleSet:
        """Read the active rules and their version in one statement (one snapshot), keep them
        and return them. Two loads racing may keep the older: the next check reloads."""
        cur = await conn.execute(
            "SELECT v.version, r.id, r.kind, r.value, r.active, r.lbcp"
            " FROM risk_rules_version v LEFT JOIN risk_rules r ON r.active ORDER BY r.id"
        )
        rows = await cur.fetchall()
        rules = tuple(
            risk.Rule(id=str(r[1]), kind=r[2], value=r[3], active=r[4], lbcp=r[5])
            for r in rows
            if r[1] is not None
        )
        self.current = RuleSet(int(rows[0][0]), rules)
        return self.current

    async def rules(self, conn: Conn) -> RuleSet:
        """The kept rule set, read first if there is none yet."""
        return self.current if self.current is not None else await self.load(conn)


# One cache per pool (i.e. per database a node talks to), dropped with the pool.
_CACHES: weakref.WeakKeyDictionary[object, RulesCache] = weakref.WeakKeyDictionary()


def rules_cache(pool: object) -> RulesCache:
    cache = _CACHES.get(pool)
    if cache is None:
        cache = _CACHES[pool] = RulesCache()
    return cache
