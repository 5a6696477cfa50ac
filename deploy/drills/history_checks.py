"""The checks that need only the history (#14 item 2); `deploy.drills.checker` adds those that
compare it with the database. Pure: plain values in, anomalies out.

- I2, answers: two `ok` operations under the same account and Idempotency-Key got different
  answers (a replay must return the first answer).
- I3, one writer. The rule: a write acknowledged by site S during [invoke, completion] is an
  anomaly when role samples prove that another site's member held the leader key for the whole
  of that interval, i.e. the last sample at or before the invoke and the first sample at or
  after the completion name the same other member with the same key revision, and so does every
  sample between them. Patroni writes the key only when a member takes the lock, so an
  unchanged revision means nobody took it in between, however briefly (`role_facts`); a gap in
  the samples, an unknown leader or a changed revision proves nothing, and is not flagged.
  A write acknowledged with the node's own role header saying anything but `active` is a
  warning, not an anomaly: the role may change between the commit (which the database fences)
  and the answer.
- Amendments linearizable per consignment: no two acknowledged amendments of one CCRN report
  the same version, and an amendment acknowledged before another was invoked reports a lower
  version (the submission counts as version 1, acknowledged when it completed).
- Unavailability windows: stretches longer than `gap_s` with writes in flight and none
  acknowledged (the union of the operations' [invoke, completion] intervals, cut at every
  acknowledgement).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from deploy.drills.history import History, Operation, RoleSample
from kernel.names import member_site

ACTIVE = "active"


@dataclass(frozen=True)
class Anomaly:
    kind: str  # e.g. "lost", "duplicate", "ack-by-non-leader"
    promise: str  # I1, I2, I3 or "linearizable"
    op: int | None  # the operation it is about, when one
    detail: str


@dataclass(frozen=True)
class Window:
    """A stretch without any acknowledged write while writes were being attempted."""

    start: float  # history time: an acknowledgement, or an invoke with none in flight before
    end: float  # the next acknowledgement, or when the last operation in flight ended
    attempts: int  # operations invoked inside it
    unresolved: int  # operations that ended fail or info inside it

    @property
    def duration(self) -> float:
        return self.end - self.start


def without_mode(answer: Any) -> Any:
    """An answer as stored: manual mode adds `mode: manual` to what the client is told."""
    if isinstance(answer, dict) and "mode" in answer:
        return {k: v for k, v in answer.items() if k != "mode"}
    return answer


def same_key_answers(ops: Iterable[Operation]) -> list[Anomaly]:
    first: dict[tuple[int, str], Operation] = {}
    out = []
    for op in ops:
        if op.type != "ok" or op.invoke.key is None:
            continue
        ident = (op.invoke.account, op.invoke.key)
        seen = first.setdefault(ident, op)
        if seen is not op and without_mode(seen.result) != without_mode(op.result):
            out.append(
                Anomaly(
                    "key-answered-differently",
                    "I2",
                    op.id,
                    f"key {op.invoke.key!r} answered op {seen.id} and op {op.id} differently",
                )
            )
    return out


def _member_holding_throughout(
    samples: Sequence[RoleSample], times: Sequence[float], start: float, end: float
) -> str | None:
    """The member that provably held the leader key over [start, end], by the rule above."""
    lo = bisect.bisect_right(times, start) - 1  # last sample at or before start
    hi = bisect.bisect_left(times, end)  # first sample at or after end
    if lo < 0 or hi >= len(samples):
        return None
    span = samples[lo : hi + 1]
    head = span[0]
    if head.leader is None or head.error is not None:
        return None
    for s in span:
        if s.error is not None or s.leader != head.leader or s.revision != head.revision:
            return None
    return head.leader


def one_writer(ops: Iterable[Operation], samples: Sequence[RoleSample]) -> list[Anomaly]:
    times = [s.t for s in samples]
    out = []
    for op in ops:
        done = op.completion
        if op.type != "ok" or done is None or done.node is None:
            continue
        holder = _member_holding_throughout(samples, times, op.start, op.end)
        site = member_site(holder)
        if holder is not None and site is not None and site != done.node:
            out.append(
                Anomaly(
                    "ack-by-non-leader",
                    "I3",
                    op.id,
                    f"site {done.node} acknowledged {op.kind} op {op.id} while {holder} held"
                    " the leader key throughout",
                )
            )
    return out


def role_header_warnings(ops: Iterable[Operation]) -> list[str]:
    return [
        f"op {op.id} ({op.kind}) acknowledged by site {op.completion.node} saying role"
        f" {op.completion.role!r}"
        for op in ops
        if op.type == "ok"
        and op.completion is not None
        and op.completion.role is not None
        and op.completion.role != ACTIVE
    ]


@dataclass(frozen=True)
class _Version:
    op: int
    start: float
    end: float
    version: int
    key: str | None


def acknowledged_versions(ops: Iterable[Operation]) -> dict[str, list[_Version]]:
    """Per CCRN, every acknowledged version: submissions (1) and amendments (their answer's)."""
    out: dict[str, list[_Version]] = defaultdict(list)
    for op in ops:
        r = op.result
        if op.type != "ok" or not isinstance(r, dict):
            continue
        if op.kind in ("submit", "amend") and isinstance(r.get("ccrn"), str):
            version = r.get("version")
            if isinstance(version, int):
                out[r["ccrn"]].append(_Version(op.id, op.start, op.end, version, op.invoke.key))
        elif op.kind == "batch":
            for item in r.get("results") or ():
                if isinstance(item, dict) and isinstance(item.get("ccrn"), str):
                    out[item["ccrn"]].append(_Version(op.id, op.start, op.end, 1, op.invoke.key))
    return out


def linearizable_amendments(ops: Iterable[Operation]) -> list[Anomaly]:
    out = []
    for ccrn, versions in acknowledged_versions(ops).items():
        by_version: dict[int, _Version] = {}
        for v in versions:
            other = by_version.setdefault(v.version, v)
            if other is not v and other.key != v.key:
                out.append(
                    Anomaly(
                        "version-duplicated",
                        "linearizable",
                        v.op,
                        f"{ccrn}: ops {other.op} and {v.op} both acknowledged version {v.version}",
                    )
                )
        # Sweep by invoke time, keeping the highest version acknowledged before it.
        by_end = sorted(versions, key=lambda v: v.end)
        best: _Version | None = None
        i = 0
        for v in sorted(versions, key=lambda v: v.start):
            while i < len(by_end) and by_end[i].end < v.start:
                if best is None or by_end[i].version > best.version:
                    best = by_end[i]
                i += 1
            # A replay under the same key is the same write, answered with the same version.
            if best is not None and (
                v.version < best.version or (v.version == best.version and v.key != best.key)
            ):
                out.append(
                    Anomaly(
                        "version-not-increasing",
                        "linearizable",
                        v.op,
                        f"{ccrn}: op {v.op} acknowledged version {v.version} though op {best.op}"
                        f" had acknowledged version {best.version} before it was invoked",
                    )
                )
    return out


def unavailability(ops: Sequence[Operation], *, gap_s: float = 1.0) -> list[Window]:
    """Stretches longer than `gap_s` during which some write was in flight and none was
    acknowledged: the time covered by operations in flight, cut at every acknowledgement."""
    if not ops:
        return []
    last = max(max(op.start for op in ops), *(op.end for op in ops if op.completion))
    spans = sorted((op.start, min(op.end, last)) for op in ops)
    covered: list[list[float]] = []
    for s, e in spans:
        if covered and s <= covered[-1][1]:
            covered[-1][1] = max(covered[-1][1], e)
        else:
            covered.append([s, e])
    acks = sorted(op.end for op in ops if op.type == "ok")
    starts = sorted(op.start for op in ops)
    ended_badly = sorted(op.end for op in ops if op.type != "ok" and op.completion)
    out = []
    for s, e in covered:
        inside = acks[bisect.bisect_right(acks, s) : bisect.bisect_left(acks, e)]
        for a, b in pairwise([s, *inside, e]):
            if b - a <= gap_s:
                continue
            attempts = bisect.bisect_left(starts, b) - bisect.bisect_left(starts, a)
            bad = bisect.bisect_right(ended_badly, b) - bisect.bisect_right(ended_badly, a)
            out.append(Window(round(a, 3), round(b, 3), attempts, bad))
    return out


def history_anomalies(history: History) -> tuple[list[Anomaly], list[str]]:
    """Every anomaly the history alone shows, and the warnings (see the module's rules)."""
    ops = history.operations()
    found = [
        *same_key_answers(ops),
        *one_writer(ops, history.samples()),
        *linearizable_amendments(ops),
    ]
    return found, role_header_warnings(ops)
