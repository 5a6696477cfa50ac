"""A recorded workload (#14 item 2): concurrent clients doing every kind of write through the
API entry point (HAProxy), each operation recorded in a `History`, plus a sampler recording the
cluster's role facts, for the checker (`deploy.drills.checker`).

- Traders (`clients_per_trader` clients per account, so amendments of one consignment race):
  submissions, amendments of their own recent consignments, and small batches.
- Truckers: each bundles one acknowledged, not yet bundled consignment with a fresh VRN.
- Officers: arrival decisions for the bundled VRNs (or unknown ones when none is waiting), and
  every `clearance_every`-th operation a manual clearance record of a fresh VRN.

Clients use `node.client.RocarsClient`, which retries transient failures under one
Idempotency-Key until `deadline_s`. Every value a client sends is unique to its operation (keys,
descriptions, VRNs), so the checker can tell each operation's effect from any other's.

A scenario or nemesis test wraps any fault with it:

    history = History()
    async with recording(topo, accounts, history):
        ...inject faults, wait for recovery...
    report = await checker.check_cluster(topo, state, history)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import secrets
import string
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from deploy import http_client
from deploy.bench.workload import LBCP, consignment, make_account
from deploy.drills import role_facts
from deploy.drills.history import History, Kind
from deploy.state import StateDir
from deploy.topology import Topology
from kernel.errors import ComponentUnavailable
from node.client import Response, RocarsClient

_BASE36 = string.digits + string.ascii_uppercase


@dataclass(frozen=True)
class Actor:
    id: int
    key: str  # its API key


@dataclass(frozen=True)
class WorkloadAccounts:
    traders: Sequence[Actor]
    truckers: Sequence[Actor]
    officers: Sequence[Actor]


async def make_accounts(
    topo: Topology, state: StateDir, *, traders: int = 2, truckers: int = 1, officers: int = 1
) -> WorkloadAccounts:
    """Fresh accounts of the workload's own (the checker counts their records)."""
    tag = secrets.token_hex(3)

    async def some(kind: str, n: int) -> list[Actor]:
        made = [
            await make_account(topo, state, kind, f"workload {tag} {kind} {i}") for i in range(n)
        ]
        return [Actor(i, k) for i, k in made]

    return WorkloadAccounts(
        await some("trader", traders),
        await some("trucker", truckers),
        await some("officer", officers),
    )


@dataclass(frozen=True)
class Settings:
    clients_per_trader: int = 2
    # Trader operations, by weight: submissions, amendments, batches.
    trader_mix: tuple[tuple[Kind, int], ...] = (("submit", 6), ("amend", 3), ("batch", 1))
    batch_items: int = 3
    clearance_every: int = 4
    hot_ccrns: int = 4  # amendments pick among a trader's latest consignments: they race
    deadline_s: float = 30.0  # a client retries one operation this long
    request_timeout_s: float = 5.0
    think_s: float = 0.0  # pause between a client's operations
    seed: int | None = None


@dataclass
class _Shared:
    """What clients hand each other: acknowledged consignments and bundled VRNs."""

    run: str
    own: dict[int, deque[str]] = field(default_factory=dict)  # trader id -> recent CCRNs
    to_bundle: deque[str] = field(default_factory=deque)
    to_arrive: deque[str] = field(default_factory=deque)
    vrns: itertools.count[int] = field(default_factory=itertools.count)  # VRN serials

    def vrn(self) -> str:
        n, digits = next(self.vrns), []
        for _ in range(5):
            n, d = divmod(n, 36)
            digits.append(_BASE36[d])
        return self.run[:3] + "".join(reversed(digits))


class Workload:
    def __init__(
        self,
        entry_url: str,
        accounts: WorkloadAccounts,
        history: History,
        session: aiohttp.ClientSession,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.rng = random.Random(self.settings.seed)
        run = "".join(self.rng.choice(_BASE36) for _ in range(3))
        self.shared = _Shared(run, vrns=itertools.count(self.rng.randrange(36**5)))
        self.history = history
        self.accounts = accounts
        self._url = entry_url
        self._session = session
        self._processes = itertools.count(1)

    def _client(self, actor: Actor) -> RocarsClient:
        return RocarsClient(
            self._url,
            actor.key,
            session=self._session,
            deadline_s=self.settings.deadline_s,
            request_timeout_s=self.settings.request_timeout_s,
            backoff_max_s=0.5,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Every client, until `stop` is set (each finishes the operation it is on)."""
        loops = []
        for trader in self.accounts.traders:
            self.shared.own[trader.id] = deque(maxlen=self.settings.hot_ccrns)
            for _ in range(self.settings.clients_per_trader):
                loops.append(self._trader(trader, next(self._processes), stop))
        loops += [self._trucker(t, next(self._processes), stop) for t in self.accounts.truckers]
        loops += [self._officer(o, next(self._processes), stop) for o in self.accounts.officers]
        await asyncio.gather(*loops)

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    # -- traders -----------------------------------------------------------------------------

    async def _trader(self, actor: Actor, process: int, stop: asyncio.Event) -> None:
        client = self._client(actor)
        kinds = [k for k, _ in self.settings.trader_mix]
        weights = [w for _, w in self.settings.trader_mix]
        for n in itertools.count():
            if stop.is_set():
                return
            key = f"wl-{self.shared.run}-{process}-{n}"
            kind = self.rng.choices(kinds, weights)[0]
            own = self.shared.own[actor.id]
            if kind == "amend" and own:
                await self._amend(client, actor, process, key, self.rng.choice(own))
            elif kind == "batch":
                await self._batch(client, actor, process, key)
            else:
                await self._submit(client, actor, process, key)
            await self._pause(stop, self.settings.think_s)

    def _consignment(self, key: str) -> dict[str, Any]:
        body = consignment(datetime.now(UTC), self.rng.randrange(1000))
        body["package_description"] = f"workload {key}"
        return body

    async def _submit(self, client: RocarsClient, actor: Actor, process: int, key: str) -> None:
        body = self._consignment(key)
        done = await self.history.call(
            process,
            actor.id,
            "submit",
            key,
            body,
            lambda: client.request("POST", "/v1/consignments", json=body, idempotency_key=key),
        )
        if done.type == "ok" and isinstance(done.result, dict):
            self._acknowledged(actor, [done.result["ccrn"]])

    async def _batch(self, client: RocarsClient, actor: Actor, process: int, key: str) -> None:
        items = [self._consignment(f"{key}-{i}") for i in range(self.settings.batch_items)]
        done = await self.history.call(
            process,
            actor.id,
            "batch",
            key,
            {"items": items},
            lambda: client.request(
                "POST", "/v1/consignments:batch", json=items, idempotency_key=key
            ),
        )
        if done.type == "ok" and isinstance(done.result, dict):
            self._acknowledged(actor, [r["ccrn"] for r in done.result["results"] if "ccrn" in r])

    def _acknowledged(self, actor: Actor, ccrns: list[str]) -> None:
        self.shared.own[actor.id].extend(ccrns)
        self.shared.to_bundle.extend(ccrns)

    async def _amend(
        self, client: RocarsClient, actor: Actor, process: int, key: str, ccrn: str
    ) -> None:
        changes = {"package_description": f"amended {key}", "package_count": 1 + process}
        await self.history.call(
            process,
            actor.id,
            "amend",
            key,
            {"ccrn": ccrn, **changes},
            lambda: client.request(
                "PATCH", f"/v1/consignments/{ccrn}", json=changes, idempotency_key=key
            ),
        )

    # -- truckers and officers ---------------------------------------------------------------

    async def _trucker(self, actor: Actor, process: int, stop: asyncio.Event) -> None:
        client = self._client(actor)
        for n in itertools.count():
            if stop.is_set():
                return
            if not self.shared.to_bundle:
                await self._pause(stop, 0.05)
                continue
            ccrn = self.shared.to_bundle.popleft()
            await self._bundle(client, actor, process, f"wl-{self.shared.run}-{process}-{n}", ccrn)
            await self._pause(stop, self.settings.think_s)

    async def _bundle(
        self, client: RocarsClient, actor: Actor, process: int, key: str, ccrn: str
    ) -> None:
        vrn = self.shared.vrn()
        body = {"vrn": vrn, "lbcp": LBCP, "ccrns": [ccrn]}

        async def send() -> Response:
            return await client.request("POST", "/v1/bundles", json=body, idempotency_key=key)

        done = await self.history.call(process, actor.id, "bundle", key, body, send)
        if done.type == "ok":
            self.shared.to_arrive.append(vrn)

    async def _officer(self, actor: Actor, process: int, stop: asyncio.Event) -> None:
        client = self._client(actor)
        for n in itertools.count(1):
            if stop.is_set():
                return
            key = f"wl-{self.shared.run}-{process}-{n}"
            if n % self.settings.clearance_every == 0:
                await self._clearance(client, actor, process, key)
            else:
                vrn = self.shared.to_arrive.popleft() if self.shared.to_arrive else None
                await self._arrival(client, actor, process, key, vrn or self.shared.vrn())
            await self._pause(stop, self.settings.think_s)

    async def _arrival(
        self, client: RocarsClient, actor: Actor, process: int, key: str, vrn: str
    ) -> None:
        body = {"vrn": vrn}

        async def send() -> Response:
            path = f"/v1/lbcp/{LBCP}/arrivals"
            return await client.request("POST", path, json=body, idempotency_key=key)

        await self.history.call(process, actor.id, "arrival", key, body, send)

    async def _clearance(self, client: RocarsClient, actor: Actor, process: int, key: str) -> None:
        body = {
            "lbcp": LBCP,
            "vrn": self.shared.vrn(),
            "decision": "release",
            "documents": ["workload manifest"],
            "cleared_at": datetime.now(UTC).isoformat(),
        }

        async def send() -> Response:
            path = "/v1/contingency/clearances"
            return await client.request("POST", path, json=body, idempotency_key=key)

        # Retried under one key, as an officer's client does: the server derives the record's
        # UUID from it, so a retry after a lost answer is the same record.
        await self.history.call(process, actor.id, "clearance", key, body, send)


async def sample_once(session: aiohttp.ClientSession, topo: Topology, history: History) -> None:
    """Record the role facts now (an unknown leader when etcd gives no quorum answer)."""
    try:
        snap = await role_facts.snapshot(session, topo)
        history.sample(snap.leader, snap.leader_revision, snap.roles)
    except ComponentUnavailable as exc:
        history.sample(None, 0, error=str(exc))


async def sample_roles(
    session: aiohttp.ClientSession,
    topo: Topology,
    history: History,
    stop: asyncio.Event,
    *,
    every_s: float = 0.5,
) -> None:
    """Record the role facts every `every_s` until `stop`, and once more after it."""
    while True:
        await sample_once(session, topo, history)
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


@contextlib.asynccontextmanager
async def recording(
    topo: Topology,
    accounts: WorkloadAccounts,
    history: History | None = None,
    *,
    settings: Settings | None = None,
    sample_every_s: float = 0.5,
) -> AsyncIterator[History]:
    """The workload and the role sampler run while the block runs; on leaving, clients finish
    the operation they are on (at most `deadline_s`; then they are cancelled and their
    operations stay open, i.e. info)."""
    history = history if history is not None else History()
    settings = settings or Settings()
    stop = asyncio.Event()
    async with http_client.session(topo) as session:
        # A first sample precedes the first operation, so I3 can judge the earliest writes.
        await sample_once(session, topo, history)
        sampler = asyncio.create_task(
            sample_roles(session, topo, history, stop, every_s=sample_every_s)
        )
        work = Workload(topo.entry_url(), accounts, history, session, settings)
        clients = asyncio.create_task(work.run(stop))
        try:
            yield history
        finally:
            stop.set()
            done, _ = await asyncio.wait({clients, sampler}, timeout=settings.deadline_s + 10)
            for task in (clients, sampler):
                if task not in done:
                    task.cancel()
            results = await asyncio.gather(clients, sampler, return_exceptions=True)
            errors = [r for r in results if isinstance(r, Exception)]
            if errors:
                raise errors[0]
