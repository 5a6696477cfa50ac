"""`make chaos`'s summary (#14 item 5): the scenarios' JSON records (chaos-tests/chaos_report.py,
loaded by file path as chaos-tests is not a package) rendered as one Markdown table
(deploy/chaos_summary.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from deploy import chaos_summary
from deploy.chaos_summary import ChaosRecord
from deploy.drills.checker import CheckReport
from deploy.drills.history_checks import Anomaly, Window


def _load_chaos_report() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "chaos-tests" / "chaos_report.py"
    spec = importlib.util.spec_from_file_location("rocars_chaos_report", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


chaos_report = _load_chaos_report()

NEMESIS = ChaosRecord(
    scenario="nemesis",
    faults={"redis-cut": 2, "kill-node": 1},
    operations={"ok": 900, "fail": 12, "info": 3},
    anomalies=0,
    worst_gap_s=4.256,
    notes={"seed": 1414},
)
REDIS = ChaosRecord(
    scenario="redis-slow-then-unreachable",
    faults={"redis-slow-then-unreachable": 1},
    operations={"ok": 100, "fail": 2, "info": 0},
    anomalies=1,
    worst_gap_s=0.5,
)


def _rows(text: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith(("| scenario", "| ---"))
    ]


def test_one_row_per_record_with_faults_operations_anomalies_and_gap() -> None:
    """#14 item 5: each record is a row (scenario, faults with kinds for a nemesis, operations
    ok / fail / info, anomalies, worst write gap) and a total row sums them (the worst gap is
    the largest)."""
    rows = _rows(chaos_summary.render([NEMESIS, REDIS]))
    assert rows == [
        ["nemesis (seed 1414)", "3 (kill-node 1, redis-cut 2)", "900 / 12 / 3", "0", "4.26"],
        ["redis-slow-then-unreachable", "1", "100 / 2 / 0", "1", "0.50"],
        ["**total**", "4", "1000 / 14 / 3", "1", "4.26"],
    ]


def test_records_round_trip_through_a_folder_and_the_command(tmp_path: Path) -> None:
    """#14 item 5: records written as JSON files load back equal, sorted by scenario, and
    `python -m deploy.chaos_summary DIR OUT` writes the table (creating OUT's folder)."""
    for r in (REDIS, NEMESIS):
        (tmp_path / r.file_name()).write_text(r.to_json())
    assert chaos_summary.load(tmp_path) == [NEMESIS, REDIS]
    out = tmp_path / "artifacts" / "summary.md"
    assert chaos_summary.main([str(tmp_path), str(out)]) == 0
    assert out.read_text() == chaos_summary.render([NEMESIS, REDIS])


def test_no_records_says_so(tmp_path: Path) -> None:
    """A run that recorded nothing (every test failed before its check) still writes a table
    that says nothing was recorded, rather than no file."""
    out = tmp_path / "summary.md"
    assert chaos_summary.main([str(tmp_path / "missing"), str(out)]) == 0
    assert "(no scenario recorded)" in out.read_text()


def test_wrong_arguments_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Anything but two arguments prints the usage and exits 2."""
    assert chaos_summary.main(["only-one"]) == 2
    assert "usage" in capsys.readouterr().err


def test_a_check_report_becomes_a_record_only_where_the_env_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#14 item 5: a checked run's record sums operations by outcome over kinds, counts the
    anomalies and takes the longest unavailability window; a single-fault scenario counts
    itself as its one fault. It is written into $ROCARS_CHAOS_REPORT_DIR, and nowhere when
    that is unset."""
    report = CheckReport(
        operations={
            "submit": {"ok": 5, "fail": 1, "info": 0},
            "amend": {"ok": 2, "fail": 0, "info": 1},
        },
        anomalies=[Anomaly("lost", "I1", 3, "gone")],
        windows=[Window(1.0, 2.5, 3, 1), Window(4.0, 4.2, 1, 0)],
    )
    monkeypatch.delenv(chaos_report.REPORT_DIR_ENV, raising=False)
    assert chaos_report.record("redis-cut", report) is None
    monkeypatch.setenv(chaos_report.REPORT_DIR_ENV, str(tmp_path / "records"))
    path = chaos_report.record("redis-cut", report)
    assert path == tmp_path / "records" / "redis-cut.json"
    assert chaos_summary.load(tmp_path / "records") == [
        ChaosRecord("redis-cut", {"redis-cut": 1}, {"ok": 7, "fail": 1, "info": 1}, 1, 1.5)
    ]
