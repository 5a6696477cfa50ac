"""Cargo information: submit (one or a batch), read, list, amend with history, cancel.

Pure rules used: `kernel.domain.advance_window` (30 min .. 14 days ahead), `kernel.domain.ccrn`
(numbering and check digit), `kernel.domain.risk` (assessment on every change).
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from psycopg.rows import dict_row
from pydantic import ValidationError

from contingency.state import late_flags_suppressed
from kernel.domain.advance_window import MIN_LEAD, check_advance_window
from kernel.domain.ccrn import SYSTEM_RANDBELOW, RandBelow, ccrn_draws, validate_ccrn
from kernel.domain.lbcp import DEFAULT_LBCPS
from node import appkeys, batch_body
from node.account import Account
from node.api import common
from node.api.bundles import refresh_bundle_of
from node.auth import enforce_rate_limit, require
from node.problems import Problem
from node.schemas import AMENDABLE, ConsignmentIn, ConsignmentPatch, iso
from node.validation import field_errors, invalid, load_json, parse_model, read_body, read_model
from node.writes import Conn, run_write

MAX_BATCH = batch_body.MAX_ITEMS
MAX_BATCH_BODY = 10 * 1024 * 1024
MAX_ITEM_ERRORS = 5  # listed per rejected batch item
# Batches a node reads and parses at once (as many as batch_body's worker threads), and how long
# one more waits for a slot before it is told to come back: bounds the memory hostile batches
# can hold (each up to MAX_BATCH_BODY of body plus its items) whatever the number sent at once.
BATCH_SLOTS = 2
BATCH_SLOT_WAIT_S = 10.0


def min_lead(request: web.Request, now: datetime) -> timedelta:
    """30 minutes, except during manual clearance mode and for 2 hours after it: trade users
    could not submit while the system was down, so a late submission is then accepted and not
    counted against them (no late flag), like the paper process's grace period."""
    rt = request.app[appkeys.CONTINGENCY]
    if rt.override is not None or late_flags_suppressed(now, rt.state.windows):
        return timedelta(0)
    return MIN_LEAD


def _window_error(
    expected_at: datetime, now: datetime, field: str = "expected_at", *, lead: timedelta = MIN_LEAD
) -> None:
    err = check_advance_window(expected_at, now, min_lead=lead)
    if err is not None:
        raise invalid([{"field": field, "message": err}], detail=err)


def _item_errors(
    item: Any, now: datetime, lead: timedelta = MIN_LEAD
) -> tuple[ConsignmentIn | None, list[dict[str, str]]]:
    if not isinstance(item, dict):
        return None, [{"field": "body", "message": "must be a JSON object"}]
    try:
        c = ConsignmentIn.model_validate(item)
    except ValidationError as exc:
        return None, field_errors(exc)
    errors = []
    if c.lbcp not in DEFAULT_LBCPS:
        errors.append({"field": "lbcp", "message": f"unknown LBCP {c.lbcp!r}"})
    err = check_advance_window(c.expected_at, now, min_lead=lead)
    if err is not None:
        errors.append({"field": "expected_at", "message": err})
    return (c if not errors else None), errors


def _row_values(c: ConsignmentIn) -> dict[str, Any]:
    d = c.model_dump()
    d["itfs"] = json.dumps(d["itfs"]) if d["itfs"] is not None else None
    return d


async def _insert(
    conn: Conn,
    c: ConsignmentIn,
    owner: int,
    at: datetime,
    rules: list[Any],
    *,
    randbelow: RandBelow = SYSTEM_RANDBELOW,
) -> dict[str, Any]:
    """Store a new consignment under a fresh random CCRN (`kernel.domain.ccrn.new_ccrn`).

    A CCRN already taken is skipped with ON CONFLICT DO NOTHING and another is drawn, so a
    collision never aborts the transaction (a batch keeps its earlier rows); `ccrn_draws` gives
    up after a few. The `ccrn_seq` sequence of the legacy numbering stays in the schema, unused.
    """
    v = _row_values(c)
    params = {**v, "owner": owner, "at": at, "draw": common.new_draw()}
    dcur = conn.cursor(row_factory=dict_row)
    row = None
    draws = ccrn_draws(randbelow)
    while row is None:
        ccrn = next(draws)
        await dcur.execute(
            "INSERT INTO consignments (ccrn, owner_id, direction, lbcp, package_count,"
            " package_description, article_description, consignor_name, consignor_address,"
            " consignee_name, consignee_address, expected_at, itfs, last_changed_at, created_at,"
            " risk_draw) VALUES (%(ccrn)s, %(owner)s, %(direction)s, %(lbcp)s,"
            " %(package_count)s, %(package_description)s, %(article_description)s,"
            " %(consignor_name)s, %(consignor_address)s, %(consignee_name)s,"
            " %(consignee_address)s, %(expected_at)s, %(itfs)s, %(at)s, %(at)s, %(draw)s)"
            " ON CONFLICT (ccrn) DO NOTHING RETURNING *",
            {**params, "ccrn": ccrn},
        )
        row = await dcur.fetchone()
    a = common.assess_row(row, rules)
    if a.selected:
        row["selected"], row["selection_reasons"] = True, list(a.reasons)
        await conn.execute(
            "UPDATE consignments SET selected = true, selection_reasons = %s WHERE ccrn = %s",
            (json.dumps(list(a.reasons)), ccrn),
        )
    await conn.execute(
        "INSERT INTO consignment_versions (ccrn, version, data, changed_at, changed_by)"
        " VALUES (%s, 1, %s, %s, %s)",
        (ccrn, json.dumps(common.consignment_json(row)), at, owner),
    )
    return row


async def submit(request: web.Request) -> web.Response:
    account = await require(request, "trader")
    body, c = await read_model(request, ConsignmentIn)
    common.check_lbcp(c.lbcp)
    at = common.now(request)
    _window_error(c.expected_at, at, lead=min_lead(request, at))

    async def write(conn: Conn) -> tuple[int, dict[str, Any]]:
        row = await _insert(conn, c, account.id, at, await common.load_rules(conn))
        out = common.consignment_json(row)
        await common.audit(
            conn, actor=account.actor, action="consignment.submit", subject=row["ccrn"], after=out
        )
        return 201, out

    return await run_write(request, account, body, write)


async def submit_batch(request: web.Request) -> web.Response:
    """A JSON array or a CSV (node.batch_body) of at most MAX_BATCH consignments, in a body of
    at most MAX_BATCH_BODY bytes. Parsing and validating the items run in the batch worker
    threads (they take a good part of a second for 10,000 items; the event loop must not wait
    on them), and the batch counts its items against the account's rate limit (#10 items 2, 5).
    """
    account = await require(request, "trader")
    slots = request.app[appkeys.BATCH_SLOTS]
    try:
        async with asyncio.timeout(BATCH_SLOT_WAIT_S):
            await slots.acquire()
    except TimeoutError:
        raise Problem(
            503,
            "Service Unavailable",
            f"this node is busy with {BATCH_SLOTS} other batches; retry shortly",
            type_="https://rocars.example/problems/busy",
            headers={"Retry-After": "2"},
        ) from None
    try:
        return await _submit_batch(request, account)
    finally:
        slots.release()


async def _submit_batch(request: web.Request, account: Account) -> web.Response:
    body = await read_body(request, limit=MAX_BATCH_BODY)
    csv_body = request.content_type == "text/csv"
    items = await batch_body.run_off_loop(
        lambda: batch_body.parse_batch(body, csv_body=csv_body, max_items=MAX_BATCH)
    )
    await enforce_rate_limit(request, account, cost=len(items))
    at = common.now(request)
    lead = min_lead(request, at)
    checked = await batch_body.run_off_loop(lambda: [_checked(item, at, lead) for item in items])

    async def write(conn: Conn) -> tuple[int, dict[str, Any]]:
        rules = await common.load_rules(conn)
        results: list[dict[str, Any]] = []
        accepted = 0
        for i, c in enumerate(checked):
            if isinstance(c, ConsignmentIn):
                row = await _insert(conn, c, account.id, at, rules)
                results.append({"index": i, "ccrn": row["ccrn"]})
                accepted += 1
                continue
            results.append({"index": i, "errors": [{"field": f, "message": m} for f, m in c]})
            if i % 1000 == 999:
                await asyncio.sleep(0)  # 10,000 rejected items: let the loop run meanwhile
        await common.audit(
            conn,
            actor=account.actor,
            action="consignment.submit_batch",
            subject=f"batch:{len(checked)}",
            after={"accepted": accepted, "ccrns": [r["ccrn"] for r in results if "ccrn" in r]},
        )
        return 200, {"accepted": accepted, "rejected": len(checked) - accepted, "results": results}

    return await run_write(request, account, body, write)


def _checked(
    item: Any, now: datetime, lead: timedelta
) -> ConsignmentIn | tuple[tuple[str, str], ...]:
    """The valid consignment, or its errors (at most MAX_ITEM_ERRORS listed: a hostile item can
    have hundreds). Errors are tuples of strings, which the garbage collector stops tracking:
    10,000 items' worth of lists and dicts kept alive made it run full collections of the
    whole heap (about 80 ms each, the interpreter lock held) while a batch was validated."""
    c, errors = _item_errors(item, now, lead)
    if c is not None:
        return c
    out = tuple((e["field"], e["message"]) for e in errors[:MAX_ITEM_ERRORS])
    if len(errors) > MAX_ITEM_ERRORS:
        out += (("body", f"{len(errors) - MAX_ITEM_ERRORS} more errors"),)
    return out


async def _visible(request: web.Request, ccrn: str) -> tuple[Any, dict[str, Any]]:
    account = await require(request, "trader", "officer")
    common.check_ccrn(ccrn)
    async with request.app[appkeys.POOL].connection() as conn:
        row = await common.fetch_consignment(conn, ccrn)
    if row is None or (account.kind == "trader" and row["owner_id"] != account.id):
        raise common.not_found(f"consignment {ccrn}")
    return account, row


async def get_one(request: web.Request) -> web.Response:
    account, row = await _visible(request, request.match_info["ccrn"])
    return web.json_response(common.consignment_json(row, officer=account.kind == "officer"))


async def history(request: web.Request) -> web.Response:
    _, row = await _visible(request, request.match_info["ccrn"])
    async with request.app[appkeys.POOL].connection() as conn:
        cur = await conn.execute(
            "SELECT version, data, changed_at, changed_by FROM consignment_versions"
            " WHERE ccrn = %s ORDER BY version",
            (row["ccrn"],),
        )
        versions = [
            {"version": v, "data": d, "changed_at": iso(at), "changed_by": by}
            for v, d, at, by in await cur.fetchall()
        ]
    return web.json_response({"ccrn": row["ccrn"], "versions": versions})


def _cursor_encode(created_at: datetime, ccrn: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{ccrn}".encode()).decode()


def _cursor_decode(text: str) -> tuple[datetime, str]:
    try:
        at, ccrn = base64.urlsafe_b64decode(text.encode()).decode().split("|")
        created_at = datetime.fromisoformat(at)
        # Only what _cursor_encode makes: a forged one must not reach the database (a NUL in
        # it made the driver fail with a 500).
        if created_at.tzinfo is None or validate_ccrn(ccrn) is not None:
            raise ValueError("not a cursor")
        return created_at, ccrn
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid([{"field": "cursor", "message": "not a cursor from this API"}]) from exc


async def list_own(request: web.Request) -> web.Response:
    account = await require(request, "trader")
    q = request.query
    errors = []
    status = q.get("status")
    if status is not None and status not in (
        "submitted",
        "bundled",
        "cleared",
        "detained",
        "cancelled",
    ):
        errors.append({"field": "status", "message": "unknown status"})
    since = None
    if "since" in q:
        try:
            since = datetime.fromisoformat(q["since"])
            if since.tzinfo is None:
                raise ValueError
        except ValueError:
            errors.append({"field": "since", "message": "must be ISO 8601 with an offset"})
    try:
        limit = int(q.get("limit", "100"))
        if not 1 <= limit <= 1000:
            raise ValueError
    except ValueError:
        errors.append({"field": "limit", "message": "must be an integer 1..1000"})
        limit = 100
    if errors:
        raise invalid(errors)
    cursor = _cursor_decode(q["cursor"]) if "cursor" in q else None
    sql = "SELECT * FROM consignments WHERE owner_id = %(owner)s"
    params: dict[str, Any] = {"owner": account.id, "limit": limit + 1}
    if status:
        sql += " AND status = %(status)s"
        params["status"] = status
    if since:
        sql += " AND last_changed_at >= %(since)s"
        params["since"] = since
    if cursor:
        sql += " AND (created_at, ccrn) > (%(c_at)s, %(c_ccrn)s)"
        params["c_at"], params["c_ccrn"] = cursor
    sql += " ORDER BY created_at, ccrn LIMIT %(limit)s"
    async with request.app[appkeys.POOL].connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(sql, params)
        rows = await cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = _cursor_encode(rows[-1]["created_at"], rows[-1]["ccrn"]) if more and rows else None
    return web.json_response(
        {"items": [common.consignment_json(r) for r in rows], "next_cursor": nxt}
    )


async def amend(request: web.Request) -> web.Response:
    account = await require(request, "trader")
    ccrn = common.check_ccrn(request.match_info["ccrn"])
    body = await read_body(request)
    patch = parse_model(ConsignmentPatch, await load_json(body))
    at = common.now(request)
    if patch.expected_at is not None:
        _window_error(patch.expected_at, at, lead=min_lead(request, at))

    async def write(conn: Conn) -> tuple[int, dict[str, Any]]:
        row = await common.fetch_consignment(conn, ccrn, lock=True)
        if row is None or row["owner_id"] != account.id:
            raise common.not_found(f"consignment {ccrn}")
        if row["status"] in ("cancelled", "cleared", "detained"):
            raise common.conflict(f"consignment {ccrn} is {row['status']} and cannot be amended")
        before = common.consignment_json(row)
        changes = {f: getattr(patch, f) for f in patch.model_fields_set if f in AMENDABLE}
        sets = ", ".join(f"{f} = %({f})s" for f in changes)
        dcur = conn.cursor(row_factory=dict_row)
        await dcur.execute(
            f"UPDATE consignments SET {sets}, version = version + 1, last_changed_at = %(at)s"
            " WHERE ccrn = %(ccrn)s RETURNING *",
            {**changes, "at": at, "ccrn": ccrn},
        )
        new = await dcur.fetchone()
        assert new is not None
        await refresh_bundle_of(conn, ccrn, new, await common.load_rules(conn))
        new = await common.fetch_consignment(conn, ccrn)
        assert new is not None
        out = common.consignment_json(new)
        await conn.execute(
            "INSERT INTO consignment_versions (ccrn, version, data, changed_at, changed_by)"
            " VALUES (%s, %s, %s, %s, %s)",
            (ccrn, new["version"], json.dumps(out), at, account.id),
        )
        await common.audit(
            conn,
            actor=account.actor,
            action="consignment.amend",
            subject=ccrn,
            before=before,
            after=out,
        )
        return 200, out

    return await run_write(request, account, body, write)


async def cancel(request: web.Request) -> web.Response:
    account = await require(request, "trader")
    ccrn = common.check_ccrn(request.match_info["ccrn"])
    body = await request.read()

    async def write(conn: Conn) -> tuple[int, dict[str, Any]]:
        row = await common.fetch_consignment(conn, ccrn, lock=True)
        if row is None or row["owner_id"] != account.id:
            raise common.not_found(f"consignment {ccrn}")
        if row["status"] == "cancelled":
            raise common.conflict(f"consignment {ccrn} is already cancelled")
        if row["status"] != "submitted":
            raise common.conflict(
                f"consignment {ccrn} is {row['status']}; only a consignment not in a bundle can"
                " be cancelled (until the truck arrives, you can revoke the bundle first:"
                f" DELETE /v1/consignments/{ccrn}/bundle)"
            )
        dcur = conn.cursor(row_factory=dict_row)
        await dcur.execute(
            "UPDATE consignments SET status = 'cancelled', last_changed_at = %s"
            " WHERE ccrn = %s RETURNING *",
            (common.now(request), ccrn),
        )
        new = await dcur.fetchone()
        assert new is not None
        out = common.consignment_json(new)
        await common.audit(
            conn,
            actor=account.actor,
            action="consignment.cancel",
            subject=ccrn,
            before=common.consignment_json(row),
            after=out,
        )
        return 200, out

    return await run_write(request, account, body, write)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/consignments", submit)
    app.router.add_post("/v1/consignments:batch", submit_batch)
    app.router.add_get("/v1/consignments", list_own)
    app.router.add_get("/v1/consignments/{ccrn}", get_one)
    app.router.add_get("/v1/consignments/{ccrn}/history", history)
    app.router.add_patch("/v1/consignments/{ccrn}", amend)
    app.router.add_delete("/v1/consignments/{ccrn}", cancel)
