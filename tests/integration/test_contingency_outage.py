"""Manual clearance with the database gone: the whole officer story on the real cluster.

Both PostgreSQL members are killed, manual mode is switched on through a node's API (the
officer's key verified from the node's key cache) and, with etcd down too, through the CLI's
local override; 50 trucks are cleared by hand while a node is killed -9 and restarted by its
supervisor; then PostgreSQL comes back, reconciliation runs twice, and every record is found
exactly once with the matched consignments cleared. `/v1/status` answers throughout.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import psycopg
import pytest

from deploy import processes
from deploy.admin import leader_site
from deploy.harness import TEST_PORT_OFFSETS, LocalCluster
from node.config import load_node_config

pytestmark = pytest.mark.integration

PORT_OFFSET = int(
    os.environ.get("ROCARS_CONTINGENCY_PORT_OFFSET", str(TEST_PORT_OFFSETS["contingency"]))
)


@pytest.fixture(scope="module")
def outage_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("contingency")
    with LocalCluster.running(root, port_offset=PORT_OFFSET) as c:
        yield c


def _account(c: LocalCluster, kind: str) -> str:
    out = c.rocars(
        "admin",
        "create-account",
        "--kind",
        kind,
        "--name",
        f"t {kind}",
        "--state-dir",
        str(c.state.root),
    )
    return str(json.loads(out.strip().splitlines()[-1])["api_key"])


def _kill_databases(c: LocalCluster) -> None:
    for site in c.topo.data_sites:
        for pid in (
            c.pid(f"patroni-{site}"),
            processes.postmaster_pid(c.state.member_dir(site) / "data"),
        ):
            if pid:
                os.kill(pid, signal.SIGKILL)


def _kill_etcd(c: LocalCluster) -> None:
    for site in c.topo.sites:
        pid = c.pid(f"etcd-{site}")
        if pid:
            os.kill(pid, signal.SIGKILL)


class StatusPoller:
    """Polls GET /v1/status on both nodes and counts anything but 200."""

    def __init__(self, c: LocalCluster) -> None:
        self.c = c
        self.ok = 0
        self.failures: list[str] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        async with aiohttp.ClientSession() as s:
            while not self._stop.is_set():
                for site in self.c.topo.data_sites:
                    url = f"{self.c.topo.node_url(site)}/v1/status"
                    try:
                        async with s.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                            if r.status == 200:
                                self.ok += 1
                            else:
                                self.failures.append(f"{site}: HTTP {r.status}")
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        # A node being restarted by its supervisor is expected to refuse
                        # connections briefly; anything else is a failure.
                        self.failures.append(f"{site}: {exc!r}")
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()


async def _post(
    s: aiohttp.ClientSession, url: str, key: str, body: dict[str, Any], *, tries: int = 50
) -> tuple[int, dict[str, Any]]:
    last: Exception | None = None
    for _ in range(tries):
        try:
            async with s.post(
                url,
                json=body,
                headers={"Authorization": f"Bearer {key}"},
                timeout=aiohttp.ClientTimeout(total=5),
            ) as r:
                return r.status, await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            last = exc
            await asyncio.sleep(0.2)
    raise AssertionError(f"{url} unreachable: {last!r}")


async def _wait_manual(c: LocalCluster, officer: str, lbcp: str, timeout: float = 10) -> float:
    """Seconds until every node answers `manual` at `lbcp`."""
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as s:
        pending = set(c.topo.data_sites)
        while pending and time.monotonic() - t0 < timeout:
            for site in sorted(pending):
                code, doc = await _post(
                    s, f"{c.topo.node_url(site)}/v1/lbcp/{lbcp}/arrivals", officer, {"vrn": "ZZ1"}
                )
                if code == 200 and doc.get("decision") == "manual":
                    pending.discard(site)
            await asyncio.sleep(0.05)
        assert not pending, f"nodes {pending} not manual after {timeout}s"
    return time.monotonic() - t0


def test_manual_clearance_through_a_full_outage(outage_cluster: LocalCluster) -> None:
    """Activation with PostgreSQL down (API) and etcd down (CLI override), 50 clearances
    through a node crash, then exactly-once reconciliation that clears matched consignments."""
    c = outage_cluster
    officer = _account(c, "officer")
    trader = _account(c, "trader")
    trucker = _account(c, "trucker")

    async def scenario() -> None:
        poller = StatusPoller(c)
        poll_task = asyncio.create_task(poller.run())
        async with aiohttp.ClientSession() as s:
            entry = c.topo.entry_url()
            # A truck bundled before the outage, to be matched by reconciliation.
            body = {
                "direction": "import",
                "lbcp": "LMC",
                "package_count": 2,
                "package_description": "cartons",
                "article_description": "toys",
                "consignor_name": "A",
                "consignor_address": "SZ",
                "consignee_name": "B",
                "consignee_address": "HK",
                "expected_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            }
            code, cons = await _post(s, f"{entry}/v1/consignments", trader, body)
            assert code == 201, cons
            code, bundle = await _post(
                s,
                f"{entry}/v1/bundles",
                trucker,
                {"vrn": "AB1234", "lbcp": "LMC", "ccrns": [cons["ccrn"]]},
            )
            assert code == 201, bundle
            await asyncio.sleep(7)  # let each node's key cache pick up the new accounts

            _kill_databases(c)
            await asyncio.sleep(2)
            t0 = time.monotonic()
            code, doc = await _post(
                s,
                f"{c.topo.node_url('B')}/v1/contingency/activate",
                officer,
                {"reason": "both database members down", "lbcps": ["LMC"]},
            )
            assert code == 200, doc
            assert doc["mode"] == "manual"
            assert doc["audited_to"] == "journal"
            took = await _wait_manual(c, officer, "LMC")
            print(
                f"\n[measure] activation to every node answering manual: "
                f"{time.monotonic() - t0:.3f}s (poll after answer {took:.3f}s)"
            )
            # Every node's /health shows the mode it applies (I6), with the scope and start.
            for site in c.topo.data_sites:
                async with s.get(f"{c.topo.node_url(site)}/health") as r:
                    health = (await r.json(content_type=None))["contingency"]
                assert health["mode"] == "manual", (site, health)
                assert health["scope"] == ["LMC"]
                assert health["since"] is not None

            # A wrong key is refused even though the database cannot be asked.
            code, doc = await _post(
                s,
                f"{c.topo.node_url('A')}/v1/contingency/activate",
                "rk_00000000_bogus",
                {"reason": "x"},
            )
            assert code == 401

            # etcd gone too: the CLI's local override still switches MKT to manual at once.
            _kill_etcd(c)
            out = c.rocars(
                "contingency",
                "activate",
                "--local",
                "--lbcp",
                "MKT",
                "--reason",
                "etcd and database down",
                "--state-dir",
                str(c.state.root),
            )
            assert "local override written" in out
            await _wait_manual(c, officer, "MKT", timeout=3)

            # Writes get a problem saying manual clearance is in effect.
            code, doc = await _post(s, f"{entry}/v1/consignments", trader, body)
            assert code == 503
            assert doc["status"] == 503

            uuids: list[str] = []
            for i in range(50):
                site = "AB"[i % 2]
                if i == 20:
                    sup = c.pid("node-A")
                    assert sup is not None
                    for child in psutil.Process(sup).children():
                        os.kill(child.pid, signal.SIGKILL)
                rec = {
                    "lbcp": "LMC",
                    "vrn": f"TRK{i:03d}",
                    "decision": "release",
                    "documents": [f"manifest {i}"],
                }
                if i == 0:
                    rec.update(vrn="AB 1234", ccrns=[cons["ccrn"]])
                code, doc = await _post(
                    s, f"{c.topo.node_url(site)}/v1/contingency/clearances", officer, rec
                )
                assert code == 202, doc
                uuids.append(doc["uuid"])
            assert len(set(uuids)) == 50

            # Everything back: PostgreSQL and etcd restart and rejoin.
        await asyncio.to_thread(c.up)
        async with aiohttp.ClientSession() as s:
            r1 = json.loads(c.rocars("contingency", "reconcile", "--state-dir", str(c.state.root)))
            r2 = json.loads(c.rocars("contingency", "reconcile", "--state-dir", str(c.state.root)))
            assert r1["imported"] == 50, r1
            assert r1["matched"] == 1
            assert r2["imported"] == 0, r2
            assert r1["audit_imported"] >= 1  # the activation made while PostgreSQL was down

            site = await leader_site(c.topo)
            cfg = load_node_config(c.state.node_config(site))
            async with await psycopg.AsyncConnection.connect(
                cfg.database.conninfo(application_name="test")
            ) as conn:
                cur = await conn.execute(
                    "SELECT count(*), count(DISTINCT uuid) FROM manual_clearances"
                    " WHERE uuid = ANY(%s::uuid[])",
                    (uuids,),
                )
                assert await cur.fetchone() == (50, 50)
                cur = await conn.execute(
                    "SELECT status, lbcp_outcome FROM consignments WHERE ccrn = %s",
                    (cons["ccrn"],),
                )
                assert await cur.fetchone() == ("cleared", "released")
                cur = await conn.execute(
                    "SELECT status FROM bundles WHERE id = %s", (bundle["id"],)
                )
                assert await cur.fetchone() == ("closed",)

            # Manual mode (and 2 h after it): a late submission (10 minutes ahead) is accepted
            # without a late flag; in normal operation it is refused (tests/integration).
            late = {**body, "expected_at": (datetime.now(UTC) + timedelta(minutes=10)).isoformat()}
            code, doc = await _post(s, f"{c.topo.entry_url()}/v1/consignments", trader, late)
            assert code == 201, doc
            assert doc["mode"] == "manual"
            assert doc["ccrn"]

            c.rocars("contingency", "deactivate", "--local", "--state-dir", str(c.state.root))
            out = c.rocars(
                "contingency",
                "deactivate",
                "--reason",
                "restored",
                "--state-dir",
                str(c.state.root),
            )
            assert '"imported": 0' in out
            async with s.get(f"{c.topo.entry_url()}/v1/status") as r:
                assert (await r.json())["mode"] == "normal"
        poller.stop()
        await poll_task
        # Node A was killed once on purpose: allow the few refused polls while it restarted.
        bad = [f for f in poller.failures if not f.startswith("A: ClientConnectorError")]
        assert bad == [], bad[:5]
        assert poller.ok > 50

    asyncio.run(scenario())


def test_override_file_path_is_per_site(outage_cluster: LocalCluster, tmp_path: Path) -> None:
    """The local override is a file per node under the state folder, removed by deactivate."""
    folder = outage_cluster.state.root / "contingency"
    assert not list(folder.glob("override-*.json"))
