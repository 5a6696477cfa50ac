"""Tests for failover.decision: every combination of the facts it reads, then worked examples."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from functools import cache

import pytest
from hypothesis import given
from hypothesis import strategies as st

from failover.decision import (
    ControllerConfig,
    Decision,
    MemberFacts,
    MemberState,
    NodeHealth,
    Observation,
    Role,
    SiteView,
    decide,
    standby_blocker,
)

CFG = ControllerConfig()  # grace 5 s, min interval 300 s, max lag 0
NOW = 10_000.0
TL = 4  # the leader's timeline in the enumeration

LEADER_MEMBERS = (
    None,
    MemberFacts("primary", "running", timeline=TL),
    MemberFacts("primary", "running", timeline=None),
    MemberFacts("primary", "stopped", timeline=TL),
    MemberFacts("replica", "streaming", is_sync_standby=True, lag_bytes=0, timeline=TL),
)
ACTIVE_NODES = (
    NodeHealth(True),
    NodeHealth(False, NOW - 2.0),  # inside grace
    NodeHealth(False, NOW - 5.0),  # exactly grace: not yet "past" it
    NodeHealth(False, NOW - 6.0),  # past grace
    NodeHealth(False, NOW + 1.0),  # streak start in the future (clock skew)
)
ROLES: tuple[Role | None, ...] = (None, "primary", "replica")
STATES: tuple[MemberState, ...] = ("running", "streaming", "stopped")
OTHER_NODES = (NodeHealth(True), NodeHealth(False, NOW - 100.0))
OTHER_MEMBERS = (
    None,
    *(
        MemberFacts(role, state, sync, lag, tl)
        for role, state, sync, lag, tl in itertools.product(
            ROLES,
            STATES,
            (False, True),
            (None, 0, 1),
            (None, TL - 1, TL),
        )
    ),
)
LAST_SWITCHOVERS = (None, NOW - 10.0, NOW - 300.0, NOW - 301.0, NOW + 50.0)


ELIGIBLE = MemberFacts("replica", "streaming", is_sync_standby=True, lag_bytes=0, timeline=TL)


def _obs(
    *,
    leader_site: str | None = "A",
    paused: bool = False,
    leader_member: MemberFacts | None = LEADER_MEMBERS[1],
    active_node: NodeHealth = ACTIVE_NODES[3],
    other_node: NodeHealth = OTHER_NODES[0],
    other_member: MemberFacts | None = ELIGIBLE,
    last: float | None = None,
    now: float = NOW,
) -> Observation:
    """Build an observation where ``leader_site`` (or A when there is none) is the active site."""
    active_name = leader_site or "A"
    other_name = "B" if active_name == "A" else "A"
    active = SiteView(active_name, active_node, leader_member)
    other = SiteView(other_name, other_node, other_member)
    sites = (active, other) if active_name == "A" else (other, active)
    return Observation(now, leader_site, paused, sites, last)


def _combinations() -> Iterator[Observation]:
    # Site B's mirror cases come from test_decision_is_symmetric_in_site_names, so the product
    # puts the leader on A (or nowhere); the site views are built once and shared, which keeps
    # a quarter of a million situations to a few seconds.
    actives = [
        SiteView("A", node, member)
        for member, node in itertools.product(LEADER_MEMBERS, ACTIVE_NODES)
    ]
    others = [
        SiteView("B", node, member)
        for node, member in itertools.product(OTHER_NODES, OTHER_MEMBERS)
    ]
    for leader_site, paused, active, other, last in itertools.product(
        ("A", None), (False, True), actives, others, LAST_SWITCHOVERS
    ):
        yield Observation(NOW, leader_site, paused, (active, other), last)


def _mirror(obs: Observation) -> Observation:
    """The same observation with the site names A and B swapped."""
    swap = {"A": "B", "B": "A"}
    a, b = (SiteView(swap[s.name], s.node, s.member) for s in obs.sites)
    leader = None if obs.leader_site is None else swap[obs.leader_site]
    return Observation(obs.now, leader, obs.paused, (b, a), obs.last_switchover_at)


@cache
def cases() -> tuple[tuple[Observation, Decision], ...]:
    """Every enumerated observation with its decision, computed once for all invariants."""
    return tuple((obs, decide(obs, CFG)) for obs in _combinations())


def _leader_fine(obs: Observation) -> bool:
    if obs.leader_site is None:
        return False
    member = obs.site(obs.leader_site).member
    return member is not None and member.role == "primary" and member.state == "running"


def _down_for(obs: Observation) -> float | None:
    assert obs.leader_site is not None
    since = obs.site(obs.leader_site).node.unhealthy_since
    return None if since is None else obs.now - since


def _target_eligible(obs: Observation, target: str, cfg: ControllerConfig = CFG) -> bool:
    assert obs.leader_site is not None
    leader, view = obs.site(obs.leader_site).member, obs.site(target)
    m = view.member
    return (
        view.node.healthy
        and leader is not None
        and m is not None
        and m.role == "replica"
        and m.state == "streaming"
        and m.is_sync_standby
        and m.timeline is not None
        and m.timeline == leader.timeline
        and m.lag_bytes is not None
        and m.lag_bytes <= cfg.max_lag_bytes
    )


def test_enumeration_is_large_and_reaches_every_action() -> None:
    """The enumeration covers tens of thousands of situations and all three actions."""
    actions = {d.action for _, d in cases()}
    assert len(cases()) > 50_000
    assert actions == {"none", "wait", "switchover"}


def test_switchover_only_to_a_healthy_running_sync_standby() -> None:
    """A switchover targets the other site, whose node is healthy and whose member is eligible."""
    for obs, d in cases():
        if d.action == "switchover":
            assert d.target_site is not None, d.reason
            assert d.target_site != obs.leader_site, d.reason
            assert _target_eligible(obs, d.target_site), d.reason


def test_never_within_min_interval() -> None:
    """No switchover is asked for less than min_interval_s after the last one."""
    for obs, d in cases():
        if d.action == "switchover" and obs.last_switchover_at is not None:
            assert obs.now - obs.last_switchover_at >= CFG.min_interval_s, d.reason


def test_never_while_paused() -> None:
    """A paused cluster (maintenance mode) always gets action none."""
    for obs, d in cases():
        if obs.paused:
            assert d.action == "none", d.reason


def test_never_when_leader_unknown_or_not_running_primary() -> None:
    """Database trouble is Patroni's: an unknown or unhealthy leader always gets action none."""
    for obs, d in cases():
        if not _leader_fine(obs):
            assert d.action == "none", d.reason


def test_never_when_active_node_healthy() -> None:
    """A healthy active node always gets action none."""
    for obs, d in cases():
        if obs.leader_site is not None and obs.site(obs.leader_site).node.healthy:
            assert d.action == "none", d.reason


def test_never_before_grace() -> None:
    """No switchover until the active node has been unhealthy for strictly more than grace."""
    for obs, d in cases():
        if d.action == "switchover":
            down_for = _down_for(obs)
            assert down_for is not None, d.reason
            assert down_for > CFG.grace_period_s, d.reason


def test_never_when_other_node_unhealthy() -> None:
    """Moving to a site whose node is unhealthy too would not help, so it never happens."""
    for obs, d in cases():
        if d.action == "switchover":
            assert obs.site(d.target_site or "").node.healthy, d.reason


def test_switches_whenever_every_condition_holds() -> None:
    """The controller is not vacuously safe: with every condition met it does switch over."""
    switched = 0
    for obs, d in cases():
        if obs.paused or not _leader_fine(obs):
            continue
        assert obs.leader_site is not None
        down_for = _down_for(obs)
        if down_for is None or down_for <= CFG.grace_period_s:
            continue
        other = obs.other(obs.leader_site).name
        last = obs.last_switchover_at
        if _target_eligible(obs, other) and (last is None or obs.now - last >= 300.0):
            assert (d.action, d.target_site) == ("switchover", other), d.reason
            switched += 1
    assert switched > 0


def test_wait_means_active_node_down_and_ours_but_not_now() -> None:
    """Action wait happens exactly when the active node is down, it is ours, and we do not move."""
    for obs, d in cases():
        ours = not obs.paused and _leader_fine(obs) and _down_for(obs) is not None
        assert (d.action == "wait") == (ours and d.action != "switchover"), d.reason


def test_target_only_with_switchover() -> None:
    """target_site is set on a switchover and only on one."""
    for _, d in cases():
        assert (d.target_site is not None) == (d.action == "switchover")


def test_reason_is_always_exactly_one_sentence() -> None:
    """Every reason is one line ending with a period, with no sentence break inside it."""
    for _, d in cases():
        assert d.reason.endswith("."), d.reason
        assert "\n" not in d.reason, d.reason
        assert ". " not in d.reason, d.reason


def test_decision_is_symmetric_in_site_names() -> None:
    """Swapping the site names mirrors the decision: no site is special to the rule."""
    swap = {None: None, "A": "B", "B": "A"}
    for obs, d in cases():
        if obs.leader_site == "A":
            m = decide(_mirror(obs), CFG)
            assert (m.action, m.target_site) == (d.action, swap[d.target_site]), d.reason


# --- worked examples, with their sentences ---------------------------------------------------


def test_example_switchover_sentence() -> None:
    """Dead active node past grace plus a perfect sync standby gives the documented sentence."""
    d = decide(_obs())
    assert d == Decision(
        "switchover",
        "B",
        "node A unhealthy for 6.0s > grace 5.0s and member B is a streaming sync standby "
        "with lag 0: switch over to B.",
    )


def test_example_switchover_from_b_to_a() -> None:
    """When site B leads and its node dies, the controller moves the cluster back to A."""
    d = decide(_obs(leader_site="B"))
    assert (d.action, d.target_site) == ("switchover", "A")
    assert d.reason.endswith("switch over to A.")


def test_example_paused() -> None:
    """Maintenance mode wins over a dead active node."""
    d = decide(_obs(paused=True))
    assert d == Decision("none", None, "cluster is paused (Patroni maintenance mode): no action.")


def test_example_no_leader() -> None:
    """Without a leader the controller leaves failover to Patroni."""
    d = decide(_obs(leader_site=None))
    assert d.reason == "no Patroni leader is known: database failover is Patroni's job, no action."


def test_example_leader_member_missing() -> None:
    """A leader site with no member in Patroni's view is Patroni's problem."""
    d = decide(_obs(leader_member=None))
    assert d.action == "none"
    assert d.reason == (
        "leader site A has no member in Patroni's view: "
        "database failover is Patroni's job, no action."
    )


def test_example_leader_stopped() -> None:
    """A stopped leader is a database failure, so action none with the facts in the sentence."""
    d = decide(_obs(leader_member=MemberFacts("primary", "stopped", timeline=TL)))
    assert d.reason == (
        "leader member A is not a running primary (role primary, state stopped): "
        "database failover is Patroni's job, no action."
    )


def test_example_active_healthy() -> None:
    """A healthy active node needs nothing."""
    d = decide(_obs(active_node=NodeHealth(True)))
    assert d == Decision("none", None, "node A is active and healthy: no action.")


def test_example_within_grace() -> None:
    """Inside the grace period the controller waits and says how long the node has been down."""
    d = decide(_obs(active_node=NodeHealth(False, NOW - 2.0)))
    assert d == Decision("wait", None, "node A unhealthy for 2.0s <= grace 5.0s: wait.")


def test_example_just_past_grace_is_not_rounded_into_a_contradiction() -> None:
    """5.04 s past a 5 s grace prints as 5.04s, never as '5.0s > grace 5.0s'."""
    d = decide(_obs(active_node=NodeHealth(False, 100.0), now=105.04))
    assert d.action == "switchover"
    assert d.reason.startswith("node A unhealthy for 5.04s > grace 5.0s and")


def test_example_other_node_unhealthy() -> None:
    """Both nodes down: moving would not help."""
    d = decide(_obs(other_node=NodeHealth(False, NOW - 100.0)))
    assert d == Decision(
        "wait",
        None,
        "node A unhealthy for 6.0s > grace 5.0s but node B is unhealthy too: "
        "a switchover would not help, wait.",
    )


@pytest.mark.parametrize(
    ("member", "phrase"),
    [
        (None, "is not in Patroni's view"),
        (MemberFacts(None, "streaming", True, 0, TL), "has an unknown role"),
        (MemberFacts("primary", "running", False, 0, TL), "is not a replica (role primary)"),
        (MemberFacts("replica", "running", True, 0, TL), "is not streaming (state running)"),
        (MemberFacts("replica", "stopped", True, 0, TL), "is not streaming (state stopped)"),
        (MemberFacts("replica", "streaming", False, 0, TL), "is not the synchronous standby"),
        (
            MemberFacts("replica", "streaming", True, 0, None),
            "cannot be compared with the leader's timeline (unknown)",
        ),
        (MemberFacts("replica", "streaming", True, 0, 3), "is on timeline 3, the leader on 4"),
        (MemberFacts("replica", "streaming", True, None, TL), "has unknown lag"),
        (MemberFacts("replica", "streaming", True, 1024, TL), "lags 1024 bytes > max 0"),
    ],
)
def test_example_standby_not_eligible(member: MemberFacts | None, phrase: str) -> None:
    """Each way the other member falls short is named in the wait sentence."""
    view = SiteView("B", NodeHealth(True), member)
    obs = Observation(NOW, "A", False, (SiteView("A", ACTIVE_NODES[3], LEADER_MEMBERS[1]), view))
    d = decide(obs)
    assert d == Decision(
        "wait", None, f"node A unhealthy for 6.0s > grace 5.0s but member B {phrase}: wait."
    )


def test_example_min_interval() -> None:
    """A switchover 120 s ago blocks another one for the rest of the 300 s interval."""
    d = decide(_obs(last=NOW - 120.0))
    assert d == Decision(
        "wait",
        None,
        "node A unhealthy for 6.0s > grace 5.0s but the last switchover was 120.0s ago "
        "< minimum interval 300.0s: wait.",
    )


def test_example_min_interval_boundary_allows() -> None:
    """Exactly min_interval_s after the last switchover, another one is allowed."""
    assert decide(_obs(last=NOW - 300.0)).action == "switchover"


def test_example_lag_within_configured_max() -> None:
    """A configured max_lag_bytes lets a slightly lagging sync standby take over."""
    member = MemberFacts("replica", "streaming", True, 4096, TL)
    cfg = ControllerConfig(max_lag_bytes=4096)
    d = decide(_obs(other_member=member), cfg)
    assert d.action == "switchover"
    assert "with lag 4096: switch over to B." in d.reason


def test_default_config_is_used_when_none_given() -> None:
    """decide() without a config uses the documented defaults (grace 5 s)."""
    assert decide(_obs()) == decide(_obs(), ControllerConfig(5.0, 300.0, 0))


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"grace_period_s": 0},
        {"grace_period_s": -1.0},
        {"grace_period_s": float("nan")},
        {"grace_period_s": float("inf")},
        {"grace_period_s": True},
        {"min_interval_s": 0.0},
        {"min_interval_s": "300"},
        {"max_lag_bytes": -1},
        {"max_lag_bytes": 1.5},
        {"max_lag_bytes": False},
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object]) -> None:
    """Non-positive, non-finite, or wrongly typed settings are refused when the config is built."""
    field = next(iter(kwargs))
    with pytest.raises(ValueError, match=field):
        ControllerConfig(**kwargs)  # type: ignore[arg-type]


def test_node_health_requires_streak_start_exactly_when_unhealthy() -> None:
    """unhealthy_since is required for an unhealthy node and forbidden for a healthy one."""
    with pytest.raises(ValueError, match="required"):
        NodeHealth(False)
    with pytest.raises(ValueError, match="must be None"):
        NodeHealth(True, 1.0)
    with pytest.raises(ValueError, match="unhealthy_since"):
        NodeHealth(False, float("nan"))


@pytest.mark.parametrize("healthy", [1, 0, None, "true"])
def test_node_health_refuses_a_truthy_stand_in_for_a_bool(healthy: object) -> None:
    """A probe result that is not a real bool (1, 0, None, "true") is refused, not read by its
    truthiness: a node is never taken as healthy (or unhealthy) by accident."""
    with pytest.raises(ValueError, match="healthy must be a bool"):
        NodeHealth(healthy)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"role": "leader"},
        {"state": "crashed"},
        {"lag_bytes": -1},
        {"timeline": 0},
        {"is_sync_standby": 1},
    ],
)
def test_member_facts_reject_bad_values(kwargs: dict[str, object]) -> None:
    """Member facts outside Patroni's vocabulary are refused, naming the field."""
    base: dict[str, object] = {"role": "replica", "state": "streaming"}
    field = next(iter(kwargs))
    with pytest.raises(ValueError, match=field):
        MemberFacts(**{**base, **kwargs})  # type: ignore[arg-type]


def test_observation_rejects_bad_shapes() -> None:
    """Observation needs two distinct sites, a known leader site and finite times."""
    a = SiteView("A", NodeHealth(True), None)
    b = SiteView("B", NodeHealth(True), None)
    with pytest.raises(ValueError, match="exactly two"):
        Observation(NOW, None, False, (a,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distinct"):
        Observation(NOW, None, False, (a, a))
    with pytest.raises(ValueError, match="leader_site"):
        Observation(NOW, "C", False, (a, b))
    with pytest.raises(ValueError, match="now"):
        Observation(float("inf"), None, False, (a, b))
    with pytest.raises(ValueError, match="last_switchover_at"):
        Observation(NOW, None, False, (a, b), float("nan"))
    with pytest.raises(ValueError, match="paused"):
        Observation(NOW, None, "no", (a, b))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="site name"):
        SiteView(" ", NodeHealth(True), None)


def test_observation_site_lookup() -> None:
    """site() and other() find sites by name and refuse unknown names."""
    obs = _obs()
    assert obs.site("B").name == "B"
    assert obs.other("B").name == "A"
    with pytest.raises(KeyError):
        obs.other("C")


def test_decision_enforces_its_own_shape() -> None:
    """A Decision cannot carry a target without a switchover, or a multi-line reason."""
    with pytest.raises(ValueError, match="target_site"):
        Decision("wait", "B", "x.")
    with pytest.raises(ValueError, match="target_site"):
        Decision("switchover", None, "x.")
    with pytest.raises(ValueError, match="one sentence"):
        Decision("none", None, "one.\ntwo.")
    with pytest.raises(ValueError, match="action"):
        Decision("panic", None, "x.")  # type: ignore[arg-type]


def test_standby_blocker_empty_for_eligible_member() -> None:
    """The blocker phrase is empty exactly when the member may be promoted."""
    leader = LEADER_MEMBERS[1]
    assert leader is not None
    assert standby_blocker(MemberFacts("replica", "streaming", True, 0, TL), leader, CFG) == ""


# --- random configurations and times ---------------------------------------------------------

_times = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@given(
    grace=st.floats(min_value=0.001, max_value=600, allow_nan=False),
    interval=st.floats(min_value=0.001, max_value=86_400, allow_nan=False),
    max_lag=st.integers(min_value=0, max_value=1 << 20),
    lag=st.none() | st.integers(min_value=0, max_value=1 << 21),
    now=_times,
    since=st.none() | _times,
    last=st.none() | _times,
    paused=st.booleans(),
    other_healthy=st.booleans(),
    sync=st.booleans(),
)
def test_invariants_hold_for_random_configs_and_times(
    grace: float,
    interval: float,
    max_lag: int,
    lag: int | None,
    now: float,
    since: float | None,
    last: float | None,
    paused: bool,
    other_healthy: bool,
    sync: bool,
) -> None:
    """For any config and times, a switchover respects grace, interval, lag and pause."""
    cfg = ControllerConfig(grace, interval, max_lag)
    obs = _obs(
        paused=paused,
        active_node=NodeHealth(since is None, since),
        other_node=NodeHealth(other_healthy, None if other_healthy else now),
        other_member=MemberFacts("replica", "streaming", sync, lag, TL),
        last=last,
        now=now,
    )
    d = decide(obs, cfg)
    if d.action == "switchover":
        assert not paused
        assert since is not None
        assert other_healthy
        assert sync
        assert now - since > grace
        assert last is None or now - last >= interval
        assert lag is not None
        assert lag <= max_lag
    assert "\n" not in d.reason
    assert d.reason.endswith(".")
