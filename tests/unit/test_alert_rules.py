"""The Prometheus rules in monitoring/rules (#13 item 3): promtool accepts them, every alert and
recording rule is exercised by a `promtool test rules` file, and every alert says how urgent it
is and what to do. promtool is Debian's (package `prometheus`, installed by deploy/install.sh);
it only reads files, so this stays a unit test."""

from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

RULES_DIR = Path(__file__).resolve().parents[2] / "monitoring" / "rules"
RULE_FILES = [RULES_DIR / "recording.yml", RULES_DIR / "alerts.yml"]
TEST_FILES = sorted((RULES_DIR / "tests").glob("*.yml"))
SEVERITIES = {"page", "ticket"}
PROMTOOL_TIMEOUT_S = 300


def _promtool_failure(*args: str | Path) -> str | None:
    """What promtool said when it failed, else None."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return "promtool not found: install Debian's `prometheus` (deploy/install.sh)"
    done = subprocess.run(
        [promtool, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_S,
        check=False,
    )
    if done.returncode == 0:
        return None
    return f"promtool {' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}"


def _promtool(*args: str) -> None:
    if (failure := _promtool_failure(*args)) is not None:
        pytest.fail(failure)


def _rules(kind: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out += [rule for rule in group["rules"] if kind in rule]
    return out


def _test_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in TEST_FILES:
        groups += yaml.safe_load(path.read_text())["tests"]
    return groups


def test_promtool_accepts_the_rule_files() -> None:
    """#13 item 3: `promtool check rules` accepts recording.yml and alerts.yml as Prometheus 2
    rule files (the Prometheus that `make run` starts loads them as they are)."""
    _promtool("check", "rules", *map(str, RULE_FILES))


def test_promtool_unit_tests_pass() -> None:
    """#13 item 3: every `promtool test rules` file in monitoring/rules/tests passes: each alert
    fires on its input series with the expected labels and annotations and stays quiet on the
    others, the burn-rate alerts fire for each window pair and not for a short spike, and the
    recording rules give the expected SLO ratios."""
    assert TEST_FILES, "no promtool test files in monitoring/rules/tests"
    # One promtool per file, two at a time (the machine's cores): 27 s one after another.
    with ThreadPoolExecutor(max_workers=2) as pool:
        said = pool.map(lambda path: _promtool_failure("test", "rules", path), TEST_FILES)
        failures = [f for f in said if f]
    assert not failures, "\n".join(failures)


def test_every_alert_says_how_urgent_and_what_to_do() -> None:
    """#13 item 3: every alert has a `severity` Alertmanager can route on (page or ticket), a
    one-line `summary`, and a runbook-style `description` (what it means, what to check)."""
    alerts = _rules("alert")
    assert alerts
    for rule in alerts:
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = rule.get("annotations", {})
        summary, description = annotations.get("summary", ""), annotations.get("description", "")
        assert summary.strip(), name
        assert "\n" not in summary.strip(), name
        assert len(description.split()) >= 20, f"{name}: the description is no runbook"


def test_every_alert_has_a_firing_and_a_quiet_promtool_case() -> None:
    """#13 item 3: a new alert without tests fails here: every alert name has at least one
    promtool case where it fires and one where it must not."""
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in _test_groups():
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in _rules("alert")}
    assert not names - firing, f"never tested firing: {sorted(names - firing)}"
    assert not names - quiet, f"never tested quiet: {sorted(names - quiet)}"
    assert not (firing | quiet) - names, f"tests name no rule: {sorted((firing | quiet) - names)}"


def test_every_recording_rule_is_checked_by_a_promql_case() -> None:
    """#13 item 3: every recording rule's output is compared with expected samples in a
    promql_expr_test, so an SLO ratio cannot drift unnoticed."""
    exprs = " ".join(
        case["expr"] for group in _test_groups() for case in group.get("promql_expr_test", [])
    )
    unchecked = [
        rule["record"]
        for rule in _rules("record")
        if not re.search(re.escape(rule["record"]) + r"(?![\w:])", exprs)
    ]
    assert not unchecked, f"recording rules without a promql_expr_test: {unchecked}"
