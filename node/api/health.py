"""Health probes over HTTP: `GET /health/live`, `GET /health/ready` and `GET /health`
(application/health+json). The rules and the document are `monitoring.health` (pure); this
module gathers the node's inputs for them."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from monitoring.health import HEALTH_JSON, HealthInputs, code_version, health_document, is_live
from node import appkeys

# What this process runs, fixed when it starts (`rocars upgrade` checks it after a restart).
VERSION = code_version()


def role_loop_age(app: web.Application) -> float | None:
    """Seconds since the role watcher last finished a cycle; None before its first."""
    watcher = app[appkeys.ROLE]
    if watcher.last_cycle_at is None:
        return None
    return time.monotonic() - watcher.last_cycle_at


def _live(app: web.Application) -> bool:
    uptime = time.monotonic() - app[appkeys.STARTED_AT]
    return is_live(role_loop_age(app), uptime, app[appkeys.CONFIG].liveness_stale_s)


async def live(request: web.Request) -> web.Response:
    ok = _live(request.app)
    return web.json_response(
        {"status": "pass" if ok else "fail", "role_loop_age_s": role_loop_age(request.app)},
        status=200 if ok else 503,
        content_type=HEALTH_JSON,
    )


async def ready(request: web.Request) -> web.Response:
    watcher = request.app[appkeys.ROLE]
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
    view = app[appkeys.REDIS].view()
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
    if appkeys.CONTINGENCY not in app:
        return {"mode": "unknown"}
    rt = app[appkeys.CONTINGENCY]
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


def inputs(app: web.Application) -> HealthInputs:
    cfg = app[appkeys.CONFIG]
    watcher = app[appkeys.ROLE]
    controller = app.get(appkeys.CONTROLLER)
    if controller is None:
        action, reason = "none", "the failover controller does not run on this node"
    else:
        action, reason = controller.decision.action, controller.decision.reason
    return HealthInputs(
        site=cfg.site,
        patroni_member=cfg.patroni_member,
        decision=watcher.decision,
        facts=watcher.facts,
        loop_age_s=role_loop_age(app),
        live=_live(app),
        contingency=contingency_section(app),
        redis=redis_section(app),
        controller_action=action,
        controller_reason=reason,
        now_iso=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        version=VERSION,
    )


async def health(request: web.Request) -> web.Response:
    doc = health_document(inputs(request.app))
    return web.json_response(
        doc, status=200 if doc["status"] != "fail" else 503, content_type=HEALTH_JSON
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/health", health)
