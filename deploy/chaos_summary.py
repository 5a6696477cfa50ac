"""The chaos suite's summary (#14 item 5): one JSON record per scenario or nemesis run (written
by chaos-tests/chaos_report.py into the folder named by ROCARS_CHAOS_REPORT_DIR), rendered as
one Markdown table (`make chaos` writes var/artifacts/chaos/summary.md).

    python -m deploy.chaos_summary RECORDS_DIR OUT.md
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

OUTCOMES = ("ok", "fail", "info")


@dataclass(frozen=True)
class ChaosRecord:
    """What one scenario (or nemesis run) injected and what the history checker found."""

    scenario: str
    faults: Mapping[str, int]  # fault kind -> times injected
    operations: Mapping[str, int]  # outcome (ok, fail, info) -> operations
    anomalies: int
    worst_gap_s: float  # the longest unavailability window of writes
    notes: Mapping[str, Any] = field(default_factory=dict)  # e.g. the nemesis's seed

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ChaosRecord:
        doc = json.loads(text)
        return cls(
            scenario=str(doc["scenario"]),
            faults={str(k): int(v) for k, v in doc["faults"].items()},
            operations={o: int(doc["operations"].get(o, 0)) for o in OUTCOMES},
            anomalies=int(doc["anomalies"]),
            worst_gap_s=float(doc["worst_gap_s"]),
            notes=dict(doc.get("notes") or {}),
        )

    def file_name(self) -> str:
        return f"{self.scenario}.json"


def load(folder: Path) -> list[ChaosRecord]:
    """Every record in `folder`, by scenario name."""
    records = [ChaosRecord.from_json(p.read_text()) for p in sorted(folder.glob("*.json"))]
    return sorted(records, key=lambda r: r.scenario)


def _faults(r: ChaosRecord) -> str:
    total = sum(r.faults.values())
    if list(r.faults) == [r.scenario]:
        return str(total)
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(r.faults.items()))
    return f"{total} ({kinds})" if kinds else str(total)


def _ops(counts: Mapping[str, int]) -> str:
    return " / ".join(str(counts.get(o, 0)) for o in OUTCOMES)


def render(records: Iterable[ChaosRecord]) -> str:
    """The Markdown table, one row per record and a total row."""
    rows = list(records)
    lines = [
        "# Chaos suite summary",
        "",
        "| scenario | faults | operations ok / fail / info | anomalies | worst write gap (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        seed = f" (seed {r.notes['seed']})" if "seed" in r.notes else ""
        lines.append(
            f"| {r.scenario}{seed} | {_faults(r)} | {_ops(r.operations)} | {r.anomalies} |"
            f" {r.worst_gap_s:.2f} |"
        )
    if not rows:
        lines.append("| (no scenario recorded) | | | | |")
    else:
        totals = {o: sum(r.operations.get(o, 0) for r in rows) for o in OUTCOMES}
        lines.append(
            f"| **total** | {sum(sum(r.faults.values()) for r in rows)} | {_ops(totals)} |"
            f" {sum(r.anomalies for r in rows)} | {max(r.worst_gap_s for r in rows):.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m deploy.chaos_summary RECORDS_DIR OUT.md", file=sys.stderr)
        return 2
    folder, out = Path(argv[0]), Path(argv[1])
    records = load(folder) if folder.is_dir() else []
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(records))
    print(f"{len(records)} scenarios, {sum(r.anomalies for r in records)} anomalies: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
