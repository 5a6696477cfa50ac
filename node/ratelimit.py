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

Weight (#10 item 5). A request may weigh more than 1: a batch weighs its item count. It counts
1 when it authenticates and the rest once its items are known, and is decided as a whole: its
`Retry-After` is the time until a request of the same weight fits. A weight is capped at
`limit` (`weight()`): a bigger one could never fit any window, and since refused requests count
too, a client retrying it would be refused for good and lock its whole account out. So a batch
of more than `limit` items needs a window with nothing else in it and then takes the account's
whole allowance for about a window; after `Retry-After` (at most two windows) it always fits,
if the account sent nothing else meanwhile.
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


def weight(units: int, limit: int) -> int:
    """What a request of `units` (1, or a batch's item count) is counted as: never more than
    the whole limit, so that it fits an empty window (see the module docstring)."""
    if limit < 1:
        raise ValueError("a rate limit is at least 1 request per window (0 means no limit)")
    return max(1, min(units, limit))


def decide(
    *,
    limit: int,
    current: int,
    previous: int,
    fraction: float,
    window_s: float = WINDOW_S,
    cost: int = 1,
) -> RateDecision:
    """Allow or refuse the request counted in `current` with its whole weight `cost` (see the
    module docstring); `cost` is at most `limit`."""
    if limit < 1:
        raise ValueError("a rate limit is at least 1 request per window (0 means no limit)")
    if not 1 <= cost <= limit:
        raise ValueError(f"a request weighs 1..limit ({limit}), not {cost}: see weight()")
    estimate = previous * (1.0 - fraction) + current
    # Less a hair of float noise: a client that waited exactly retry_after_ms lands where the
    # estimate is `limit` give or take 1e-13, and must pass.
    if estimate <= limit + 1e-9:
        return RateDecision(True, estimate, limit, 0)
    wait = _seconds_until_allowed(
        limit=limit,
        current=current,
        previous=previous,
        fraction=fraction,
        window_s=window_s,
        cost=cost,
    )
    # Rounded up, less a hair of float noise ((0.8 - 0.5) * 10 is 3.0000000000000004).
    seconds = max(1, math.ceil(wait - 1e-9))
    return RateDecision(False, estimate, limit, seconds, max(1, math.ceil(wait * 1000 - 1e-6)))


def _seconds_until_allowed(
    *, limit: int, current: int, previous: int, fraction: float, window_s: float, cost: int
) -> float:
    """How long until one more request of weight `cost` (counted too) would be allowed, if none
    came meanwhile."""
    room = limit - cost  # what the counts already made may weigh when the next request comes
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
