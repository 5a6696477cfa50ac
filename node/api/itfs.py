"""Land-to-air transshipment (ITFS): cargo is inspected at most once, at the LBCP or the airport.

Pure rule used: `kernel.domain.itfs.airport_inspection_decision`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from kernel.domain.itfs import airport_inspection_decision
from node import appkeys
from node.api import common
from node.auth import require
from node.writes import Conn, run_write


def _view(row: dict[str, Any]) -> dict[str, Any]:
    d = airport_inspection_decision(row["lbcp_outcome"], airport_inspected=row["airport_inspected"])
    return {
        "ccrn": row["ccrn"],
        "itfs": row["itfs"],
        "status": row["status"],
        "lbcp_outcome": row["lbcp_outcome"],
        "inspected_at_lbcp": row["lbcp_outcome"] == "inspected",
        "airport_inspected": row["airport_inspected"],
        "airport_inspection_allowed": d.allowed,
        "message": d.message,
    }


async def _itfs_row(conn: Conn, ccrn: str, *, lock: bool = False) -> dict[str, Any]:
    row = await common.fetch_consignment(conn, ccrn, lock=lock)
    if row is None or row["itfs"] is None:
        raise common.not_found(f"ITFS consignment {ccrn}")
    return row


async def query(request: web.Request) -> web.Response:
    await require(request, "officer")
    return web.json_response(await itfs_view(request, request.match_info["ccrn"]))


async def itfs_view(request: web.Request, ccrn: str) -> dict[str, Any]:
    """An ITFS consignment and whether the airport may still inspect it (the API's and the
    officers' pages' view)."""
    ccrn = common.check_ccrn(ccrn)
    async with request.app[appkeys.POOL].connection() as conn:
        row = await _itfs_row(conn, ccrn)
    return _view(row)


async def airport_inspection(request: web.Request) -> web.Response:
    account = await require(request, "officer")
    ccrn = common.check_ccrn(request.match_info["ccrn"])
    body = await request.read()

    async def write(conn: Conn) -> tuple[int, dict[str, Any]]:
        row = await _itfs_row(conn, ccrn, lock=True)
        d = airport_inspection_decision(
            row["lbcp_outcome"], airport_inspected=row["airport_inspected"]
        )
        if not d.allowed:
            raise common.conflict(d.message)
        await conn.execute(
            "UPDATE consignments SET airport_inspected = true WHERE ccrn = %s", (ccrn,)
        )
        row["airport_inspected"] = True
        out = _view(row)
        await common.audit(
            conn, actor=account.actor, action="itfs.airport_inspection", subject=ccrn, after=out
        )
        return 201, out

    return await run_write(request, account, body, write)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/itfs/{ccrn}", query)
    app.router.add_post("/v1/itfs/{ccrn}/airport-inspections", airport_inspection)
