"""The 30-minute / 14-day advance-submission window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.domain.advance_window import (
    MAX_LEAD,
    MIN_LEAD,
    check_advance_window,
    describe_duration,
)
from kernel.domain.lbcp import HK_TZ

NOW = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


def test_exactly_30_minutes_is_accepted() -> None:
    """The lower bound is inclusive."""
    assert check_advance_window(NOW + timedelta(minutes=30), NOW) is None


def test_29_minutes_59_seconds_is_rejected() -> None:
    """One second short of 30 minutes is too late, and the message says by how much."""
    message = check_advance_window(NOW + timedelta(minutes=29, seconds=59), NOW)
    assert message is not None
    assert "at least 30 min" in message
    assert "29 min 59 s" in message


def test_exactly_14_days_is_accepted() -> None:
    """The upper bound is inclusive."""
    assert check_advance_window(NOW + timedelta(days=14), NOW) is None


def test_14_days_and_1_minute_is_rejected() -> None:
    """Just over 14 days ahead is too early, and the message says so."""
    message = check_advance_window(NOW + timedelta(days=14, minutes=1), NOW)
    assert message is not None
    assert "at most 14 d" in message
    assert "14 d 1 min" in message


def test_14_days_and_1_microsecond_is_rejected() -> None:
    """The upper bound is exact to the microsecond."""
    assert check_advance_window(NOW + MAX_LEAD + timedelta(microseconds=1), NOW) is not None


def test_past_is_rejected() -> None:
    """An expected time before the submission is reported as being in the past."""
    message = check_advance_window(NOW - timedelta(hours=2), NOW)
    assert message is not None
    assert "in the past" in message
    assert "2 h" in message


def test_submission_time_itself_is_too_late() -> None:
    """expected_at equal to now is not past but still fails the 30-minute minimum."""
    message = check_advance_window(NOW, NOW)
    assert message is not None
    assert "at least 30 min" in message


def test_offsets_are_compared_as_instants() -> None:
    """16:30 HKT is 08:30 UTC: 30 minutes after 08:00 UTC, so it is accepted."""
    expected = datetime(2025, 3, 1, 16, 30, tzinfo=HK_TZ)
    assert check_advance_window(expected, NOW) is None
    assert check_advance_window(expected - timedelta(seconds=1), NOW) is not None


def test_naive_expected_at_is_a_client_error() -> None:
    """A naive expected_at gets a message naming the field and asking for an offset."""
    message = check_advance_window(datetime(2025, 3, 1, 12, 0), NOW)
    assert message is not None
    assert message.startswith("expected_at")
    assert "time zone" in message


def test_naive_now_is_a_programming_error() -> None:
    """A naive now is the server's bug, so it raises instead of blaming the client."""
    with pytest.raises(ValueError, match="now"):
        check_advance_window(NOW, datetime(2025, 3, 1, 8, 0))


def test_inverted_bounds_are_a_programming_error() -> None:
    """min_lead greater than max_lead raises ValueError."""
    with pytest.raises(ValueError, match="min_lead"):
        check_advance_window(NOW, NOW, min_lead=timedelta(days=2), max_lead=timedelta(days=1))


def test_custom_bounds_are_honoured() -> None:
    """Configured leads replace the defaults, still inclusive."""
    lead = {"min_lead": timedelta(minutes=5), "max_lead": timedelta(hours=1)}
    assert check_advance_window(NOW + timedelta(minutes=5), NOW, **lead) is None
    assert check_advance_window(NOW + timedelta(hours=1), NOW, **lead) is None
    assert check_advance_window(NOW + timedelta(minutes=4), NOW, **lead) is not None
    assert check_advance_window(NOW + timedelta(hours=1, seconds=1), NOW, **lead) is not None


@given(st.integers(min_value=-30 * 86400, max_value=30 * 86400))
def test_accepted_exactly_when_lead_is_within_bounds(seconds: int) -> None:
    """For any lead time, the answer is None if and only if 30 min <= lead <= 14 d."""
    lead = timedelta(seconds=seconds)
    result = check_advance_window(NOW + lead, NOW)
    assert (result is None) == (MIN_LEAD <= lead <= MAX_LEAD)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(0), "0 s"),
        (timedelta(minutes=30), "30 min"),
        (timedelta(minutes=29, seconds=59), "29 min 59 s"),
        (timedelta(days=14), "14 d"),
        (timedelta(days=1, hours=2, minutes=3, seconds=4), "1 d 2 h 3 min 4 s"),
        (-timedelta(hours=2), "2 h"),
        (timedelta(seconds=1, microseconds=999_999), "1 s"),
    ],
)
def test_describe_duration(delta: timedelta, text: str) -> None:
    """Durations read as their non-zero parts, without sign or fractions of a second."""
    assert describe_duration(delta) == text
