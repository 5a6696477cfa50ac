"""The health document (application/health+json), built from plain values: the liveness rule
and the `/health` body. The HTTP handlers that gather the inputs are `node.api.health`.

- Liveness: the role loop keeps completing (a wedged event loop or a loop stuck on a hung call
  fails it), whatever the role; a node still in its first cycle is alive while it started
  recently.
- Readiness: only the active node, the one HAProxy should send traffic to, and only while live.
- Redis is reported in its own section; a Redis failure turns the status to "warn", never
  "fail", and never touches readiness: Redis is a cache, so it degrades the node, never blocks it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from failover.role_rule import RoleDecision, RoleFacts

HEALTH_JSON = "application/health+json"
# Set by an operator (or the upgrade drill) to make a restarted node report a version of its
# own: the proof that the process runs the code installed after it was started (#17 item 4).
VERSION_OVERRIDE_ENV = "ROCARS_VERSION_OVERRIDE"


def code_version() -> str:
    """The version of the code this process runs: $ROCARS_VERSION_OVERRIDE, else the installed
    `rocars` package's. Read it once when the process starts (a later install must not change
    what a running node says it runs)."""
    override = os.environ.get(VERSION_OVERRIDE_ENV, "").strip()
    if override:
        return override
    try:
        return metadata.version("rocars")
    except metadata.PackageNotFoundError:
        return "unknown"


def is_live(loop_age_s: float | None, uptime_s: float, stale_s: float) -> bool:
    if loop_age_s is None:  # still in the first cycle: alive if we started recently
        return uptime_s < stale_s
    return loop_age_s < stale_s


@dataclass(frozen=True)
class HealthInputs:
    """What the node knows about itself at one moment."""

    site: str
    patroni_member: str
    decision: RoleDecision
    facts: RoleFacts | None
    loop_age_s: float | None
    live: bool
    contingency: dict[str, Any]
    redis: dict[str, Any]
    controller_action: str
    controller_reason: str
    now_iso: str
    version: str = "unknown"  # code_version() when the node started

    @property
    def ready(self) -> bool:
        return self.decision.role == "active" and self.live


def health_document(h: HealthInputs) -> dict[str, Any]:
    facts, redis = h.facts, h.redis
    status = "pass" if h.live else "fail"
    if h.live and facts is not None and (not facts.leader_known or facts.local_role is None):
        status = "warn"
    if h.live and redis["ok"] is False:
        status = "warn"
    return {
        "status": status,
        "serviceId": f"rocars-node-{h.site}",
        "description": "rocars e-ACI API node",
        "version": h.version,
        "site": h.site,
        "role": h.decision.role,
        "ready": h.ready,
        "write_available": h.ready,
        "reason": h.decision.reason,
        "leader": facts.leader_key if facts else None,
        "paused": facts.paused if facts else False,
        "contingency": h.contingency,
        "redis": redis,
        "failover_controller": {"action": h.controller_action, "reason": h.controller_reason},
        "checks": {
            "role:loop": [
                {
                    "componentType": "system",
                    "observedValue": h.loop_age_s,
                    "observedUnit": "s",
                    "status": "pass" if h.live else "fail",
                    "time": h.now_iso,
                }
            ],
            "patroni:member": [
                {
                    "componentId": h.patroni_member,
                    "componentType": "datastore",
                    "observedValue": f"{facts.local_role}/{facts.local_state}" if facts else None,
                    "status": "pass" if facts and facts.local_role else "warn",
                    "time": h.now_iso,
                }
            ],
            "etcd:leader-key": [
                {
                    "componentType": "datastore",
                    "observedValue": facts.leader_key if facts else None,
                    "status": "pass" if facts and facts.leader_known else "warn",
                    "time": h.now_iso,
                }
            ],
            "redis:primary": [
                {
                    "componentId": redis["master_name"],
                    "componentType": "datastore",
                    "observedValue": redis["primary"],
                    "status": "pass" if redis["ok"] else "warn",
                    "time": h.now_iso,
                    **({"output": redis["last_error"]} if redis["ok"] is False else {}),
                }
            ],
        },
    }
