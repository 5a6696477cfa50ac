"""monitoring.health: the liveness rule and the application/health+json document, from plain
values (the handlers that gather them are node.api.health)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from failover.role_rule import RoleDecision, RoleFacts
from monitoring.health import HealthInputs, health_document, is_live

NOW = "2025-03-01T02:00:00Z"
ACTIVE = RoleDecision("active", "pg-A is the running primary and holds the leader key")
STANDBY = RoleDecision("standby", "the leader key is held by pg-B, not pg-A")
PRIMARY = RoleFacts("pg-A", "primary", "running", "pg-A", True)


def redis(ok: bool | None = True, last_error: str | None = None) -> dict[str, Any]:
    return {
        "master_name": "rocars",
        "primary": "127.0.0.1:6379" if ok else None,
        "ok": ok,
        "last_error": last_error,
    }


def inputs(**kw: Any) -> HealthInputs:
    args: dict[str, Any] = {
        "site": "A",
        "patroni_member": "pg-A",
        "decision": ACTIVE,
        "facts": PRIMARY,
        "loop_age_s": 0.3,
        "live": True,
        "contingency": {"mode": "normal"},
        "redis": redis(),
        "controller_action": "none",
        "controller_reason": "the active site is healthy.",
        "now_iso": NOW,
    }
    args.update(kw)
    return HealthInputs(**args)


def check(doc: dict[str, Any], name: str) -> dict[str, Any]:
    (entry,) = doc["checks"][name]
    return entry  # type: ignore[no-any-return]


# --- liveness -----------------------------------------------------------------------------


def test_a_node_in_its_first_cycle_is_alive_only_while_recently_started() -> None:
    """Before the role loop has completed once there is no loop age: the node counts as alive
    for `stale_s` after start, then as wedged (a loop hung on its first call fails liveness)."""
    assert is_live(None, uptime_s=2.9, stale_s=3.0)
    assert not is_live(None, uptime_s=3.0, stale_s=3.0)


def test_a_running_node_is_alive_while_its_role_loop_is_fresh() -> None:
    """Once the loop has run, only the age of its last cycle counts (not the uptime)."""
    assert is_live(2.9, uptime_s=10_000.0, stale_s=3.0)
    assert not is_live(3.0, uptime_s=0.0, stale_s=3.0)


# --- readiness ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decision", "live", "ready"),
    [(ACTIVE, True, True), (ACTIVE, False, False), (STANDBY, True, False), (STANDBY, False, False)],
)
def test_ready_and_write_available_only_on_a_live_active_node(
    decision: RoleDecision, live: bool, ready: bool
) -> None:
    """HAProxy sends traffic only to the active node, and only while its role loop is live;
    the document's `ready` and `write_available` say the same."""
    h = inputs(decision=decision, live=live)
    doc = health_document(h)
    assert h.ready is ready
    assert (doc["ready"], doc["write_available"]) == (ready, ready)
    assert (doc["role"], doc["reason"]) == (decision.role, decision.reason)


# --- overall status -----------------------------------------------------------------------


def test_a_healthy_active_node_passes_every_check() -> None:
    """Live, Patroni answering, leader key known, Redis up: status and every check pass."""
    doc = health_document(inputs())
    assert doc["status"] == "pass"
    assert {name: check(doc, name)["status"] for name in doc["checks"]} == {
        "role:loop": "pass",
        "patroni:member": "pass",
        "etcd:leader-key": "pass",
        "redis:primary": "pass",
    }


def test_a_wedged_node_fails_whatever_else_is_wrong() -> None:
    """Not live is "fail" (a 503 from /health), and it outranks every warning."""
    doc = health_document(
        inputs(live=False, facts=replace(PRIMARY, leader_known=False), redis=redis(False, "x"))
    )
    assert doc["status"] == "fail"
    assert check(doc, "role:loop")["status"] == "fail"


@pytest.mark.parametrize(
    ("facts", "failing_check"),
    [
        (replace(PRIMARY, leader_key=None, leader_known=False), "etcd:leader-key"),
        (RoleFacts("pg-A", None, None, "pg-A", True), "patroni:member"),
    ],
    ids=["etcd-no-quorum", "patroni-silent"],
)
def test_an_unknown_leader_or_silent_patroni_warns(facts: RoleFacts, failing_check: str) -> None:
    """A live node that cannot see the leader key or its own Patroni member is degraded
    ("warn"), not failed: it stays up so it can take over once the facts return."""
    doc = health_document(inputs(decision=STANDBY, facts=facts))
    assert doc["status"] == "warn"
    assert check(doc, failing_check)["status"] == "warn"


def test_a_redis_failure_warns_and_never_touches_readiness() -> None:
    """Redis is a cache: when it fails the status is "warn" and the node stays ready; the
    Redis check carries the last error as its output."""
    doc = health_document(inputs(redis=redis(False, "connection refused")))
    assert doc["status"] == "warn"
    assert doc["ready"] is True
    entry = check(doc, "redis:primary")
    assert (entry["status"], entry["output"]) == ("warn", "connection refused")


def test_redis_not_yet_probed_does_not_change_the_status() -> None:
    """Before the first Redis probe (`ok` None) nothing is known to be wrong: the status
    stays "pass" and the Redis check has no error output."""
    doc = health_document(inputs(redis=redis(None)))
    assert doc["status"] == "pass"
    assert "output" not in check(doc, "redis:primary")


def test_a_node_in_its_first_cycle_reports_what_it_does_not_know() -> None:
    """With no role facts yet the document still answers: no leader, not paused, Patroni and
    etcd checks warn with no observed value, and the node is neither failed nor ready."""
    doc = health_document(
        inputs(decision=RoleDecision("standby", "starting"), facts=None, loop_age_s=None)
    )
    assert doc["status"] != "fail"
    assert (doc["ready"], doc["leader"], doc["paused"]) == (False, None, False)
    for name in ("patroni:member", "etcd:leader-key"):
        assert (check(doc, name)["status"], check(doc, name)["observedValue"]) == ("warn", None)
    assert check(doc, "role:loop")["observedValue"] is None


# --- document content ---------------------------------------------------------------------


def test_the_document_reports_the_inputs_it_was_given() -> None:
    """Identity, leader, pause, contingency, Redis and controller sections are passed through;
    each check is stamped with the time it was taken and its observed value."""
    contingency = {"mode": "manual", "scope": "all"}
    facts = replace(PRIMARY, paused=True)
    doc = health_document(
        inputs(facts=facts, contingency=contingency, controller_action="switchover")
    )
    assert doc["serviceId"] == "rocars-node-A"
    assert doc["site"] == "A"
    assert (doc["leader"], doc["paused"]) == ("pg-A", True)
    assert doc["contingency"] == contingency
    assert doc["redis"] == redis()
    assert doc["failover_controller"] == {
        "action": "switchover",
        "reason": "the active site is healthy.",
    }
    assert check(doc, "role:loop")["observedValue"] == 0.3
    assert check(doc, "patroni:member")["componentId"] == "pg-A"
    assert check(doc, "patroni:member")["observedValue"] == "primary/running"
    assert check(doc, "etcd:leader-key")["observedValue"] == "pg-A"
    assert check(doc, "redis:primary")["componentId"] == "rocars"
    assert check(doc, "redis:primary")["observedValue"] == "127.0.0.1:6379"
    assert {check(doc, name)["time"] for name in doc["checks"]} == {NOW}


@given(
    live=st.booleans(),
    active=st.booleans(),
    facts=st.none()
    | st.builds(
        RoleFacts,
        st.just("pg-A"),
        st.sampled_from([None, "primary", "replica"]),
        st.sampled_from([None, "running", "streaming"]),
        st.sampled_from([None, "pg-A", "pg-B"]),
        st.booleans(),
        st.booleans(),
    ),
    redis_ok=st.sampled_from([True, False, None]),
)
def test_status_is_fail_exactly_when_not_live(
    live: bool, active: bool, facts: RoleFacts | None, redis_ok: bool | None
) -> None:
    """Over any inputs: "fail" iff the node is not live (only that makes /health answer 503),
    a ready node is never failed, and the status is one of pass/warn/fail."""
    doc = health_document(
        inputs(
            live=live, decision=ACTIVE if active else STANDBY, facts=facts, redis=redis(redis_ok)
        )
    )
    assert doc["status"] in ("pass", "warn", "fail")
    assert (doc["status"] == "fail") is (not live)
    assert doc["ready"] is (live and active)
