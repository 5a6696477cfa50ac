"""Latency of submission and of the LBCP arrival decision through HAProxy on the local cluster.

Printed with a `[measure]` prefix (visible with -s) for the issue's report. Timings depend on the
machine, so only a generous sanity bound is asserted.
"""

from __future__ import annotations

import statistics
import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from apikit import Accounts, Api, backdate_consignments, bundle, consignment_body, new_vrn, submit

pytestmark = pytest.mark.integration

N = 200


def summary(samples_ms: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return {
        "p50": statistics.median(samples_ms),
        "p95": qs[94],
        "p99": qs[98],
        "max": max(samples_ms),
    }


def report(what: str, samples_ms: list[float]) -> dict[str, float]:
    s = summary(samples_ms)
    print(
        f"\n[measure] {what}: n={len(samples_ms)} p50={s['p50']:.2f} ms p95={s['p95']:.2f} ms"
        f" p99={s['p99']:.2f} ms max={s['max']:.2f} ms"
    )
    return s


async def test_submission_and_arrival_decision_latency(
    api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """Sequential submissions and gate decisions through HAProxy answer well under 200 ms (p50)."""
    # Warm up connections and the account cache.
    for _ in range(10):
        await submit(api, accounts.trader.key)

    sub_ms: list[float] = []
    for _ in range(N):
        body = consignment_body()
        t0 = time.perf_counter()
        r = await api.post("/v1/consignments", accounts.trader.key, json=body)
        sub_ms.append((time.perf_counter() - t0) * 1000)
        assert r.status == 201
    sub = report("submission POST /v1/consignments (HAProxy)", sub_ms)

    # Trucks waiting at the gate: N with one consignment each, past the profiling window, and
    # N empty trucks; each arrives once (released: the full path, including closing the bundle).
    trucks: list[str] = []
    for _ in range(N // 2):
        c = await submit(api, accounts.trader.key, lbcp="SBC")
        await backdate_consignments(db, [c["ccrn"]], timedelta(minutes=31))
        trucks.append((await bundle(api, accounts.trucker.key, [c["ccrn"]], lbcp="SBC"))["vrn"])
    for _ in range(N // 2):
        vrn = new_vrn()
        r = await api.post(
            "/v1/bundles", accounts.trucker.key, json={"vrn": vrn, "lbcp": "SBC", "empty": True}
        )
        assert r.status == 201
        trucks.append(vrn)

    gate_ms: list[float] = []
    for vrn in trucks:
        t0 = time.perf_counter()
        r = await api.post("/v1/lbcp/SBC/arrivals", accounts.officer.key, json={"vrn": vrn})
        gate_ms.append((time.perf_counter() - t0) * 1000)
        assert r.status == 200
        assert r.json["decision"] == "release", r.json
    gate = report("arrival decision POST /v1/lbcp/SBC/arrivals, release (HAProxy)", gate_ms)

    hold_ms: list[float] = []
    for _ in range(N):
        t0 = time.perf_counter()
        r = await api.post("/v1/lbcp/SBC/arrivals", accounts.officer.key, json={"vrn": new_vrn()})
        hold_ms.append((time.perf_counter() - t0) * 1000)
        assert r.json["decision"] == "hold"
    report("arrival decision, unknown vehicle held (HAProxy)", hold_ms)

    assert sub["p50"] < 200
    assert gate["p50"] < 200
