"""Health probes: liveness checks the role loop's freshness, readiness the role (like Patroni).

- `GET /health/live`: 200 while the role loop keeps completing (a wedged event loop or a loop
  stuck on a hung call fails it), whatever the role.
- `GET /health/ready`: 200 only on the active node, the one HAProxy should send traffic to.
- `GET /health`: everything that matters, as application/health+json. Redis is reported in its
  own `redis` section (the primary this node uses, whether its last operation worked); a Redis
  failure turns the status to "warn", never "fail", and never touches readiness: Redis is a
  cache, so it degrades the node, never blocks it.
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


def redis_section(app: web.Application) -> dict[str, Any]:
    view = app[keys.REDIS].view()
    return {
        "master_name": view.master_name,
        "primary": view.primary,
        "status": "pass" if view.ok else ("warn" if view.ok is False else "unknown"),
        "ok": view.ok,
        "errors_total": view.errors_total,
        "last_error": view.last_error,
        "last_error_age_s": view.last_error_age_s,
        "last_ok_age_s": view.last_ok_age_s,
    }


def contingency_section(app: web.Application) -> dict[str, Any]:
    """Manual clearance as this node applies it: etcd's state, or a local override."""
    if keys.CONTINGENCY not in app:
        return {"mode": "unknown"}
    rt = app[keys.CONTINGENCY]
    since = rt.since()
    scope = rt.state.scope
    rec = rt.recommendation()
    return {
        "mode": "manual" if rt.any_manual else "normal",
        "scope": "all" if scope is None else sorted(scope),
        "since": since.isoformat() if since else None,
        "local_override": rt.override is not None,
        "state_readable": rt.etcd_ok,
        "manual_recommended": rec.recommended,
        "recommendation": rec.reason,
    }


def health_document(app: web.Application) -> dict[str, Any]:
    cfg = app[keys.CONFIG]
    watcher = app[keys.ROLE]
    facts = watcher.facts
    live_ok = _live(app)
    is_ready = watcher.role == "active" and live_ok
    now_iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    redis = redis_section(app)
    status = "pass" if live_ok else "fail"
    if live_ok and facts is not None and (not facts.leader_known or facts.local_role is None):
        status = "warn"
    if live_ok and redis["ok"] is False:
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
        "contingency": contingency_section(app),
        "redis": redis,
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
            "redis:primary": [
                {
                    "componentId": redis["master_name"],
                    "componentType": "datastore",
                    "observedValue": redis["primary"],
                    "status": "pass" if redis["ok"] else "warn",
                    "time": now_iso,
                    **({"output": redis["last_error"]} if redis["ok"] is False else {}),
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
