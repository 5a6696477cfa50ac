"""The typed cluster view (kernel.cluster): its queries, the problems that make the system
unhealthy, and the JSON document of `rocars cluster status --json` it produces."""

from __future__ import annotations

import dataclasses
import json

import pytest

from deploy.status import node_from_health, render_table
from kernel.cluster import (
    ClusterStatus,
    Contingency,
    ControllerDecision,
    Entry,
    Etcd,
    EtcdMember,
    FloatingAddress,
    Member,
    Monitoring,
    Node,
    Postgres,
    Redis,
)

HEALTHY = ClusterStatus(
    api="http://127.0.0.1:18080",
    entry=Entry("http://127.0.0.1:18080", True, "active"),
    nodes=(
        Node("A", "http://127.0.0.1:18081", "active", True, reason="pg-A leads"),
        Node("B", "http://127.0.0.1:28081", "standby", False, reason="held by pg-A"),
    ),
    postgres=Postgres(
        "pg-A",
        False,
        (
            Member("pg-A", "leader", "running", 0, 1),
            Member("pg-B", "sync_standby", "streaming", 0, 1),
        ),
    ),
    etcd=Etcd(
        (
            EtcdMember("etcd-A", "http://127.0.0.1:12379", True),
            EtcdMember("etcd-B", "http://127.0.0.1:22379", True),
            EtcdMember("etcd-C", "http://127.0.0.1:4379", True),
        ),
        "etcd-C",
    ),
    redis=Redis("127.0.0.1:16379", ("127.0.0.1:26379",)),
    contingency=Contingency("normal"),
)


def test_a_healthy_system_has_no_problems() -> None:
    """Leader, streaming sync standby, one ready node, routing entry, etcd and Redis: healthy."""
    assert HEALTHY.problems() == []
    assert HEALTHY.is_healthy


def test_json_document_keeps_its_shape() -> None:
    """`--json` prints exactly the sections and keys scripts, tests and the README rely on."""
    doc = HEALTHY.to_dict()
    assert json.loads(json.dumps(doc)) == doc
    assert list(doc) == [
        "api",
        "tls",
        "phone",
        "entry",
        "nodes",
        "postgres",
        "etcd",
        "redis",
        "contingency",
        "monitoring",
        "problems",
        "healthy",
    ]
    assert doc["monitoring"] is None  # a topology without monitoring
    assert doc["phone"] is None  # a topology without a phone channel (issue 16)
    assert doc["tls"] == {"ca": None}  # #12 item 5: what clients trust (none known here)
    assert doc["entry"] == {"url": "http://127.0.0.1:18080", "routes": True, "role": "active"}
    assert doc["nodes"][0] == {
        "name": "node-A",
        "site": "A",
        "url": "http://127.0.0.1:18081",
        "role": "active",
        "ready": True,
        "up": True,
        "reason": "pg-A leads",
    }
    assert doc["postgres"] == {
        "leader": "pg-A",
        "paused": False,
        "members": [
            {
                "name": "pg-A",
                "site": "A",
                "role": "leader",
                "state": "running",
                "lag_bytes": 0,
                "timeline": 1,
            },
            {
                "name": "pg-B",
                "site": "B",
                "role": "sync_standby",
                "state": "streaming",
                "lag_bytes": 0,
                "timeline": 1,
            },
        ],
    }
    assert doc["etcd"]["healthy"] is True
    assert doc["etcd"]["leader"] == "etcd-C"
    assert doc["etcd"]["members"][2] == {
        "name": "etcd-C",
        "url": "http://127.0.0.1:4379",
        "healthy": True,
    }
    assert doc["redis"] == {"primary": "127.0.0.1:16379", "replicas": ["127.0.0.1:26379"]}
    assert doc["contingency"] == {"mode": "normal"}
    assert doc["problems"] == []
    assert doc["healthy"] is True


def test_unreachable_parts_carry_their_error_instead_of_their_answer() -> None:
    """A node, etcd member or entry that did not answer shows `error` (and a down node no
    `reason`); an unreachable member has no role and the state "unreachable"."""
    down = Node("B", "http://b", None, False, error="ClientConnectorError()")
    assert down.to_dict() == {
        "name": "node-B",
        "site": "B",
        "url": "http://b",
        "role": None,
        "ready": False,
        "up": False,
        "error": "ClientConnectorError()",
    }
    assert EtcdMember(None, "http://e", False, "refused").to_dict() == {
        "name": None,
        "url": "http://e",
        "healthy": False,
        "error": "refused",
    }
    assert Entry("http://h", False, error="timeout").to_dict() == {
        "url": "http://h",
        "routes": False,
        "error": "timeout",
    }
    assert Member.unreachable("B").to_dict() == {
        "name": "pg-B",
        "site": "B",
        "role": None,
        "state": "unreachable",
        "lag_bytes": None,
        "timeline": None,
    }


def test_contingency_document_keeps_the_stored_state_under_its_mode() -> None:
    """The stored manual-mode state is shown whole, with `mode` first."""
    c = Contingency("manual", {"reason": "drill", "mode": "manual", "since": "t"})
    assert list(c.to_dict().items()) == [("mode", "manual"), ("reason", "drill"), ("since", "t")]


def test_queries_find_leader_members_and_nodes_by_site() -> None:
    """`leader_site`, `member(site)` and `node(site)` answer by site code; unknown sites give
    None."""
    assert HEALTHY.leader_site == "A"
    member_b = HEALTHY.member("B")
    assert member_b is not None
    assert member_b.name == "pg-B"
    assert member_b.is_streaming_sync_standby
    assert HEALTHY.member("C") is None
    node_a = HEALTHY.node("A")
    assert node_a is not None
    assert node_a.ready
    assert HEALTHY.node("C") is None
    no_leader = dataclasses.replace(HEALTHY, postgres=Postgres(None, False, ()))
    assert no_leader.leader_site is None


def test_a_foreign_member_name_has_no_site() -> None:
    """A member that is not one of ours (no `pg-` prefix) is never read as a site."""
    assert Member("postgres0", "leader", "running", 0, 1).site is None


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            {"etcd": Etcd((EtcdMember("etcd-A", "http://e1", False, "refused"),), None)},
            "etcd members down: http://e1",
        ),
        ({"postgres": Postgres(None, False, HEALTHY.postgres.members)}, "no PostgreSQL leader"),
        (
            {"postgres": Postgres("pg-A", False, HEALTHY.postgres.members[:1])},
            "no streaming synchronous standby",
        ),
        (
            {"nodes": tuple(dataclasses.replace(n, ready=True) for n in HEALTHY.nodes)},
            "2 API nodes ready (want exactly 1)",
        ),
        (
            {"nodes": tuple(dataclasses.replace(n, ready=False) for n in HEALTHY.nodes)},
            "0 API nodes ready (want exactly 1)",
        ),
        (
            {"nodes": (HEALTHY.nodes[0], Node("B", "http://b", None, False, error="refused"))},
            "node-B is down",
        ),
        (
            {"entry": Entry("http://h", False, error="x")},
            "HAProxy does not route to an active node",
        ),
        ({"redis": Redis(None)}, "no Redis primary"),
        ({"redis": Redis("127.0.0.1:16379")}, "Redis primary has no online replica"),
    ],
)
def test_each_fault_is_named_as_a_problem(change: dict[str, object], problem: str) -> None:
    """Each part that is not as it should be makes the system unhealthy with one sentence."""
    view = dataclasses.replace(HEALTHY, **change)  # type: ignore[arg-type]
    assert view.problems() == [problem]
    assert not view.is_healthy
    assert view.to_dict()["problems"] == [problem]
    assert view.to_dict()["healthy"] is False
    assert f"  - {problem}" in render_table(view)


WATCHED = dataclasses.replace(
    HEALTHY,
    monitoring=Monitoring(
        "http://127.0.0.1:9090",
        "http://127.0.0.1:9093",
        prometheus_up=True,
        alertmanager_up=True,
        targets_up=14,
        targets_down=("patroni 127.0.0.1:28008",),
        alerts=("RocarsSyncStandbyMissing (page)",),
    ),
)


def test_monitoring_is_listed_and_only_its_own_silence_is_a_problem() -> None:
    """#13 item 1: status lists Prometheus (targets up and down) and Alertmanager (its active
    alerts); a down target or a firing alert is not a problem of its own (the part it watches
    is named already), Prometheus or Alertmanager not answering is."""
    assert WATCHED.problems() == []
    doc = WATCHED.to_dict()["monitoring"]
    assert doc == {
        "prometheus": {
            "url": "http://127.0.0.1:9090",
            "up": True,
            "targets_up": 14,
            "targets_down": ["patroni 127.0.0.1:28008"],
        },
        "alertmanager": {
            "url": "http://127.0.0.1:9093",
            "up": True,
            "alerts": ["RocarsSyncStandbyMissing (page)"],
        },
    }
    table = render_table(WATCHED)
    assert "Prometheus: http://127.0.0.1:9090 (up, 14 targets up, down: patroni" in table
    assert "alerts: RocarsSyncStandbyMissing (page)" in table
    assert WATCHED.monitoring is not None
    silent = dataclasses.replace(
        WATCHED,
        monitoring=dataclasses.replace(
            WATCHED.monitoring, prometheus_up=False, alertmanager_up=False
        ),
    )
    assert silent.problems() == [
        "Prometheus does not answer at http://127.0.0.1:9090",
        "Alertmanager does not answer at http://127.0.0.1:9093",
    ]


def test_node_is_read_from_its_health_document() -> None:
    """A node's role, readiness, mode, Redis primary and controller decision come from its
    /health; a Redis primary the node's last operation failed on is not taken as its view."""
    doc = {
        "role": "active",
        "ready": True,
        "reason": "pg-A is the running primary and holds the leader key",
        "contingency": {"mode": "manual"},
        "redis": {"ok": True, "primary": "127.0.0.1:16379"},
        "failover_controller": {"action": "none", "reason": "nothing to do"},
    }
    node = node_from_health("A", "http://a", doc)
    assert node == Node(
        "A",
        "http://a",
        "active",
        True,
        reason="pg-A is the running primary and holds the leader key",
        contingency_mode="manual",
        redis_primary="127.0.0.1:16379",
        controller=ControllerDecision("none", "nothing to do"),
    )
    failing = node_from_health("A", "http://a", {**doc, "redis": {"ok": False, "primary": "x"}})
    assert failing.redis_primary is None
    gone = node_from_health("B", "http://b", TimeoutError())
    assert not gone.up
    assert gone.error == "TimeoutError()"
    assert gone.controller is None


def test_table_shows_every_part() -> None:
    """The table names the nodes, members with lag, etcd, Redis and the mode, then HEALTHY."""
    table = render_table(HEALTHY)
    for text in (
        "node-A",
        "pg-B     sync_standby  streaming    0",
        "etcd: 3/3 healthy, leader etcd-C",
        "Redis: primary 127.0.0.1:16379, replicas 127.0.0.1:26379",
        "Contingency mode: normal",
    ):
        assert text in table
    assert table.endswith("HEALTHY")


def _floating(holders: tuple[str, ...] | None) -> ClusterStatus:
    entry = Entry(
        "https://10.77.13.100:18080",
        True,
        "active",
        floating=FloatingAddress("10.77.13.100", holders),
    )
    return dataclasses.replace(HEALTHY, api=entry.url, entry=entry)


def test_status_names_the_site_holding_the_floating_address() -> None:
    """#17 item 2: with a floating address the table and `--json` say which site's interface
    carries it; one holder is healthy, none or two is a problem; a holder that cannot be seen
    from here (sites on other hosts) is said so, and is no problem."""
    held = _floating(("B",))
    assert "Floating address: 10.77.13.100 held by B" in render_table(held)
    assert held.to_dict()["entry"]["floating"] == {"address": "10.77.13.100", "holders": ["B"]}
    assert held.problems() == []
    nobody = _floating(())
    assert "Floating address: 10.77.13.100 held by no site" in render_table(nobody)
    assert nobody.problems() == ["no site holds the floating address 10.77.13.100"]
    both = _floating(("A", "B"))
    assert both.problems() == ["the floating address 10.77.13.100 is on several sites: A, B"]
    unseen = _floating(None)
    assert "10.77.13.100 (holder not visible from here)" in render_table(unseen)
    assert unseen.to_dict()["entry"]["floating"]["holders"] is None
    assert unseen.problems() == []
    assert "Floating address" not in render_table(HEALTHY)
    assert "floating" not in HEALTHY.to_dict()["entry"]
