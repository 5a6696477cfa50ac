"""What a call's queries (node.phone.dialogue) ask of the node's stores; serves the dialogue.

The bundle goes through the API's own code: `node.api.bundles.check_bundle` and
`bundle_write` inside `node.writes.write_once` (role check, idempotency record, one
transaction, audit as `trucker:<id>`), with a key derived from the call's inputs
(`dialogue.idempotency_key`), so a call cut and keyed again is answered from the first bundle.
The check of each CCRN as it is keyed only tells the caller early; the write re-checks all of
it under row locks (`kernel.domain.bundling.bundle_conflicts`).

Outages (standby node, database down or read-only) answer "unavailable": the call says so and
ends, and Asterisk's dialplan may try again through the entry point.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from typing import Any

import psycopg
from aiohttp import web
from psycopg.rows import dict_row

from kernel.domain.phone_pin import PinState, attempt, pin_matches
from kernel.errors import ComponentUnavailable
from node import appkeys
from node.account import Account
from node.api.bundles import bundle_write, check_bundle
from node.phone import dialogue as d
from node.problems import Problem
from node.schemas import BundleIn
from node.writes import ensure_app_active, fingerprint, write_once

log = logging.getLogger("rocars.phone")
BUNDLES_PATH = "/v1/bundles"  # the API route whose idempotency records the phone shares
MAX_VEHICLES = 99  # short codes *1..*99
# Outages: the node is the standby, or its database is down or read-only.
_OUTAGES = (ComponentUnavailable, psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction)


def _account_id(text: str) -> int | None:
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        return None
    return int(text)


class CallStores:
    """The node's stores as one call sees them."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    def _now(self) -> datetime:
        return self._app[appkeys.CLOCK]()

    async def answer(self, query: d.Query) -> d.Event:
        """The event that answers `query`."""
        try:
            if isinstance(query, d.VerifyPin):
                return await self.verify_pin(query)
            if isinstance(query, d.CheckMode):
                return self.check_mode(query)
            if isinstance(query, d.CheckCcrn):
                return await self.check_ccrn(query)
            return await self.make_bundle(query.request)
        except _OUTAGES as exc:
            log.warning("phone call: %s answered unavailable: %r", type(query).__name__, exc)
            return _unavailable(query)

    async def verify_pin(self, q: d.VerifyPin) -> d.PinChecked:
        ensure_app_active(self._app)
        account_id = _account_id(q.account)
        if account_id is None:
            return d.PinChecked("wrong")
        now = self._now()
        pool = self._app[appkeys.POOL]
        async with pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT p.pin_hash, p.failed, p.locked_until FROM phone_pins p"
                " JOIN accounts a ON a.id = p.account_id"
                " WHERE p.account_id = %s AND a.kind = 'trucker' AND a.status = 'active'"
                " FOR UPDATE OF p",
                (account_id,),
            )
            row = await cur.fetchone()
            if row is None:  # no such trucker, or no PIN set: the same answer as a wrong PIN
                return d.PinChecked("wrong")
            state = PinState(row["failed"], row["locked_until"])
            matches = False
            if not state.locked_at(now):  # a locked account's tries are not even checked
                matches = await asyncio.to_thread(pin_matches, q.pin, row["pin_hash"])
            tried = attempt(state, matches=matches, now=now)
            if tried.state != state:
                await conn.execute(
                    "UPDATE phone_pins SET failed = %s, locked_until = %s, updated_at = %s"
                    " WHERE account_id = %s",
                    (tried.state.failed, tried.state.locked_until, now, account_id),
                )
            if tried.verdict != "ok":
                return d.PinChecked("locked" if tried.verdict == "locked" else "wrong")
            await cur.execute(
                "SELECT vrn FROM bundles WHERE trucker_id = %s GROUP BY vrn"
                " ORDER BY min(created_at), vrn LIMIT %s",
                (account_id, MAX_VEHICLES),
            )
            vehicles = tuple(r["vrn"] for r in await cur.fetchall())
        return d.PinChecked("ok", account_id, vehicles)

    def check_mode(self, q: d.CheckMode) -> d.ModeChecked:
        runtime = self._app.get(appkeys.CONTINGENCY)
        if runtime is None:
            return d.ModeChecked(None)
        return d.ModeChecked(runtime.mode_for(q.lbcp) == "manual")

    async def check_ccrn(self, q: d.CheckCcrn) -> d.CcrnChecked:
        async with self._app[appkeys.POOL].connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT c.status, c.lbcp, b.trucker_id, b.vrn, b.lbcp AS bundle_lbcp"
                " FROM consignments c LEFT JOIN bundle_items i ON i.ccrn = c.ccrn AND i.active"
                " LEFT JOIN bundles b ON b.id = i.bundle_id WHERE c.ccrn = %s",
                (q.ccrn,),
            )
            row = await cur.fetchone()
        return d.CcrnChecked(_refusal(row, q))

    async def _generation(self, request: d.BundleRequest) -> int:
        async with self._app[appkeys.POOL].connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM bundles WHERE vrn = %s AND lbcp = %s"
                " AND status IN ('closed', 'cancelled')",
                (request.vrn, request.lbcp),
            )
            row = await cur.fetchone()
        return int(row[0]) if row is not None else 0

    async def _account(self, account_id: int) -> Account | None:
        async with self._app[appkeys.POOL].connection() as conn:
            cur = await conn.execute(
                "SELECT id, kind, name, status FROM accounts WHERE id = %s", (account_id,)
            )
            row = await cur.fetchone()
        if row is None or row[1] != "trucker" or row[3] != "active":
            return None
        return Account(int(row[0]), str(row[1]), str(row[2]), str(row[3]))

    async def make_bundle(self, request: d.BundleRequest) -> d.BundleMade:
        """The bundle, as `POST /v1/bundles` with the call's Idempotency-Key would make it."""
        ensure_app_active(self._app)
        account = await self._account(request.account_id)
        if account is None:
            return d.BundleMade("refused", reason="account")
        body = json.dumps(request.body(), separators=(",", ":")).encode()
        try:
            model = BundleIn.model_validate(request.body())
            check_bundle(model)
        except (Problem, ValueError) as exc:
            log.warning("phone bundle refused before writing: %r", exc)
            return d.BundleMade("refused", reason="invalid")
        key = d.idempotency_key(request, await self._generation(request))
        try:
            _status, answer, _text, replayed = await write_once(
                self._app,
                account,
                key,
                fingerprint("POST", BUNDLES_PATH, body),
                bundle_write(account, model, self._now()),
            )
        except Problem as exc:
            log.info("phone bundle refused: %s %s", exc.status, exc.detail)
            return d.BundleMade("refused", reason="conflict" if exc.status == 409 else "invalid")
        log.info(
            "phone bundle %s for trucker %s%s",
            answer.get("id"),
            account.id,
            " (replayed)" if replayed else "",
            extra={"event": "phone_bundle"},
        )
        return _made(answer)


def _made(answer: dict[str, Any]) -> d.BundleMade:
    if answer["instruction"] == "cross_now":
        return d.BundleMade("cross_now")
    return d.BundleMade("cross_after", datetime.fromisoformat(answer["not_before"]))


def _refusal(row: dict[str, Any] | None, q: d.CheckCcrn) -> d.CcrnRefusal | None:
    """Why the write would refuse this CCRN, told early (the write decides again)."""
    if row is None:
        return "unknown"
    if row["status"] == "cancelled":
        return "cancelled"
    if row["status"] in ("cleared", "detained"):
        return "too-late"  # the truck carrying it has already crossed
    if row["lbcp"] != q.lbcp:
        return "other-lbcp"
    if row["trucker_id"] is not None:
        # The caller's own bundle of this truck at this LBCP: a call cut after the bundle was
        # made and keyed again; the write answers it from that bundle (same Idempotency-Key).
        mine = (row["trucker_id"], row["vrn"], row["bundle_lbcp"]) == (q.account_id, q.vrn, q.lbcp)
        return None if mine else "bundled"
    return None


def _unavailable(query: d.Query) -> d.Event:
    if isinstance(query, d.VerifyPin):
        return d.PinChecked("unavailable")
    if isinstance(query, d.CheckMode):
        return d.ModeChecked(None)
    if isinstance(query, d.CheckCcrn):
        return d.CcrnChecked("unavailable")
    return d.BundleMade("unavailable")
