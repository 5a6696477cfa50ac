"""The LBCP gate decision: every combination of mode and bundle facts."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest

from kernel.domain.gate import (
    MANUAL,
    BundleAtGate,
    GateDecision,
    Mode,
    decision_by_mode,
    gate_decision,
)

NOW = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
PAST = NOW - timedelta(minutes=1)
FUTURE = NOW + timedelta(minutes=12)
TIMES = {"past": PAST, "now": NOW, "future": FUTURE}
REASONS: tuple[tuple[str, ...], ...] = ((), ("rule 1 (keyword)", "rule 9 (random)"))
STATUSES: tuple[Literal["open", "inspecting"], ...] = ("open", "inspecting")

# Every bundle the gate can meet: none, or each status x not_before x selection x reasons.
BUNDLES: tuple[BundleAtGate | None, ...] = (
    None,
    *(
        BundleAtGate(status, not_before, selected, reasons)
        for status, not_before, selected, reasons in itertools.product(
            STATUSES, TIMES.values(), (False, True), REASONS
        )
    ),
)

MANUAL_REASON = (
    "manual clearance mode is in force at this LBCP: the driver presents the cargo documents"
    " to an officer"
)
HOLD_UNTIL_FUTURE = GateDecision(
    "hold", "risk profiling window: cross after 2025-03-01 16:12:00 HKT", FUTURE
)
NO_BUNDLE = GateDecision("hold", "no open bundle for this vehicle at this LBCP")
DIRECTED = GateDecision("inspect", "already directed to inspection")
RELEASE = GateDecision("release", "not selected for inspection")
SELECTED = {
    (): GateDecision("inspect", "selected for inspection: no reason recorded"),
    REASONS[1]: GateDecision(
        "inspect", "selected for inspection: rule 1 (keyword); rule 9 (random)"
    ),
}

# In normal mode, with a bundle: (status, not_before, selected) -> decision; the reasons only
# change the wording of a selection.
NORMAL_TABLE: dict[tuple[str, str, bool], GateDecision | None] = {
    ("inspecting", "past", False): DIRECTED,
    ("inspecting", "past", True): DIRECTED,
    ("inspecting", "now", False): DIRECTED,
    ("inspecting", "now", True): DIRECTED,
    ("inspecting", "future", False): DIRECTED,
    ("inspecting", "future", True): DIRECTED,
    ("open", "past", False): RELEASE,
    ("open", "past", True): None,  # SELECTED, by reasons
    ("open", "now", False): RELEASE,
    ("open", "now", True): None,
    ("open", "future", False): HOLD_UNTIL_FUTURE,
    ("open", "future", True): HOLD_UNTIL_FUTURE,
}


def _when(bundle: BundleAtGate) -> str:
    return next(name for name, at in TIMES.items() if at == bundle.not_before)


def test_the_table_covers_every_bundle() -> None:
    """The expectation table names every status x time x selection the gate can meet."""
    keys = {(b.status, _when(b), b.selected) for b in BUNDLES if b is not None}
    assert keys == set(NORMAL_TABLE)
    assert len(BUNDLES) == 1 + 2 * 3 * 2 * 2


def test_manual_mode_wins_over_every_bundle() -> None:
    """In manual mode the gate answers manual whatever the bundle says, or without one."""
    for bundle in BUNDLES:
        assert gate_decision(now=NOW, mode="manual", bundle=bundle) == MANUAL
    assert GateDecision("manual", MANUAL_REASON) == MANUAL


@pytest.mark.parametrize("bundle", BUNDLES, ids=repr)
def test_normal_mode_decides_from_the_bundle(bundle: BundleAtGate | None) -> None:
    """In normal mode: no bundle holds; inspecting stays inspect; then window, selection."""
    result = gate_decision(now=NOW, mode="normal", bundle=bundle)
    if bundle is None:
        assert result == NO_BUNDLE
        return
    expected = NORMAL_TABLE[(bundle.status, _when(bundle), bundle.selected)]
    assert result == (SELECTED[bundle.reasons] if expected is None else expected)


@pytest.mark.parametrize(("mode", "bundle"), list(itertools.product(("normal", "manual"), BUNDLES)))
def test_until_only_on_a_timed_hold(mode: Mode, bundle: BundleAtGate | None) -> None:
    """An end time comes only with a hold for the risk-profiling window, and is not_before."""
    result = gate_decision(now=NOW, mode=mode, bundle=bundle)
    if result.until is not None:
        assert (result.decision, result.until) == ("hold", FUTURE)
        assert bundle is not None
        assert (mode, bundle.status) == ("normal", "open")


@pytest.mark.parametrize(("mode", "bundle"), list(itertools.product(("normal", "manual"), BUNDLES)))
def test_the_mode_alone_answers_what_the_whole_rule_would(
    mode: Mode, bundle: BundleAtGate | None
) -> None:
    """What decision_by_mode settles (the gate answers it without a database) is the full
    rule's answer whatever the bundle; when it settles nothing, the bundle decides."""
    early = decision_by_mode(mode)
    full = gate_decision(now=NOW, mode=mode, bundle=bundle)
    if mode == "manual":
        assert early == full == MANUAL
    else:
        assert early is None
        assert full.decision != "manual"


@pytest.mark.parametrize("mode", ["MANUAL", "", "off", None])
def test_unknown_mode_is_a_bug_not_normal(mode: Any) -> None:
    """A mode other than normal or manual raises rather than reading as normal."""
    with pytest.raises(ValueError, match=r"^mode: "):
        decision_by_mode(mode)
    with pytest.raises(ValueError, match=r"^mode: "):
        gate_decision(now=NOW, mode=mode, bundle=BUNDLES[-1])


@pytest.mark.parametrize("status", ["closed", "cancelled", "OPEN"])
def test_bundle_at_the_gate_is_open_or_inspecting(status: Any) -> None:
    """Only a bundle in progress reaches the gate; any other status is refused."""
    with pytest.raises(ValueError, match=r"^status: "):
        BundleAtGate(status, PAST, False)
