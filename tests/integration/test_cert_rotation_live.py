"""#12 item 1 on the real session cluster: `rocars certs rotate` reissues every certificate and
makes the running system use it with no downtime (deploy/cert_reload.py): under a continuous
write load through HAProxy no request fails, every listener then presents its new
certificate, and only what cannot reload was restarted. Then the three steps of a CA
rotation, under the same load. The plan itself: tests/unit/test_cert_reload_plan.py."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp
import psutil
import psycopg
import pytest
import yaml
from apikit import Account, consignment_body, until
from cryptography import x509

from deploy import control_tls, pki, processes
from deploy.cert_reload import Change, Listener, file_serial, plan, presented_serial
from deploy.harness import LocalCluster
from deploy.state import REPO_ROOT
from kernel import tls

pytestmark = pytest.mark.integration

WRITERS = 4


@dataclass
class Load:
    """What the writers saw: acknowledged submissions by Idempotency-Key, and every failure."""

    acked: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    step: str = "before"  # which step of the test was running, named in each error


async def _writer(
    session: aiohttp.ClientSession, base: str, account: Account, stop: asyncio.Event, load: Load
) -> None:
    """Submit consignments one after another until `stop`; a failed submission is recorded
    and sent again with the same Idempotency-Key (so it is stored at most once)."""
    while not stop.is_set():
        key = uuid.uuid4().hex
        body = consignment_body(timedelta(hours=3))
        headers = {"Authorization": f"Bearer {account.key}", "Idempotency-Key": key}
        for _ in range(10):
            try:
                async with session.post(f"{base}/v1/consignments", json=body, headers=headers) as r:
                    status, text = r.status, await r.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                load.errors.append(f"{load.step}: {type(exc).__name__}: {exc}")
                await asyncio.sleep(0.1)
                continue
            if status == 201:
                load.acked[key] = str(json.loads(text)["ccrn"])
                break
            load.errors.append(f"{load.step}: HTTP {status}: {text[:300]}")
            await asyncio.sleep(0.1)


@dataclass
class Writers:
    load: Load
    ctx: ssl.SSLContext  # what the writers trust: the CA bundle as it was when they started

    async def at_least(self, more: int) -> None:
        """Wait until `more` further submissions were acknowledged (the load is flowing)."""
        target = len(self.load.acked) + more

        async def enough() -> bool:
            return len(self.load.acked) >= target

        await until(f"{more} more acknowledged writes", enough, 60)


@pytest.fixture
async def writers(
    cluster: LocalCluster, new_account: Any, db: psycopg.AsyncConnection[Any]
) -> AsyncIterator[Writers]:
    """WRITERS concurrent submitters through HAProxy for the test's duration; afterwards every
    acknowledged submission is in the database exactly once."""
    account = new_account("trader")
    load, stop = Load(), asyncio.Event()
    ctx = tls.client_context(cluster.state.ca_bundle)  # an API client's: it trusts the bundle
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ctx), timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        base = cluster.topo.entry_url()
        tasks = [
            asyncio.create_task(_writer(session, base, account, stop, load)) for _ in range(WRITERS)
        ]
        w = Writers(load, ctx)
        try:
            await w.at_least(20)
            yield w
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    ccrns = list(load.acked.values())
    rows = await (
        await db.execute(
            "SELECT ccrn, count(*) FROM consignments WHERE ccrn = ANY(%s) GROUP BY ccrn",
            (ccrns,),
        )
    ).fetchall()
    assert {r[0]: r[1] for r in rows} == dict.fromkeys(ccrns, 1)


def _listeners(cluster: LocalCluster) -> list[Listener]:
    return [lsn for a in plan(cluster.topo, Change.LEAVES) for lsn in a.listeners]


async def _serials(cluster: LocalCluster, ctx: ssl.SSLContext) -> dict[str, int]:
    """The serial each listener presents now, by certificate name."""
    out = {}
    for lsn in _listeners(cluster):
        out[lsn.cert] = await asyncio.to_thread(
            presented_serial, lsn.host, lsn.port, ctx, postgres=lsn.postgres
        )
    return out


def _pids(cluster: LocalCluster) -> dict[str, int | None]:
    """The pid of each process, the node's own (under its supervisor) and each postmaster."""
    out = {
        name: cluster.pid(name) for name in (a.process for a in plan(cluster.topo, Change.LEAVES))
    }
    for site in cluster.topo.data_sites:
        sup = out[f"node-{site}"]
        assert sup is not None
        out[f"node-{site}-child"] = next(c.pid for c in psutil.Process(sup).children())
        out[f"postmaster-{site}"] = processes.postmaster_pid(
            cluster.state.member_dir(site) / "data"
        )
    return out


def _rotate(cluster: LocalCluster, *flags: str) -> str:
    return cluster.rocars("certs", "rotate", *flags, "--state-dir", str(cluster.state.root))


async def test_leaf_rotation_under_load_loses_no_write_and_every_listener_serves_the_new_cert(
    cluster: LocalCluster, writers: Writers
) -> None:
    """#12 item 1: `rocars certs rotate` on the running system, under a continuous write load
    through HAProxy: no submission fails (zero errors, each acknowledged one stored once);
    afterwards every TLS listener (HAProxy, the nodes, Patroni REST, PostgreSQL after its
    SSLRequest, etcd client and peer, Redis, Sentinel, Prometheus, Alertmanager, the
    exporters) presents a certificate with the serial of the new file; the command printed one
    line per component; reloads were reloads (same pids) and only Sentinel and HAProxy have
    new processes."""
    ctx = control_tls.context(cluster.state)
    before = await _serials(cluster, ctx)
    folder = pki.PkiDir(cluster.state.pki)
    assert before == {name: file_serial(folder, name) for name in before}
    pids = _pids(cluster)

    writers.load.step = "rotate"
    out = await asyncio.to_thread(_rotate, cluster)
    await writers.at_least(20)

    for action in plan(cluster.topo, Change.LEAVES):
        assert re.search(rf"^{re.escape(action.process)}: ", out, re.MULTILINE), out
    after = await _serials(cluster, control_tls.context(cluster.state))
    changed = {name for name in before if after[name] != before[name]}
    assert changed == set(before), f"still the old certificate: {set(before) - changed}"
    assert after == {name: file_serial(folder, name) for name in after}
    now = _pids(cluster)
    moved = {name for name in pids if now[name] != pids[name]}
    assert moved == {"haproxy"} | {f"sentinel-{s}" for s in cluster.topo.sites}
    assert writers.load.errors == []


# Restarts every etcd member and Sentinel twice (minutes): `make drills` runs it, CI does not.
@pytest.mark.slow
async def test_ca_rotation_in_three_steps_under_load(
    cluster: LocalCluster, writers: Writers
) -> None:
    """#12 item 1: `rotate --ca` (bundle old + new; etcd restarted one member at a time),
    `rotate` (every leaf from the new CA) and `rotate --drop-old-ca` on the running system
    under write load from API clients that take the new bundle between the first and second
    steps, as the command tells: no submission fails, after the second step every listener
    presents a
    certificate of the new CA, and after the third a client trusting only the old CA is
    refused by every listener while the system is healthy."""
    folder = pki.PkiDir(cluster.state.pki)
    old_ca = folder.ca_cert.read_bytes()
    etcd_before = {s: cluster.pid(f"etcd-{s}") for s in cluster.topo.sites}

    writers.load.step = "rotate --ca"
    out = await asyncio.to_thread(_rotate, cluster, "--ca")
    assert "etcd-" in out
    assert len(pki.load_bundle(folder)) == 2
    assert all(cluster.pid(f"etcd-{s}") != pid for s, pid in etcd_before.items())
    assert "give API clients the new" in out
    await writers.at_least(10)
    # What the command says to do between the steps: API clients get the new bundle.
    writers.ctx.load_verify_locations(cafile=str(folder.bundle))

    writers.load.step = "rotate (from the new CA)"
    await asyncio.to_thread(_rotate, cluster)
    await writers.at_least(10)
    new_only = _trusting(cluster, folder.ca_cert.read_bytes())
    serials = await _serials(cluster, new_only)  # verifies against the new CA alone
    assert serials == {name: file_serial(folder, name) for name in serials}

    writers.load.step = "rotate --drop-old-ca"
    await asyncio.to_thread(_rotate, cluster, "--drop-old-ca")
    await writers.at_least(10)
    assert len(pki.load_bundle(folder)) == 1
    old_only = _trusting(cluster, old_ca)
    for lsn in _listeners(cluster):
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.to_thread(
                presented_serial, lsn.host, lsn.port, old_only, postgres=lsn.postgres
            )
    code, doc = await asyncio.to_thread(cluster.status)
    assert code == 0, doc
    assert writers.load.errors == []


def _trusting(cluster: LocalCluster, ca_pem: bytes) -> ssl.SSLContext:
    """A client context trusting only `ca_pem`, presenting the operator's certificate."""
    path = cluster.state.root / f"only-{x509.load_pem_x509_certificate(ca_pem).serial_number}.pem"
    path.write_bytes(ca_pem)
    pem = cluster.state.pki / control_tls.OPERATOR_CERT
    return tls.client_context(path, cert=pem.with_suffix(".crt"), key=pem.with_suffix(".key"))


def test_the_sentinel_runbook_command_works(cluster: LocalCluster) -> None:
    """#12 item 1 (runbook): the `redis-cli ... sentinel masters` command RocarsRedisPrimaryDown
    tells the operator to run works as written (TLS, client certificate, the monitor user)
    once the state folder and a Sentinel's address are filled in."""
    rules = yaml.safe_load((REPO_ROOT / "monitoring" / "rules" / "alerts.yml").read_text())
    alert = next(
        r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "RocarsRedisPrimaryDown"
    )
    command = re.search(r"`(REDISCLI_AUTH=[^`]+)`", alert["annotations"]["description"])
    assert command is not None
    witness = cluster.topo.sites[cluster.topo.witness_site]
    line = (
        command.group(1)
        .replace("<state>", str(cluster.state.root))
        .replace("<sentinel host>", witness.host)
        .replace("<sentinel port>", str(witness.sentinel.port))
    )
    done = subprocess.run(
        ["bash", "-c", line], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "rocars" in done.stdout.split(), done.stdout
