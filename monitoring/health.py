"""Health probes: liveness checks the role loop's freshness, readiness the role (like Patroni).

- `GET /health/live`: 200 while the role loop keeps completing (a wedged event loop or a loop
  stuck on a hung call fails it), whatever the role.
- `GET /health/ready`: 200 only on the active node, the one HAProxy should send traffic to.
- `GET /health`: everything that matters, as application/health+json.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from node import keys

HEALTH_JSON = "application/health+json"


def _loop_age(app: web.Application) -> float | None:
    watcher = app[keys.ROLE]
    if watcher.last_cycle_at is None:
        return None
    return time.monotonic() - watcher.last_cycle_at


def _live(app: web.Application) -> bool:
    age = _loop_age(app)
    if age is None:  # still in the first cycle: alive if we started recently
        return time.monotonic() - app[keys.STARTED_AT] < app[keys.CONFIG].liveness_stale_s
    return age < app[keys.CONFIG].liveness_stale_s


async def live(request: web.Request) -> web.Response:
    ok = _live(request.app)
    return web.json_response(
        {"status": "pass" if ok else "fail", "role_loop_age_s": _loop_age(request.app)},
        status=200 if ok else 503,
        content_type=HEALTH_JSON,
    )


async def ready(request: web.Request) -> web.Response:
    watcher = request.app[keys.ROLE]
    ok = watcher.role == "active" and _live(request.app)
    return web.json_response(
        {
            "status": "pass" if ok else "fail",
            "role": watcher.role,
            "reason": watcher.decision.reason,
        },
        status=200 if ok else 503,
        content_type=HEALTH_JSON,
    )


def health_document(app: web.Application) -> dict[str, Any]:
    cfg = app[keys.CONFIG]
    watcher = app[keys.ROLE]
    facts = watcher.facts
    live_ok = _live(app)
    is_ready = watcher.role == "active" and live_ok
    now_iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = "pass" if live_ok else "fail"
    if live_ok and facts is not None and (not facts.leader_known or facts.local_role is None):
        status = "warn"
    return {
        "status": status,
        "serviceId": f"rocars-node-{cfg.site}",
        "description": "rocars e-ACI API node",
        "site": cfg.site,
        "role": watcher.role,
        "ready": is_ready,
        "write_available": is_ready,
        "reason": watcher.decision.reason,
        "leader": facts.leader_key if facts else None,
        "paused": facts.paused if facts else False,
        "contingency": {"mode": "normal"},
        "failover_controller": {
            "action": app[keys.CONTROLLER].decision.action,
            "reason": app[keys.CONTROLLER].decision.reason,
        },
        "checks": {
            "role:loop": [
                {
                    "componentType": "system",
                    "observedValue": _loop_age(app),
                    "observedUnit": "s",
                    "status": "pass" if live_ok else "fail",
                    "time": now_iso,
                }
            ],
            "patroni:member": [
                {
                    "componentId": cfg.patroni_member,
                    "componentType": "datastore",
                    "observedValue": f"{facts.local_role}/{facts.local_state}" if facts else None,
                    "status": "pass" if facts and facts.local_role else "warn",
                    "time": now_iso,
                }
            ],
            "etcd:leader-key": [
                {
                    "componentType": "datastore",
                    "observedValue": facts.leader_key if facts else None,
                    "status": "pass" if facts and facts.leader_known else "warn",
                    "time": now_iso,
                }
            ],
        },
    }


async def health(request: web.Request) -> web.Response:
    doc = health_document(request.app)
    return web.json_response(
        doc, status=200 if doc["status"] != "fail" else 503, content_type=HEALTH_JSON
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/health", health)
