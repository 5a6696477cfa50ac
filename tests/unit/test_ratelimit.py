"""The per-account rate limit rule (node.ratelimit): sliding-window estimate and Retry-After."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node import ratelimit
from node.ratelimit import RateDecision, decide, window_at


def test_requests_up_to_the_limit_pass_and_the_next_is_refused() -> None:
    """With nothing in the previous window, requests 1..limit pass and limit+1 is refused."""
    for n in range(1, 6):
        assert decide(limit=5, current=n, previous=0, fraction=0.3).allowed
    refused = decide(limit=5, current=6, previous=0, fraction=0.3)
    # 0.7 s to the next window, where these 6 still weigh 6 * (1 - f): a third more.
    assert refused == RateDecision(False, 6.0, 5, 2, 1034)


def test_previous_window_weighs_what_is_left_of_it() -> None:
    """Half-way into a window, the previous window's count weighs one half."""
    assert decide(limit=10, current=5, previous=10, fraction=0.5).estimate == 10.0
    assert decide(limit=10, current=5, previous=10, fraction=0.5).allowed
    assert not decide(limit=10, current=6, previous=10, fraction=0.5).allowed


def test_a_burst_across_a_window_boundary_does_not_pass_twice_the_limit() -> None:
    """A full window just before the boundary keeps the first requests after it refused (a
    fixed window would let another `limit` through at once)."""
    assert not decide(limit=100, current=1, previous=100, fraction=0.001).allowed
    assert decide(limit=100, current=1, previous=100, fraction=0.995).allowed


def test_allowed_requests_carry_no_retry_after() -> None:
    """An allowed decision says 0 seconds to wait."""
    assert decide(limit=3, current=3, previous=0, fraction=0.9).retry_after_s == 0


def test_retry_after_waits_for_the_previous_window_to_fade_enough() -> None:
    """Refused only because of the previous window: wait until its weight has shrunk enough,
    within this window (here 8 of 10 s in: 3 s from now), rounded up to whole seconds."""
    d = decide(limit=10, current=5, previous=20, fraction=0.5, window_s=10)
    assert not d.allowed
    assert d.retry_after_s == 3
    assert d.retry_after_ms == 3000


def test_retry_after_runs_into_the_next_window_when_this_one_is_over() -> None:
    """Over the limit in this window: wait for the next window and for this window's count to
    weigh little enough there (9 s to go, then a third of the next 10 s window)."""
    d = decide(limit=5, current=6, previous=0, fraction=0.1, window_s=10)
    assert d.retry_after_s == 13


def test_a_client_that_keeps_hammering_waits_up_to_two_windows() -> None:
    """Refused requests count too, so a client far over the limit waits longer (never more than
    two windows, after which nothing of its past is counted)."""
    hammered = decide(limit=5, current=10_000, previous=10_000, fraction=0.0)
    assert hammered.retry_after_s == 2
    assert decide(limit=1, current=2, previous=0, fraction=0.5).retry_after_s == 2


def test_limit_below_one_is_a_programming_error() -> None:
    """0 means "no limit" and is handled by the caller; decide() refuses to guess."""
    with pytest.raises(ValueError, match="at least 1"):
        decide(limit=0, current=1, previous=0, fraction=0.0)


def test_window_index_and_fraction() -> None:
    """Windows are numbered from the epoch; the fraction is how far into the window `now` is."""
    assert window_at(1000.0) == ratelimit.Window(1000, 0.0)
    w = window_at(1000.25)
    assert w.index == 1000
    assert w.fraction == pytest.approx(0.25)
    w10 = window_at(1005.0, window_s=10)
    assert w10.index == 100
    assert w10.fraction == pytest.approx(0.5)


def test_counter_keys_are_per_account_and_window_and_live_for_two_windows() -> None:
    """Each account and window has its own key; a key outlives the next window (it is read
    as "previous" there) and then expires."""
    assert ratelimit.counter_key(7, 1000) == "rocars:rl:7:1000"
    assert ratelimit.counter_key(7, 1000) != ratelimit.counter_key(8, 1000)
    assert ratelimit.counter_ttl_ms(1.0) >= 2000


def _estimate_after(
    *, wait: float, current: int, previous: int, fraction: float, window_s: float
) -> float:
    """The estimate one more request would see `wait` seconds later, if none came meanwhile."""
    t = fraction * window_s + wait  # time since the start of the current window
    if t < window_s:
        return previous * (1 - t / window_s) + current + 1
    if t < 2 * window_s:
        return current * (1 - (t - window_s) / window_s) + 1
    return 1.0


@given(
    limit=st.integers(1, 2000),
    current=st.integers(1, 5000),
    previous=st.integers(0, 5000),
    fraction=st.floats(0.0, 0.999),
    window_s=st.sampled_from([1.0, 2.0, 10.0]),
)
def test_retry_after_is_enough_and_not_more_than_needed(
    limit: int, current: int, previous: int, fraction: float, window_s: float
) -> None:
    """Waiting Retry-After seconds (or retry_after_ms) is enough for the next request to pass;
    waiting one second less is not (Retry-After is the true wait rounded up to whole seconds,
    at least 1; retry_after_ms the same to the millisecond)."""
    d = decide(
        limit=limit, current=current, previous=previous, fraction=fraction, window_s=window_s
    )
    if d.allowed:
        return
    assert 1 <= d.retry_after_s <= math.ceil(2 * window_s)
    assert 0 < d.retry_after_ms <= d.retry_after_s * 1000
    kw = {"current": current, "previous": previous, "fraction": fraction, "window_s": window_s}
    assert _estimate_after(wait=d.retry_after_s, **kw) <= limit + 1e-6
    assert _estimate_after(wait=d.retry_after_ms / 1000, **kw) <= limit + 1e-6
    if d.retry_after_s > 1:
        assert _estimate_after(wait=d.retry_after_s - 1, **kw) > limit - 1e-6


def test_a_window_one_short_of_the_limit_waits_for_the_boundary() -> None:
    """With limit - 1 requests already in this window, no fading of the previous window makes
    room for one more before the boundary: the wait is exactly the rest of this window (then
    these 4 weigh fully as "previous" and the 5th request fits: 4 + 1 <= 5)."""
    d = decide(limit=5, current=4, previous=10, fraction=0.5, window_s=10)
    assert not d.allowed
    assert (d.retry_after_s, d.retry_after_ms) == (5, 5000)
    assert decide(limit=5, current=1, previous=4, fraction=0.0, window_s=10).allowed
