"""The last hour of this node's writes, in memory, for the SRE page's availability and latency
plot (#15 item 6): a fixed ring of BUCKET_S buckets, each counting the writes answered in it by
what they came to and how long the successful ones took (a small fixed histogram, for a p95).

Why in the node and not from Prometheus: the page must draw while Prometheus is down or not
deployed at all (the monitoring stack is optional), and the node already sees every write
answer (node.api.outcomes.counted, the write handlers' one metrics hook). The cost per write is
a few integer operations; the memory is fixed (SPAN_S / BUCKET_S buckets). Each node keeps its
own history: the page says which node answered.

Outcomes (monitoring.outcomes) fall in three classes: `ok` (accepted, replayed), `refused`
(the request's own fault: invalid, denied, not found, conflict, rate limited) and `failed`
(unavailable, error, and cancelled: a client that gave up waiting). Availability is
ok / (ok + failed): a refusal says nothing about whether the system could write.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from monitoring.outcomes import Outcome

BUCKET_S: Final = 10
SPAN_S: Final = 3600
# Upper bounds (seconds) of the latency histogram; one more slot counts everything above.
LATENCY_BOUNDS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_OK: Final = frozenset({"accepted", "replayed"})
_FAILED: Final = frozenset({"unavailable", "error", "cancelled"})


@dataclass(frozen=True)
class WriteBucket:
    """One bucket's writes: `start` is Unix time; latencies are of the `ok` writes only."""

    start: float
    ok: int
    refused: int
    failed: int
    mean_s: float | None
    max_s: float | None
    p95_s: float | None  # the histogram bound the 95th percentile falls under

    @property
    def answered(self) -> int:
        return self.ok + self.refused + self.failed

    @property
    def availability(self) -> float | None:
        """ok / (ok + failed); None when no write could tell."""
        judged = self.ok + self.failed
        return None if judged == 0 else self.ok / judged


def _quantile(hist: list[int], q: float) -> float | None:
    total = sum(hist)
    if total == 0:
        return None
    rank, seen = q * total, 0
    for i, n in enumerate(hist):
        seen += n
        if seen >= rank:
            return LATENCY_BOUNDS[i] if i < len(LATENCY_BOUNDS) else float("inf")
    return float("inf")  # pragma: no cover  (the loop always reaches the total)


class WriteHistory:
    """The ring. `note` is called once per answered write; `buckets` reads the last hour."""

    def __init__(
        self,
        *,
        bucket_s: int = BUCKET_S,
        span_s: int = SPAN_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if bucket_s <= 0 or span_s < bucket_s:
            raise ValueError("bucket_s must be positive and at most span_s")
        self.bucket_s = bucket_s
        self.size = span_s // bucket_s
        self._clock = clock
        n = self.size
        # Slot i holds bucket number _epoch[i] (Unix time // bucket_s); -1: never used.
        self._epoch = [-1] * n
        self._ok = [0] * n
        self._refused = [0] * n
        self._failed = [0] * n
        self._sum = [0.0] * n
        self._max = [0.0] * n
        self._hist = [[0] * (len(LATENCY_BOUNDS) + 1) for _ in range(n)]

    def _slot(self, epoch: int) -> int:
        i = epoch % self.size
        if self._epoch[i] != epoch:  # a bucket an hour old (or never used): start it afresh
            self._epoch[i] = epoch
            self._ok[i] = self._refused[i] = self._failed[i] = 0
            self._sum[i] = self._max[i] = 0.0
            self._hist[i] = [0] * (len(LATENCY_BOUNDS) + 1)
        return i

    def note(self, outcome: Outcome, seconds: float) -> None:
        i = self._slot(int(self._clock() // self.bucket_s))
        if outcome in _OK:
            self._ok[i] += 1
            self._sum[i] += seconds
            self._max[i] = max(self._max[i], seconds)
            self._hist[i][bisect_left(LATENCY_BOUNDS, seconds)] += 1
        elif outcome in _FAILED:
            self._failed[i] += 1
        else:
            self._refused[i] += 1

    def buckets(self) -> list[WriteBucket]:
        """Every bucket of the last SPAN_S, oldest first, the current one last; a bucket
        without writes has zero counts and no latencies."""
        now = int(self._clock() // self.bucket_s)
        out = []
        for epoch in range(now - self.size + 1, now + 1):
            i = epoch % self.size
            start = float(epoch * self.bucket_s)
            if self._epoch[i] != epoch:
                out.append(WriteBucket(start, 0, 0, 0, None, None, None))
                continue
            ok = self._ok[i]
            out.append(
                WriteBucket(
                    start=start,
                    ok=ok,
                    refused=self._refused[i],
                    failed=self._failed[i],
                    mean_s=self._sum[i] / ok if ok else None,
                    max_s=self._max[i] if ok else None,
                    p95_s=_quantile(self._hist[i], 0.95),
                )
            )
        return out
