"""The batch bomb (#10 item 2, Tests): 10 MiB hostile batches through HAProxy while a writer
keeps submitting single consignments. The active node stays live and ready throughout, HAProxy
never answers 502 (it would if its check took the busy node out), and the writer's p99 stays
under 1 s. Figures are printed with a `[measure]` prefix (visible with -s)."""

from __future__ import annotations

import asyncio
import io
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from apikit import Account, consignment_body

from deploy.admin import leader_site
from deploy.harness import LocalCluster

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
CAP = 10 * MiB
SLOW_MS = 200.0


def one_cell_rows_csv() -> bytes:
    """10 MiB of one-cell rows: five million items, if anything parsed them all."""
    return b"a\n" + b"x\n" * (CAP // 2 - 2)


def invalid_items_json() -> bytes:
    """Just under 10 MiB: 10,000 invalid consignments of about 1 KiB each (all parsed and
    validated, all rejected with their errors listed)."""
    item = {"direction": "sideways", "lbcp": "NOPE", "package_count": "many", "x": "y" * 940}
    body = json.dumps([item] * 10_000).encode()
    assert len(body) <= CAP
    return body


def deep_json() -> bytes:
    return b"[" * CAP


@dataclass
class Log:
    """What the writer and the health pollers saw."""

    writes_ms: list[float] = field(default_factory=list)
    write_status: dict[int, int] = field(default_factory=dict)
    health: dict[str, dict[int, int]] = field(default_factory=dict)
    health_max_ms: dict[str, float] = field(default_factory=dict)
    nodes: set[str] = field(default_factory=set)
    # (started at, took ms, what) of every answer slower than SLOW_MS, and the bombs' spans.
    slow: list[tuple[float, float, str]] = field(default_factory=list)
    bombs: list[tuple[float, float, str]] = field(default_factory=list)

    def timed(self, what: str, started: float, took_ms: float) -> None:
        if took_ms > SLOW_MS:
            self.slow.append((started, took_ms, what))

    def during(self, at: float, took_ms: float) -> str:
        end = at + took_ms / 1000
        names = [n for s, e, n in self.bombs if s < end and at < e]
        return ", ".join(names) or "no bomb"

    def count(self, table: dict[int, int], status: int) -> None:
        table[status] = table.get(status, 0) + 1


async def writer(
    session: aiohttp.ClientSession, url: str, key: str, log: Log, stop: asyncio.Event
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    while not stop.is_set():
        t0 = time.perf_counter()
        async with session.post(url, json=consignment_body(), headers=headers) as r:
            await r.read()
            log.writes_ms.append((time.perf_counter() - t0) * 1000)
            log.timed("write", t0, log.writes_ms[-1])
            log.count(log.write_status, r.status)
            log.nodes.add(r.headers.get("X-Rocars-Node", "?"))


async def poll(
    session: aiohttp.ClientSession, url: str, name: str, log: Log, stop: asyncio.Event
) -> None:
    table = log.health.setdefault(name, {})
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
                await r.read()
                status = r.status
        except (TimeoutError, aiohttp.ClientError):
            status = 0  # no answer within 5 s
        took = (time.perf_counter() - t0) * 1000
        log.health_max_ms[name] = max(log.health_max_ms.get(name, 0.0), took)
        log.timed(name, t0, took)
        log.count(table, status)
        await asyncio.sleep(0.05)


async def test_hostile_batches_do_not_stall_the_node(
    cluster: LocalCluster, new_account: Callable[[str], Account]
) -> None:
    """#10 item 2 (the batch bomb): a 10 MiB CSV of one-cell rows, a 10 MiB JSON batch of
    10,000 invalid items and 10 MiB of `[[[[`, each sent twice through HAProxy while a writer
    keeps submitting: every bomb gets its 4xx/200 (never a 5xx or 502), /health/live and
    /health/ready of the active node answer 200 within 1 s at every poll, and the writer's p99
    stays under 1 s with every submission 201 from the same node."""
    entry = cluster.topo.entry_url().rstrip("/")
    node = cluster.topo.node_url(await leader_site(cluster.topo)).rstrip("/")
    writer_key = new_account("trader").key
    bombs = [
        ("csv one-cell rows", one_cell_rows_csv(), "text/csv", 422),
        ("json 10,000 invalid items", invalid_items_json(), "application/json", 200),
        ("json [[[[", deep_json(), "application/json", 400),
    ]
    # A fresh trader per bomb (each batch has its account's whole window), made up front: the
    # admin command blocks this test's event loop for most of a second.
    bomb_keys = [new_account("trader").key for _ in range(2 * len(bombs))]
    log = Log()
    stop = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=60)
    async with cluster.session(timeout=timeout) as session:
        tasks = [
            asyncio.create_task(writer(session, f"{entry}/v1/consignments", writer_key, log, stop)),
            asyncio.create_task(poll(session, f"{node}/health/live", "live", log, stop)),
            asyncio.create_task(poll(session, f"{node}/health/ready", "ready", log, stop)),
        ]
        try:
            await asyncio.sleep(1.0)  # the writer's baseline
            for round_ in range(2):
                for name, body, ctype, expected in bombs:
                    headers = {
                        "Authorization": f"Bearer {bomb_keys.pop()}",
                        "Content-Type": ctype,
                    }
                    t0 = time.perf_counter()
                    async with session.post(
                        f"{entry}/v1/consignments:batch", data=io.BytesIO(body), headers=headers
                    ) as r:
                        raw = await r.read()
                    took = time.perf_counter() - t0
                    log.bombs.append((t0, t0 + took, name))
                    print(
                        f"\n[measure] bomb {name} (round {round_ + 1}): {len(body) / MiB:.1f} MiB"
                        f" -> {r.status} in {took:.2f} s ({len(raw) / 1024:.0f} KiB answer)"
                    )
                    assert r.status == expected, (name, r.status, raw[:500])
            await asyncio.sleep(1.0)  # and after
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    p99 = statistics.quantiles(log.writes_ms, n=100, method="inclusive")[98]
    print(
        f"\n[measure] writer during the bombs: n={len(log.writes_ms)}"
        f" p50={statistics.median(log.writes_ms):.1f} ms p99={p99:.1f} ms"
        f" max={max(log.writes_ms):.1f} ms statuses={log.write_status} nodes={sorted(log.nodes)}"
        f"\n[measure] health polls: {log.health} slowest {log.health_max_ms} (ms)"
    )
    for at, took_ms, what in log.slow:
        print(f"[measure] slow {what}: {took_ms:.0f} ms, during {log.during(at, took_ms)}")
    assert log.write_status == {201: len(log.writes_ms)}, log.write_status
    assert len(log.nodes) == 1, log.nodes
    assert p99 < 1000, p99
    for name in ("live", "ready"):
        assert set(log.health[name]) == {200}, (name, log.health[name])
        # Slower than HAProxy's `timeout check` (deploy/configgen.py) is a failed check.
        assert log.health_max_ms[name] < 1000, (name, log.health_max_ms[name])
