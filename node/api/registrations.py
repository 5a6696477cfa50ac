"""Registration of trade users and truckers, officers' approval, and account suspension.

Nobody submits anything before being registered and approved; approval returns the API key
once (only its hash is stored). An approval replayed with its Idempotency-Key answers the same,
but with `api_key` null: the stored answer never held the key (`_without_key`).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web
from psycopg.rows import dict_row

from node import appkeys
from node.account import Account
from node.api import common
from node.auth import new_api_key, require
from node.schemas import DecisionIn, RegistrationIn, iso
from node.validation import invalid, load_json, parse_model, read_body, read_model
from node.writes import Conn, run_write

KEY_NOT_REPEATED = (
    "the API key was issued in the first answer to this approval and is not kept: it cannot"
    " be shown again"
)


def _without_key(answer: dict[str, Any]) -> dict[str, Any]:
    """An approval's answer as kept for replays: everything but the key itself."""
    if answer.get("api_key") is None:
        return answer
    return {**answer, "api_key": None, "api_key_issued": True, "api_key_detail": KEY_NOT_REPEATED}


def _reg_json(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(r["id"]),
        "kind": r["kind"],
        "trader_kind": r["trader_kind"],
        "name": r["name"],
        "brn": r["brn"],
        "contact": r["contact"],
        "status": r["status"],
        "reason": r["reason"],
        "created_at": iso(r["created_at"]),
        "decided_at": iso(r["decided_at"]),
    }


async def apply(request: web.Request) -> web.Response:
    body, r = await read_model(request, RegistrationIn)

    async def write(conn: Conn) -> tuple[int, dict[str, Any]]:
        rid = uuid.uuid4()
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            "INSERT INTO registrations (id, kind, trader_kind, name, brn, contact)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING *",
            (rid, r.kind, r.trader_kind, r.name, r.brn, json.dumps(r.contact.model_dump())),
        )
        row = await cur.fetchone()
        assert row is not None
        out = _reg_json(row)
        await common.audit(
            conn,
            actor="public",
            action="registration.apply",
            subject=f"registration:{rid}",
            after=out,
        )
        return 201, out

    return await run_write(request, None, body, write)


async def list_pending(request: web.Request) -> web.Response:
    await require(request, "officer")
    items = await registrations_of(request, request.query.get("status", "pending"))
    return web.json_response({"items": items})


async def registrations_of(request: web.Request, status: str) -> list[dict[str, Any]]:
    """Registrations in `status`, oldest first (the API's and the officers' pages' list)."""
    if status not in ("pending", "approved", "rejected"):
        raise invalid([{"field": "status", "message": "pending, approved or rejected"}])
    async with request.app[appkeys.POOL].connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            "SELECT * FROM registrations WHERE status = %s ORDER BY created_at LIMIT 1000",
            (status,),
        )
        rows = await cur.fetchall()
    return [_reg_json(r) for r in rows]


def _reg_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError as exc:
        raise invalid([{"field": "id", "message": "not a registration id"}]) from exc


async def create_account(
    conn: Conn,
    *,
    kind: str,
    name: str,
    trader_kind: str | None = None,
    brn: str | None = None,
    contact: dict[str, Any] | None = None,
) -> tuple[int, str]:
    key, prefix, digest = new_api_key()
    cur = await conn.execute(
        "INSERT INTO accounts (kind, trader_kind, name, brn, contact, key_prefix, key_hash)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (kind, trader_kind, name, brn, json.dumps(contact or {}), prefix, digest),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), key


async def _decide(request: web.Request, approve: bool) -> web.Response:
    account = await require(request, "officer")
    rid = _reg_id(request)
    body = await read_body(request)
    d = parse_model(DecisionIn, await load_json(body)) if body.strip() else DecisionIn()
    return await decide_as(request, account, rid, body, d, approve=approve)


async def decide_as(
    request: web.Request,
    account: Account,
    rid: uuid.UUID,
    body: bytes,
    d: DecisionIn,
    *,
    approve: bool,
) -> web.Response:
    """Approve (issuing the account and its key) or reject registration `rid`."""
    if not approve and d.reason is None:
        raise invalid([{"field": "reason", "message": "a rejection needs a reason"}])

    async def write(conn: Conn) -> tuple[int, dict[str, Any]]:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute("SELECT * FROM registrations WHERE id = %s FOR UPDATE", (rid,))
        reg = await cur.fetchone()
        if reg is None:
            raise common.not_found(f"registration {rid}")
        if reg["status"] != "pending":
            raise common.conflict(f"registration {rid} is already {reg['status']}")
        out: dict[str, Any] = {}
        account_id = None
        if approve:
            account_id, key = await create_account(
                conn,
                kind=reg["kind"],
                name=reg["name"],
                trader_kind=reg["trader_kind"],
                brn=reg["brn"],
                contact=reg["contact"],
            )
            out = {"account_id": account_id, "api_key": key, "api_key_issued": True}
        await cur.execute(
            "UPDATE registrations SET status = %s, reason = %s, decided_by = %s,"
            " decided_at = now(), account_id = %s WHERE id = %s RETURNING *",
            ("approved" if approve else "rejected", d.reason, account.id, account_id, rid),
        )
        new = await cur.fetchone()
        assert new is not None
        out = {**_reg_json(new), **out}
        await common.audit(
            conn,
            actor=account.actor,
            action="registration.approve" if approve else "registration.reject",
            subject=f"registration:{rid}",
            before=_reg_json(reg),
            after=_reg_json(new),
        )
        return 200, out

    return await run_write(request, account, body, write, redact=_without_key)


async def approve(request: web.Request) -> web.Response:
    return await _decide(request, True)


async def reject(request: web.Request) -> web.Response:
    return await _decide(request, False)


async def _set_status(request: web.Request, status: str) -> web.Response:
    officer: Account = await require(request, "officer")
    raw = str(common.path_id(request, "account"))
    body = await request.read()

    async def write(conn: Conn) -> tuple[int, dict[str, Any]]:
        cur = await conn.execute(
            "UPDATE accounts SET status = %s WHERE id = %s RETURNING id, kind, name, status",
            (status, int(raw)),
        )
        row = await cur.fetchone()
        if row is None:
            raise common.not_found(f"account {raw}")
        out = {"id": row[0], "kind": row[1], "name": row[2], "status": row[3]}
        await common.audit(
            conn,
            actor=officer.actor,
            action=f"account.{status}",
            subject=f"account:{raw}",
            after=out,
        )
        return 200, out

    resp = await run_write(request, officer, body, write)
    request.app[appkeys.ACCOUNT_CACHE].clear()
    return resp


async def suspend(request: web.Request) -> web.Response:
    return await _set_status(request, "suspended")


async def reinstate(request: web.Request) -> web.Response:
    return await _set_status(request, "active")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/registrations", apply)
    app.router.add_get("/v1/registrations", list_pending)
    app.router.add_post("/v1/registrations/{id}/approve", approve)
    app.router.add_post("/v1/registrations/{id}/reject", reject)
    app.router.add_post("/v1/accounts/{id}/suspend", suspend)
    app.router.add_post("/v1/accounts/{id}/reinstate", reinstate)
