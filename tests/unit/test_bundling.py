"""Bundling instruction and bundle consistency checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.domain.bundling import (
    RISK_PROFILING_WINDOW,
    ConsignmentFacts,
    Instruction,
    bundle_conflicts,
    bundling_instruction,
)
from kernel.domain.ccrn import NO_SUCH_CCRN, make_ccrn

NOW = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
A, B, C = make_ccrn(1), make_ccrn(2), make_ccrn(3)
OK = ConsignmentFacts(exists=True, lbcp="LMC")


def test_no_consignments_cross_now() -> None:
    """An empty truck has nothing to profile and may cross at once."""
    assert bundling_instruction(NOW, []) == Instruction("cross_now", NOW)


def test_old_changes_cross_now() -> None:
    """Consignments unchanged for over 30 minutes allow crossing now."""
    changes = [NOW - timedelta(hours=3), NOW - timedelta(minutes=31)]
    assert bundling_instruction(NOW, changes) == Instruction("cross_now", NOW)


def test_change_exactly_30_minutes_ago_crosses_now() -> None:
    """When the 30-minute window ends exactly now, the truck may cross now."""
    assert bundling_instruction(NOW, [NOW - timedelta(minutes=30)]).kind == "cross_now"


def test_recent_change_crosses_after_window() -> None:
    """A change 29 minutes ago means crossing after that change plus 30 minutes."""
    changed = NOW - timedelta(minutes=29)
    assert bundling_instruction(NOW, [changed]) == Instruction(
        "cross_after", changed + timedelta(minutes=30)
    )


def test_newest_change_decides() -> None:
    """With several consignments, the most recently changed one sets not_before."""
    changes = [NOW - timedelta(hours=1), NOW - timedelta(minutes=10), NOW - timedelta(minutes=20)]
    assert bundling_instruction(NOW, changes).not_before == NOW + timedelta(minutes=20)


def test_amendment_just_now_waits_full_window() -> None:
    """An amendment made at this instant pushes crossing a full 30 minutes away."""
    expected = Instruction("cross_after", NOW + timedelta(minutes=30))
    assert bundling_instruction(NOW, [NOW]) == expected


def test_custom_window() -> None:
    """A configured profiling window replaces the default 30 minutes."""
    result = bundling_instruction(NOW, [NOW], window=timedelta(minutes=5))
    assert result.not_before == NOW + timedelta(minutes=5)


def test_accepts_any_iterable() -> None:
    """last_changed_at may be a generator, consumed once."""
    result = bundling_instruction(NOW, (NOW - timedelta(minutes=m) for m in (5, 50)))
    assert result.not_before == NOW + timedelta(minutes=25)


@pytest.mark.parametrize(
    ("now", "changes"),
    [(datetime(2025, 3, 1, 8, 0), []), (NOW, [datetime(2025, 3, 1, 7, 0)])],
)
def test_naive_times_are_refused(now: datetime, changes: list[datetime]) -> None:
    """Naive now or change times are a caller bug and raise ValueError."""
    with pytest.raises(ValueError, match="timezone-aware"):
        bundling_instruction(now, changes)


def test_instruction_is_frozen() -> None:
    """An Instruction cannot be altered after it is made."""
    instruction = bundling_instruction(NOW, [])
    with pytest.raises(AttributeError):
        instruction.kind = "cross_after"  # type: ignore[misc]


@given(st.lists(st.integers(min_value=-7 * 86400, max_value=3600), max_size=8))
def test_instruction_invariants(offsets: list[int]) -> None:
    """not_before >= now and >= every change + 30 min; it equals now iff the kind is cross_now."""
    changes = [NOW + timedelta(seconds=s) for s in offsets]
    result = bundling_instruction(NOW, changes)
    assert result.not_before >= NOW
    assert all(result.not_before >= c + RISK_PROFILING_WINDOW for c in changes)
    assert (result.kind == "cross_now") == (result.not_before == NOW)
    if result.kind == "cross_after":
        assert result.not_before == max(changes) + RISK_PROFILING_WINDOW


def test_consistent_bundle_has_no_conflicts() -> None:
    """Existing, live CCRNs declared for this LBCP and not bundled elsewhere are accepted."""
    assert bundle_conflicts([A, B], {A: OK, B: OK}, "LMC") == []


def test_consignment_without_declared_lbcp_fits_any_lbcp() -> None:
    """A consignment with no declared LBCP may be bundled at any LBCP."""
    assert bundle_conflicts([A], {A: ConsignmentFacts(exists=True)}, "HZMB") == []


def test_empty_truck_needs_empty_flag() -> None:
    """No CCRNs without empty=true is a request-level error."""
    assert bundle_conflicts([], {}, "LMC") == [
        (None, "a bundle needs at least one CCRN, or empty=true for an empty truck")
    ]


def test_empty_truck_with_flag_is_accepted() -> None:
    """No CCRNs with empty=true is a valid empty-truck bundle."""
    assert bundle_conflicts([], {}, "LMC", empty=True) == []


def test_empty_flag_with_ccrns_is_contradictory() -> None:
    """empty=true together with CCRNs is refused as a whole."""
    assert bundle_conflicts([A], {A: OK}, "LMC", empty=True) == [
        (None, "an empty truck (empty=true) must not list any CCRN")
    ]


def test_duplicate_ccrn_is_reported_once() -> None:
    """A CCRN listed twice gets one 'more than once' error."""
    assert bundle_conflicts([A, B, A], {A: OK, B: OK}, "LMC") == [
        (A, "CCRN is listed more than once")
    ]


def test_malformed_ccrn_gets_its_format_error() -> None:
    """A CCRN failing the check digit is reported with the format message, not looked up."""
    bad = A[:-1] + str((int(A[-1]) + 1) % 10)
    [(ccrn, message)] = bundle_conflicts([bad], {bad: OK}, "LMC")
    assert ccrn == bad
    assert "check digit" in message


@pytest.mark.parametrize("facts", [{}, {A: ConsignmentFacts(exists=False)}])
def test_unknown_ccrn(facts: dict[str, ConsignmentFacts]) -> None:
    """A CCRN missing from the facts or marked non-existent is reported as unknown."""
    assert bundle_conflicts([A], facts, "LMC") == [(A, NO_SUCH_CCRN)]


def test_cancelled_consignment() -> None:
    """A cancelled consignment cannot be bundled."""
    facts = {A: ConsignmentFacts(exists=True, cancelled=True)}
    assert bundle_conflicts([A], facts, "LMC") == [(A, "consignment is cancelled")]


def test_other_lbcp() -> None:
    """A consignment declared for another LBCP is reported with both codes."""
    assert bundle_conflicts([A], {A: OK}, "MKT") == [
        (A, "consignment is declared for LBCP LMC, not MKT")
    ]


def test_already_in_another_open_bundle() -> None:
    """A consignment in another open bundle is reported with that bundle's id."""
    facts = {A: ConsignmentFacts(exists=True, open_bundle_id="b-7")}
    assert bundle_conflicts([A], facts, "LMC") == [(A, "consignment is already in open bundle b-7")]
    assert bundle_conflicts([A], facts, "LMC", bundle_id="b-8") != []


def test_own_open_bundle_is_not_a_conflict() -> None:
    """When amending bundle b-7, its own CCRNs do not conflict with it."""
    facts = {A: ConsignmentFacts(exists=True, open_bundle_id="b-7")}
    assert bundle_conflicts([A], facts, "LMC", bundle_id="b-7") == []


def test_all_problems_are_reported_in_request_order() -> None:
    """Every bad CCRN is reported, each with all of its problems, in the order listed."""
    facts = {
        B: ConsignmentFacts(exists=True, cancelled=True, lbcp="SBC", open_bundle_id="b-1"),
        C: OK,
    }
    assert bundle_conflicts([C, B, A, "12"], facts, "LMC") == [
        (B, "consignment is cancelled"),
        (B, "consignment is declared for LBCP SBC, not LMC"),
        (B, "consignment is already in open bundle b-1"),
        (A, NO_SUCH_CCRN),
        ("12", "CCRN must be 16 digits long, got 2"),
    ]
