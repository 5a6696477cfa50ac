"""The open-loop generator: a few processes, each keeping its share of one schedule
(`deploy.bench.schedule`) with the keep-alive client of `deploy.bench.http`.

Processes (spawned, so none inherits the parent's event loop or sockets) each take every n-th
shot of the same schedule. They start together at a monotonic time the parent picks once all
have reported ready (CLOCK_MONOTONIC is one clock for every process on Linux), and report their
outcomes and their own CPU time, which the bench prints to show the generator was not the
bottleneck.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import resource
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from urllib.parse import urlsplit

from deploy.bench import http
from deploy.bench.schedule import NO_ANSWER, Outcome, Phase, Shot, build_schedule, keep_schedule
from deploy.bench.schedule import share as share_of
from kernel import tls

SUBMISSION = "submission"
ARRIVAL = "arrival"
# Connections per generator process; beyond them requests wait (counted in their latency).
POOL_SIZE = 400
REQUEST_TIMEOUT_S = 30.0
START_DELAY_S = 0.5
# Warm-up (see warm_count): a request's time in flight when the system keeps up, generously.
WARM_LATENCY_S = 0.25
MIN_WARM = 16


@dataclass(frozen=True)
class Target:
    """Everything a generator process needs to build its requests."""

    api: str  # https://host:port of HAProxy
    run: str  # unique per run: part of every Idempotency-Key
    trader_keys: tuple[str, ...]
    officer_key: str
    consignment: bytes  # the submission body
    lbcp: str
    vrns: tuple[str, ...]  # trucks with bundles, for arrival decisions
    ca: str | None = None  # the CA bundle HAProxy's certificate chains to (None: plain HTTP)


def request_for(target: Target, shot: Shot, host: str) -> bytes:
    """The bytes of `shot`'s request: a unique Idempotency-Key each, accounts and trucks in
    turn."""
    key = f"bench-{target.run}-{shot.seq}"
    if shot.kind == SUBMISSION:
        bearer = target.trader_keys[shot.seq % len(target.trader_keys)]
        path, body = "/v1/consignments", target.consignment
    elif shot.kind == ARRIVAL:
        bearer = target.officer_key
        vrn = target.vrns[shot.seq % len(target.vrns)]
        path, body = f"/v1/lbcp/{target.lbcp}/arrivals", b'{"vrn":"%s"}' % vrn.encode()
    else:
        raise ValueError(f"unknown request kind {shot.kind!r}")
    headers = {
        "Authorization": f"Bearer {bearer}",
        "Content-Type": "application/json",
        "Idempotency-Key": key,
    }
    return http.build_request("POST", path, host, headers, body)


@dataclass(frozen=True)
class WorkerResult:
    outcomes: list[Outcome]
    cpu_s: float  # user + system CPU of the process over the run


def warm_count(shots: list[Shot]) -> int:
    """Connections to open before the run: the busiest second's requests in flight for
    WARM_LATENCY_S each (Little's law), at least a few, at most the pool."""
    per_second: dict[int, int] = {}
    for shot in shots:
        per_second[int(shot.at)] = per_second.get(int(shot.at), 0) + 1
    busiest = max(per_second.values(), default=0)
    return max(MIN_WARM, min(POOL_SIZE, math.ceil(busiest * WARM_LATENCY_S)))


async def _run_share(target: Target, shots: list[Shot], conn: Connection) -> list[Outcome]:
    url = urlsplit(target.api)
    assert url.hostname is not None and url.port is not None
    host = f"{url.hostname}:{url.port}"
    # Built in the worker process (a context does not pickle).
    ctx = None if target.ca is None else tls.client_context(Path(target.ca))
    pool = http.Pool(url.hostname, url.port, POOL_SIZE, timeout=REQUEST_TIMEOUT_S, ssl_context=ctx)

    async def send(shot: Shot) -> tuple[int, bool]:
        try:
            answer = await pool.request(request_for(target, shot, host))
        except (OSError, TimeoutError, http.HttpError, asyncio.IncompleteReadError):
            return NO_ANSWER, False
        return answer.status, answer.retry_after

    try:
        await pool.warm(warm_count(shots))
        conn.send("ready")
        start = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        return await keep_schedule(
            shots, send, clock=time.monotonic, sleep=asyncio.sleep, start=start
        )
    finally:
        await pool.close()


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _worker(conn: Connection, target: Target, phases: list[Phase], index: int, n: int) -> None:
    shots = share_of(build_schedule(phases), index, n)
    cpu0 = _cpu()
    outcomes = asyncio.run(_run_share(target, shots, conn))
    conn.send(WorkerResult(outcomes, _cpu() - cpu0))
    conn.close()


@dataclass(frozen=True)
class LoadResult:
    outcomes: list[Outcome]
    cpu_s: float  # all generator processes together
    wall_s: float  # from the scheduled start to the last answer

    @property
    def cpu_share(self) -> float:
        """The generator's CPU as a share of one core over the run."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


def run(target: Target, phases: list[Phase], *, processes: int) -> LoadResult:
    """Offer `phases` with `processes` generator processes; blocks until all are answered."""
    ctx = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    for i in range(processes):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_worker, args=(child, target, phases, i, processes), daemon=True)
        p.start()
        child.close()
        pipes.append(parent)
        procs.append(p)
    try:
        for pipe in pipes:
            if pipe.recv() != "ready":
                raise RuntimeError("a generator process did not start")
        start = time.monotonic() + START_DELAY_S
        for pipe in pipes:
            pipe.send(start)
        results: list[WorkerResult] = [pipe.recv() for pipe in pipes]
        wall = time.monotonic() - start
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
        for pipe in pipes:
            pipe.close()
    outcomes = sorted((o for r in results for o in r.outcomes), key=lambda o: o.scheduled)
    return LoadResult(outcomes, sum(r.cpu_s for r in results), wall)
