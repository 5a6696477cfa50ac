"""The node's background loops over its database: key cache refresh, write probe, migrations,
expiry of idempotency records; and the observer, which samples what /metrics exports but no
request moves (the leader, replication, drill results, certificates).

Each loop is one step (`*_once`, testable with fakes) repeated forever; a failed step is logged
and retried, never fatal. The SQL they run is in `node.stores`, except the idempotency records',
which stays with the rest of their SQL in `node.writes`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol

import aiohttp
from aiohttp import web

from contingency.keycache import KeyCache
from contingency.runtime import ContingencyRuntime
from kernel.errors import ComponentUnavailable, DatabaseUnavailable
from kernel.names import DRILL_RESULTS_KEY
from monitoring.certificates import (
    CERT_READ_INTERVAL_S,
    certificate_expiries,
    certificate_families,
)
from monitoring.drill_results import DRILL_READ_INTERVAL_S, drill_families, read_results
from monitoring.metrics import NodeMetrics
from monitoring.replication import (
    REPLICATION_SAMPLE_INTERVAL_S,
    observe_replication,
    replication_families,
)
from node import appkeys
from node.deps import RoleView
from node.stores import (
    AccountStore,
    ConnectionPool,
    pending_migrations,
    probe_write,
)
from node.writes import IDEMPOTENCY_TABLES, delete_expired_idempotency
from replication.etcd_gateway import KeyValue

log = logging.getLogger("rocars.node")
WRITE_PROBE_INTERVAL_S = 2.0
MIGRATE_INTERVAL_S = 1.0
EXPIRY_INTERVAL_S = 60.0
# Small batches, each its own transaction: short row locks, little WAL per synchronous commit.
EXPIRY_BATCH = 500


async def refresh_keycache_once(accounts: AccountStore, keycache: KeyCache) -> int:
    """Copy every account's key hash to the node's key cache file, so officers can still be
    verified (and switch manual mode on) when both database members are down."""
    entries = await accounts.all_accounts()
    await asyncio.to_thread(keycache.refresh, entries)
    return len(entries)


async def keycache_loop(accounts: AccountStore, keycache: KeyCache, *, every_s: float) -> None:
    while True:
        try:
            await refresh_keycache_once(accounts, keycache)
        except Exception as exc:  # database down or moving: keep the last good cache
            log.debug("key cache refresh skipped: %s", exc)
            await asyncio.sleep(min(every_s, 2.0))
            continue
        await asyncio.sleep(every_s)


async def write_probe_once(
    pool: ConnectionPool,
    role: RoleView,
    contingency: ContingencyRuntime,
    metrics: NodeMetrics | None = None,
) -> bool:
    """On the active node, prove that the database accepts writes and record it: the heartbeat
    in etcd is what "no node could write for 60 s" is judged by, rocars_write_probe_success
    what this node saw. True when it did."""
    ok = await _probe(pool, role, contingency)
    if metrics is not None:
        metrics.write_probe_success.set(1 if ok else 0)
    return ok


async def _probe(pool: ConnectionPool, role: RoleView, contingency: ContingencyRuntime) -> bool:
    if role.role != "active":
        return False
    try:
        await probe_write(pool)
    except DatabaseUnavailable as exc:
        log.debug("%s", exc)
        return False
    await contingency.note_write_ok()
    return True


async def write_probe_loop(
    pool: ConnectionPool,
    role: RoleView,
    contingency: ContingencyRuntime,
    metrics: NodeMetrics | None = None,
) -> None:
    while True:
        await asyncio.sleep(WRITE_PROBE_INTERVAL_S)
        try:
            await write_probe_once(pool, role, contingency, metrics)
        except Exception:  # a bug in one probe must not stop the heartbeat
            log.exception("write probe failed")


async def check_schema_once(
    pool: ConnectionPool, role: RoleView, metrics: NodeMetrics, done_on: str | None
) -> str | None:
    """When this node is active and has not looked under the current leader, count the
    migrations of its code the database lacks. A node cannot apply them (its role may not
    change the schema, #12 item 4): `rocars db migrate` or `cluster up` does, as the owner
    role; until then the node says so. Returns the leader it has looked under."""
    if role.role != "active" or done_on == role.facts_leader:
        return done_on
    try:
        names = await pending_migrations(pool)
    except DatabaseUnavailable as exc:  # retried on the next tick; the database may be moving
        log.warning("reading the migration ledger failed: %s", exc)
        return done_on
    metrics.migrations_pending.set(len(names))
    if names:
        log.warning(
            "the database lacks migrations %s of this code: run `rocars db migrate`",
            ", ".join(names),
            extra={"event": "migrations_pending"},
        )
    return role.facts_leader


async def check_schema_loop(pool: ConnectionPool, role: RoleView, metrics: NodeMetrics) -> None:
    done_on: str | None = None
    while True:
        done_on = await check_schema_once(pool, role, metrics, done_on)
        await asyncio.sleep(MIGRATE_INTERVAL_S)


async def expire_idempotency_once(
    pool: ConnectionPool, role: RoleView, *, batch: int = EXPIRY_BATCH
) -> int:
    """On the active node, delete every expired idempotency record, `batch` rows per
    transaction; how many were deleted."""
    if role.role != "active":
        return 0
    total = 0
    for table in IDEMPOTENCY_TABLES:
        while True:
            async with pool.connection() as conn, conn.transaction():
                deleted = await delete_expired_idempotency(conn, table, batch=batch)
            total += deleted
            if deleted < batch:
                break
    return total


async def idempotency_expiry_loop(pool: ConnectionPool, role: RoleView) -> None:
    while True:
        await asyncio.sleep(EXPIRY_INTERVAL_S)
        try:
            deleted = await expire_idempotency_once(pool, role)
        except Exception as exc:  # database down or moving: the next round catches up
            log.debug("idempotency expiry skipped: %s", exc)
            continue
        if deleted:
            log.info("deleted %d expired idempotency records", deleted)


OBSERVE_INTERVAL_S: Final = 1.0


class KeyReader(Protocol):
    async def get(self, key: str) -> KeyValue | None: ...


@dataclass
class Observer:
    """Samples, each at its own pace, what /metrics exports and no request moves: the Patroni
    leader (every tick, from the role loop's last quorum read: no I/O), replication on the
    active node (Patroni's REST API, every REPLICATION_SAMPLE_INTERVAL_S), the last drill
    results (one etcd key, every DRILL_READ_INTERVAL_S) and the certificates' expiry (the
    state folder's pki/, every CERT_READ_INTERVAL_S). Each sample fails on its own."""

    metrics: NodeMetrics
    role: RoleView
    http: aiohttp.ClientSession
    patroni_url: str
    etcd: KeyReader
    pki: Path
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    _next: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, app: web.Application) -> Observer:
        cfg = app[appkeys.CONFIG]
        return cls(
            metrics=app[appkeys.METRICS],
            role=app[appkeys.ROLE],
            http=app[appkeys.HTTP],
            patroni_url=cfg.patroni_url,
            etcd=app[appkeys.ETCD],
            pki=cfg.state_dir / "pki",
        )

    def _due(self, what: str, every_s: float) -> bool:
        now = self.clock()
        if now < self._next.get(what, now):
            return False
        self._next[what] = now + every_s
        return True

    async def tick(self) -> None:
        facts = self.role.facts
        self.metrics.note_leader(
            known=facts is not None and facts.leader_known,
            holder=facts.leader_key if facts is not None else None,
        )
        steps = (
            ("replication", REPLICATION_SAMPLE_INTERVAL_S, self.sample_replication),
            ("drills", DRILL_READ_INTERVAL_S, self.read_drills),
            ("certificates", CERT_READ_INTERVAL_S, self.read_certificates),
        )
        for what, every_s, step in steps:
            if self._due(what, every_s):
                try:
                    await step()
                except Exception:  # one sample's bug must not stop the others
                    log.exception("sampling %s for /metrics failed", what)

    async def sample_replication(self) -> None:
        view = None
        if self.role.role == "active":
            view = await observe_replication(self.http, self.patroni_url, self.wall_clock())
        self.metrics.replication.replace(replication_families(view))

    async def read_drills(self) -> None:
        try:
            kv = await self.etcd.get(DRILL_RESULTS_KEY)
        except ComponentUnavailable as exc:  # keep the last results: they did not change
            log.debug("drill results not read: %s", exc)
            return
        results = read_results(kv.value if kv is not None else None)
        self.metrics.drills.replace(drill_families(results))

    async def read_certificates(self) -> None:
        expiries = await asyncio.to_thread(certificate_expiries, self.pki)
        self.metrics.certificates.replace(certificate_families(expiries))

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("observer tick failed")
            await asyncio.sleep(OBSERVE_INTERVAL_S)
