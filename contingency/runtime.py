"""Manual clearance mode on a running node: the state from etcd, the local override, the write
heartbeat behind the "manual mode recommended" alert, and the officers' key cache.

Serves the pure cores `contingency.state` (transitions, effective mode, recommendation) and the
adapters `contingency.keycache`, `contingency.override`. The state is re-read from etcd (a
quorum read) every `interval_s`, so every node sees a change well within a second; when etcd is
unreachable the node keeps the last state it read and honours the local override file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from contingency import state as cstate
from contingency.override import Override, read_override
from kernel.errors import ComponentUnavailable, EtcdUnavailable, RocarsError
from replication.etcd_gateway import EtcdGateway

log = logging.getLogger("rocars.contingency")
STATE_KEY = "/rocars/contingency/state"
HEARTBEAT_KEY = "/rocars/heartbeat/write"


class ContingencyError(RocarsError):
    """A mode change could not be made; the message says why and what to do."""


class ContingencyRuntime:
    def __init__(
        self,
        *,
        etcd: EtcdGateway,
        override_path: Path | None,
        interval_s: float = 0.25,
        recommend_after_s: float = 60.0,
        auto_activate: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._etcd = etcd
        self.override_path = override_path
        self._interval = interval_s
        self.recommend_after_s = recommend_after_s
        self.auto_activate = auto_activate
        self._clock = clock
        self.state: cstate.ContingencyState = cstate.NORMAL
        self.revision = 0
        self.etcd_ok = False
        self.loaded = False
        self.override: Override | None = None
        # Seeded with our start: a cluster that never writes is still recommended for manual
        # mode once the threshold has passed.
        self.last_write_ok_at: float = clock()
        self.on_change: Callable[[cstate.ContingencyState, cstate.ContingencyState], None] | None
        self.on_change = None
        self._recommended = False

    # -- reading -------------------------------------------------------------------------------

    def mode_for(self, lbcp: str) -> cstate.Mode:
        override = self.override is not None and self.override.covers(lbcp)
        return cstate.effective_mode(self.state, lbcp, override)

    @property
    def any_manual(self) -> bool:
        return self.state.mode == "manual" or self.override is not None

    def since(self) -> datetime | None:
        if self.state.since is not None:
            return self.state.since
        return self.override.at if self.override else None

    def recommendation(self) -> cstate.Recommendation:
        return cstate.recommendation(
            self._clock(), self.last_write_ok_at, threshold_s=self.recommend_after_s
        )

    async def refresh(self) -> None:
        if self.override_path is not None:
            self.override = read_override(self.override_path)
        try:
            kv = await self._etcd.get(STATE_KEY)
            hb = await self._etcd.get(HEARTBEAT_KEY)
        except EtcdUnavailable:
            self.etcd_ok = False
            return
        self.etcd_ok = True
        if hb is not None:
            with contextlib.suppress(ValueError):
                self.last_write_ok_at = max(self.last_write_ok_at, float(hb.value))
        new = cstate.NORMAL
        if kv is not None:
            try:
                new = cstate.from_dict(json.loads(kv.value))
            except ValueError as exc:
                log.error("contingency state in etcd is unreadable, keeping the last one: %s", exc)
                return
        self.revision = kv.mod_revision if kv else 0
        if new != self.state and self.on_change is not None:
            self.on_change(new, self.state)
        self.state = new
        self.loaded = True

    async def note_write_ok(self) -> None:
        """Called by the active node after a successful write probe."""
        now = self._clock()
        self.last_write_ok_at = now
        with contextlib.suppress(EtcdUnavailable):
            await self._etcd.put(HEARTBEAT_KEY, str(now))

    # -- changing ------------------------------------------------------------------------------

    async def _update(
        self, change: Callable[[cstate.ContingencyState], cstate.ContingencyState]
    ) -> cstate.ContingencyState:
        for _ in range(10):
            try:
                kv = await self._etcd.get(STATE_KEY)
            except EtcdUnavailable as exc:
                raise ContingencyError(
                    "etcd is unreachable, so the mode cannot be changed cluster-wide; on a node's"
                    " host run 'rocars contingency activate --local --reason ...' to force manual"
                    " mode on that node"
                ) from exc
            current = cstate.from_dict(json.loads(kv.value)) if kv else cstate.NORMAL
            try:
                new = change(current)
            except ValueError as exc:
                raise ContingencyError(str(exc)) from exc
            doc = json.dumps(cstate.to_dict(new))
            if await self._etcd.put_if(STATE_KEY, doc, mod_revision=kv.mod_revision if kv else 0):
                self.state = new
                return new
        raise ContingencyError("the mode changed concurrently ten times in a row; try again")

    async def activate(
        self, *, actor: str, reason: str, lbcps: frozenset[str] | None, message: str
    ) -> cstate.ContingencyState:
        at = datetime.now(UTC)
        return await self._update(
            lambda s: cstate.activate(
                s, actor=actor, reason=reason, lbcps=lbcps, at=at, message=message
            )
        )

    async def deactivate(
        self, *, actor: str, reason: str, lbcps: frozenset[str] | None
    ) -> cstate.ContingencyState:
        at = datetime.now(UTC)
        return await self._update(
            lambda s: cstate.deactivate(s, actor=actor, reason=reason, at=at, lbcps=lbcps)
        )

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
                rec = self.recommendation()
                if rec.recommended != self._recommended:
                    self._recommended = rec.recommended
                    # The alert, in the log as well as on /metrics and /v1/status.
                    log.log(logging.ERROR if rec.recommended else logging.INFO, "%s", rec.reason)
                if self.auto_activate and cstate.auto_activate_allowed(
                    True, rec.recommended, self.state
                ):
                    log.warning("auto-activating manual mode: %s", rec.reason)
                    await self.activate(
                        actor="system:auto",
                        reason=rec.reason,
                        lbcps=None,
                        message="Manual clearance: the system cannot record clearances.",
                    )
            except (ComponentUnavailable, ContingencyError) as exc:
                log.warning("contingency refresh: %s", exc)
            except Exception:
                log.exception("contingency loop failed")
            await asyncio.sleep(self._interval)
