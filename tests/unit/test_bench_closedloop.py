"""#11 target 1: the closed-loop tools' scripts (wrk Lua, pgbench SQL) and their output."""

from __future__ import annotations

import base64
import json
import re

import pytest

from deploy.bench import closedloop
from deploy.bench.closedloop import ClosedLoop, LoopResult
from deploy.bench.stats import Latency


def _script() -> str:
    return closedloop.pgbench_script(
        account_id=42, run="ab12", sample={"ccrn": "2000000000000000", "note": "10:00 o'clock"}
    )


def test_pgbench_script_is_the_submission_statement() -> None:
    """#11 target 1: pgbench runs what one submission sends: one statement (its own
    transaction) whose clauses insert, in order, the consignment (guarded by the risk rules'
    version), its first version, the audit record and the idempotency record, and answer the
    version and the CCRNs inserted, as node.api.consignments._INSERT with submit's clauses."""
    sql = [ln for ln in _script().splitlines() if ln and not ln.startswith(("--", "\\"))]
    assert len(sql) == 1
    (statement,) = sql
    order = [
        "WITH c AS (INSERT INTO consignments",
        "WHERE (SELECT version FROM risk_rules_version)",
        "ON CONFLICT (ccrn) DO NOTHING RETURNING ccrn",
        "v AS (INSERT INTO consignment_versions",
        "a AS (INSERT INTO audit_log",
        "k AS (INSERT INTO idempotency_keys",
        "SELECT (SELECT version FROM risk_rules_version), ARRAY(SELECT ccrn FROM c);",
    ]
    at = [statement.find(part) for part in order]
    assert -1 not in at, list(zip(order, at, strict=True))
    assert at == sorted(at)


def test_pgbench_script_has_no_stray_variables() -> None:
    """#11 target 1: pgbench reads any ':word' as a variable, quoted or not; only the ones it
    sets (:r, :c) and :client_id may appear, so JSON goes in as base64."""
    names = set(re.findall(r"(?<!:):([A-Za-z0-9_]+)", _script()))
    assert names == {"r", "c", "client_id"}
    blob = re.search(r"decode\('([A-Za-z0-9+/=]+)', 'base64'\)", _script())
    assert blob is not None
    assert json.loads(base64.b64decode(blob.group(1)))["note"] == "10:00 o'clock"
    with pytest.raises(ValueError, match="letters and digits"):
        closedloop.pgbench_script(account_id=1, run="a'b", sample={})


def test_wrk_script_sends_unique_keys_and_valid_bodies() -> None:
    """#11 target 1: wrk posts the body with each account's key in turn and a unique
    Idempotency-Key per request (thread id and counter)."""
    body = b'{"a":"say \\"hi\\""}'
    lua = closedloop.wrk_script(keys=["rk_1", "rk_2"], body=body, run="ab12")
    assert 'local keys = {"rk_1", "rk_2"}' in lua
    assert f"local body = {json.dumps(body.decode())}" in lua
    assert '"wrk-" .. run .. nonce .. "-" .. tid .. "-" .. counter' in lua
    assert 'headers["idempotent-replayed"]' in lua
    assert 'wrk.format("POST", "/v1/consignments", headers, body)' in lua
    assert closedloop.WRK_MARK in lua


def test_parse_wrk_summary_line() -> None:
    """#11 target 1: the rate counts 2xx answers only, over wrk's own duration."""
    doc = {
        "requests": 1100,
        "duration_us": 2_000_000,
        "connect_errors": 0,
        "read_errors": 1,
        "write_errors": 0,
        "timeouts": 2,
        "p50_us": 42000,
        "p90_us": 70000,
        "p99_us": 92000,
        "max_us": 150000,
        "statuses": {"201": 1000, "503": 100},
    }
    out = "Running 2s test\n" + closedloop.WRK_MARK + json.dumps(doc) + "\n"
    r = closedloop.parse_wrk(out, cpu_s=0.5)
    assert r.rate == 500.0
    assert r.latency.p99 == 92.0
    assert r.statuses == {"201": 1000, "503": 100}
    assert r.errors == 3
    assert r.to_dict()["tool_cpu_share"] == 0.25
    with pytest.raises(RuntimeError, match="no summary"):
        closedloop.parse_wrk("nothing", 0.0)


def test_parse_wrk_does_not_count_replays_as_submissions() -> None:
    """#11 target 1: a 201 marked Idempotent-Replayed is the idempotency path, not a new
    record: the rate counts only new ones and the replays are reported."""
    doc = {
        "requests": 1000, "duration_us": 1_000_000, "connect_errors": 0, "read_errors": 0,
        "write_errors": 0, "timeouts": 0, "replays": 400, "p50_us": 1, "p90_us": 1,
        "p99_us": 1, "max_us": 1, "statuses": {"201": 1000},
    }  # fmt: skip
    r = closedloop.parse_wrk(closedloop.WRK_MARK + json.dumps(doc), cpu_s=0.0)
    assert r.rate == 600.0
    assert r.to_dict()["replays"] == 400


def test_parse_pgbench_summary_and_log() -> None:
    """#11 target 1: tps from pgbench's summary, latency percentiles from its per-transaction
    log (third field, microseconds)."""
    stdout = (
        "number of failed transactions: 0 (0.000%)\n"
        "tps = 1917.123456 (without initial connection time)\n"
    )
    log = [f"0 {i} {1000 * (i + 1)} 0 1764600000 0" for i in range(100)]
    r = closedloop.parse_pgbench(stdout, log, cpu_s=1.0, seconds=10.0)
    assert r.rate == pytest.approx(1917.123456)
    assert r.latency.p50 == 50.0
    assert r.latency.p99 == 99.0
    assert r.errors == 0
    with pytest.raises(RuntimeError, match="no tps"):
        closedloop.parse_pgbench("", [], 0.0, 1.0)


def _lr(rate: float) -> LoopResult:
    return LoopResult(rate, Latency(1, 1.0, 1.0, 1.0, 1.0), {}, 0, 0.0, 1.0)


def test_closed_loop_ratio_of_medians() -> None:
    """#11 target 1: the ratio is median API rate / median pgbench rate over the rounds."""
    cl = ClosedLoop([_lr(300), _lr(364), _lr(900)], [_lr(1900), _lr(1917), _lr(100)])
    assert cl.api_rate == 364
    assert cl.pgbench_rate == 1900
    assert cl.ratio == pytest.approx(364 / 1900)
    assert cl.to_dict()["ratio"] == round(364 / 1900, 3)
