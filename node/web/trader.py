"""The trader's pages: submit one consignment, upload a batch, list and find their own, see one
with its QR code and history, amend, cancel.

Each page calls what the matching API handler calls (node.api.consignments: `submit_one`,
`write_batch`, `own_consignments`, `visible_row`, `history_of`, `amend_one`, `cancel_one`)
with the signed-in account and the very JSON document an API client would send, so the rules,
the write path and the answers are the API's; refusals come back as the API's problems.
"""

from __future__ import annotations

import base64
import csv
import io
from datetime import timedelta
from typing import Any

from aiohttp import BodyPartReader, web

from kernel.domain.lbcp import DEFAULT_LBCPS, HK_TZ
from node.api import common, consignments
from node.api.common import consignment_json
from node.problems import Problem
from node.schemas import ConsignmentIn
from node.validation import parse_model
from node.web import forms, qr, session
from node.web.render import Ctx, hk_time, page, redirect

STATUSES = ("submitted", "bundled", "cleared", "detained", "cancelled")
DONE = {
    "submitted": "Consignment submitted.",
    "amended": "Consignment amended.",
    "cancelled": "Consignment cancelled.",
}
PAGE_SIZE = 50
_CHUNK = 64 * 1024


def _local_input(iso: str | None) -> str:
    """An API time as a `datetime-local` value in Hong Kong time."""
    return hk_time(iso, "%Y-%m-%dT%H:%M") if iso else ""


def _form_page(
    ctx: Ctx,
    values: dict[str, str],
    *,
    errors: dict[str, str] | None = None,
    detail: str | None = None,
    status: int = 200,
) -> web.Response:
    return ctx.render(
        "trader_new.html",
        {
            "values": values,
            "errors": errors or {},
            "detail": detail,
            "lbcp_names": DEFAULT_LBCPS,
            "idem": forms.new_token(),
        },
        status=status,
    )


def _as_values(form: Any) -> dict[str, str]:
    names = (*forms.CONSIGNMENT_FIELDS, "itfs_airport", "itfs_flight")
    return {n: forms.text(form, n) for n in names}


@page("trader")
async def home(ctx: Ctx) -> web.StreamResponse:
    q = ctx.request.query
    query = {"limit": str(PAGE_SIZE)}
    status = q.get("status", "")
    if status in STATUSES:
        query["status"] = status
    if q.get("cursor"):
        query["cursor"] = q["cursor"]
    assert ctx.account is not None
    listed = await consignments.own_consignments(ctx.request, ctx.account, query)
    return ctx.render(
        "trader_list.html",
        {
            "items": listed["items"],
            "next_cursor": listed["next_cursor"],
            "status": status,
            "statuses": STATUSES,
        },
    )


@page("trader")
async def find(ctx: Ctx) -> web.StreamResponse:
    ccrn = ctx.request.query.get("ccrn", "").strip().upper()
    common.check_ccrn(ccrn)
    return redirect(f"/trader/c/{ccrn}")


@page("trader")
async def new_form(ctx: Ctx) -> web.StreamResponse:
    ahead = common.now(ctx.request) + timedelta(hours=2)
    values = {"direction": "import", "lbcp": "LMC"}
    values["expected_at"] = ahead.astimezone(HK_TZ).strftime("%Y-%m-%dT%H:%M")
    return _form_page(ctx, values)


@page("trader")
async def submit(ctx: Ctx) -> web.StreamResponse:
    assert ctx.form is not None and ctx.account is not None
    doc = forms.consignment_doc(ctx.form)
    try:
        c = parse_model(ConsignmentIn, doc)
        request = forms.with_idempotency(ctx.request, forms.text(ctx.form, forms.IDEMPOTENCY_FIELD))
        response = await consignments.submit_one(request, ctx.account, forms.body_of(doc), c)
        answer = forms.accepted(response)
    except Problem as p:
        if p.status not in (409, 422):
            raise
        return _form_page(
            ctx,
            _as_values(ctx.form),
            errors=forms.field_errors(p),
            detail=p.detail,
            status=p.status,
        )
    return redirect(f"/trader/c/{answer['ccrn']}?done=submitted")


@page("trader")
async def detail(ctx: Ctx) -> web.StreamResponse:
    assert ctx.account is not None
    row = await consignments.visible_row(ctx.request, ctx.account, ctx.request.match_info["ccrn"])
    item = consignment_json(row)
    history = await consignments.history_of(ctx.request, row)
    done = DONE.get(ctx.request.query.get("done", ""))
    return ctx.render(
        "trader_detail.html",
        {
            "c": item,
            "versions": list(reversed(history["versions"])),
            "done": done,
            "qr": qr.svg(
                qr.bundle_url(ctx.request, item["ccrn"]),
                ctx._("QR code of the CCRN for the trucker") + f": {item['ccrn']}",
            ),
            "lbcp_names": DEFAULT_LBCPS,
            "idem": forms.new_token(),
        },
    )


def _amend_page(
    ctx: Ctx,
    item: dict[str, Any],
    values: dict[str, str],
    *,
    errors: dict[str, str] | None = None,
    detail: str | None = None,
    status: int = 200,
) -> web.Response:
    return ctx.render(
        "trader_amend.html",
        {
            "c": item,
            "values": values,
            "errors": errors or {},
            "detail": detail,
            "idem": forms.new_token(),
        },
        status=status,
    )


@page("trader")
async def amend_form(ctx: Ctx) -> web.StreamResponse:
    assert ctx.account is not None
    row = await consignments.visible_row(ctx.request, ctx.account, ctx.request.match_info["ccrn"])
    item = consignment_json(row)
    values = {n: str(item[n]) for n in forms.AMEND_FIELDS}
    values["expected_at"] = _local_input(item["expected_at"])
    return _amend_page(ctx, item, values)


@page("trader")
async def amend(ctx: Ctx) -> web.StreamResponse:
    assert ctx.form is not None and ctx.account is not None
    ccrn = ctx.request.match_info["ccrn"]
    row = await consignments.visible_row(ctx.request, ctx.account, ccrn)
    item = consignment_json(row)
    # Only what changed is sent, as an API client would patch it.
    current = {n: str(item[n]) for n in forms.AMEND_FIELDS}
    current["expected_at"] = _local_input(item["expected_at"])
    typed = {n: forms.text(ctx.form, n) for n in forms.AMEND_FIELDS}
    changed = [n for n in forms.AMEND_FIELDS if typed[n] != current[n]]
    doc = forms.consignment_doc(ctx.form, changed)
    for n in changed:
        if not typed[n]:
            doc[n] = None  # emptied: the API names it ("cannot be null")
    try:
        request = forms.with_idempotency(ctx.request, forms.text(ctx.form, forms.IDEMPOTENCY_FIELD))
        response = await consignments.amend_one(request, ctx.account, ccrn, forms.body_of(doc))
        forms.accepted(response)
    except Problem as p:
        if p.status not in (409, 422):
            raise
        return _amend_page(
            ctx, item, typed, errors=forms.field_errors(p), detail=p.detail, status=p.status
        )
    return redirect(f"/trader/c/{ccrn}?done=amended")


@page("trader")
async def cancel(ctx: Ctx) -> web.StreamResponse:
    assert ctx.form is not None and ctx.account is not None
    ccrn = ctx.request.match_info["ccrn"]
    request = forms.with_idempotency(ctx.request, forms.text(ctx.form, forms.IDEMPOTENCY_FIELD))
    forms.accepted(await consignments.cancel_one(request, ctx.account, ccrn, b""))
    return redirect(f"/trader/c/{ccrn}?done=cancelled")


@page("trader")
async def batch_form(ctx: Ctx) -> web.StreamResponse:
    return _batch_page(ctx)


def _batch_page(
    ctx: Ctx, *, error: str | None = None, status: int = 200, **extra: Any
) -> web.Response:
    return ctx.render(
        "trader_batch.html",
        {"error": error, "idem": forms.new_token(), "result": None, "csv_href": None, **extra},
        status=status,
    )


def results_csv(answer: dict[str, Any]) -> str:
    """The per-row results as CSV: row (1 = the first item), CCRN, errors."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["row", "ccrn", "errors"])
    for r in answer["results"]:
        errs = "; ".join(f"{e['field']}: {e['message']}" for e in r.get("errors", []))
        w.writerow([r["index"] + 1, r.get("ccrn", ""), errs])
    return out.getvalue()


async def _read_part(part: BodyPartReader, limit: int) -> bytes | None:
    buf = bytearray()
    while chunk := await part.read_chunk(_CHUNK):
        buf.extend(chunk)
        if len(buf) > limit:
            return None
    return bytes(buf)


@page("trader")
async def batch(ctx: Ctx) -> web.StreamResponse:
    """The upload, read as a stream (up to the API's batch cap) inside one of the node's batch
    slots, exactly like `POST /v1/consignments:batch`. The CSRF token is the form's first part
    and is checked before the file is read."""
    assert ctx.account is not None
    request = ctx.request
    async with consignments.batch_slot(request):
        reader = await request.multipart()
        fields: dict[str, str] = {}
        body: bytes | None = None
        filename = ""
        ctype = ""
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "file":
                if session.CSRF_FIELD not in fields:
                    break
                filename = part.filename or ""
                ctype = part.headers.get("Content-Type", "")
                body = await _read_part(part, consignments.MAX_BATCH_BODY)
                if body is None:
                    return _batch_page(
                        ctx, error=ctx._("The file is larger than 10 MiB."), status=413
                    )
            elif part.name in (session.CSRF_FIELD, forms.IDEMPOTENCY_FIELD):
                raw = await _read_part(part, 256)
                fields[part.name] = raw.decode("ascii", "replace") if raw else ""
        session.check_csrf(request, fields.get(session.CSRF_FIELD))
        if not body:
            return _batch_page(ctx, error=ctx._("Choose a file to upload."), status=422)
        csv_body = ctype.startswith("text/csv") or filename.lower().endswith(".csv")
        keyed = forms.with_idempotency(request, fields.get(forms.IDEMPOTENCY_FIELD, ""))
        try:
            answer = forms.accepted(
                await consignments.write_batch(keyed, ctx.account, body, csv_body=csv_body)
            )
        except Problem as p:
            if p.status >= 500:
                raise
            errs = "; ".join(f"{k}: {v}" for k, v in forms.field_errors(p).items())
            return _batch_page(ctx, error=f"{p.detail} {errs}".strip(), status=p.status)
    href = "data:text/csv;base64," + base64.b64encode(results_csv(answer).encode()).decode()
    return _batch_page(ctx, result=answer, csv_href=href)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/trader", home)
    app.router.add_get("/trader/find", find)
    app.router.add_get("/trader/new", new_form)
    app.router.add_post("/trader/new", submit)
    app.router.add_get("/trader/batch", batch_form)
    app.router.add_post("/trader/batch", batch)
    app.router.add_get("/trader/c/{ccrn}", detail)
    app.router.add_get("/trader/c/{ccrn}/amend", amend_form)
    app.router.add_post("/trader/c/{ccrn}/amend", amend)
    app.router.add_post("/trader/c/{ccrn}/cancel", cancel)
