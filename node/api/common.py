"""Helpers the route modules share: clock, LBCP codes, audit, consignment rows as JSON, risk."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from aiohttp import web
from psycopg.rows import dict_row

from kernel.domain import risk
from kernel.domain.ccrn import NO_SUCH_CCRN, validate_ccrn
from kernel.domain.lbcp import DEFAULT_LBCPS
from node import appkeys
from node.problems import Problem
from node.schemas import iso

Conn = psycopg.AsyncConnection[Any]


def now(request: web.Request) -> datetime:
    return request.app[appkeys.CLOCK]()


def check_lbcp(code: str, field: str = "lbcp") -> str:
    if code not in DEFAULT_LBCPS:
        raise Problem(
            422,
            "Unprocessable Content",
            f"unknown LBCP {code!r}",
            type_="https://rocars.example/problems/validation",
            errors=[{"field": field, "message": f"must be one of {', '.join(DEFAULT_LBCPS)}"}],
        )
    return code


def check_ccrn(text: str, field: str = "ccrn") -> str:
    """Malformed CCRNs are rejected before any lookup."""
    err = validate_ccrn(text)
    if err is not None:
        raise Problem(
            422,
            "Unprocessable Content",
            f"{text!r} is not a valid CCRN: {err}",
            type_="https://rocars.example/problems/invalid-ccrn",
            errors=[{"field": field, "message": err}],
        )
    return text


def path_id(request: web.Request, what: str) -> int:
    """A numeric id from the path; ASCII digits only (str.isdigit() also accepts "²")."""
    raw = request.match_info["id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise Problem(
            422,
            "Unprocessable Content",
            f"{raw!r} is not a {what} id",
            type_="https://rocars.example/problems/validation",
            errors=[{"field": "id", "message": f"a {what} id is a positive integer"}],
        )
    return int(raw)


def not_found(what: str) -> Problem:
    """404 for a lookup that found nothing the caller may see; `what` is "<kind> <identifier>".

    One answer whether the thing does not exist or is not the caller's to see, and it names
    neither the identifier (the request path has it) nor anything about the thing. For a
    consignment the detail is exactly `NO_SUCH_CCRN`, what an unknown CCRN in a bundle gets
    too: a CCRN is its own authority, so no answer may tell a taken number from a free one.
    """
    kind = what.rsplit(" ", 1)[0]
    if kind == "consignment":
        return Problem(404, "Not Found", NO_SUCH_CCRN)
    return Problem(404, "Not Found", f"no such {kind}: it does not exist or is not yours")


def conflict(detail: str, errors: list[dict[str, str]] | None = None) -> Problem:
    return Problem(409, "Conflict", detail, errors=errors)


# The audit record, also a CTE's tail in writes that are one statement (node.api.lbcp).
AUDIT_INSERT = (
    "INSERT INTO audit_log (actor, action, subject, before, after)"
    " VALUES (%(actor)s, %(action)s, %(subject)s, %(before)s, %(after)s)"
)


def audit_params(
    *, actor: str, action: str, subject: str, before: Any = None, after: Any = None
) -> dict[str, Any]:
    """`AUDIT_INSERT`'s parameters: `before` and `after` as JSON (None stays NULL)."""
    return {
        "actor": actor,
        "action": action,
        "subject": subject,
        "before": None if before is None else json.dumps(before, default=str),
        "after": None if after is None else json.dumps(after, default=str),
    }


async def audit(
    conn: Conn,
    *,
    actor: str,
    action: str,
    subject: str,
    before: Any = None,
    after: Any = None,
) -> None:
    # Positional, in AUDIT_INSERT's column order (tests read an audit's parameters by place).
    params = audit_params(actor=actor, action=action, subject=subject, before=before, after=after)
    await conn.execute(
        "INSERT INTO audit_log (actor, action, subject, before, after) VALUES (%s, %s, %s, %s, %s)",
        tuple(params.values()),
    )


def consignment_json(row: dict[str, Any], *, officer: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ccrn": row["ccrn"],
        "status": row["status"],
        "version": row["version"],
        "direction": row["direction"],
        "lbcp": row["lbcp"],
        "package_count": row["package_count"],
        "package_description": row["package_description"],
        "article_description": row["article_description"],
        "consignor_name": row["consignor_name"],
        "consignor_address": row["consignor_address"],
        "consignee_name": row["consignee_name"],
        "consignee_address": row["consignee_address"],
        "expected_at": iso(row["expected_at"]),
        "itfs": row["itfs"],
        "submitted_at": iso(row["created_at"]),
        "last_changed_at": iso(row["last_changed_at"]),
    }
    if officer:
        out["selected"] = row["selected"]
        out["selection_reasons"] = row["selection_reasons"]
        out["lbcp_outcome"] = row["lbcp_outcome"]
    return out


async def fetch_consignment(conn: Conn, ccrn: str, *, lock: bool = False) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT * FROM consignments WHERE ccrn = %s" + (" FOR UPDATE" if lock else ""), (ccrn,)
    )
    return await cur.fetchone()


async def load_rules(conn: Conn) -> list[risk.Rule]:
    cur = await conn.execute("SELECT id, kind, value, active, lbcp FROM risk_rules WHERE active")
    return [
        risk.Rule(id=str(r[0]), kind=r[1], value=r[2], active=r[3], lbcp=r[4])
        for r in await cur.fetchall()
    ]


def assess_row(
    row: dict[str, Any], rules: Sequence[risk.Rule], *, vrn: str | None = None
) -> risk.Assessment:
    base = risk.assess(
        risk.Consignment(
            package_description=row["package_description"],
            article_description=row["article_description"],
            consignor_name=row["consignor_name"],
            consignee_name=row["consignee_name"],
        ),
        rules,
        vrn=vrn,
        draw=float(row["risk_draw"]),
        lbcp=row["lbcp"],
    )
    ov = row.get("override")
    override = risk.Override(ov["action"], ov["officer"], ov["reason"]) if ov else None
    return risk.apply_override(base, override)


def new_draw() -> float:
    return random.random()
