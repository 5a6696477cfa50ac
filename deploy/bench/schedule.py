"""The open-loop schedule and the loop that keeps it (pure but for the injected clock).

Open loop: requests are sent at fixed times whatever the answers do, and each latency counts from
the request's SCHEDULED send time. A generator that waits for a connection, or that itself falls
behind, adds that wait to the latency instead of quietly sending later (no coordinated
omission); how late it sent is kept too (`Outcome.lag`), so a generator that cannot keep up is
seen, not mistaken for a slow service.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from deploy.bench.stats import Latency, percentile

# Status of a request that got no HTTP answer (connection refused or reset, timeout).
NO_ANSWER = 0
SHED_STATUSES = (429, 503)


@dataclass(frozen=True)
class Phase:
    """`rate` requests per second of `kind` from `start` for `duration` seconds (offsets from
    the run's start)."""

    kind: str
    rate: float
    start: float
    duration: float


@dataclass(frozen=True)
class Shot:
    at: float  # seconds after the run's start
    kind: str
    seq: int  # unique within the run


def build_schedule(phases: Iterable[Phase]) -> list[Shot]:
    """Evenly spaced send times for every phase, merged in time order."""
    times: list[tuple[float, str]] = []
    for ph in phases:
        if ph.rate <= 0 or ph.duration <= 0:
            continue
        n = round(ph.rate * ph.duration)
        times.extend((ph.start + k / ph.rate, ph.kind) for k in range(n))
    times.sort(key=lambda t: t[0])
    return [Shot(at, kind, i) for i, (at, kind) in enumerate(times)]


def share(shots: Sequence[Shot], worker: int, workers: int) -> list[Shot]:
    """Worker `worker`'s part when `workers` processes send the schedule together: every
    workers-th shot, so each keeps the same spacing and the sum is the whole schedule."""
    if not 0 <= worker < workers:
        raise ValueError(f"worker must be within 0..{workers - 1}, got {worker}")
    return list(shots[worker::workers])


@dataclass(frozen=True)
class Outcome:
    kind: str
    scheduled: float  # seconds after the run's start
    lag: float  # how late the generator sent it, seconds
    latency: float  # answer time minus SCHEDULED send time, seconds
    status: int  # HTTP status, NO_ANSWER when none came
    retry_after: bool = False  # the answer carried Retry-After


# send(shot) -> (status, retry_after); it may wait for a free connection, which counts.
Send = Callable[[Shot], Awaitable[tuple[int, bool]]]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]


async def keep_schedule(
    shots: Sequence[Shot], send: Send, *, clock: Clock, sleep: Sleep, start: float
) -> list[Outcome]:
    """Send every shot at `start + shot.at` (clock time) without waiting for earlier answers,
    and return one outcome per shot once all are answered."""

    async def one(shot: Shot, due: float) -> Outcome:
        sent = clock()
        status, retry_after = await send(shot)
        return Outcome(shot.kind, shot.at, sent - due, clock() - due, status, retry_after)

    tasks: list[asyncio.Task[Outcome]] = []
    for shot in shots:
        due = start + shot.at
        wait = due - clock()
        if wait > 0:
            await sleep(wait)
        tasks.append(asyncio.ensure_future(one(shot, due)))
    return list(await asyncio.gather(*tasks))


def is_ok(status: int) -> bool:
    return 200 <= status < 300


@dataclass(frozen=True)
class KindSummary:
    """What one kind of request got over a window: counts, rates, latency, errors by status."""

    offered: int
    ok: int
    shed: int
    offered_rate: float
    achieved_rate: float  # 2xx per second, over the window or until the last 2xx if later
    latency: Latency  # of the 2xx answers, from the scheduled send time
    errors: dict[str, int]  # status (or "no answer") -> count, every non-2xx
    send_lag_p99_ms: float
    shed_with_retry_after: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "offered": self.offered,
            "ok": self.ok,
            "shed": self.shed,
            "offered_rate": round(self.offered_rate, 1),
            "achieved_rate": round(self.achieved_rate, 1),
            "latency": self.latency.to_dict(),
            "errors": dict(self.errors),
            "send_lag_p99_ms": round(self.send_lag_p99_ms, 3),
            "shed_with_retry_after": self.shed_with_retry_after,
        }


def _status_name(status: int) -> str:
    return "no answer" if status == NO_ANSWER else str(status)


def _span(ok: Sequence[Outcome], window: float) -> float:
    """Seconds over which the 2xx answers came: the window, or longer when answers came after
    it (a service that queues is not credited with the offered rate)."""
    if not ok:
        return max(window, 1e-9)
    first = min(o.scheduled for o in ok)
    last = max(o.scheduled + o.latency for o in ok)
    return max(window, last - first)


def summarize(outcomes: Sequence[Outcome], window: float) -> KindSummary:
    """One kind's outcomes over a window of `window` seconds of schedule."""
    ok = [o for o in outcomes if is_ok(o.status)]
    shed = [o for o in outcomes if o.status in SHED_STATUSES]
    errors = Counter(_status_name(o.status) for o in outcomes if not is_ok(o.status))
    lags = sorted(o.lag * 1000 for o in outcomes)
    return KindSummary(
        offered=len(outcomes),
        ok=len(ok),
        shed=len(shed),
        offered_rate=len(outcomes) / window if window > 0 else 0.0,
        achieved_rate=len(ok) / _span(ok, window),
        latency=Latency.of(o.latency for o in ok),
        errors=dict(sorted(errors.items())),
        send_lag_p99_ms=percentile(lags, 99),
        shed_with_retry_after=sum(1 for o in shed if o.retry_after),
    )


def by_kind(outcomes: Iterable[Outcome]) -> dict[str, list[Outcome]]:
    out: dict[str, list[Outcome]] = {}
    for o in outcomes:
        out.setdefault(o.kind, []).append(o)
    return out


@dataclass(frozen=True)
class Second:
    """One second of schedule: what was offered in it and what became of it."""

    t: int
    offered: int
    ok: int
    shed: int
    failed: int
    p99_ms: float  # of the 2xx answers

    def to_dict(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "offered": self.offered,
            "ok": self.ok,
            "shed": self.shed,
            "failed": self.failed,
            "p99_ms": round(self.p99_ms, 3),
        }


def timeline(outcomes: Iterable[Outcome]) -> list[Second]:
    """Outcomes grouped by the second in which they were scheduled."""
    bins: dict[int, list[Outcome]] = {}
    for o in outcomes:
        bins.setdefault(int(o.scheduled), []).append(o)
    out = []
    for t in sorted(bins):
        group = bins[t]
        ok = sorted(o.latency * 1000 for o in group if is_ok(o.status))
        shed = sum(1 for o in group if o.status in SHED_STATUSES)
        out.append(
            Second(t, len(group), len(ok), shed, len(group) - len(ok) - shed, percentile(ok, 99))
        )
    return out


def is_clean(second: Second, p99_limit_ms: float) -> bool:
    """Every request of the second answered 2xx, with their p99 within the limit."""
    return second.ok == second.offered and second.p99_ms <= p99_limit_ms


def recovery_seconds(
    seconds: Sequence[Second], drop_at: float, p99_limit_ms: float
) -> float | None:
    """Seconds from the offer's drop until every later second is clean (`is_clean`); None if
    it never got there."""
    after = [s for s in seconds if s.t >= drop_at]
    for i, s in enumerate(after):
        if all(is_clean(x, p99_limit_ms) for x in after[i:]):
            return max(0.0, s.t - drop_at)
    return None


def first_clean_seconds(
    seconds: Sequence[Second], drop_at: float, p99_limit_ms: float
) -> float | None:
    """Seconds from the offer's drop to the first clean second; None if none was."""
    for s in seconds:
        if s.t >= drop_at and is_clean(s, p99_limit_ms):
            return max(0.0, s.t - drop_at)
    return None


def unclean_seconds(
    seconds: Sequence[Second], start: float, end: float, p99_limit_ms: float
) -> int:
    """How many seconds from `start` (included) to `end` (excluded) were not clean."""
    return sum(1 for s in seconds if start <= s.t < end and not is_clean(s, p99_limit_ms))
