"""Manual clearance with the database gone: the whole officer story on the real cluster.

Both PostgreSQL members are killed, manual mode is switched on through a node's API (the
officer's key verified from the node's key cache) and, with etcd down too, through the CLI's
local override; 50 trucks are cleared by hand while a node is killed -9 and restarted by its
supervisor; then PostgreSQL comes back, reconciliation runs twice, and every record is found
exactly once with the matched consignments cleared. `/v1/status` answers throughout.

Every mode change (API and CLI, cluster-wide and --local) answers once the nodes apply it, so the
tests check each node's answer right after it, never after a sleep. Each test starts from a
running cluster in normal mode (`_normal`), whatever the test before it left behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import psutil
import psycopg
import pytest
from apikit import keys_cached, kill_databases

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
    return c.create_account(kind, f"t {kind}")[1]


def _cli_doc(out: str) -> dict[str, Any]:
    """The last JSON document a `rocars contingency ...` command printed (they are indented, so
    each top-level one starts with a line that is just "{")."""
    text = "\n" + out
    doc: dict[str, Any] = json.loads(text[text.rindex("\n{") + 1 : text.rindex("}") + 1])
    return doc


def _normal(c: LocalCluster) -> None:
    """Every process running, no local override, manual mode off: the start of each test."""
    c.up()
    root = str(c.state.root)
    c.rocars("contingency", "deactivate", "--local", "--state-dir", root)
    if _cli_doc(c.rocars("contingency", "status", "--state-dir", root))["mode"] != "normal":
        c.rocars("contingency", "deactivate", "--reason", "test starts normal", "--state-dir", root)


async def _health(s: aiohttp.ClientSession, c: LocalCluster, site: str) -> dict[str, Any]:
    """The contingency section of a node's /health: the mode that node applies."""
    async with s.get(f"{c.topo.node_url(site)}/health") as r:
        section: dict[str, Any] = (await r.json(content_type=None))["contingency"]
    return section


def _kill_etcd(c: LocalCluster) -> None:
    for site in c.topo.sites:
        pid = c.pid(f"etcd-{site}")
        if pid:
            os.kill(pid, signal.SIGKILL)


class StatusPoller:
    """Polls GET /v1/status on both nodes and counts anything but 200. It runs in a thread with
    its own event loop: the scenario calls the CLI and kills processes synchronously, and a poll
    waiting on the scenario's loop through such a call timed out with the node's answer already
    in the socket (one CI run). Each failure says when it happened (seconds since the start)
    and the slowest answer per site is kept, so a failure can be placed and a pass shows its
    margin."""

    def __init__(self, c: LocalCluster) -> None:
        self.c = c
        self.ok = 0
        self.failures: list[str] = []
        self.slowest: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    async def _run(self) -> None:
        started = time.monotonic()
        async with self.c.session() as s:
            while not self._stop.is_set():
                for site in self.c.topo.data_sites:
                    url = f"{self.c.topo.node_url(site)}/v1/status"
                    sent = time.monotonic()
                    try:
                        async with s.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                            if r.status == 200:
                                self.ok += 1
                            else:
                                self.failures.append(f"{site}: HTTP {r.status}")
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        # A node being restarted by its supervisor is expected to refuse
                        # connections briefly; anything else is a failure.
                        self.failures.append(f"{site}: {exc!r} at {sent - started:.1f} s")
                    took = time.monotonic() - sent
                    self.slowest[site] = max(self.slowest.get(site, 0.0), took)
                await asyncio.sleep(0.2)


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


async def _gate_answers(c: LocalCluster, officer: str, lbcp: str) -> dict[str, str]:
    """What each node's gate answers for a truck at `lbcp`, asked once (no polling)."""
    out = {}
    async with c.session() as s:
        for site in c.topo.data_sites:
            code, doc = await _post(
                s, f"{c.topo.node_url(site)}/v1/lbcp/{lbcp}/arrivals", officer, {"vrn": "ZZ1"}
            )
            out[site] = doc.get("decision") if code == 200 else f"HTTP {code}"
    return out


def test_manual_clearance_through_a_full_outage(outage_cluster: LocalCluster) -> None:
    """Activation with PostgreSQL down (API) and etcd down (CLI override), 50 clearances
    through a node crash, then exactly-once reconciliation that clears matched consignments."""
    c = outage_cluster
    _normal(c)
    officer = _account(c, "officer")
    trader = _account(c, "trader")
    trucker = _account(c, "trucker")
    manual_everywhere = dict.fromkeys(c.topo.data_sites, "manual")

    poller = StatusPoller(c)

    async def scenario() -> None:
        async with c.session() as s:
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
            await keys_cached(c, [officer, trader, trucker])

            kill_databases(c)
            t0 = time.monotonic()
            code, doc = await _post(
                s,
                f"{c.topo.node_url('B')}/v1/contingency/activate",
                officer,
                {"reason": "both database members down", "lbcps": ["LMC"]},
            )
            print(
                f"\n[measure] activation answered (every node applying it): "
                f"{time.monotonic() - t0:.3f}s"
            )
            assert code == 200, doc
            assert doc["mode"] == "manual"
            assert doc["audited_to"] == "journal"
            # The answer came once both nodes applied it: their gates say so at once.
            assert doc["nodes"] == manual_everywhere
            assert doc["not_applied"] == []
            assert await _gate_answers(c, officer, "LMC") == manual_everywhere
            # An LBCP left in normal mode needs the database, which is down.
            assert await _gate_answers(c, officer, "SBC") == dict.fromkeys(
                c.topo.data_sites, "HTTP 503"
            )
            # Every node's /health shows the mode it applies (I6), with the scope and start.
            for site in c.topo.data_sites:
                health = await _health(s, c, site)
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
            assert code == 503  # unverifiable without the database: refused, retry later

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
            assert _cli_doc(out) == {"nodes": manual_everywhere, "not_applied": []}
            assert await _gate_answers(c, officer, "MKT") == manual_everywhere

            # Writes get a problem saying manual clearance is in effect (through node A: with
            # both databases down no node is ready, so HAProxy has no server to send it to).
            code, doc = await _post(s, f"{c.topo.node_url('A')}/v1/consignments", trader, body)
            assert code == 503, doc
            assert doc["mode"] == "manual"
            assert "present your cargo documents" in doc["detail"]

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
        async with c.session() as s:
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

            out = c.rocars("contingency", "deactivate", "--local", "--state-dir", str(c.state.root))
            assert _cli_doc(out)["not_applied"] == []
            out = c.rocars(
                "contingency",
                "deactivate",
                "--reason",
                "restored",
                "--state-dir",
                str(c.state.root),
            )
            assert '"imported": 0' in out
            # The command returned once both nodes applied normal mode: whichever node the
            # entry point picks, and each node asked directly, says normal at once.
            normal_everywhere = dict.fromkeys(c.topo.data_sites, "normal")
            assert _cli_doc(out)["nodes"] == normal_everywhere
            for url in [c.topo.entry_url(), *map(c.topo.node_url, c.topo.data_sites)]:
                async with s.get(f"{url}/v1/status") as r:
                    assert (await r.json())["mode"] == "normal", url
        poller.stop()
        slowest = ", ".join(f"{site} {t:.2f} s" for site, t in sorted(poller.slowest.items()))
        print(f"\n[measure] slowest status poll through the outage: {slowest}")
        # Node A was killed once on purpose: allow the few refused polls while it restarted.
        bad = [f for f in poller.failures if not f.startswith("A: ClientConnectorError")]
        assert bad == [], bad[:5]
        assert poller.ok > 50

    poller.start()
    try:
        asyncio.run(scenario())
    finally:
        poller.stop()


def test_local_override_is_a_file_per_node_applied_at_once(outage_cluster: LocalCluster) -> None:
    """`activate --local --site A` writes node A's override file only and returns once node A
    applies it (manual, by its override), while node B stays normal; `deactivate --local`
    removes the file and returns once node A is normal again."""
    c = outage_cluster
    _normal(c)
    root = str(c.state.root)
    folder = c.state.root / "contingency"
    out = c.rocars(
        "contingency",
        "activate",
        "--local",
        "--site",
        "A",
        "--reason",
        "drill",
        "--state-dir",
        root,
    )
    assert _cli_doc(out) == {"nodes": {"A": "manual"}, "not_applied": []}
    assert sorted(p.name for p in folder.glob("override-*.json")) == ["override-A.json"]

    async def sections() -> dict[str, dict[str, Any]]:
        async with c.session() as s:
            return {site: await _health(s, c, site) for site in c.topo.data_sites}

    health = asyncio.run(sections())
    assert (health["A"]["mode"], health["A"]["local_override"]) == ("manual", True)
    assert (health["B"]["mode"], health["B"]["local_override"]) == ("normal", False)

    out = c.rocars("contingency", "deactivate", "--local", "--site", "A", "--state-dir", root)
    assert _cli_doc(out) == {"nodes": {"A": "normal"}, "not_applied": []}
    assert not list(folder.glob("override-*.json"))
    health = asyncio.run(sections())
    assert {site: h["mode"] for site, h in health.items()} == {"A": "normal", "B": "normal"}
    assert not any(h["local_override"] for h in health.values())
