"""The officers' arrivals page: the gates' decisions as they happen, per LBCP.

The source is what the node already has: every arrival the gate decides from the database is a
row of `arrivals` (node.api.lbcp writes it in the same transaction as the decision), on the
active node and, replicated, on the standby. The page lists the latest ones (it works without
scripts: a table and a refresh link); `officer.js` then opens the stream
(`GET /officer/arrivals/stream`, Server-Sent Events through `aiohttp-sse`), which sends each
new row as it is committed, the row's id as the event id, so a reconnecting browser resumes
after the last one it got (`Last-Event-ID`). Arrivals the mode alone decides (manual
clearance) are answered without the database and recorded by the officer's clearance form.

Streams are few and bounded: at most `MAX_STREAMS` per node (each holds one of the node's
in-flight slots, node.admission, and one of HAProxy's per-node connections), each ends after
`STREAM_FOR_S` (the browser reconnects by itself after `RETRY_MS`), and all end when the node
shuts down. Each polls the node's own database every `POLL_S` with one indexed query.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response
from psycopg.rows import dict_row

from kernel.domain.lbcp import DEFAULT_LBCPS
from kernel.errors import DatabaseUnavailable
from node import appkeys
from node.api import common
from node.auth import account_for_key, require_kind
from node.driver_errors import translated
from node.problems import Problem
from node.schemas import iso
from node.web import i18n, render, session
from node.web.render import Ctx, hk_time, page

ROLE = "officer"
PAGE_ROWS = 50
POLL_S = 1.0
PING_S = 15.0
STREAM_FOR_S = 120.0
RETRY_MS = 2000
MAX_STREAMS = 4
# Words of the gate's decisions, for the page and the stream (translated there).
DECISIONS = {
    "release": "Release",
    "inspect": "Inspect",
    "hold": "Hold",
    "manual": "Manual clearance",
}
_COLUMNS = "id, lbcp, vrn, decision, reason, until, at, bundle_id"


class Streams:
    """This node's open arrival streams: how many, and the signal that ends them all."""

    def __init__(self) -> None:
        self.open = 0
        self.closing = asyncio.Event()


STREAMS = web.AppKey("officer_arrival_streams", Streams)


def arrival_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "lbcp": row["lbcp"],
        "vrn": row["vrn"],
        "decision": row["decision"],
        "reason": row["reason"],
        "until": iso(row["until"]),
        "at": iso(row["at"]),
        "bundle_id": row["bundle_id"],
    }


async def latest_arrivals(request: web.Request, lbcp: str | None) -> list[dict[str, Any]]:
    """The latest PAGE_ROWS arrivals at `lbcp` (None: every LBCP), newest first."""
    with translated():
        async with request.app[appkeys.POOL].connection(timeout=2) as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {_COLUMNS} FROM arrivals"
                " WHERE (%(lbcp)s::text IS NULL OR lbcp = %(lbcp)s) ORDER BY id DESC LIMIT %(n)s",
                {"lbcp": lbcp, "n": PAGE_ROWS},
            )
            rows = await cur.fetchall()
    return [arrival_json(r) for r in rows]


async def arrivals_after(
    request: web.Request, after: int | None, lbcp: str | None
) -> tuple[int, list[dict[str, Any]]]:
    """(the id to continue after, the arrivals after `after`, oldest first). `after` None:
    none yet, continue after the newest there is."""
    with translated():
        async with request.app[appkeys.POOL].connection(timeout=2) as conn:
            cur = conn.cursor(row_factory=dict_row)
            if after is None:
                await cur.execute("SELECT coalesce(max(id), 0) AS last FROM arrivals")
                row = await cur.fetchone()
                return (int(row["last"]) if row else 0), []
            await cur.execute(
                f"SELECT {_COLUMNS} FROM arrivals WHERE id > %(after)s"
                " AND (%(lbcp)s::text IS NULL OR lbcp = %(lbcp)s) ORDER BY id LIMIT %(n)s",
                {"after": after, "lbcp": lbcp, "n": PAGE_ROWS},
            )
            rows = await cur.fetchall()
    return (int(rows[-1]["id"]) if rows else after), [arrival_json(r) for r in rows]


def shown(item: dict[str, Any], _: Callable[[str], str]) -> dict[str, Any]:
    """An arrival as the page shows it (Hong Kong time, the decision in the page's language)."""
    return {
        **item,
        "at_text": hk_time(item["at"], "%H:%M:%S"),
        "until_text": hk_time(item["until"], "%H:%M") if item["until"] else "",
        "decision_text": _(DECISIONS.get(item["decision"], item["decision"])),
    }


def _lbcp_of(request: web.Request) -> str | None:
    code = request.query.get("lbcp", "").strip().upper()
    return common.check_lbcp(code) if code else None


@page(ROLE)
async def arrivals(ctx: Ctx) -> web.StreamResponse:
    lbcp = _lbcp_of(ctx.request)
    items: list[dict[str, Any]] = []
    unavailable = False
    try:
        items = await latest_arrivals(ctx.request, lbcp)
    except DatabaseUnavailable:
        unavailable = True  # the page still says so, and the stream keeps trying
    return ctx.render(
        "officer_arrivals.html",
        {
            "lbcp": lbcp or "",
            "lbcp_names": DEFAULT_LBCPS,
            "items": [shown(i, ctx._) for i in items],
            # Where the stream starts: after the newest shown (0: none yet; blank: unknown).
            "after": items[0]["id"] if items else ("" if unavailable else 0),
            "unavailable": unavailable,
        },
    )


def _after(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.query.get("after", "")
    raw = raw.strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise Problem(
            422,
            "Unprocessable Content",
            "after: not an arrival id",
            errors=[{"field": "after", "message": "not an arrival id"}],
        )
    return int(raw)


async def _stream_account(request: web.Request) -> None:
    """The session's account, authenticated as every page is, and an officer's; else the
    API's problem (the browser's EventSource then stops, and the page keeps its list)."""
    s = session.current(request)
    if s.key is None:
        raise Problem(401, "Unauthorized", "sign in first")
    require_kind(await account_for_key(request, s.key), ROLE)


async def _wait(streams: Streams, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(streams.closing.wait(), seconds)


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def stream(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: `arrival` (one row as JSON, its id as the event id), `state`
    ("ok" or "unavailable": the database could not be read; it is tried again)."""
    await _stream_account(request)
    lbcp = _lbcp_of(request)
    after = _after(request)
    streams = request.app[STREAMS]
    if streams.open >= MAX_STREAMS or streams.closing.is_set():
        raise Problem(
            503,
            "Service Unavailable",
            "this node streams arrivals to as many pages as it may; the page lists them"
            " when reloaded",
            headers={"Retry-After": "30"},
        )
    streams.open += 1
    try:
        async with sse_response(request, ping_interval=PING_S) as sse:
            # The browser went away (or stopped reading): nothing more to send.
            with contextlib.suppress(ConnectionResetError, TimeoutError):
                await _follow(request, sse, streams, lbcp, after)
        return sse
    finally:
        streams.open -= 1


async def _follow(
    request: web.Request,
    sse: EventSourceResponse,
    streams: Streams,
    lbcp: str | None,
    after: int | None,
) -> None:
    _ = i18n.gettext(render.language(request))
    loop = asyncio.get_running_loop()
    ends = loop.time() + STREAM_FOR_S
    await sse.send("ok", event="state", retry=RETRY_MS)
    healthy = True
    while not streams.closing.is_set() and loop.time() < ends and not _gone(request):
        try:
            after, rows = await arrivals_after(request, after, lbcp)
        except DatabaseUnavailable:
            if healthy:
                await sse.send("unavailable", event="state")
            healthy = False
        else:
            if not healthy:
                await sse.send("ok", event="state")
            healthy = True
            for item in rows:
                doc = json.dumps(shown(item, _), ensure_ascii=False)
                await sse.send(doc, id=str(item["id"]), event="arrival")
        await _wait(streams, POLL_S)


async def _close_streams(app: web.Application) -> None:
    app[STREAMS].closing.set()


def add_routes(app: web.Application) -> None:
    app[STREAMS] = Streams()
    app.on_shutdown.append(_close_streams)
    app.router.add_get("/officer/arrivals", arrivals)
    app.router.add_get("/officer/arrivals/stream", stream)
