"""Bundling CCRNs with a vehicle, and the gate facts it precomputes.

Pure rules used: `kernel.domain.bundling` (conflicts, cross_now/cross_after), `kernel.domain.risk`.
The bundle row carries the gate's precomputed answer (not_before, selected, reasons), so the
arrival decision is one indexed lookup; database constraints keep a CCRN in one active bundle.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from aiohttp import web
from psycopg import errors as pg_errors
from psycopg.rows import dict_row

from kernel.domain import risk
from kernel.domain.bundling import ConsignmentFacts, bundle_conflicts, bundling_instruction
from kernel.domain.ccrn import validate_ccrn
from node import appkeys
from node.account import Account
from node.api import common
from node.api.outcomes import counted
from node.auth import require
from node.schemas import BundleIn, iso
from node.validation import invalid, read_model
from node.writes import Conn, WriteFn, run_write

ACTIVE = ("open", "inspecting")


def bundle_json(b: dict[str, Any], ccrns: list[str], *, officer: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": b["id"],
        "vrn": b["vrn"],
        "lbcp": b["lbcp"],
        "empty": b["empty"],
        "status": b["status"],
        "ccrns": ccrns,
        "instruction": "cross_now" if b["not_before"] <= b["created_at"] else "cross_after",
        "not_before": iso(b["not_before"]),
        "created_at": iso(b["created_at"]),
    }
    if officer:
        out["selected"] = b["selected"]
        out["reasons"] = b["reasons"]
        out["outcome"] = b["outcome"]
    return out


async def _assess_bundle(
    conn: Conn, vrn: str, rows: list[dict[str, Any]], rules: list[risk.Rule], lbcp: str
) -> tuple[bool, list[str]]:
    reasons: list[str] = []
    for row in rows:
        a = common.assess_row(row, rules, vrn=vrn)
        if a.selected:
            reasons.extend(f"{row['ccrn']}: {r}" for r in a.reasons)
    if not rows:  # empty truck: only the vehicle watch-list can select it
        blank = risk.Consignment("", "", "", "")
        a = risk.assess(blank, rules, vrn=vrn, draw=0.999999, lbcp=lbcp)
        reasons.extend(a.reasons)
    return bool(reasons), reasons


async def refresh_bundle_of(
    conn: Conn, ccrn: str, row: dict[str, Any], rules: list[risk.Rule]
) -> None:
    """After a consignment changed: reassess it, and its active bundle's gate facts."""
    a = common.assess_row(row, rules)
    await conn.execute(
        "UPDATE consignments SET selected = %s, selection_reasons = %s WHERE ccrn = %s",
        (a.selected, json.dumps(list(a.reasons)), ccrn),
    )
    cur = await conn.execute(
        "SELECT b.id FROM bundle_items i JOIN bundles b ON b.id = i.bundle_id"
        " WHERE i.ccrn = %s AND i.active",
        (ccrn,),
    )
    hit = await cur.fetchone()
    if hit is not None:
        await recompute_bundle(conn, int(hit[0]), rules)


async def recompute_bundle(conn: Conn, bundle_id: int, rules: list[risk.Rule]) -> None:
    dcur = conn.cursor(row_factory=dict_row)
    await dcur.execute("SELECT * FROM bundles WHERE id = %s FOR UPDATE", (bundle_id,))
    b = await dcur.fetchone()
    assert b is not None
    await dcur.execute(
        "SELECT c.* FROM bundle_items i JOIN consignments c ON c.ccrn = i.ccrn"
        " WHERE i.bundle_id = %s AND i.active",
        (bundle_id,),
    )
    rows = await dcur.fetchall()
    selected, reasons = await _assess_bundle(conn, b["vrn"], rows, rules, b["lbcp"])
    changed = [r["last_changed_at"] for r in rows]
    nb = bundling_instruction(b["created_at"], changed).not_before if changed else b["not_before"]
    await conn.execute(
        "UPDATE bundles SET selected = %s, reasons = %s, not_before = GREATEST(not_before, %s)"
        " WHERE id = %s",
        (selected, json.dumps(reasons), nb, bundle_id),
    )


@counted(lambda m: m.bundle_outcomes["create"])
async def create(request: web.Request) -> web.Response:
    account = await require(request, "trucker")
    body, b = await read_model(request, BundleIn)
    return await create_bundle(request, account, body, b)


async def create_bundle(
    request: web.Request, account: Account, body: bytes, b: BundleIn
) -> web.Response:
    """`create` once the caller and the bundle are known (the API's handler, the web pages)."""
    check_bundle(b)
    return await run_write(request, account, body, bundle_write(account, b, common.now(request)))


def check_bundle(b: BundleIn) -> None:
    """The request's own checks, before any lookup (422): LBCP, CCRN forms, empty or not."""
    common.check_lbcp(b.lbcp)
    errors = [
        {"field": f"ccrns[{i}]", "message": err}
        for i, c in enumerate(b.ccrns)
        if (err := validate_ccrn(c)) is not None
    ]
    if not b.empty and not b.ccrns:
        errors.append({"field": "ccrns", "message": "name at least one CCRN, or set empty: true"})
    if b.empty and b.ccrns:
        errors.append({"field": "ccrns", "message": "an empty truck carries no CCRNs"})
    if errors:
        raise invalid(errors)


def bundle_write(account: Account, b: BundleIn, at: datetime) -> WriteFn:
    """The bundle's transaction: `run_write`'s for the API, `write_once`'s for the phone."""

    async def write(conn: Conn) -> tuple[int, dict[str, Any]]:
        dcur = conn.cursor(row_factory=dict_row)
        await dcur.execute(
            "SELECT c.*, (SELECT i.bundle_id FROM bundle_items i WHERE i.ccrn = c.ccrn AND"
            " i.active) AS open_bundle FROM consignments c WHERE c.ccrn = ANY(%s)"
            " ORDER BY c.ccrn FOR UPDATE",
            (b.ccrns,),
        )
        rows = await dcur.fetchall()
        facts = {
            r["ccrn"]: ConsignmentFacts(
                exists=True,
                cancelled=r["status"] == "cancelled",
                lbcp=r["lbcp"],
                open_bundle_id=str(r["open_bundle"]) if r["open_bundle"] else None,
            )
            for r in rows
        }
        conflicts = bundle_conflicts(b.ccrns, facts, b.lbcp, empty=b.empty)
        done = [r for r in rows if r["status"] in ("cleared", "detained")]
        if conflicts or done:
            errs = [
                {"field": f"ccrns[{b.ccrns.index(c)}]" if c in b.ccrns else "ccrns", "message": m}
                for c, m in conflicts
            ] + [
                {"field": f"ccrns[{b.ccrns.index(r['ccrn'])}]", "message": "already cleared"}
                for r in done
            ]
            raise common.conflict("the bundle cannot be made", errs)
        rules = await common.load_rules(conn)
        selected, reasons = await _assess_bundle(conn, b.vrn, rows, rules, b.lbcp)
        instr = bundling_instruction(at, [r["last_changed_at"] for r in rows])
        try:
            await dcur.execute(
                "INSERT INTO bundles (trucker_id, vrn, lbcp, empty, not_before, selected, reasons,"
                " created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING *",
                (
                    account.id,
                    b.vrn,
                    b.lbcp,
                    b.empty,
                    instr.not_before,
                    selected,
                    json.dumps(reasons),
                    at,
                ),
            )
            bundle = await dcur.fetchone()
            assert bundle is not None
            for c in b.ccrns:
                await conn.execute(
                    "INSERT INTO bundle_items (bundle_id, ccrn) VALUES (%s, %s)", (bundle["id"], c)
                )
        except pg_errors.UniqueViolation as exc:
            # Lost a race the row locks cannot see (the same VRN bundled concurrently).
            raise common.conflict(
                f"vehicle {b.vrn} already has a bundle in progress at {b.lbcp}, or a CCRN was"
                " bundled at the same moment",
                [{"field": "vrn", "message": "bundle in progress"}],
            ) from exc
        await conn.execute(
            "UPDATE consignments SET status = 'bundled' WHERE ccrn = ANY(%s)", (b.ccrns,)
        )
        out = bundle_json(bundle, b.ccrns)
        await common.audit(
            conn,
            actor=account.actor,
            action="bundle.create",
            subject=f"bundle:{bundle['id']}",
            after={**out, "selected": selected, "reasons": reasons},
        )
        return 201, out

    return write


async def _load(conn: Conn, bundle_id: int, *, lock: bool = False) -> tuple[Any, list[str]]:
    dcur = conn.cursor(row_factory=dict_row)
    await dcur.execute(
        "SELECT * FROM bundles WHERE id = %s" + (" FOR UPDATE" if lock else ""), (bundle_id,)
    )
    b = await dcur.fetchone()
    if b is None:
        return None, []
    cur = await conn.execute(
        "SELECT ccrn FROM bundle_items WHERE bundle_id = %s ORDER BY ccrn", (bundle_id,)
    )
    return b, [r[0] for r in await cur.fetchall()]


def _bundle_id(request: web.Request) -> int:
    return common.path_id(request, "bundle")


async def get_one(request: web.Request) -> web.Response:
    account = await require(request, "trucker", "officer")
    return web.json_response(await visible_bundle(request, account, _bundle_id(request)))


async def visible_bundle(request: web.Request, account: Account, bid: int) -> dict[str, Any]:
    """Bundle `bid` as `account` may see it (`bundle_json`), else 404."""
    async with request.app[appkeys.POOL].connection() as conn:
        b, ccrns = await _load(conn, bid)
    if b is None or (account.kind == "trucker" and b["trucker_id"] != account.id):
        raise common.not_found(f"bundle {bid}")
    return bundle_json(b, ccrns, officer=account.kind == "officer")


@counted(lambda m: m.bundle_outcomes["cancel"])
async def cancel(request: web.Request) -> web.Response:
    account = await require(request, "trucker")
    return await cancel_bundle(request, account, _bundle_id(request), await request.read())


async def cancel_bundle(
    request: web.Request, account: Account, bid: int, body: bytes
) -> web.Response:
    """`cancel` once the caller is known."""

    async def write(conn: Conn) -> tuple[int, dict[str, Any]]:
        b, ccrns = await _load(conn, bid, lock=True)
        if b is None or b["trucker_id"] != account.id:
            raise common.not_found(f"bundle {bid}")
        if b["status"] != "open":
            raise common.conflict(f"bundle {bid} is {b['status']} and cannot be cancelled")
        await conn.execute(
            "UPDATE bundles SET status = 'cancelled', closed_at = %s WHERE id = %s",
            (common.now(request), bid),
        )
        await conn.execute("UPDATE bundle_items SET active = false WHERE bundle_id = %s", (bid,))
        await conn.execute(
            "UPDATE consignments SET status = 'submitted' WHERE ccrn = ANY(%s)"
            " AND status = 'bundled'",
            (ccrns,),
        )
        out = {**bundle_json(b, ccrns), "status": "cancelled"}
        await common.audit(
            conn,
            actor=account.actor,
            action="bundle.cancel",
            subject=f"bundle:{bid}",
            before=bundle_json(b, ccrns),
            after=out,
        )
        return 200, out

    return await run_write(request, account, body, write)


@counted(lambda m: m.bundle_outcomes["revoke"])
async def revoke(request: web.Request) -> web.Response:
    """DELETE /v1/consignments/{ccrn}/bundle: the owner takes their CCRN out of its bundle.

    Possession lets any trucker bundle a CCRN, so the trader who owns it can undo that while
    the truck has not arrived (the bundle is still open). The bundle's gate facts are
    recomputed without it; a bundle left carrying nothing (and not declared an empty truck) is
    cancelled. The item row is deleted, not kept inactive, so the bundle never lists the CCRN
    again, whatever happens to the bundle later; the audit row (`bundle.revoke`) keeps it.
    """
    account = await require(request, "trader")
    ccrn = common.check_ccrn(request.match_info["ccrn"])
    body = await request.read()

    async def write(conn: Conn) -> tuple[int, dict[str, Any]]:
        row = await common.fetch_consignment(conn, ccrn)
        if row is None or row["owner_id"] != account.id:
            raise common.not_found(f"consignment {ccrn}")
        # Bundle first, then consignment: the order the gate and the trucker's cancel lock in.
        dcur = conn.cursor(row_factory=dict_row)
        await dcur.execute(
            "SELECT b.* FROM bundles b JOIN bundle_items i ON i.bundle_id = b.id"
            " WHERE i.ccrn = %s AND i.active FOR UPDATE OF b",
            (ccrn,),
        )
        b = await dcur.fetchone()
        arrived = (
            "the truck has arrived: a consignment can leave its bundle only before the truck"
            " reaches the boundary control point"
        )
        if b is None and row["status"] in ("cleared", "detained"):
            raise common.conflict(f"{arrived}; consignment {ccrn} is {row['status']}")
        if b is not None and b["status"] in ("inspecting", "closed"):
            raise common.conflict(f"{arrived}; bundle {b['id']} is {b['status']}")
        if b is not None and b["status"] == "open":
            # Under the bundle's lock, whatever else took the item out has committed: look again.
            cur = await conn.execute(
                "SELECT 1 FROM bundle_items WHERE bundle_id = %s AND ccrn = %s AND active",
                (b["id"], ccrn),
            )
            if await cur.fetchone() is None:
                b = None
        if b is None or b["status"] != "open":
            raise common.conflict(f"consignment {ccrn} is in no active bundle")
        bid = b["id"]
        _, before_ccrns = await _load(conn, bid)
        await conn.execute(
            "DELETE FROM bundle_items WHERE bundle_id = %s AND ccrn = %s", (bid, ccrn)
        )
        await dcur.execute(
            "UPDATE consignments SET status = 'submitted' WHERE ccrn = %s RETURNING *", (ccrn,)
        )
        new = await dcur.fetchone()
        assert new is not None
        left = [c for c in before_ccrns if c != ccrn]
        if not left and not b["empty"]:
            await conn.execute(
                "UPDATE bundles SET status = 'cancelled', closed_at = %s WHERE id = %s",
                (common.now(request), bid),
            )
        else:
            await recompute_bundle(conn, bid, await common.load_rules(conn))
        after, after_ccrns = await _load(conn, bid)
        await common.audit(
            conn,
            actor=account.actor,
            action="bundle.revoke",
            subject=f"bundle:{bid}",
            before=bundle_json(b, before_ccrns),
            after={**bundle_json(after, after_ccrns), "revoked": ccrn},
        )
        return 200, {**common.consignment_json(new), "revoked_from_bundle": bid}

    return await run_write(request, account, body, write)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/bundles", create)
    app.router.add_get("/v1/bundles/{id}", get_one)
    app.router.add_delete("/v1/bundles/{id}", cancel)
    app.router.add_delete("/v1/consignments/{ccrn}/bundle", revoke)
