"""The last failover drill of each scenario, as the drills publish it and the nodes export it.

Drills run from the operator's command line (deploy/drills), not in a node, so their results
travel through etcd, which every site already reads: one key (kernel.names.DRILL_RESULTS_KEY)
holds a JSON object from scenario name to its last result, updated by compare-and-swap
(`with_result`). Each node reads it every DRILL_READ_INTERVAL_S and exports it
(`drill_families`). The value is checked on reading: anything malformed is skipped, and the
number and names of scenarios are bounded, so the key cannot blow up the nodes' series.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Final

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger("rocars.monitoring")
DRILL_READ_INTERVAL_S: Final = 30.0
MAX_SCENARIOS: Final = 32
_SCENARIO = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


class DrillRecord(BaseModel):
    """One drill's result: `rto_seconds` None when writes never came back."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    rto_seconds: float | None = Field(ge=0)
    rpo_records: int = Field(ge=0)
    passed: bool
    finished_at: float = Field(ge=0)  # Unix time
    direction: str = ""


def with_result(raw: bytes | None, scenario: str, record: DrillRecord) -> bytes:
    """The key's new value: what it held (`raw`, None when absent) with `scenario`'s result
    replaced by `record`. Entries that do not parse are dropped."""
    if not _SCENARIO.fullmatch(scenario):
        raise ValueError(f"scenario: not a drill name: {scenario!r}")
    results = {name: r.model_dump() for name, r in read_results(raw).items()}
    results[scenario] = record.model_dump()
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
