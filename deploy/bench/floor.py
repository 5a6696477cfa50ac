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
- **An arrival alone, from curl**: arrival decisions through HAProxy one after another on one
  keep-alive connection, sent by curl (C, not this bench's Python generator), paced at the
  tenth step's arrival rate and then back to back. The first says whether the generator is
  what the steps' latencies measure (it is not, if the two agree); the second what a quiet
  machine adds (README, day 9: the same arrival costs the node 1.7 times the CPU when paced).
  A serial probe, not an open loop: each request is timed from its own start, which at this
  pace never waits.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from deploy.bench.openloop import Target
from deploy.bench.report import TARGETS
from deploy.bench.stats import Latency
from kernel.errors import RocarsError

FRACTIONS = (0.1, 0.3, 0.6)
# Target 2's bounds, each kind's p99 in milliseconds, as the report's targets state them.
P99_BOUNDS_MS: Mapping[str, float] = {
    kind: t.limit
    for t in TARGETS
    for kind in ("submission", "arrival")
    if t.path == f"open_loop.kinds.{kind}.latency.p99"
}
COMMITS = 300
ARRIVALS_ALONE = 200
# The tenth step's arrival rate (target 2's 200/s): the quietest pace target 2 is judged at.
ALONE_RATE = 20.0
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


def _quoted(text: str) -> str:
    """`text` as a double-quoted string of a curl config file."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Per transfer: its status, its time from its own start to the last byte (s), and how many new
# connections it opened (0 once the first one is kept alive).
CURL_WRITE_OUT = r"%{http_code} %{time_total} %{num_connects}\n"


def curl_arrivals(target: Target, n: int) -> str:
    """A curl config (`curl -K -`) of `n` arrival decisions at the target's LBCP, trucks in
    turn, each with an Idempotency-Key of its own. Options curl resets at each `next` (the CA,
    the headers) are repeated per transfer. It holds the officer's key: fed on stdin, never
    written to a file."""
    blocks = []
    for i in range(n):
        vrn = target.vrns[i % len(target.vrns)]
        opts = [
            ("url", f"{target.api}/v1/lbcp/{target.lbcp}/arrivals"),
            ("data", f'{{"vrn":"{vrn}"}}'),
            ("header", f"Authorization: Bearer {target.officer_key}"),
            ("header", "Content-Type: application/json"),
            ("header", f"Idempotency-Key: bench-{target.run}-curl-{i}"),
            ("output", "/dev/null"),
            ("max-time", "5"),
            ("write-out", CURL_WRITE_OUT),
        ]
        if target.ca is not None:
            opts.append(("cacert", target.ca))
        blocks.append("".join(f"{k} = {_quoted(v)}\n" for k, v in opts))
    return "next\n".join(blocks)


@dataclass(frozen=True)
class Alone:
    """A serial probe's outcome: latency of its 2xx answers, every status, connections opened."""

    latency: Latency
    statuses: dict[str, int]
    connections: int

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.latency.to_dict(),
            "statuses": self.statuses,
            "connections": self.connections,
        }


def parse_curl(out: str) -> Alone:
    """curl's write-out lines (CURL_WRITE_OUT), one per transfer; status 000 is a transfer
    that got no answer (refused, timed out)."""
    seconds, statuses, connections = [], Counter[str](), 0
    for line in out.splitlines():
        parts = line.split()
        if len(parts) != 3:
            raise RocarsError(f"bench: unexpected line from curl: {line!r}")
        status, total, connects = parts
        statuses[status] += 1
        connections += int(connects)
        if status.startswith("2"):
            seconds.append(float(total))
    return Alone(Latency.of(seconds), dict(sorted(statuses.items())), connections)


def arrivals_alone(target: Target, n: int, rate: float | None) -> Alone:
    """`n` arrivals from curl on one connection, at most `rate` a second (None: back to back)."""
    argv = ["curl", "--silent", "--show-error", "--config", "-"]
    if rate is not None:
        argv[1:1] = ["--rate", f"{round(rate * 60)}/m"]  # per minute: --rate takes integers
    done = subprocess.run(
        argv,
        input=curl_arrivals(target, n),
        capture_output=True,
        text=True,
        timeout=60 + n * (6 if rate is None else 1 / rate + 6),
        check=False,
    )
    if not done.stdout.strip():
        raise RocarsError(f"bench: curl sent no arrival: {done.stderr.strip()[-300:]}")
    return parse_curl(done.stdout)
