"""What each closed-loop run wrote to the WAL (#11): bytes and full-page images per request,
read from the leader's `pg_stat_wal` before and after the run.

Why the bench shows it: a CCRN is random, so a submission inserts into three indexes at random
places, and the first change to a page after a checkpoint's start writes the whole page into
the WAL. A run that begins just after a checkpoint writes about 2 page images and 14 KB per
submission, one far from it 0.01 and 3.4 KB (1.3 million consignments, deploy.topology's
PostgresTuning), and runs slower for it. Whichever of the API's and pgbench's rounds lands
there looks worse, so the ratio of target 1 moves with it: these figures say which did.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median
from typing import Any

import psycopg

KiB = 1024
_READ = (
    "SELECT wal_bytes, wal_fpi,"
    " (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter)"
    " FROM pg_stat_wal"
)


@dataclass(frozen=True)
class WalCounters:
    """The leader's cumulative WAL statistics at one moment."""

    bytes: int
    page_images: int
    # Checkpoints PostgreSQL's statistics count (they are reported as a checkpoint ends).
    checkpoints: int


async def read(conn: psycopg.AsyncConnection[Any]) -> WalCounters:
    """The counters now, on the leader `conn` is connected to (any role may read them)."""
    row = await (await conn.execute(_READ)).fetchone()
    if row is None:
        raise RuntimeError("pg_stat_wal returned no row")
    return WalCounters(int(row[0]), int(row[1]), int(row[2]))


@dataclass(frozen=True)
class WalUse:
    """What one run wrote, per request it answered."""

    kib_per_request: float
    page_images_per_request: float
    checkpoints: int

    @staticmethod
    def between(before: WalCounters, after: WalCounters, requests: int) -> WalUse:
        n = max(1, requests)
        return WalUse(
            (after.bytes - before.bytes) / KiB / n,
            (after.page_images - before.page_images) / n,
            after.checkpoints - before.checkpoints,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kib_per_request": round(self.kib_per_request, 2),
            "page_images_per_request": round(self.page_images_per_request, 3),
            "checkpoints": self.checkpoints,
        }


def summary(runs: list[WalUse]) -> dict[str, Any]:
    """Medians over runs, the most page images in one run, and each run's figures."""
    if not runs:
        return {}
    return {
        "kib_per_request": round(median(r.kib_per_request for r in runs), 2),
        "page_images_per_request": round(median(r.page_images_per_request for r in runs), 3),
        "page_images_per_request_max": round(max(r.page_images_per_request for r in runs), 3),
        "runs": [r.to_dict() for r in runs],
    }
