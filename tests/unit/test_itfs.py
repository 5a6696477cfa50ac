"""ITFS: land-to-air transshipment cargo is inspected at most once."""

from __future__ import annotations

import itertools

import pytest

from kernel.domain.itfs import ItfsDecision, airport_inspection_decision


def test_released_at_lbcp_may_be_inspected_at_airport() -> None:
    """Cargo released at the LBCP and not yet inspected may be inspected at the airport."""
    result = airport_inspection_decision("released", airport_inspected=False)
    assert result.allowed
    assert "released at the LBCP" in result.message


def test_inspected_at_lbcp_may_not_be_inspected_again() -> None:
    """Cargo inspected at the LBCP is refused at the airport, saying why."""
    assert airport_inspection_decision("inspected", airport_inspected=False) == ItfsDecision(
        False, "cargo was already inspected at the LBCP; ITFS allows one"
    )


@pytest.mark.parametrize("lbcp_outcome", [None, "released", "inspected"])
def test_second_airport_inspection_is_refused(lbcp_outcome: str | None) -> None:
    """Cargo already inspected at the airport is never inspected there again."""
    result = airport_inspection_decision(lbcp_outcome, airport_inspected=True)  # type: ignore[arg-type]
    assert result == ItfsDecision(False, "cargo was already inspected at the airport")


def test_no_lbcp_record_is_refused() -> None:
    """Without a recorded LBCP outcome the airport may not inspect (the LBCP may yet have)."""
    result = airport_inspection_decision(None, airport_inspected=False)
    assert not result.allowed
    assert "no LBCP clearance" in result.message


def test_unknown_outcome_is_a_bug() -> None:
    """An outcome other than None, released or inspected raises ValueError."""
    with pytest.raises(ValueError, match="unknown LBCP outcome"):
        airport_inspection_decision("cleared", airport_inspected=False)  # type: ignore[arg-type]


def test_at_most_one_inspection_across_all_inputs() -> None:
    """Exhaustively: allowed only when the LBCP released and the airport has not inspected."""
    for outcome, airport in itertools.product((None, "released", "inspected"), (False, True)):
        result = airport_inspection_decision(outcome, airport_inspected=airport)  # type: ignore[arg-type]
        assert result.allowed == (outcome == "released" and not airport)
        assert result.message
