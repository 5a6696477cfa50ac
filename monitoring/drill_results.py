"""The last failover drill of each scenario, as the drills publish it and the nodes export it.

Drills run from the operator's command line (deploy/drills), not in a node, so their results
travel through etcd, which every site already reads: one key (kernel.names.DRILL_RESULTS_KEY)
holds a JSON object from scenario name to its last result, updated by compare-and-swap
(`with_result`). Each node reads it every DRILL_READ_INTERVAL_S and exports it
(`drill_families`). The value is checked on reading: anything malformed is skipped, and the
number and names of scenarios are bounded, so the key cannot blow up the nodes' series.

A record may carry a compact timeline (`DrillTimeline`, #15 item 6: the SRE page draws it):
the writes acknowledged per bucket of the drill, the writes held up by errors, the fault, the
longest write gap (the RTO) and a few events, at most MAX_BUCKETS buckets (wider buckets for
a longer drill), so a record stays around a kilobyte. Records without one (published before
it existed) still read, and a malformed timeline is dropped without dropping its record.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from typing import Annotated, Any, Final

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

log = logging.getLogger("rocars.monitoring")
DRILL_READ_INTERVAL_S: Final = 30.0
MAX_SCENARIOS: Final = 32
_SCENARIO = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


MAX_BUCKETS: Final = 120
MAX_EVENTS: Final = 12
MAX_EVENT_CHARS: Final = 80
Count = Annotated[int, Field(ge=0)]
# Events a drill logs once per failed request: the counts say it better than a list of them.
_NOISY_EVENTS: Final = ("write failed",)


class TimelineEvent(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    t: float = Field(ge=0)  # seconds since the drill started
    what: str = Field(max_length=MAX_EVENT_CHARS)


class DrillTimeline(BaseModel):
    """What happened during one drill, in seconds since it started: bucket i covers
    [i * step_s, (i + 1) * step_s). `ok[i]` writes were acknowledged in it; `retrying[i]`
    writes were in flight during it that met an error and were retried (or given up)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    step_s: int = Field(ge=1, le=3600)
    fault_s: float | None = Field(default=None, ge=0)
    # The longest stretch without an acknowledgement that spans the fault (the RTO).
    gap: tuple[float, float] | None = None
    ok: list[Count] = Field(min_length=1, max_length=MAX_BUCKETS)
    retrying: list[Count] = Field(min_length=1, max_length=MAX_BUCKETS)
    events: list[TimelineEvent] = Field(default_factory=list, max_length=MAX_EVENTS)

    @model_validator(mode="after")
    def _consistent(self) -> DrillTimeline:
        if len(self.retrying) != len(self.ok):
            raise ValueError("ok and retrying must have one count per bucket each")
        if self.gap is not None and not 0 <= self.gap[0] <= self.gap[1]:
            raise ValueError("gap must be (from, to) with 0 <= from <= to")
        return self

    @property
    def end_s(self) -> float:
        return float(len(self.ok) * self.step_s)


def build_timeline(
    acked: Sequence[float],
    calls: Sequence[tuple[float, float, bool]],
    *,
    end_s: float,
    fault_s: float | None,
    gap: tuple[float, float] | None,
    events: Sequence[tuple[float, str]] = (),
) -> DrillTimeline:
    """The timeline of a drill that ran `end_s` seconds: `acked` are the acknowledgement
    times, `calls` each write call's (start, end, met an error), `events` the drill's own
    (t, what) lines (those repeated per failed request are left out)."""
    end_s = max(end_s, 0.001)
    step = max(1, math.ceil(end_s / MAX_BUCKETS))
    n = min(MAX_BUCKETS, max(1, math.ceil(end_s / step)))

    def bucket(t: float) -> int:
        return min(n - 1, max(0, int(t // step)))

    ok = [0] * n
    for t in acked:
        ok[bucket(t)] += 1
    retrying = [0] * n
    for start, end, errored in calls:
        if errored:
            for i in range(bucket(start), bucket(end) + 1):
                retrying[i] += 1
    kept = [
        TimelineEvent(t=round(max(t, 0.0), 3), what=what[:MAX_EVENT_CHARS])
        for t, what in events
        if not what.startswith(_NOISY_EVENTS)
    ][:MAX_EVENTS]
    return DrillTimeline(
        step_s=step,
        fault_s=None if fault_s is None else round(fault_s, 3),
        gap=None if gap is None else (round(gap[0], 3), round(gap[1], 3)),
        ok=ok,
        retrying=retrying,
        events=kept,
    )


class DrillRecord(BaseModel):
    """One drill's result: `rto_seconds` None when writes never came back; `timeline` None
    for records published without one."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    rto_seconds: float | None = Field(ge=0)
    rpo_records: int = Field(ge=0)
    passed: bool
    finished_at: float = Field(ge=0)  # Unix time
    direction: str = ""
    timeline: DrillTimeline | None = None

    @field_validator("timeline", mode="wrap")
    @classmethod
    def _timeline_or_none(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            log.warning("a drill timeline in etcd is malformed; shown without it")
            return None

    def stored(self) -> dict[str, Any]:
        """The record as the key holds it (no `timeline` member when there is none)."""
        return self.model_dump(exclude={"timeline"} if self.timeline is None else None)


def with_result(raw: bytes | None, scenario: str, record: DrillRecord) -> bytes:
    """The key's new value: what it held (`raw`, None when absent) with `scenario`'s result
    replaced by `record`. Entries that do not parse are dropped."""
    if not _SCENARIO.fullmatch(scenario):
        raise ValueError(f"scenario: not a drill name: {scenario!r}")
    results = {name: r.stored() for name, r in read_results(raw).items()}
    results[scenario] = record.stored()
    return json.dumps(results, sort_keys=True).encode()


def read_results(raw: bytes | None) -> dict[str, DrillRecord]:
    """The results in the key's value, the valid ones only (at most MAX_SCENARIOS)."""
    if not raw:
        return {}
    try:
        doc: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        log.warning("drill results in etcd are not JSON; ignored")
        return {}
    if not isinstance(doc, dict):
        return {}
    out: dict[str, DrillRecord] = {}
    for name, value in sorted(doc.items())[:MAX_SCENARIOS]:
        if not isinstance(name, str) or not _SCENARIO.fullmatch(name):
            continue
        try:
            out[name] = DrillRecord.model_validate(value)
        except ValidationError:
            log.warning("drill result of %r in etcd is malformed; ignored", name)
    return out


def drill_families(results: dict[str, DrillRecord]) -> list[Metric]:
    """rocars_drill_rto_seconds, _rpo_records, _passed and _last_run_timestamp_seconds, one
    series per scenario; nothing when no drill was ever published."""
    if not results:
        return []
    rto = GaugeMetricFamily(
        "rocars_drill_rto_seconds",
        "Client-side recovery time of the last drill of the scenario (longest write gap)",
        labels=["scenario"],
    )
    rpo = GaugeMetricFamily(
        "rocars_drill_rpo_records",
        "Acknowledged writes missing after the last drill of the scenario (must be 0)",
        labels=["scenario"],
    )
    passed = GaugeMetricFamily(
        "rocars_drill_passed",
        "1 when the last drill of the scenario passed (RTO within budget, RPO 0, no duplicates)",
        labels=["scenario"],
    )
    when = GaugeMetricFamily(
        "rocars_drill_last_run_timestamp_seconds",
        "Unix time the last drill of the scenario finished",
        labels=["scenario"],
    )
    for name, r in results.items():
        if r.rto_seconds is not None:
            rto.add_metric([name], r.rto_seconds)
        rpo.add_metric([name], r.rpo_records)
        passed.add_metric([name], 1 if r.passed else 0)
        when.add_metric([name], r.finished_at)
    return [f for f in (rto, rpo, passed, when) if f.samples]
