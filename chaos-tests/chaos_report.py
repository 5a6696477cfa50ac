"""Each chaos scenario's figures as one JSON record (#14 item 5), for `make chaos`'s summary
(deploy/chaos_summary.py renders the folder as a Markdown table).

Written only when ROCARS_CHAOS_REPORT_DIR names a folder; a plain pytest run writes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deploy.chaos_summary import OUTCOMES, ChaosRecord
from deploy.drills.checker import CheckReport

REPORT_DIR_ENV = "ROCARS_CHAOS_REPORT_DIR"


def as_record(
    scenario: str,
    report: CheckReport,
    *,
    faults: Mapping[str, int] | None = None,
    notes: Mapping[str, Any] | None = None,
) -> ChaosRecord:
    """The record of one checked run; a single-fault scenario's fault is the scenario itself."""
    return ChaosRecord(
        scenario=scenario,
        faults=dict(faults if faults is not None else {scenario: 1}),
        operations={o: sum(by.get(o, 0) for by in report.operations.values()) for o in OUTCOMES},
        anomalies=len(report.anomalies),
        worst_gap_s=round(report.worst_gap(), 3),
        notes=dict(notes or {}),
    )


def record(
    scenario: str,
    report: CheckReport,
    *,
    faults: Mapping[str, int] | None = None,
    notes: Mapping[str, Any] | None = None,
) -> Path | None:
    """Write the run's record into $ROCARS_CHAOS_REPORT_DIR (nothing when it is unset)."""
    folder = os.environ.get(REPORT_DIR_ENV)
    if not folder:
        return None
    rec = as_record(scenario, report, faults=faults, notes=notes)
    path: Path = Path(folder) / rec.file_name()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rec.to_json())
    return path
