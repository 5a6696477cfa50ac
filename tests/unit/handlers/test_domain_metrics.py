"""#13 item 2: the domain metrics are recorded, not only declared. Through the real app factory
with the handler fakes: submissions, bundle and consignment changes and arrivals are counted
by outcome, arrival decisions by decision; /metrics shows etcd reachability, the leader, the
journal's size and the pool's statistics; the observer's samples (drills, certificates,
replication) and the write probe's result reach the registry."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from handler_fakes import Fakes, FixedRole, MemoryEtcd, operational_error
from problem_checks import AiohttpClient, Client, call
from route_table import BY_KEY

from deploy.drills.drill import DrillResult
from deploy.drills.publish import publish_to
from failover.role_rule import RoleFacts
from kernel.names import DRILL_RESULTS_KEY
from monitoring.metrics import NodeMetrics
from monitoring.outcomes import OUTCOMES, outcome_of
from monitoring.replication import (
    ReplicationView,
    StandbyLag,
    replica_lag_seconds,
    replication_families,
    sync_streaming,
)
from node import appkeys, background
from node.api.outcomes import counted
from node.ratelimit import RateDecision

SUBMIT = BY_KEY[("POST", "/v1/consignments")]
BATCH = BY_KEY[("POST", "/v1/consignments:batch")]
AMEND = BY_KEY[("PATCH", "/v1/consignments/{ccrn}")]
CANCEL = BY_KEY[("DELETE", "/v1/consignments/{ccrn}")]
BUNDLE = BY_KEY[("POST", "/v1/bundles")]
BUNDLE_CANCEL = BY_KEY[("DELETE", "/v1/bundles/{id}")]
REVOKE = BY_KEY[("DELETE", "/v1/consignments/{ccrn}/bundle")]
ARRIVAL = BY_KEY[("POST", "/v1/lbcp/{code}/arrivals")]
ACTIVATE = BY_KEY[("POST", "/v1/contingency/activate")]


def sample(registry_of: Client | NodeMetrics, metric: str, **labels: str) -> float:
    m = registry_of if isinstance(registry_of, NodeMetrics) else registry_of.app[appkeys.METRICS]
    value = m.registry.get_sample_value(metric, labels)
    return 0.0 if value is None else value


@pytest.mark.parametrize(
    ("status", "replayed", "outcome"),
    [
        (201, False, "accepted"),
        (200, True, "replayed"),
        (422, False, "invalid"),
        (400, False, "invalid"),
        (413, False, "invalid"),
        (401, False, "denied"),
        (403, False, "denied"),
        (404, False, "not_found"),
        (409, False, "conflict"),
        (429, False, "rate_limited"),
        (503, False, "unavailable"),
        (499, False, "cancelled"),
        (500, False, "error"),
    ],
)
def test_each_status_has_its_outcome(status: int, replayed: bool, outcome: str) -> None:
    """#13 item 2: the outcome label is one word of a fixed set, decided by the status."""
    assert outcome_of(status, replayed=replayed) == outcome
    assert outcome in OUTCOMES


async def test_submissions_are_counted_by_outcome(fakes: Fakes, client: Client) -> None:
    """#13 item 2: each submission adds one to its outcome: bad content is invalid, no key is
    denied, a standby's refusal unavailable, the per-account limit rate_limited; batches have
    their own kind."""
    trader = fakes.auth("trader")
    assert (await call(client, SUBMIT, headers=trader, data=b"{}")).status == 422
    assert (await call(client, SUBMIT)).status == 401
    fakes.role.set("standby")
    assert (await call(client, SUBMIT, headers=trader)).status == 503
    fakes.role.set("active")
    fakes.redis.decision = RateDecision(False, 2000.0, 1000, 1)
    assert (await call(client, SUBMIT, headers=trader)).status == 429
    fakes.redis.decision = RateDecision(True, 1.0, 1000, 0)
    assert (await call(client, BATCH, headers=trader, data=b"not json")).status in (400, 422)
    name = "rocars_submissions_total"
    for outcome in ("invalid", "denied", "unavailable", "rate_limited"):
        assert sample(client, name, kind="single", outcome=outcome) == 1, outcome
    assert sample(client, name, kind="single", outcome="accepted") == 0
    assert sample(client, name, kind="batch", outcome="invalid") == 1


async def test_consignment_and_bundle_changes_are_counted_by_action(
    fakes: Fakes, client: Client
) -> None:
    """#13 item 2: amend and cancel of a consignment, and create, cancel and revoke of a
    bundle, each count under their own action."""
    trader, trucker = fakes.auth("trader"), fakes.auth("trucker")
    assert (await call(client, AMEND, headers=trucker)).status == 403
    fakes.role.set("standby")
    assert (await call(client, CANCEL, headers=trader)).status == 503
    assert (await call(client, BUNDLE_CANCEL, headers=trucker)).status == 503
    assert (await call(client, REVOKE, headers=trader)).status == 503
    fakes.role.set("active")
    assert (await call(client, BUNDLE, headers=trucker, data=b'{"vrn": 1}')).status == 422
    changes, bundles = "rocars_consignment_changes_total", "rocars_bundles_total"
    assert sample(client, changes, action="amend", outcome="denied") == 1
    assert sample(client, changes, action="cancel", outcome="unavailable") == 1
    assert sample(client, bundles, action="create", outcome="invalid") == 1
    assert sample(client, bundles, action="cancel", outcome="unavailable") == 1
    assert sample(client, bundles, action="revoke", outcome="unavailable") == 1
    assert sample(client, bundles, action="create", outcome="unavailable") == 0


async def test_arrivals_count_their_outcome_and_their_decision(
    fakes: Fakes, client: Client
) -> None:
    """#13 item 2: an arrival answered by the mode (manual) counts as accepted with decision
    manual; one the database could not decide counts as unavailable and makes no decision."""
    officer = fakes.auth("officer")
    fakes.pool.error = operational_error
    assert (await call(client, ARRIVAL, headers=officer)).status == 503
    assert sample(client, "rocars_arrival_decisions_total", decision="release") == 0
    assert (await call(client, ACTIVATE, headers=officer)).status == 200
    answer = await call(client, ARRIVAL, headers=officer)
    assert answer.status == 200
    assert answer.body["decision"] == "manual"
    assert sample(client, "rocars_arrivals_total", outcome="unavailable") == 1
    assert sample(client, "rocars_arrivals_total", outcome="accepted") == 1
    assert sample(client, "rocars_arrival_decisions_total", decision="manual") == 1
    assert (
        sum(
            sample(client, "rocars_arrival_decisions_total", decision=d)
            for d in ("release", "inspect", "hold")
        )
        == 0
    )


async def test_a_replayed_answer_is_counted_as_replayed(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """#13 item 2: a 2xx carrying Idempotent-Replayed counts as replayed, a plain 2xx as
    accepted, and an exception as the status the error boundary answers it with."""
    calls = {"n": 0}

    @counted(lambda m: m.submission_outcomes["single"])
    async def handler(request: web.Request) -> web.Response:
        calls["n"] += 1
        if calls["n"] == 3:
            raise operational_error()  # the database went away: 503
        replayed = {"Idempotent-Replayed": "true"} if calls["n"] == 2 else {}
        return web.json_response({}, status=201, headers=replayed)

    app = fakes.app()
    app.router.add_post("/probe", handler)
    client = await aiohttp_client(app)
    for expected in (201, 201, 503):
        assert (await client.post("/probe")).status == expected
    name = "rocars_submissions_total"
    assert sample(client, name, kind="single", outcome="accepted") == 1
    assert sample(client, name, kind="single", outcome="replayed") == 1
    assert sample(client, name, kind="single", outcome="unavailable") == 1


async def test_metrics_shows_etcd_leader_journal_size_and_pool(
    fakes: Fakes, client: Client
) -> None:
    """#13 item 2: at scrape time etcd's reachability and the leader follow the role loop's
    facts, the journal's size on disk is there, and a pool with statistics is exported."""
    fakes.role.facts = RoleFacts("pg-A", "primary", "running", "pg-A", True)
    stats = {"pool_size": 3, "pool_available": 1, "requests_num": 7, "requests_wait_ms": 1500}
    fakes.pool.get_stats = lambda: stats  # type: ignore[attr-defined]
    async with client.get("/metrics") as resp:
        text = await resp.text()
    lines = text.splitlines()
    assert "rocars_etcd_up 1.0" in lines
    assert 'rocars_patroni_leader{member="pg-A"} 1.0' in lines
    assert "rocars_db_pool_connections 3.0" in lines
    assert "rocars_db_pool_idle_connections 1.0" in lines
    assert "rocars_db_pool_requests_total 7.0" in lines
    assert "rocars_db_pool_wait_seconds_total 1.5" in lines
    assert sample(client, "rocars_contingency_journal_bytes") > 0
    fakes.role.facts = RoleFacts("pg-A", "replica", "running", "pg-B", True)
    async with client.get("/metrics") as resp:
        text = await resp.text()
    assert 'rocars_patroni_leader{member="pg-B"} 1.0' in text.splitlines()
    assert sample(client, "rocars_patroni_leader_changes_total") == 1
    fakes.role.facts = RoleFacts("pg-A", "replica", "running", None, False)
    async with client.get("/metrics") as resp:
        text = await resp.text()
    assert "rocars_etcd_up 0.0" in text.splitlines()
    assert "rocars_patroni_leader{" not in text


def test_leader_changes_count_another_member_only() -> None:
    """#13 item 2: A, unknown, A is no change; A then B is one; no leader shows no series."""
    m = NodeMetrics()
    m.note_leader(known=True, holder="pg-A")
    m.note_leader(known=False, holder=None)
    m.note_leader(known=True, holder="pg-A")
    assert sample(m, "rocars_patroni_leader_changes_total") == 0
    m.note_leader(known=True, holder="pg-B")
    m.note_leader(known=True, holder="pg-B")
    assert sample(m, "rocars_patroni_leader_changes_total") == 1
    assert sample(m, "rocars_patroni_leader", member="pg-B") == 1
    assert m.registry.get_sample_value("rocars_patroni_leader", {"member": "pg-A"}) is None


class UpPool:
    """A database that answers the write probe."""

    class _Conn:
        async def execute(self, sql: str, params: Any = None) -> None:
            return None

        async def rollback(self) -> None:
            return None

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Any]:
        yield self._Conn()


async def test_the_write_probe_sets_write_availability(fakes: Fakes) -> None:
    """#13 item 2: rocars_write_probe_success is 1 after a probe that wrote, 0 after one that
    failed and on a standby."""
    m = NodeMetrics()
    runtime = fakes.contingency
    assert await background.write_probe_once(UpPool(), FixedRole("active"), runtime, m)
    assert sample(m, "rocars_write_probe_success") == 1
    fakes.pool.error = operational_error
    assert not await background.write_probe_once(fakes.pool, FixedRole("active"), runtime, m)
    assert sample(m, "rocars_write_probe_success") == 0
    assert await background.write_probe_once(UpPool(), FixedRole("active"), runtime, m)
    assert not await background.write_probe_once(UpPool(), FixedRole("standby"), runtime, m)
    assert sample(m, "rocars_write_probe_success") == 0


def _certificate(path: Path, not_after: dt.datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, path.stem)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - dt.timedelta(days=90))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(Encoding.PEM))


def _observer(m: NodeMetrics, etcd: MemoryEtcd, pki: Path, role: str = "active") -> Any:
    return background.Observer(
        metrics=m,
        role=FixedRole(role),  # type: ignore[arg-type]
        http=None,  # type: ignore[arg-type]  # replication is not sampled in these tests
        patroni_url="http://127.0.0.1:1",
        etcd=etcd,
        pki=pki,
    )


async def test_the_observer_exports_drill_results_from_etcd(tmp_path: Path) -> None:
    """#13 item 2: a drill's published result (deploy.drills.publish) becomes its scenario's
    RTO, RPO, verdict and time on the nodes; a second scenario joins the first."""
    etcd = MemoryEtcd()
    first = DrillResult("switchover", "A->B", "2030-01-07T08:00:00", rto_s=2.5, budget_s=10)
    await publish_to(etcd, first, 1_900_000_000.0)
    etcd.races = 1  # another drill wrote in between: the compare-and-swap is retried
    second = DrillResult("kill-node", "B->A", "2030-01-07T09:00:00", rto_s=None, rpo=3)
    await publish_to(etcd, second, 1_900_000_100.0)
    m = NodeMetrics()
    await _observer(m, etcd, tmp_path / "pki").read_drills()
    assert sample(m, "rocars_drill_rto_seconds", scenario="switchover") == 2.5
    assert sample(m, "rocars_drill_rpo_records", scenario="switchover") == 0
    assert sample(m, "rocars_drill_passed", scenario="switchover") == 1
    assert sample(m, "rocars_drill_rpo_records", scenario="kill-node") == 3
    assert sample(m, "rocars_drill_passed", scenario="kill-node") == 0
    assert (
        m.registry.get_sample_value("rocars_drill_rto_seconds", {"scenario": "kill-node"}) is None
    )
    assert (
        sample(m, "rocars_drill_last_run_timestamp_seconds", scenario="kill-node")
        == 1_900_000_100.0
    )
    await etcd.put(DRILL_RESULTS_KEY, b"garbage")
    await _observer(m, etcd, tmp_path / "pki").read_drills()
    assert (
        m.registry.get_sample_value("rocars_drill_rpo_records", {"scenario": "kill-node"}) is None
    )


async def test_the_observer_exports_certificate_expiry(tmp_path: Path) -> None:
    """#13 item 2: every certificate in the state folder's pki/ is exported with its notAfter
    as Unix time; no folder, no series."""
    m = NodeMetrics()
    pki = tmp_path / "pki"
    observer = _observer(m, MemoryEtcd(), pki)
    await observer.read_certificates()
    assert not any(f.name == "rocars_certificate_expiry_seconds" for f in m.registry.collect())
    pki.mkdir()
    when = dt.datetime(2031, 5, 1, tzinfo=dt.UTC)
    _certificate(pki / "ca.crt", when)
    _certificate(pki / "etcd-A.crt", when + dt.timedelta(days=1))
    (pki / "broken.crt").write_text("not a certificate")
    await observer.read_certificates()
    assert sample(m, "rocars_certificate_expiry_seconds", name="ca") == when.timestamp()
    assert (
        sample(m, "rocars_certificate_expiry_seconds", name="etcd-A")
        == (when + dt.timedelta(days=1)).timestamp()
    )
    assert (
        m.registry.get_sample_value("rocars_certificate_expiry_seconds", {"name": "broken"}) is None
    )


async def test_a_standby_node_exports_no_replication_series(tmp_path: Path) -> None:
    """#13 item 2: only the active node samples replication; a standby clears the series (it
    must not report "no synchronous standby" for a cluster it does not lead)."""
    m = NodeMetrics()
    m.replication.replace(replication_families(ReplicationView(True, ())))
    await _observer(m, MemoryEtcd(), tmp_path, role="standby").sample_replication()
    assert m.registry.get_sample_value("rocars_sync_standby_streaming") is None


def test_replication_families_from_patroni_answers() -> None:
    """#13 item 2: streaming needs a synchronous walsender in state streaming; the lag in
    seconds is 0 when all received is replayed, else the age of the last replayed commit; no
    standby means streaming 0 and no lag series."""
    assert sync_streaming({"replication": [{"state": "streaming", "sync_state": "sync"}]})
    assert not sync_streaming({"replication": [{"state": "streaming", "sync_state": "async"}]})
    assert not sync_streaming({"replication": [{"state": "catchup", "sync_state": "sync"}]})
    assert not sync_streaming({})
    now = dt.datetime(2030, 1, 1, 12, 0, 10, tzinfo=dt.UTC)
    caught_up = {"xlog": {"received_location": 5, "replayed_location": 5}}
    behind = {
        "xlog": {
            "received_location": 9,
            "replayed_location": 5,
            "replayed_timestamp": "2030-01-01 12:00:07.5+00:00",
        }
    }
    assert replica_lag_seconds(caught_up, now) == 0
    assert replica_lag_seconds(behind, now) == 2.5
    assert replica_lag_seconds({"state": "stopped"}, now) is None
    m = NodeMetrics()
    m.replication.replace(
        replication_families(ReplicationView(True, (StandbyLag("pg-B", 4096.0, 2.5),)))
    )
    assert sample(m, "rocars_sync_standby_streaming") == 1
    assert sample(m, "rocars_replication_lag_bytes", standby="pg-B") == 4096
    assert sample(m, "rocars_replication_lag_seconds", standby="pg-B") == 2.5
    m.replication.replace(replication_families(ReplicationView(False, ())))
    assert m.registry.get_sample_value("rocars_sync_standby_streaming") == 0
    assert m.registry.get_sample_value("rocars_replication_lag_bytes", {"standby": "pg-B"}) is None
