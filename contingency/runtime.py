"""Manual clearance mode on a running node: the state from etcd, the local override, the write
heartbeat behind the "manual mode recommended" alert, and the officers' key cache.

Serves the pure cores `contingency.state` (transitions, effective mode, recommendation) and the
adapters `contingency.keycache`, `contingency.override`. The state is re-read from etcd (a
quorum read) every `interval_s`, so every node sees a change well within a second; when etcd is
unreachable the node keeps the last state it read and honours the local override file.

A mode change fails with a kernel error: `EtcdUnavailable` (503), `InvalidInput` naming the
field (422) or `InvalidTransition` (409). Whoever changes the mode then waits, with
:func:`await_nodes`, until every node applies it, so "switched" means switched everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contingency import state as cstate
from contingency.override import Override, read_override
from kernel.errors import ComponentUnavailable, EtcdUnavailable, InvalidInput, InvalidTransition
from kernel.names import CONTINGENCY_STATE_KEY, WRITE_HEARTBEAT_KEY
from replication.etcd_gateway import EtcdGateway

log = logging.getLogger("rocars.contingency")


def _stored_state(raw: bytes) -> cstate.ContingencyState:
    """The state etcd holds. A document nobody can read is the store's fault, not the caller's:
    answered as unavailable (503), never as the caller's bad input; the local override still
    switches manual mode on a node meanwhile."""
    try:
        return cstate.from_dict(json.loads(raw))
    except (ValueError, InvalidInput) as exc:
        raise ComponentUnavailable(
            f"the contingency state stored in etcd ({CONTINGENCY_STATE_KEY}) is unreadable"
            f" ({exc}); on a node's host run 'rocars contingency activate --local --reason ...'"
            " to force manual mode on that node, and repair the key"
        ) from exc


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
            kv, hb = await self._etcd.get_many((CONTINGENCY_STATE_KEY, WRITE_HEARTBEAT_KEY))
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
                new = _stored_state(kv.value)
            except ComponentUnavailable as exc:
                log.error("keeping the last contingency state: %s", exc)
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
            await self._etcd.put(WRITE_HEARTBEAT_KEY, str(now))

    # -- changing ------------------------------------------------------------------------------

    async def _update(
        self, change: Callable[[cstate.ContingencyState], cstate.ContingencyState]
    ) -> cstate.ContingencyState:
        for _ in range(10):
            try:
                kv = await self._etcd.get(CONTINGENCY_STATE_KEY)
                current = _stored_state(kv.value) if kv else cstate.NORMAL
                new = change(current)
                doc = json.dumps(cstate.to_dict(new))
                revision = kv.mod_revision if kv else 0
                written = await self._etcd.put_if(CONTINGENCY_STATE_KEY, doc, mod_revision=revision)
            except EtcdUnavailable as exc:
                raise EtcdUnavailable(
                    f"etcd is unreachable, so the mode cannot be changed cluster-wide ({exc}); on"
                    " a node's host run 'rocars contingency activate --local --reason ...' to"
                    " force manual mode on that node"
                ) from exc
            if written:
                self.state = new
                return new
        raise InvalidTransition("the mode changed concurrently ten times in a row; try again")

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
                    log.warning(
                        "auto-activating manual mode: %s",
                        rec.reason,
                        extra={"event": "contingency_auto_activated"},
                    )
                    await self.activate(
                        actor="system:auto",
                        reason=rec.reason,
                        lbcps=None,
                        message="Manual clearance: the system cannot record clearances.",
                    )
            except (ComponentUnavailable, InvalidTransition) as exc:
                log.warning("contingency refresh: %s", exc)
            except Exception:
                log.exception("contingency loop failed")
            await asyncio.sleep(self._interval)


# -- waiting until every node applies a change -----------------------------------------------

# A node's own account of the mode it applies: the `contingency` section of its /health
# document (node/api/health.py), or None when the node did not answer.
NodeSections = Callable[[], Awaitable[Mapping[str, Mapping[str, Any] | None]]]
UNREACHABLE = "unreachable"


def applies(section: Mapping[str, Any], state: cstate.ContingencyState) -> bool:
    """Whether a node whose /health says `section` applies `state`: the same scope read from
    etcd, and the same mode (a node forced manual by a local override does not apply normal)."""
    scope = "all" if state.scope is None else sorted(state.scope)
    return section.get("scope") == scope and section.get("mode") == state.mode


@dataclass(frozen=True)
class Propagation:
    """Which mode each node applies once a change was made, and which nodes did not follow."""

    nodes: dict[str, str]  # site -> "manual" | "normal" | "unreachable"
    not_applied: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "not_applied": list(self.not_applied)}


async def await_nodes(
    read: NodeSections,
    wanted: Callable[[Mapping[str, Any]], bool],
    *,
    deadline_s: float = 3.0,
    interval_s: float = 0.1,
) -> Propagation:
    """Ask the nodes (through `read`) until every node that answers shows what is `wanted`
    (usually `applies(section, new_state)`), or until `deadline_s` has passed. Nodes re-read
    the state every 0.25 s, so this normally takes one or two rounds. A node that does not
    answer is not waited for: it reads the state when it starts again; it is named in the
    result."""
    give_up = time.monotonic() + deadline_s
    while True:
        sections = await read()
        nodes: dict[str, str] = {}
        behind: list[str] = []
        for site, section in sorted(sections.items()):
            if section is None:
                nodes[site] = UNREACHABLE
                behind.append(site)
                continue
            nodes[site] = str(section.get("mode"))
            if not wanted(section):
                behind.append(site)
        waiting = [site for site in behind if nodes[site] != UNREACHABLE]
        if not waiting or time.monotonic() >= give_up:
            return Propagation(nodes, tuple(behind))
        await asyncio.sleep(interval_s)
