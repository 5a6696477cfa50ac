"""#11 target 3 in the generated configuration: HAProxy gives each node at most
`entry.admission.server_maxconn` requests at once and answers what waited `timeout queue` with
a 503 problem+json of its own (never retried); the node's own limit comes from the same
topology section and stays above HAProxy's, and a standby's 503 is still retried."""

from __future__ import annotations

from pathlib import Path

import pytest
from haproxy_text import sections, string_arg
from unit_fakes import HAPROXY_TLS

from deploy import configgen
from deploy.state import DEFAULT_TOPOLOGY
from deploy.topology import Admission, load_topology, parse_topology
from node.config import DEFAULT_MAX_IN_FLIGHT, NodeConfig

TOPO = load_topology(DEFAULT_TOPOLOGY)
PROBLEMS = "https://rocars.example/problems/"


def _config(admission: Admission | None = None) -> dict[str, list[str]]:
    topo = TOPO.with_admission(admission) if admission else TOPO
    return sections(configgen.haproxy_config(topo, HAPROXY_TLS))


def test_each_node_gets_at_most_maxconn_and_waits_at_most_the_queue_timeout() -> None:
    """#11 target 3: the active node's backend caps each server at the topology's
    server_maxconn and bounds the queue wait by queue_timeout_ms; the public-read backend
    (health and /v1/status, never refused by the nodes) has no cap."""
    c = _config(Admission(server_maxconn=7, queue_timeout_ms=80, node_max_in_flight=9))
    nodes = c["backend nodes"]
    assert "timeout queue 80ms" in nodes
    (default_server,) = [x for x in nodes if x.startswith("default-server ")]
    assert default_server.endswith(" maxconn 7"), default_server
    assert not any("maxconn" in x or "timeout queue" in x for x in c["backend any_live_node"])


def test_defaults_fit_the_latency_budget_and_the_pool() -> None:
    """#11 target 3: by default a node serves 16 requests at once (its pool of 10 plus the
    ones authenticating or answering; 16 connections already saturate it) and a request
    waits at most 75 ms in HAProxy's queue, leaving the 250 ms p99 budget 175 ms of service
    (a saturated node takes 120-150); the node's own limit (24) is above HAProxy's."""
    a = TOPO.entry.admission
    assert a == Admission(server_maxconn=16, queue_timeout_ms=75, node_max_in_flight=24)
    assert a.node_max_in_flight == DEFAULT_MAX_IN_FLIGHT
    assert a.queue_timeout_ms <= 100
    assert a.server_maxconn < a.node_max_in_flight


@pytest.mark.parametrize("node_limit", [16, 8])
def test_the_node_limit_must_be_above_haproxys(node_limit: int) -> None:
    """#11 target 3: HAProxy retries a node's 503 three times (`retry-on 503`, for the
    standby), so a topology whose nodes would shed HAProxy's own traffic is refused, naming
    the key."""
    raw = TOPO.model_dump()
    raw["entry"]["admission"] = {"server_maxconn": 16, "node_max_in_flight": node_limit}
    with pytest.raises(ValueError, match=r"entry\.admission: node_max_in_flight"):
        parse_topology(raw)


def test_the_node_limit_reaches_the_node_configuration(tmp_path: Path) -> None:
    """#11 target 3: each node's configuration carries the topology's node_max_in_flight."""
    topo = TOPO.with_admission(Admission(server_maxconn=5, node_max_in_flight=6))
    for site in topo.data_sites:
        raw = configgen.node_config(topo, site, state_root=tmp_path)
        assert NodeConfig.model_validate(raw).max_in_flight == 6


def test_a_queue_timeout_is_answered_busy_problem_json_with_retry_after() -> None:
    """#11 target 3: HAProxy's own 503 (a request that waited `timeout queue`, or no node up
    for a public read) is problem+json of type busy with Retry-After 1 and retry_after_ms
    1000, not the failover hint (200 ms), so shed clients do not come straight back."""
    (line,) = [x for x in _config()["defaults"] if x.startswith("http-error status 503 ")]
    assert 'content-type "application/problem+json" hdr Retry-After 1 string' in line
    doc = string_arg(line)
    assert doc["type"] == PROBLEMS + "busy"
    assert doc["status"] == 503
    assert doc["retry_after_ms"] == 1000
    assert "capacity" in doc["detail"]


def test_no_active_node_still_answers_the_failover_hint() -> None:
    """#11 target 3 (and #10 item 6): with no node ready, a request for the nodes backend is
    answered at once with the not-writable problem, Retry-After, retry_after_ms 200 and the
    manual-clearance hint, as before; public reads still go to any live node."""
    api = _config()["frontend api"]
    assert "acl no_active_node nbsrv(nodes) eq 0" in api
    (line,) = [x for x in api if x.startswith("http-request return status 503 ")]
    assert line.endswith(
        "if no_active_node !reloading !public_read !manual_ops"
        " || no_active_node !reloading !METH_GET !manual_ops"
    )
    assert "hdr Retry-After 1 " in line
    doc = string_arg(line)
    assert doc["type"] == PROBLEMS + "not-writable"
    assert doc["retry_after_ms"] == 200
    assert "/v1/status" in doc["detail"]
    assert api.index(line) < api.index("use_backend any_live_node if public_read METH_GET")


def test_a_process_stopping_after_a_reload_does_not_read_its_backends_as_empty() -> None:
    """#12 item 1: in an HAProxy process a reload told to stop, `nbsrv` reads 0 while
    forwarding still works, so every "no node" rule also requires that the process is not
    stopping (the live proof: tests/integration/test_haproxy_reload_live.py)."""
    api = _config()["frontend api"]
    assert "acl reloading stopping" in api
    for line in api:
        if "no_active_node" in line and not line.startswith("acl no_active_node "):
            for alternative in line.split(" if ", 1)[1].split(" || "):
                assert "!reloading" in alternative.split(), line
        if "nbsrv(any_live_node)" in line:
            assert line.endswith(" !reloading"), line


def test_with_no_active_node_manual_clearance_goes_to_any_live_node() -> None:
    """#15 item 4: with no node active (the database down), the officers' contingency API and
    pages, signing in (and the sign-in page's language switch) are not refused by HAProxy
    but sent to any live node, which serves them without a database; with a node active they
    go to it like everything else."""
    api = _config()["frontend api"]
    assert "acl manual_ops path_beg /v1/contingency /officer/contingency" in api
    assert "acl manual_ops path /signin /signout /lang" in api
    route = "use_backend any_live_node if no_active_node !reloading manual_ops"
    assert route in api
    assert api.index(route) < api.index("default_backend nodes")
    # The same node for one client: the page after a clearance lists that node's journal.
    assert "balance source" in _config()["backend any_live_node"]


def test_a_standbys_503_is_still_retried_a_bounded_number_of_times() -> None:
    """#11 target 3 with I3: a node's 503 (a standby refusing a write during a switchover) is
    retried on the other server, at most 3 times; the queue-timeout 503 is HAProxy's own and
    `retry-on` does not apply to it."""
    defaults = _config()["defaults"]
    assert "retry-on conn-failure empty-response 503" in defaults
    assert "retries 3" in defaults
    assert "option redispatch 1" in defaults


def test_contingency_and_gate_decisions_jump_the_queue() -> None:
    """#11 target 3 with I4: under overload the queue serves manual clearance and the gates'
    arrival decisions first (a lower priority class), so they do not wait behind submissions."""
    api = _config()["frontend api"]
    assert (
        "http-request set-priority-class int(-1) if { path_beg /v1/contingency /v1/lbcp/ }" in api
    )
