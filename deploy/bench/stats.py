"""Pure statistics of a bench run: percentiles, latency summaries, medians of rounds, the
API/pgbench ratio and the comparison with the previous run's figures."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

PERCENTILES = (50.0, 90.0, 99.0)


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile (the smallest value with at least p% of values at or below
    it), so p99 is a latency some request really had. Needs sorted `values`; 0.0 when empty."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0..100, got {p}")
    if not values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(values)))
    return float(values[rank - 1])


@dataclass(frozen=True)
class Latency:
    """Latency figures in milliseconds."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, seconds: Iterable[float]) -> Latency:
        ms = sorted(s * 1000.0 for s in seconds)
        if not ms:
            return cls(0, 0.0, 0.0, 0.0, 0.0)
        p50, p90, p99 = (percentile(ms, p) for p in PERCENTILES)
        return cls(len(ms), p50, p90, p99, ms[-1])

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else None


# Figures compared with the previous run: (dotted path in the JSON document, higher is better).
COMPARED: tuple[tuple[str, bool], ...] = (
    ("closed_loop.api.rps", True),
    ("closed_loop.pgbench.tps", True),
    ("closed_loop.ratio", True),
    ("closed_loop.wal.api.kib_per_request", False),
    ("closed_loop.cpu.api.faults_per_request.node (active)", False),
    ("floor.commit.synchronous.p99", False),
    ("floor.arrival_alone.paced.p99", False),
    ("floor.highest_held", True),
    ("open_loop.kinds.submission.latency.p99", False),
    ("open_loop.kinds.arrival.latency.p99", False),
    ("overload.accepted_latency.p99", False),
    ("overload.recovery_s", False),
    ("batch.seconds", False),
    ("memory.node_rss_max_mb", False),
    ("memory.idle_pss_mib", False),
)


def _at(doc: Mapping[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def lookup(doc: Mapping[str, Any], path: str) -> float | None:
    """The number at `path` ("a.b.c") in a nested document, None when absent or not a number."""
    node = _at(doc, path)
    if isinstance(node, bool) or not isinstance(node, int | float):
        return None
    return float(node)


def lookup_mapping(doc: Mapping[str, Any], path: str) -> Mapping[str, Any] | None:
    """The object at `path` in a nested document, None when absent or not an object."""
    node = _at(doc, path)
    return node if isinstance(node, Mapping) else None


@dataclass(frozen=True)
class Change:
    path: str
    before: float
    after: float
    higher_is_better: bool

    @property
    def relative(self) -> float | None:
        """(after - before) / before, None when before is zero."""
        return (self.after - self.before) / abs(self.before) if self.before else None

    @property
    def better(self) -> bool | None:
        """Whether the figure moved the good way (None when unchanged)."""
        if self.after == self.before:
            return None
        return (self.after > self.before) == self.higher_is_better

    def to_dict(self) -> dict[str, Any]:
        rel = self.relative
        return {
            "path": self.path,
            "before": self.before,
            "after": self.after,
            "relative": None if rel is None else round(rel, 4),
            "better": self.better,
        }


def compare(
    previous: Mapping[str, Any], current: Mapping[str, Any], fields: Sequence[tuple[str, bool]]
) -> list[Change]:
    """The figures of `fields` present in both documents, before and after."""
    out = []
    for path, higher in fields:
        before, after = lookup(previous, path), lookup(current, path)
        if before is not None and after is not None:
            out.append(Change(path, before, after, higher))
    return out
