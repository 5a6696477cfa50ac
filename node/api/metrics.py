"""`GET /metrics` (Prometheus text format): the gauges are brought up to date from the node's
state at scrape time; counters and the latency histogram move as things happen; the pool's
statistics are read by their collector (monitoring.pool_stats) as the text is made; what needs
I/O to learn is sampled by node.background.Observer."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from contingency.journal import Journal, JournalCounts
from node import appkeys
from node.api.health import role_loop_age


def _file_bytes(path: Path) -> int:
    """Size of an SQLite file with its write-ahead log (absent parts count 0)."""
    total = 0
    for part in (path, path.with_name(path.name + "-wal")):
        with contextlib.suppress(OSError):
            total += part.stat().st_size
    return total


def _journal_facts(journal: Journal) -> tuple[JournalCounts, int]:
    return journal.counts(), _file_bytes(journal.path)


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    m = app[appkeys.METRICS]
    loop_age = role_loop_age(app)
    if loop_age is not None:
        m.role_cycle_age.set(loop_age)
    facts = app[appkeys.ROLE].facts
    m.leader_known.set(1 if facts and facts.leader_known else 0)
    m.etcd_up.set(1 if facts and facts.leader_known else 0)
    m.note_leader(
        known=facts is not None and facts.leader_known,
        holder=facts.leader_key if facts is not None else None,
    )
    rt = app[appkeys.CONTINGENCY]
    m.manual_mode.set(1 if rt.any_manual else 0)
    m.manual_recommended.set(1 if rt.recommendation().recommended else 0)
    m.since_last_write.set(max(0.0, time.time() - rt.last_write_ok_at))
    redis = app[appkeys.REDIS].view()
    m.set_redis(up=bool(redis.ok), primary=redis.primary)
    counts, size = await asyncio.to_thread(_journal_facts, app[appkeys.JOURNAL])
    m.journal_pending.set(counts.clearances_pending)
    m.journal_set_aside.set(counts.set_aside)
    m.journal_bytes.set(size)
    m.pool.watch(getattr(app[appkeys.POOL], "get_stats", None))
    return web.Response(
        body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
