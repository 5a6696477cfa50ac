"""The node's role: `active` on the site that holds the Patroni leader, else `standby`.

`failover.role_rule.decide_role` is the pure rule; `RoleWatcher` is the adapter that feeds it every
`role_interval_s` from the local Patroni member (short timeout, so a frozen Patroni reads as
"unknown", never as a hang) and a linearizable read of the leader key in etcd (so a minority
etcd member cannot name a stale leader). Both must agree before a node calls itself active.
Whenever the key is this member's, it asks the member's own PostgreSQL whether it is the
primary (`pg_primary`, short timeout, one query a cycle on a connection of its own): while
Patroni is silent its answer keeps the node active, and its silence for long enough means this
node cannot reach its database, which makes it standby (the rule's two #14 cases).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from failover.role_rule import Role, RoleDecision, RoleFacts, decide_role
from kernel.errors import ComponentUnavailable
from replication.etcd_gateway import EtcdGateway
from replication.patroni_rest import PatroniRest

log = logging.getLogger("rocars.role")


class RoleWatcher:
    def __init__(
        self,
        *,
        patroni: PatroniRest,
        patroni_url: str,
        etcd: EtcdGateway,
        leader_key: str,
        my_member: str,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[RoleDecision, RoleDecision | None], None] | None = None,
        pg_primary: Callable[[], Awaitable[bool | None]] | None = None,
    ) -> None:
        self._patroni = patroni
        self._patroni_url = patroni_url
        self._etcd = etcd
        self._leader_key = leader_key
        self._my_member = my_member
        self._interval = interval_s
        self._clock = clock
        self._on_change = on_change
        self._pg_primary = pg_primary
        self.decision = RoleDecision("standby", "starting: role not yet observed")
        self.facts: RoleFacts | None = None
        self._leader_seen: str | None = "not yet observed"
        self._pg_silent_since: float | None = None
        self.last_cycle_at: float | None = None

    @property
    def role(self) -> Role:
        return self.decision.role

    @property
    def facts_leader(self) -> str | None:
        return self.facts.leader_key if self.facts else None

    async def observe(self) -> RoleFacts:
        async def local() -> tuple[str | None, str | None, bool]:
            try:
                m = await self._patroni.member(self._patroni_url)
                return m.role, m.state, m.paused
            except ComponentUnavailable:
                return None, None, False

        async def leader() -> tuple[str | None, bool]:
            try:
                kv = await self._etcd.get(self._leader_key)
                return (kv.value.decode() if kv else None), True
            except ComponentUnavailable:
                return None, False

        (role, state, paused), (holder, known) = await asyncio.gather(local(), leader())
        pg_primary, silent_s = None, None
        if known and holder == self._my_member and self._pg_primary:
            pg_primary = await self._pg_primary()
            now = self._clock()
            if pg_primary is None:
                if self._pg_silent_since is None:
                    self._pg_silent_since = now
                silent_s = now - self._pg_silent_since
            else:
                self._pg_silent_since = None
        else:
            self._pg_silent_since = None
        return RoleFacts(self._my_member, role, state, holder, known, paused, pg_primary, silent_s)

    async def cycle(self) -> RoleDecision:
        facts = await self.observe()
        decision = decide_role(facts)
        self.facts = facts
        self.last_cycle_at = self._clock()
        previous, self.decision = self.decision, decision
        # Compared with the last quorum answer, so an etcd outage in between is not a change.
        if facts.leader_known and facts.leader_key != self._leader_seen:
            log.warning(
                "Patroni leader is %s (was %s)",
                facts.leader_key,
                self._leader_seen,
                extra={"event": "leader_changed"},
            )
            self._leader_seen = facts.leader_key
        if decision.role != previous.role:
            log.warning(
                "role changed %s -> %s: %s",
                previous.role,
                decision.role,
                decision.reason,
                extra={"event": "role_changed"},
            )
            if self._on_change is not None:
                self._on_change(decision, previous)
        return decision

    async def run(self) -> None:
        while True:
            started = self._clock()
            try:
                await self.cycle()
            except Exception:  # a bug in one cycle must not stop role tracking
                log.exception("role cycle failed")
            await asyncio.sleep(max(0.0, self._interval - (self._clock() - started)))
