"""Per-account rate limit: the sliding-window counter rule (pure: numbers in, a decision out).

Counters live in Redis (the adapter is `node.redis_client.RedisClient.count_request`): one
counter per account and fixed window of `window_s` seconds, numbered `floor(now / window_s)`.
The number of requests "in the last window" is estimated from the current and the previous
window's counts, weighting the previous one by how much of it still lies inside the sliding window:

    estimate = previous * (1 - fraction) + current

where `fraction` is how far `now` is into the current window and `current` already includes the
request being decided. A request is allowed while `estimate <= limit`. This keeps a burst at a
window boundary from passing twice the limit, which a plain fixed window would allow.

Every request is counted, also a refused one, so a client that ignores `Retry-After` stays
refused; one that waits `Retry-After` seconds is let through again (nothing outlives two windows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WINDOW_S = 1.0
KEY_PREFIX = "rocars:rl"


@dataclass(frozen=True)
class Window:
    index: int  # floor(now / window_s): names the counter
    fraction: float  # how far `now` is into this window, in [0, 1)


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    estimate: float  # requests in the sliding window, this one included
    limit: int
    retry_after_s: int  # whole seconds to wait before the next request passes; 0 when allowed
    retry_after_ms: int = 0  # the same wait to the millisecond (Retry-After can only say seconds)


def window_at(now: float, window_s: float = WINDOW_S) -> Window:
    """The counter window `now` (seconds since the epoch) falls in."""
    index = math.floor(now / window_s)
    fraction = (now - index * window_s) / window_s
    return Window(index, min(max(fraction, 0.0), math.nextafter(1.0, 0.0)))


def counter_key(account_id: int, index: int) -> str:
    return f"{KEY_PREFIX}:{account_id}:{index}"


def counter_ttl_ms(window_s: float = WINDOW_S) -> int:
    """A counter is read during its own window and the next one; one more second of slack."""
    return math.ceil(2 * window_s * 1000) + 1000


def decide(
    *, limit: int, current: int, previous: int, fraction: float, window_s: float = WINDOW_S
) -> RateDecision:
    """Allow or refuse the request counted in `current` (see the module docstring)."""
    if limit < 1:
        raise ValueError("a rate limit is at least 1 request per window (0 means no limit)")
    estimate = previous * (1.0 - fraction) + current
    if estimate <= limit:
        return RateDecision(True, estimate, limit, 0)
    wait = _seconds_until_allowed(
        limit=limit, current=current, previous=previous, fraction=fraction, window_s=window_s
    )
    # Rounded up, less a hair of float noise ((0.8 - 0.5) * 10 is 3.0000000000000004).
    seconds = max(1, math.ceil(wait - 1e-9))
    return RateDecision(False, estimate, limit, seconds, max(1, math.ceil(wait * 1000 - 1e-6)))


def _seconds_until_allowed(
    *, limit: int, current: int, previous: int, fraction: float, window_s: float
) -> float:
    """How long until one more request (counted too) would be allowed, if none came meanwhile."""
    room = limit - 1  # what the counts already made may weigh when the next request comes
    rest_of_window = (1.0 - fraction) * window_s
    if current <= room and previous > 0:
        # Still in this window: the previous window's weight shrinks linearly to zero.
        # previous * (1 - f) + current <= room  <=>  f >= 1 - (room - current) / previous
        f_needed = 1.0 - (room - current) / previous
        if f_needed < 1.0:
            return max(0.0, (f_needed - fraction) * window_s)
    # In the next window this window's count is the previous one: current * (1 - f') <= room.
    f_next = 0.0 if current <= room else 1.0 - room / current
    return rest_of_window + f_next * window_s
