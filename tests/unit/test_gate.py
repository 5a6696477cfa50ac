"""The LBCP gate decision."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from kernel.domain.gate import GateDecision, gate_decision

NOW = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
PAST = NOW - timedelta(minutes=1)
FUTURE = NOW + timedelta(minutes=12)


def test_manual_mode_wins_over_everything() -> None:
    """With manual mode on, every combination of the other inputs gives 'manual'."""
    for bundle_open, not_before, selected in itertools.product(
        (False, True), (None, PAST, NOW, FUTURE), (False, True)
    ):
        result = gate_decision(
            now=NOW,
            manual_mode=True,
            bundle_open=bundle_open,
            not_before=not_before,
            selected=selected,
            reasons=("rule 1",),
        )
        assert result == GateDecision("manual", "manual clearance mode is in force at this LBCP")


@pytest.mark.parametrize("selected", [False, True])
def test_no_bundle_holds(selected: bool) -> None:
    """A truck with no open bundle here is held without an end time."""
    result = gate_decision(
        now=NOW, manual_mode=False, bundle_open=False, not_before=None, selected=selected
    )
    assert result == GateDecision("hold", "no open bundle for this vehicle at this LBCP")


@pytest.mark.parametrize("selected", [False, True])
def test_before_not_before_holds_until_then(selected: bool) -> None:
    """Before not_before the truck is held until not_before, shown in Hong Kong time."""
    result = gate_decision(
        now=NOW, manual_mode=False, bundle_open=True, not_before=FUTURE, selected=selected
    )
    assert result.decision == "hold"
    assert result.until == FUTURE
    assert "cross after 2025-03-01 16:12:00 HKT" in result.reason


def test_at_not_before_no_longer_holds() -> None:
    """At exactly not_before the hold is over."""
    result = gate_decision(
        now=NOW, manual_mode=False, bundle_open=True, not_before=NOW, selected=False
    )
    assert result.decision == "release"


def test_selected_is_inspected_with_reasons() -> None:
    """A selected bundle past its not_before is inspected and the reasons are given."""
    result = gate_decision(
        now=NOW,
        manual_mode=False,
        bundle_open=True,
        not_before=PAST,
        selected=True,
        reasons=("rule 1 (keyword)", "rule 9 (random)"),
    )
    assert result == GateDecision(
        "inspect", "selected for inspection: rule 1 (keyword); rule 9 (random)"
    )


def test_selected_without_reasons_still_inspected() -> None:
    """Selection without recorded reasons is still an inspection, saying so."""
    result = gate_decision(
        now=NOW, manual_mode=False, bundle_open=True, not_before=PAST, selected=True
    )
    assert result == GateDecision("inspect", "selected for inspection: no reason recorded")


def test_not_selected_is_released() -> None:
    """An open, profiled, unselected bundle is released without an end time."""
    result = gate_decision(
        now=NOW, manual_mode=False, bundle_open=True, not_before=PAST, selected=False
    )
    assert result == GateDecision("release", "not selected for inspection")


def test_open_bundle_without_not_before_is_a_bug() -> None:
    """An open bundle must carry not_before; None raises ValueError."""
    with pytest.raises(ValueError, match="not_before"):
        gate_decision(now=NOW, manual_mode=False, bundle_open=True, not_before=None, selected=False)


def test_until_only_on_timed_hold() -> None:
    """Across all inputs, until is set exactly when the decision is a hold before not_before."""
    for manual, bundle_open, not_before, selected in itertools.product(
        (False, True), (False, True), (PAST, NOW, FUTURE), (False, True)
    ):
        result = gate_decision(
            now=NOW,
            manual_mode=manual,
            bundle_open=bundle_open,
            not_before=not_before,
            selected=selected,
        )
        timed_hold = not manual and bundle_open and not_before > NOW
        assert (result.until is not None) == timed_hold
        assert result.decision == (
            "manual"
            if manual
            else "hold"
            if not bundle_open or timed_hold
            else "inspect"
            if selected
            else "release"
        )
