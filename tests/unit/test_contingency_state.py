"""Tests for contingency.state: the manual clearance mode state machine and its etcd document."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import contingency.state as cs
from contingency.state import (
    HISTORY_LIMIT,
    LBCP_CODES,
    NORMAL,
    Change,
    ContingencyState,
    ManualWindow,
    activate,
    auto_activate_allowed,
    deactivate,
    effective_mode,
    from_dict,
    late_flags_suppressed,
    recommendation,
    to_dict,
)
from kernel.errors import InvalidInput, InvalidTransition

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
HKT = timezone(timedelta(hours=8))


@contextmanager
def _refused(field: str, detail: str = "") -> Iterator[None]:
    """Expect InvalidInput naming ``field``, as its attribute and at the start of its message."""
    with pytest.raises(InvalidInput, match=f"^{re.escape(field)}: {detail}") as caught:
        yield
    assert caught.value.field == field


def _on(state: ContingencyState = NORMAL, lbcps: frozenset[str] | None = None, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "actor": "officer-17",
        "reason": "ROCARS down at both sites",
        "lbcps": lbcps,
        "at": T0,
        "message": "Manual clearance in force; present paper manifests.",
    }
    return activate(state, **{**args, **kw})


def _off(state: ContingencyState, lbcps: frozenset[str] | None = None, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "actor": "officer-42",
        "reason": "system restored",
        "at": T0 + timedelta(hours=1),
        "lbcps": lbcps,
    }
    return deactivate(state, **{**args, **kw})


# --- activate --------------------------------------------------------------------------------


def test_initial_state_is_normal_everywhere() -> None:
    """The initial state is normal mode with no change recorded and no LBCP covered."""
    assert NORMAL.mode == "normal"
    assert NORMAL.actor is None
    assert NORMAL.history == ()
    assert not any(NORMAL.covers(code) for code in LBCP_CODES)


def test_activate_all_records_who_when_why_and_message() -> None:
    """Activating for all LBCPs records actor, time, reason, message and starts the period."""
    s = _on(actor="  officer-17 ", reason=" ROCARS down at both sites ")
    assert s.mode == "manual"
    assert s.scope is None
    assert (s.actor, s.reason, s.at, s.since) == ("officer-17", "ROCARS down at both sites", T0, T0)
    assert s.message.startswith("Manual clearance in force")
    assert all(s.covers(code) for code in LBCP_CODES)
    assert s.history == (
        Change("activate", "officer-17", "ROCARS down at both sites", T0, None, None, s.message),
    )


def test_activate_subset_covers_only_those() -> None:
    """Activating for LMC and SBC puts exactly those two LBCPs in manual mode."""
    s = _on(lbcps=frozenset({"LMC", "SBC"}))
    assert s.scope == frozenset({"LMC", "SBC"})
    assert {c for c in LBCP_CODES if s.covers(c)} == {"LMC", "SBC"}


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        (frozenset({"LMC"}), frozenset({"SBC"}), frozenset({"LMC", "SBC"})),
        (frozenset({"LMC", "SBC"}), frozenset({"LMC"}), frozenset({"LMC", "SBC"})),
        (frozenset({"LMC"}), None, None),
        (None, frozenset({"LMC"}), None),
        (None, None, None),
    ],
)
def test_activating_again_widens_never_narrows(
    first: frozenset[str] | None, second: frozenset[str] | None, expected: frozenset[str] | None
) -> None:
    """A second activation adds to the scope (union); it never releases an LBCP."""
    s = _on(_on(lbcps=first), lbcps=second, at=T0 + timedelta(minutes=5), message="Updated.")
    assert s.scope == expected
    assert s.since == T0, "the manual period started with the first activation"
    assert s.message == "Updated."
    assert len(s.history) == 2


def test_activate_normalises_time_to_utc() -> None:
    """A Hong Kong time is stored as the same instant in UTC."""
    s = _on(at=T0.astimezone(HKT))
    assert s.at == T0
    assert s.at.tzinfo is UTC


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"actor": "  "}, "actor"),
        ({"actor": "x" * 129}, "actor"),
        ({"actor": 17}, "actor"),
        ({"reason": ""}, "reason"),
        ({"reason": "\t\n"}, "reason"),
        ({"reason": "r" * 1001}, "reason"),
        ({"message": " "}, "message"),
        ({"message": "m" * 2001}, "message"),
        ({"at": datetime(2025, 3, 1, 2, 0)}, "at"),
        ({"at": 1_700_000_000.0}, "at"),
        ({"lbcps": frozenset()}, "lbcps"),
        ({"lbcps": frozenset({"XYZ"})}, "lbcps"),
        ({"lbcps": frozenset({"lmc"})}, "lbcps"),
        ({"lbcps": "LMC"}, "lbcps"),
        ({"lbcps": frozenset({3})}, "lbcps"),
    ],
)
def test_activate_rejects_bad_input_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    """Blank, oversized, naive-time or unknown-LBCP input is refused with the field named."""
    with _refused(field):
        _on(**kwargs)


def test_activate_accepts_a_configured_lbcp_set() -> None:
    """LBCP codes are checked against the configured set, which defaults to the design's six."""
    s = _on(lbcps=frozenset({"NEW"}), known=LBCP_CODES | {"NEW"})
    assert s.covers("NEW")
    assert not s.covers("LMC")


# --- deactivate ------------------------------------------------------------------------------


def test_deactivate_all_returns_to_normal_and_closes_the_window() -> None:
    """Releasing everything returns to normal, clears the notice, and records the ended period."""
    s = _off(_on())
    assert s.mode == "normal"
    assert s.scope == frozenset()
    assert (s.actor, s.reason, s.message, s.since) == ("officer-42", "system restored", "", None)
    assert s.last_window == ManualWindow(T0, T0 + timedelta(hours=1))
    assert [c.action for c in s.history] == ["activate", "deactivate"]


def test_deactivate_subset_keeps_the_rest_in_manual() -> None:
    """Releasing LMC from {LMC, SBC} leaves SBC manual with the same notice and start."""
    on = _on(lbcps=frozenset({"LMC", "SBC"}))
    s = _off(on, frozenset({"LMC"}))
    assert s.scope == frozenset({"SBC"})
    assert (s.message, s.since, s.last_window) == (on.message, T0, None)


def test_deactivate_subset_of_all_lists_the_others() -> None:
    """Releasing HZMB from an all-LBCPs scope leaves the other five, listed explicitly."""
    s = _off(_on(), frozenset({"HZMB"}))
    assert s.scope == LBCP_CODES - {"HZMB"}
    assert not s.covers("HZMB")
    assert s.covers("LMC")


def test_deactivate_last_subset_returns_to_normal() -> None:
    """Releasing the last manual LBCP by name returns to normal mode."""
    s = _off(_on(lbcps=frozenset({"STK"})), frozenset({"STK"}))
    assert s.mode == "normal"
    assert s.last_window is not None


def test_deactivate_when_normal_is_refused() -> None:
    """Deactivating in normal mode is refused as a transition the state does not allow."""
    with pytest.raises(InvalidTransition, match=r"^mode: already normal"):
        _off(NORMAL)


def test_deactivate_lbcp_not_in_manual_is_refused() -> None:
    """Releasing an LBCP that is not manual is refused rather than silently ignored."""
    with pytest.raises(InvalidTransition, match=r"^lbcps: \['SBC'\] not in manual mode"):
        _off(_on(lbcps=frozenset({"LMC"})), frozenset({"LMC", "SBC"}))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"actor": ""}, "actor"), ({"reason": " "}, "reason"), ({"lbcps": frozenset()}, "lbcps")],
)
def test_deactivate_requires_a_person_and_a_reason(kwargs: dict[str, Any], field: str) -> None:
    """Going back to normal needs a named actor and a non-blank reason."""
    with _refused(field):
        _off(_on(), **kwargs)


def test_history_is_bounded_newest_last() -> None:
    """After many changes only the latest HISTORY_LIMIT remain, newest last."""
    s = NORMAL
    for i in range(3 * HISTORY_LIMIT):
        at = T0 + timedelta(minutes=i)
        s = _on(s, at=at) if i % 2 == 0 else _off(s, at=at)
    assert len(s.history) == HISTORY_LIMIT
    assert s.history[-1].at == T0 + timedelta(minutes=3 * HISTORY_LIMIT - 1)
    assert [c.at for c in s.history] == sorted(c.at for c in s.history)


def test_no_automatic_way_back_to_normal() -> None:
    """The module offers no function besides deactivate that can end manual mode."""
    public = [n for n in dir(cs) if not n.startswith("_") and callable(getattr(cs, n))]
    assert [n for n in public if "deactivate" in n or "normal" in n.lower()] == ["deactivate"]


# --- effective mode, recommendation, auto-activation ----------------------------------------

# Each state with the LBCPs its etcd document puts in manual mode, and whether switching every
# LBCP to manual would change it. Naming all of today's LBCPs is not "all": that also covers
# LBCPs configured later, so switching every LBCP on still widens it.
ALL = frozenset(LBCP_CODES)
CASES: tuple[tuple[str, ContingencyState, frozenset[str], bool], ...] = (
    ("normal", NORMAL, frozenset(), True),
    ("all", _on(), ALL, False),
    ("LMC", _on(lbcps=frozenset({"LMC"})), frozenset({"LMC"}), True),
    (
        "SBC-left",
        _off(_on(lbcps=frozenset({"LMC", "SBC"})), frozenset({"LMC"})),
        frozenset({"SBC"}),
        True,
    ),
    ("normal-again", _off(_on()), frozenset(), True),
    ("each-named", _on(lbcps=ALL), ALL, True),
)
STATES = tuple(state for _, state, _, _ in CASES)
_CASE_PARAMS = [pytest.param(*case[1:], id=case[0]) for case in CASES]


@pytest.mark.parametrize(("state", "manual", "widens"), _CASE_PARAMS)
def test_effective_mode_follows_etcd_and_the_override_only_adds_manual(
    state: ContingencyState, manual: frozenset[str], widens: bool
) -> None:
    """Without an override exactly the LBCPs etcd lists are manual; with one, every LBCP is."""
    for lbcp in sorted(LBCP_CODES):
        assert effective_mode(state, lbcp, False) == ("manual" if lbcp in manual else "normal")
        assert effective_mode(state, lbcp, True) == "manual"


@pytest.mark.parametrize(
    ("now", "last", "expected"),
    [(100.0, 40.0, True), (100.0, 40.001, False), (100.0, 0.0, True), (100.0, 100.0, False)],
)
def test_recommendation_at_threshold(now: float, last: float, expected: bool) -> None:
    """Manual mode is recommended once no write succeeded for threshold seconds, inclusive."""
    rec = recommendation(now, last)
    assert rec.recommended is expected
    assert rec.reason.endswith(".")
    assert "\n" not in rec.reason


def test_recommendation_sentences() -> None:
    """The recommendation explains itself in one sentence."""
    assert recommendation(175.0, 100.0).reason == (
        "no node could write for 75.0s >= 60.0s: manual clearance mode is recommended."
    )
    assert recommendation(103.0, 100.0, threshold_s=30).reason == (
        "last successful write 3.0s ago < 30.0s: manual clearance mode is not recommended."
    )


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((float("nan"), 0.0, 60.0), "now"),
        ((0.0, float("inf"), 60.0), "last_write_ok_at"),
        ((0.0, 0.0, 0.0), "threshold_s"),
        ((0.0, 0.0, -5.0), "threshold_s"),
        ((0.0, True, 60.0), "last_write_ok_at"),
        ((0.0, 0.0, "60"), "threshold_s"),
    ],
)
def test_recommendation_rejects_bad_numbers(args: tuple[Any, Any, Any], field: str) -> None:
    """Non-finite times or a non-positive threshold are refused, naming the argument."""
    with _refused(field):
        recommendation(*args)


@pytest.mark.parametrize(("state", "manual", "widens"), _CASE_PARAMS)
@pytest.mark.parametrize(
    ("policy", "recommended", "when_widening"),
    [(False, False, False), (False, True, False), (True, False, False), (True, True, True)],
)
def test_auto_activate_needs_policy_recommendation_and_something_to_switch_on(
    state: ContingencyState,
    manual: frozenset[str],
    widens: bool,
    policy: bool,
    recommended: bool,
    when_widening: bool,
) -> None:
    """Auto-activation needs the policy on, a recommendation, and a state it would change."""
    assert (_on(state).scope != state.scope) is widens, "the table says what activation does"
    assert auto_activate_allowed(policy, recommended, state) is (when_widening and widens)


# --- late-submission grace -------------------------------------------------------------------

START, END = T0, T0 + timedelta(hours=3)


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (START - timedelta(microseconds=1), False),
        (START, True),
        (START + timedelta(hours=1), True),
        (END, True),
        (END + timedelta(hours=2) - timedelta(microseconds=1), True),
        (END + timedelta(hours=2), False),
        (END + timedelta(days=1), False),
    ],
)
def test_late_flags_suppressed_during_and_two_hours_after(at: datetime, expected: bool) -> None:
    """Late flags are off from the start of manual mode until 2 hours after it ended."""
    assert late_flags_suppressed(at, [ManualWindow(START, END)]) is expected


def test_late_flags_open_window_and_no_window() -> None:
    """An ongoing period suppresses from its start on; no period suppresses nothing."""
    assert late_flags_suppressed(END + timedelta(days=9), [ManualWindow(START)])
    assert not late_flags_suppressed(START, [])
    with _refused("at", "must be timezone-aware"):
        late_flags_suppressed(datetime(2025, 1, 1), [])


def test_state_windows_feed_the_grace_rule() -> None:
    """A state's windows give the current period and the one that ended last."""
    on = _on()
    off = _off(on)
    again = _on(off, at=T0 + timedelta(hours=5))
    assert on.windows == (ManualWindow(T0),)
    assert off.windows == (ManualWindow(T0, T0 + timedelta(hours=1)),)
    assert again.windows == (off.windows[0], ManualWindow(T0 + timedelta(hours=5)))
    assert late_flags_suppressed(T0 + timedelta(hours=2, minutes=59), off.windows)
    assert not late_flags_suppressed(T0 + timedelta(hours=3), off.windows)


# --- serialisation ---------------------------------------------------------------------------


@pytest.mark.parametrize("state", STATES)
def test_round_trip_through_json(state: ContingencyState) -> None:
    """to_dict is JSON-able and from_dict(json) gives back an equal state."""
    doc = json.loads(json.dumps(to_dict(state)))
    assert from_dict(doc) == state


def test_document_shape() -> None:
    """The etcd document is readable on its own: mode, sorted scope, UTC ISO times."""
    doc = to_dict(_on(lbcps=frozenset({"SBC", "LMC"}), at=T0.astimezone(HKT)))
    assert doc["version"] == 1
    assert doc["mode"] == "manual"
    assert doc["scope"] == ["LMC", "SBC"]
    assert doc["at"] == doc["since"] == "2025-03-01T02:00:00+00:00"


# Written by the hand-written codec that pydantic replaced (issue 9), as running clusters hold
# them in etcd: every LBCP manual, and a history through a full release, an automatic switch-on
# and a partial release of "all" (times with microseconds, an ended window).
OLD_DOCUMENTS = (
    """{"version": 1, "mode": "manual", "scope": null, "actor": "officer-17", "reason": "ROCARS do\
wn at both sites", "at": "2025-03-01T02:00:00+00:00", "message": "Manual clearance in force; prese\
nt paper manifests.", "since": "2025-03-01T02:00:00+00:00", "last_window": null, "history": [{"ac\
tion": "activate", "actor": "officer-17", "reason": "ROCARS down at both sites", "at": "2025-03-01\
T02:00:00+00:00", "lbcps": null, "scope": null, "message": "Manual clearance in force; present pap\
er manifests."}]}""",
    """{"version": 1, "mode": "manual", "scope": ["HYW", "LMC", "MKT", "SBC", "STK"], "actor": "cli\
:ops", "reason": "HZMB back", "at": "2025-03-01T08:00:00+00:00", "message": "Manual clearance: the\
 system cannot record clearances.", "since": "2025-03-01T07:00:00+00:00", "last_window": {"start"\
: "2025-03-01T02:00:00+00:00", "end": "2025-03-01T03:00:00.000250+00:00"}, "history": [{"action":\
 "activate", "actor": "officer-17", "reason": "ROCARS down at both sites", "at": "2025-03-01T02:00\
:00+00:00", "lbcps": ["LMC", "SBC"], "scope": ["LMC", "SBC"], "message": "Manual clearance in for\
ce; present paper manifests."}, {"action": "deactivate", "actor": "officer-42", "reason": "system \
restored", "at": "2025-03-01T03:00:00.000250+00:00", "lbcps": null, "scope": [], "message": ""}, {\
"action": "activate", "actor": "system:auto", "reason": "no node could write for 61.2s >= 60.0s: m\
anual clearance mode is recommended.", "at": "2025-03-01T07:00:00+00:00", "lbcps": null, "scope":\
 null, "message": "Manual clearance: the system cannot record clearances."}, {"action": "deactiva\
te", "actor": "cli:ops", "reason": "HZMB back", "at": "2025-03-01T08:00:00+00:00", "lbcps": ["HZMB\
"], "scope": ["HYW", "LMC", "MKT", "SBC", "STK"], "message": "Manual clearance: the system cannot \
record clearances."}]}""",
)


@pytest.mark.parametrize("text", OLD_DOCUMENTS)
def test_documents_written_before_pydantic_still_load_and_rewrite_identically(text: str) -> None:
    """An etcd document from the old codec loads, and writing it back gives the same JSON text."""
    state = from_dict(json.loads(text))
    assert json.dumps(to_dict(state)) == text


def test_old_document_means_what_it_says() -> None:
    """The old partial-release document reads as five LBCPs manual since 07:00, with its past."""
    state = from_dict(json.loads(OLD_DOCUMENTS[1]))
    assert state.scope == LBCP_CODES - {"HZMB"}
    assert (state.actor, state.since) == ("cli:ops", T0 + timedelta(hours=5))
    assert state.last_window == ManualWindow(T0, T0 + timedelta(hours=1, microseconds=250))
    assert [(c.action, c.lbcps) for c in state.history] == [
        ("activate", frozenset({"LMC", "SBC"})),
        ("deactivate", None),
        ("activate", None),
        ("deactivate", frozenset({"HZMB"})),
    ]
    assert state.history[1].scope == frozenset()
    assert from_dict(json.loads(OLD_DOCUMENTS[0])).scope is None


def _valid_doc() -> dict[str, Any]:
    return to_dict(_on(_off(_on(lbcps=frozenset({"LMC"}))), lbcps=frozenset({"SBC"})))


def _set(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(_valid_doc())
    *parents, last = path.split(".")
    target: Any = doc
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(
    ("doc_or_path", "value", "field"),
    [
        ("version", 2, "version"),
        ("version", True, "version"),
        ("version", "1", "version"),
        ("version", 1.0, "version"),
        ("mode", "panic", "mode"),
        ("mode", "normal", "mode"),
        ("scope", [], "mode"),
        ("scope", ["LMC", "XYZ"], "scope"),
        ("scope", "SBC", "scope"),
        ("scope", ["SBC", "SBC"], "scope"),
        ("scope", ("SBC",), "scope"),
        ("scope", ["lmc"], "scope[0]"),
        ("scope", [{}], "scope[0]"),
        ("actor", "x" * 129, "actor"),
        ("reason", "r" * 1001, "reason"),
        ("message", "m" * 2001, "message"),
        ("actor", None, "actor"),
        ("actor", " ", "actor"),
        ("reason", 5, "reason"),
        ("at", "2025-03-01T02:00:00", "at"),
        ("at", "yesterday", "at"),
        ("at", 1740794400, "at"),
        ("at", "1740794400", "at"),
        ("at", "2025-03-01", "at"),
        ("since", None, "since"),
        ("message", "", "message"),
        ("message", None, "message"),
        ("last_window", {"start": "2025-03-01T02:00:00+00:00"}, "last_window.end"),
        ("last_window", {"start": "2025-03-01T02:00:00+00:00", "end": None}, "last_window.end"),
        ("last_window", [], "last_window"),
        (
            "last_window",
            {"start": "2025-03-01T02:00:00+00:00", "end": "2025-03-01T03:00:00+00:00", "x": 1},
            "last_window.x",
        ),
        ("history", {}, "history"),
        ("history", [{}] * (HISTORY_LIMIT + 1), "history"),
        ("history.0.at", "not a time", "history[0].at"),
        ("history.0.at", "2025-03-01T02:00:00", "history[0].at"),
        ("history.1.actor", "", "history[1].actor"),
        ("history.1.action", "toggle", "history[1].action"),
        ("history.2.lbcps", [], "history[2].lbcps"),
        ("history.0.lbcps", ["LMC", "LMC"], "history[0].lbcps"),
        ("history.0.scope", "LMC", "history[0].scope"),
        ("history.1.message", "left over", "history[1].message"),
        ("history.0.extra", 1, "history[0].extra"),
        ("surprise", 1, "surprise"),
        ("history", [1], "history[0]"),
    ],
)
def test_from_dict_rejects_bad_documents_naming_the_field(
    doc_or_path: str, value: Any, field: str
) -> None:
    """Every kind of damaged document is refused, naming the field's path."""
    with _refused(field):
        from_dict(_set(doc_or_path, value))


@pytest.mark.parametrize("field", sorted(to_dict(NORMAL)))
def test_from_dict_rejects_missing_fields(field: str) -> None:
    """Each field of the document is required."""
    with _refused(field, "missing"):
        from_dict(_set(field, _DELETE))


def test_from_dict_checks_scope_against_configuration_but_not_history() -> None:
    """A removed LBCP in the history stays readable; in the live scope it is refused."""
    doc = to_dict(_on(lbcps=frozenset({"LMC", "SBC"})))
    smaller = LBCP_CODES - {"SBC"}
    with _refused("scope", "unknown LBCP 'SBC'"):
        from_dict(doc, known=smaller)
    released = to_dict(_off(from_dict(doc), frozenset({"SBC"})))
    assert from_dict(released, known=smaller).history[0].lbcps == frozenset({"LMC", "SBC"})


def test_from_dict_rejects_non_objects() -> None:
    """A document that is not a JSON object is refused."""
    with _refused("document", "must be an object"):
        from_dict(["not", "a", "dict"])


def test_direct_construction_is_validated() -> None:
    """Inconsistent states cannot be built directly either."""
    with _refused("since"):
        ContingencyState(scope=None, actor="a", reason="r", at=T0, message="m")
    with _refused("actor", "manual mode"):
        ContingencyState(scope=None, message="m", since=T0)
    with _refused("actor"):
        ContingencyState(actor="a")
    with _refused("message"):
        ContingencyState(message="stale notice")
    with _refused("last_window"):
        ContingencyState(last_window=ManualWindow(T0))
    with _refused("history"):
        ContingencyState(history=("x",))  # type: ignore[arg-type]
    with _refused("action"):
        Change("toggle", "a", "r", T0, None, None, "m")  # type: ignore[arg-type]
    with _refused("message", "must be a string"):
        Change("activate", "a", "r", T0, None, None, None)  # type: ignore[arg-type]


# --- random sequences of operations ----------------------------------------------------------

_subsets = st.none() | st.frozensets(st.sampled_from(sorted(LBCP_CODES)), min_size=1)
_ops = st.lists(st.tuples(st.sampled_from(["on", "off"]), _subsets), max_size=40)


@given(ops=_ops)
def test_random_operation_sequences_keep_the_invariants(
    ops: list[tuple[str, frozenset[str] | None]],
) -> None:
    """Any sequence: activate never narrows, only deactivate reaches normal, docs round-trip."""
    state = NORMAL
    for i, (op, lbcps) in enumerate(ops):
        at = T0 + timedelta(minutes=i)
        before = state
        if op == "on":
            state = _on(state, lbcps=lbcps, at=at)
            assert state.mode == "manual"
            assert all(state.covers(c) for c in LBCP_CODES if before.covers(c))
        else:
            try:
                state = _off(state, lbcps=lbcps, at=at)
            except InvalidTransition:
                assert state == before
                continue
            assert all(before.covers(c) for c in LBCP_CODES if state.covers(c))
        assert len(state.history) <= HISTORY_LIMIT
        assert state.history[-1].scope == state.scope
        assert from_dict(json.loads(json.dumps(to_dict(state)))) == state
