"""What each closed-loop run wrote to the WAL (#11): KiB per request, from the leader's WAL
position before and after the run.

Why the bench shows it: a CCRN is random, so a submission inserts into three indexes at random
places, and the first change to a page after a checkpoint's start writes the whole page into
the WAL. A run that begins just after a checkpoint writes about 14 KB per submission, one far
from it 3.4 KB (1.3 million consignments, deploy.topology's PostgresTuning), and runs slower for
it. Whichever of the API's and pgbench's rounds lands there looks worse, so the ratio of target
1 moves with it: these figures say which did.

The position, not `pg_stat_wal`: backends flush their statistics at most once a second and an
idle pooled connection up to ten seconds later, so a reading right after a run missed part of
it (a 2-second CI run read less than a KiB per submission).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median
from typing import Any

import psycopg

KiB = 1024
_READ = "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"


async def position(conn: psycopg.AsyncConnection[Any]) -> int:
    """The leader's WAL position in bytes, on the leader `conn` is connected to."""
    row = await (await conn.execute(_READ)).fetchone()
    if row is None:
        raise RuntimeError("pg_current_wal_lsn() returned no row")
    return int(row[0])


@dataclass(frozen=True)
class WalUse:
    """What one run wrote, per request it answered."""

    kib_per_request: float

    @staticmethod
    def between(before: int, after: int, requests: int) -> WalUse:
        return WalUse((after - before) / KiB / max(1, requests))

    def to_dict(self) -> dict[str, Any]:
        return {"kib_per_request": round(self.kib_per_request, 2)}


def summary(runs: list[WalUse]) -> dict[str, Any]:
    """The median over runs, the most in one run, and each run's figure."""
    if not runs:
        return {}
    return {
        "kib_per_request": round(median(r.kib_per_request for r in runs), 2),
        "kib_per_request_max": round(max(r.kib_per_request for r in runs), 2),
        "runs": [r.to_dict() for r in runs],
    }
