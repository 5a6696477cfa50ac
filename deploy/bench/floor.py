"""Target 2's latencies apart from the machine's capacity (#11).

The open loop offers target 2's whole mix (500 submissions and 200 arrival decisions a second),
which asks for about 3 cores of these 2 (README, "Capacity and scale-out"): its latencies are a
saturated machine's. Two readings say what the latencies are when capacity is not the limit:

- **Steps**: the same mix at fractions of its rates (a tenth, three tenths, six tenths), each
  alone, latency counted from the scheduled send time as in the open loop. `highest_held` is
  the largest fraction at which target 2's bounds held, with every smaller one holding too: the
  offer this machine carries within target 2's latencies, or None when even a tenth does not.
- **The commit floor**: one client's synchronous commits of a single WAL record, one after
  another, straight to the primary (no API, no HAProxy), and the same with
  `synchronous_commit = local`. Every acknowledged write waits for the first (promise I1,
  DESIGN.md), so an arrival's p99 cannot be below it; the difference is what waiting for the
  standby's flush costs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from deploy.bench.report import TARGETS
from deploy.bench.stats import Latency

FRACTIONS = (0.1, 0.3, 0.6)
# Target 2's bounds, each kind's p99 in milliseconds, as the report's targets state them.
P99_BOUNDS_MS: Mapping[str, float] = {
    kind: t.limit
    for t in TARGETS
    for kind in ("submission", "arrival")
    if t.path == f"open_loop.kinds.{kind}.latency.p99"
}
COMMITS = 300
# A transactional logical message is a WAL record with a transaction id: its COMMIT waits for
# the synchronous standby like any write's, and it needs no table of its own.
# The local variant sets synchronous_commit in the same statement, so both make the same round
# trips.
_ONE_RECORD = "SELECT pg_logical_emit_message(true, 'rocars-bench', '')"
_ONE_RECORD_LOCAL = (
    "SELECT set_config('synchronous_commit', 'local', true),"
    " pg_logical_emit_message(true, 'rocars-bench', '')"
)


@dataclass(frozen=True)
class Judged:
    """One step's verdict against target 2: held, or the reasons it did not."""

    held: bool
    why_not: tuple[str, ...]


def judge(kinds: Mapping[str, Mapping[str, Any]]) -> Judged:
    """Target 2 against one step's summaries by kind (schedule.KindSummary.to_dict): each
    bounded kind answered, its p99 within bound, and nothing but 2xx."""
    why: list[str] = []
    for kind, bound in P99_BOUNDS_MS.items():
        summary = kinds.get(kind)
        if summary is None or summary["ok"] == 0:
            why.append(f"no {kind} answered")
            continue
        p99 = float(summary["latency"]["p99"])
        if p99 > bound:
            why.append(f"{kind} p99 {p99:.1f} ms > {bound:g}")
    errors = sum(int(s["offered"]) - int(s["ok"]) for s in kinds.values())
    if errors:
        why.append(f"{errors} not answered 2xx")
    return Judged(not why, tuple(why))


def highest_held(steps: Sequence[tuple[float, Judged]]) -> float | None:
    """The largest fraction that held with every smaller one holding too (a step that held
    above one that failed is noise, not capacity); None when the smallest failed."""
    best = None
    for fraction, verdict in sorted(steps, key=lambda s: s[0]):
        if not verdict.held:
            break
        best = fraction
    return best


async def commit_latency(conn: psycopg.AsyncConnection[Any], n: int, *, sync: bool) -> Latency:
    """`n` one-record transactions on `conn`, one after another, as the client sees each:
    `sync` False commits with synchronous_commit = local (the primary's own flush only)."""
    seconds = []
    for _ in range(n):
        start = time.perf_counter()
        async with conn.transaction():
            await conn.execute(_ONE_RECORD if sync else _ONE_RECORD_LOCAL)
        seconds.append(time.perf_counter() - start)
    return Latency.of(seconds)
