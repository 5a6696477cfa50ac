"""#10 items 2, 5 and 6 in HAProxy's rendered configuration: its own error pages are
problem+json, no version is shown, per-address abuse limits come from the topology, and one
late health check does not take the active node out."""

from __future__ import annotations

import re

import pytest
from haproxy_text import sections, string_arg
from unit_fakes import HAPROXY_TLS

from deploy import configgen
from deploy.harness import TEST_ABUSE_LIMITS
from deploy.state import DEFAULT_TOPOLOGY
from deploy.topology import AbuseLimits, load_topology, parse_topology

TOPO = load_topology(DEFAULT_TOPOLOGY)
HAPROXY_OWN_ERRORS = (400, 403, 405, 408, 413, 425, 429, 500, 501, 502, 503, 504)


def _config(**limits: int) -> dict[str, list[str]]:
    topo = TOPO.with_abuse_limits(AbuseLimits(**limits)) if limits else TOPO
    return sections(configgen.haproxy_config(topo, HAPROXY_TLS))


@pytest.mark.parametrize("status", HAPROXY_OWN_ERRORS)
def test_every_error_haproxy_answers_itself_is_problem_json(status: int) -> None:
    """#10 item 6: each status HAProxy can produce on its own (oversized header 400, timeouts,
    no server...) has an `http-error` page in defaults: problem+json, the right status, a
    title and a detail that says what happened."""
    (line,) = [x for x in _config()["defaults"] if x.startswith(f"http-error status {status} ")]
    assert 'content-type "application/problem+json"' in line
    doc = string_arg(line)
    assert doc["status"] == status
    assert doc["title"], doc
    assert len(doc["detail"]) > 10, doc


def test_no_version_is_shown() -> None:
    """#10 item 6: the stats page hides HAProxy's version and nothing else names one."""
    text = configgen.haproxy_config(TOPO, HAPROXY_TLS, stats_password="pw")
    assert "stats hide-version" in sections(text)["frontend stats"]
    assert "version" not in text.replace("stats hide-version", "")


def test_a_nodes_plain_text_400_is_replaced_by_problem_json() -> None:
    """#10 item 6: a node's 400 that is not problem+json (aiohttp's parser answer to a control
    character in a header, which echoes the header) is replaced by a problem+json 400."""
    api = _config()["frontend api"]
    (line,) = [x for x in api if x.startswith("http-response return status 400 ")]
    assert line.endswith("if { status 400 } !problem_json")
    assert "acl problem_json res.hdr(content-type) -m beg application/problem+json" in api
    assert string_arg(line)["status"] == 400


def test_abuse_limits_come_from_the_topology() -> None:
    """#10 item 5: requests without credentials and 401s to requests with credentials are
    counted per source address in stick tables whose thresholds and windows are the topology's;
    over a limit the answer is a 429 problem+json with Retry-After (the window)."""
    c = _config(
        unauthenticated_requests=7,
        unauthenticated_window_s=5,
        auth_failures=3,
        auth_failure_window_s=30,
    )
    api = c["frontend api"]
    # The monitoring networks' probes of the control pages are not counted.
    assert (
        "http-request track-sc0 src table limit_unauthenticated if !has_credentials"
        " !control_page" in api
    )
    assert "http-request track-sc1 src table limit_auth_failures if has_credentials" in api
    assert "http-response sc-inc-gpc0(1) if { status 401 }" in api
    (unauth,) = [x for x in api if "sc0_http_req_rate(limit_unauthenticated) gt 7 }" in x]
    (fails,) = [x for x in api if "sc1_gpc0_rate(limit_auth_failures) ge 3 }" in x]
    for line, retry in ((unauth, 5), (fails, 30)):
        assert line.startswith("http-request return status 429 ")
        assert f"hdr Retry-After {retry} " in line
        doc = string_arg(line)
        assert doc["status"] == 429, doc
        assert doc["retry_after_ms"] == retry * 1000, doc
    assert unauth.endswith("if !has_credentials { sc0_http_req_rate(limit_unauthenticated) gt 7 }")
    assert fails.endswith("if has_credentials { sc1_gpc0_rate(limit_auth_failures) ge 3 }")
    assert c["backend limit_unauthenticated"] == [
        "stick-table type ipv6 size 100k expire 10s store http_req_rate(5s)"
    ]
    assert c["backend limit_auth_failures"] == [
        "stick-table type ipv6 size 100k expire 60s store gpc0,gpc0_rate(30s)"
    ]


def test_production_defaults_and_test_limits() -> None:
    """#10 item 5: a topology that says nothing gets the documented production limits (100
    requests without credentials per 10 s, 20 failed authentications per 60 s); test clusters
    (every client 127.0.0.1) raise them far above what the suites send; limits must be
    positive."""
    assert TOPO.entry.limits == AbuseLimits(
        unauthenticated_requests=100,
        unauthenticated_window_s=10,
        auth_failures=20,
        auth_failure_window_s=60,
    )
    assert TEST_ABUSE_LIMITS.auth_failures >= 100_000
    assert TEST_ABUSE_LIMITS.unauthenticated_requests >= 100_000
    raw = TOPO.model_dump()
    raw["entry"]["limits"] = {"auth_failures": 0}
    with pytest.raises(ValueError, match=r"entry\.limits\.auth_failures"):
        parse_topology(raw)


def test_shifting_ports_leaves_the_limits_alone() -> None:
    """#10 item 5: a test cluster's port offset does not touch the limits."""
    topo = TOPO.with_abuse_limits(AbuseLimits(unauthenticated_requests=5)).with_port_offset(1000)
    assert topo.entry.limits.unauthenticated_requests == 5


def test_one_late_check_does_not_take_the_active_node_out() -> None:
    """#10 item 2: a check fails after `timeout check` (1 s) and a node is marked down only
    after 3 failed checks in a row (the active node's one late answer under load no longer
    cuts every session); one good check brings a node in (rise 1) so switchover stays fast."""
    c = _config()
    assert "timeout check 1s" in c["defaults"]
    for backend in ("backend nodes", "backend any_live_node"):
        (line,) = [x for x in c[backend] if x.startswith("default-server ")]
        fall = int(re.search(r"\bfall (\d+)", line).group(1))  # type: ignore[union-attr]
        rise = int(re.search(r"\brise (\d+)", line).group(1))  # type: ignore[union-attr]
        assert fall >= 3, line
        assert rise == 1, line
    (nodes,) = [x for x in c["backend nodes"] if x.startswith("default-server ")]
    assert "fastinter 250ms" in nodes
    assert "on-marked-down shutdown-sessions" in nodes
    # Writes a node refuses while it is being marked down are retried on the other one.
    assert "retry-on conn-failure empty-response 503" in c["defaults"]
