"""`GET /metrics` (Prometheus text format): the gauges are brought up to date from the node's
state at scrape time; counters and the latency histogram move as things happen."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from node import appkeys
from node.api.health import role_loop_age


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    m = app[appkeys.METRICS]
    loop_age = role_loop_age(app)
    if loop_age is not None:
        m.role_cycle_age.set(loop_age)
    facts = app[appkeys.ROLE].facts
    m.leader_known.set(1 if facts and facts.leader_known else 0)
    rt = app[appkeys.CONTINGENCY]
    m.manual_mode.set(1 if rt.any_manual else 0)
    m.manual_recommended.set(1 if rt.recommendation().recommended else 0)
    m.since_last_write.set(max(0.0, time.time() - rt.last_write_ok_at))
    redis = app[appkeys.REDIS].view()
    m.set_redis(up=bool(redis.ok), primary=redis.primary)
    counts = await asyncio.to_thread(app[appkeys.JOURNAL].counts)
    m.journal_pending.set(counts.clearances_pending)
    m.journal_set_aside.set(counts.set_aside)
    return web.Response(
        body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
