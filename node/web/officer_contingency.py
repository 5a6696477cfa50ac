"""The contingency switch for officers: manual clearance on (with a reason, a notice, the LBCPs
it covers, and a confirmation step), the manual clearance entry form, and off again with the
reconciliation report.

It works with PostgreSQL down, exactly as the API does, because it is the API: the session's
key is checked against the node's key cache (node.auth), the mode lives in etcd or the node's
local override (`state_json`, `activate_as`), a clearance goes to PostgreSQL when this node can
write and to the node's journal otherwise (`record_clearance_as`), and switching off
reconciles the journals first (`deactivate_as`, which needs a writable database and says so).

The clearance form carries a token (`forms.new_token`), its Idempotency-Key: the same form sent
twice records one clearance (`record_clearance_as`).

Each clearance is shown as "journalled" (in this node's journal, still to be imported) or
"stored" (in PostgreSQL's `manual_clearances`, recorded there directly or reconciled); the
stored ones are read only when this node is the active one and its database answers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from psycopg.rows import dict_row

from kernel.domain.lbcp import DEFAULT_LBCPS
from kernel.errors import DatabaseUnavailable
from node import appkeys
from node.api import contingency
from node.api.contingency import ActivateIn, ClearanceIn, DeactivateIn, state_json
from node.driver_errors import translated
from node.problems import Problem
from node.schemas import iso
from node.validation import parse_model
from node.web import forms
from node.web.render import Ctx, page, redirect

ROLE = "officer"
# A clearance's decisions (the API's), in the words the page shows them with.
DECISIONS = {"release": "Release", "inspect": "Inspect", "refuse": "Refuse entry"}
STORED_ROWS = 20
DONE = {
    "activated": "Manual clearance is switched on.",
    "journalled": "Clearance recorded in this node's journal; it is stored when the database is back.",  # noqa: E501 (one text per line)
    "stored": "Clearance stored in the database.",
}
_LINES = "\n"


def _scope(form: Any) -> list[str] | None:
    """The LBCPs ticked (none: every LBCP), as the API's `lbcps`."""
    codes = [v for v in form.getall("lbcps", []) if isinstance(v, str) and v]
    return codes or None


def activate_doc(form: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"reason": forms.text(form, "reason")}
    message = forms.text(form, "message")
    if message:
        doc["message"] = message
    lbcps = _scope(form)
    if lbcps is not None:
        doc["lbcps"] = lbcps
    return doc


def deactivate_doc(form: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"reason": forms.text(form, "reason")}
    lbcps = _scope(form)
    if lbcps is not None:
        doc["lbcps"] = lbcps
    return doc


def clearance_doc(form: Any) -> dict[str, Any]:
    """The clearance form as `POST /v1/contingency/clearances` takes it: documents and CCRNs
    one per line, the time typed in Hong Kong time (blank: now)."""
    doc: dict[str, Any] = {
        "lbcp": forms.text(form, "lbcp"),
        "vrn": forms.text(form, "vrn"),
        "decision": forms.text(form, "decision"),
        "documents": [d.strip() for d in forms.text(form, "documents").split(_LINES) if d.strip()],
        "ccrns": [c.strip().upper() for c in forms.text(form, "ccrns").split() if c.strip()],
    }
    cleared_at = forms.text(form, "cleared_at")
    if cleared_at:
        doc["cleared_at"] = forms.local_time(cleared_at)
    return doc


async def _journalled(request: web.Request) -> list[dict[str, Any]]:
    """This node's clearances still to be imported, newest first."""
    pending = await asyncio.to_thread(request.app[appkeys.JOURNAL].pending_clearances)
    return [
        {
            "uuid": r.uuid,
            "lbcp": r.lbcp,
            "vrn": r.vrn,
            "decision": r.decision,
            "cleared_at": iso(r.cleared_at),
            "node": r.node,
            "state": "journalled",
        }
        for r in reversed(pending)
    ]


async def _stored(request: web.Request) -> list[dict[str, Any]] | None:
    """The latest clearances in PostgreSQL, newest first; None when this node cannot read
    them now (not the active node, or its database down)."""
    if request.app[appkeys.ROLE].role != "active":
        return None
    try:
        with translated():
            async with request.app[appkeys.POOL].connection(timeout=2) as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    "SELECT uuid, lbcp, vrn, decision, cleared_at, node, source, bundle_id"
                    " FROM manual_clearances ORDER BY recorded_at DESC LIMIT %s",
                    (STORED_ROWS,),
                )
                rows = await cur.fetchall()
    except DatabaseUnavailable:
        return None
    return [
        {
            "uuid": str(r["uuid"]),
            "lbcp": r["lbcp"],
            "vrn": r["vrn"],
            "decision": r["decision"],
            "cleared_at": iso(r["cleared_at"]),
            "node": r["node"],
            "source": r["source"],
            "bundle_id": r["bundle_id"],
            "state": "stored",
        }
        for r in rows
    ]


async def _page(
    ctx: Ctx,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    detail: str | None = None,
    report: dict[str, Any] | None = None,
    status: int = 200,
) -> web.Response:
    doc = state_json(ctx.request)
    journalled = await _journalled(ctx.request)
    stored = await _stored(ctx.request)
    clearances = journalled + [
        s for s in (stored or []) if s["uuid"] not in {j["uuid"] for j in journalled}
    ]
    manual = set(doc["lbcps"])
    defaults: dict[str, Any] = {
        "lbcp": next(iter(sorted(manual)), "LMC"),
        "decision": "release",
        "scope": [],
    }
    query = ctx.request.query
    return ctx.render(
        "officer_contingency.html",
        {
            "doc": doc,
            "lbcps": [(code, DEFAULT_LBCPS[code], code in manual) for code in DEFAULT_LBCPS],
            "lbcp_names": DEFAULT_LBCPS,
            "decisions": DECISIONS,
            "clearances": clearances,
            "stored_known": stored is not None,
            "errors": errors or {},
            "values": {**defaults, **(values or {})},
            "detail": detail,
            "report": report,
            "done": DONE.get(query.get("done", "")),
            "recorded": query.get("uuid", ""),
            "idem": forms.new_token(),
        },
        status=status,
    )


@page(ROLE)
async def home(ctx: Ctx) -> web.StreamResponse:
    return await _page(ctx)


def _form_values(form: Any) -> dict[str, Any]:
    names = ("reason", "message", "lbcp", "vrn", "decision", "documents", "ccrns", "cleared_at")
    values: dict[str, Any] = {n: forms.text(form, n) for n in names}
    values["scope"] = _scope(form) or []
    return values


def _prefixed(errors: dict[str, str], prefix: str) -> dict[str, str]:
    """The API's field errors under the names of one of the page's forms."""
    return {f"{prefix}{name}": message for name, message in errors.items()}


@page(ROLE)
async def activate(ctx: Ctx) -> web.StreamResponse:
    """Two steps: the form's values come back on a confirmation page (nothing switched yet);
    its "Switch on" button sends them again with `confirm`, and that switches."""
    assert ctx.form is not None and ctx.account is not None
    doc = activate_doc(ctx.form)
    values = _form_values(ctx.form)
    try:
        body = parse_model(ActivateIn, doc)
        if forms.text(ctx.form, "confirm") != "yes":
            return ctx.render(
                "officer_contingency_confirm.html",
                {
                    "body": body,
                    "scope": [(c, DEFAULT_LBCPS.get(c, "")) for c in body.lbcps or []],
                },
            )
        await contingency.activate_as(ctx.request, ctx.account, body)
    except Problem as p:
        if p.status != 422:
            raise
        return await _page(
            ctx,
            errors=_prefixed(forms.field_errors(p), "a-"),
            values=values,
            detail=p.detail,
            status=p.status,
        )
    return redirect("/officer/contingency?done=activated")


@page(ROLE)
async def record(ctx: Ctx) -> web.StreamResponse:
    assert ctx.form is not None and ctx.account is not None
    doc = clearance_doc(ctx.form)
    try:
        c = parse_model(ClearanceIn, doc)
        # The form's token is the clearance's Idempotency-Key: sent twice (a double click, a
        # reload, a retry after a dropped answer), it is one record.
        request = forms.with_idempotency(ctx.request, forms.text(ctx.form, forms.IDEMPOTENCY_FIELD))
        done = forms.answer_of(await contingency.record_clearance_as(request, ctx.account, c))
    except Problem as p:
        if p.status != 422:
            raise
        errors = _prefixed(forms.field_errors(p), "c-")
        return await _page(
            ctx, errors=errors, values=_form_values(ctx.form), detail=p.detail, status=p.status
        )
    state = "stored" if done.get("stored") == "database" else "journalled"
    return redirect(f"/officer/contingency?done={state}&uuid={done['uuid']}#clearances")


@page(ROLE)
async def deactivate(ctx: Ctx) -> web.StreamResponse:
    """Reconciles every journal into PostgreSQL, then switches manual mode off; the page shows
    the reconciliation report (once: it is the answer to this form)."""
    assert ctx.form is not None and ctx.account is not None
    doc = deactivate_doc(ctx.form)
    try:
        body = parse_model(DeactivateIn, doc)
        done = await contingency.deactivate_as(ctx.request, ctx.account, body)
    except Problem as p:
        if p.status not in (422, 503):
            raise
        errors = _prefixed(forms.field_errors(p), "d-")
        return await _page(
            ctx, errors=errors, values=_form_values(ctx.form), detail=p.detail, status=p.status
        )
    return await _page(ctx, report=done["reconciliation"])


def add_routes(app: web.Application) -> None:
    app.router.add_get("/officer/contingency", home)
    app.router.add_post("/officer/contingency/activate", activate)
    app.router.add_post("/officer/contingency/clearances", record)
    app.router.add_post("/officer/contingency/deactivate", deactivate)
