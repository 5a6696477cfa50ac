"""The officers' pages: the selections queue per LBCP with its reasons, the risk rules (list,
create, activate, deactivate), the registrations to approve or reject, and the ITFS view. The
arrivals as they happen (`officer_arrivals`) and the contingency switch (`officer_contingency`)
have modules of their own; `add_routes` here adds theirs too.

Each page calls what the matching API handler calls (node.api.risk_rules: `selection_queue`,
`all_rules`, `create_rule_as`, `update_rule_as`; node.api.registrations: `registrations_of`,
`decide_as`; node.api.itfs: `itfs_view`) with the signed-in account and the very JSON document
an API client would send, so the rules, the write path (idempotency, audit) and the refusals
are the API's. Only officer accounts open them (the API's role check: `page("officer")`).
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from kernel.domain.lbcp import DEFAULT_LBCPS
from kernel.domain.risk import RULE_KINDS
from node.api import common, itfs, registrations, risk_rules
from node.problems import Problem
from node.schemas import DecisionIn, RuleIn, RulePatch
from node.validation import invalid, parse_model
from node.web import forms, officer_arrivals, officer_contingency
from node.web.render import Ctx, page, redirect

ROLE = "officer"
REGISTRATION_STATUSES = ("pending", "approved", "rejected")
DONE = {
    "created": "Risk rule created.",
    "activated": "Risk rule activated.",
    "deactivated": "Risk rule deactivated.",
    "rejected": "Registration rejected.",
}


def lbcp_filter(ctx: Ctx) -> str | None:
    """The page's `?lbcp=` (blank: every LBCP); an unknown code is the API's 422."""
    code = ctx.request.query.get("lbcp", "").strip().upper()
    return common.check_lbcp(code) if code else None


@page(ROLE)
async def selections(ctx: Ctx) -> web.StreamResponse:
    lbcp = lbcp_filter(ctx)
    queue = await risk_rules.selection_queue(ctx.request, lbcp)
    return ctx.render(
        "officer_selections.html",
        {
            "lbcp": lbcp or "",
            "lbcp_names": DEFAULT_LBCPS,
            "trucks": queue["trucks"],
            "consignments": queue["consignments"],
        },
    )


def _rules_page(
    ctx: Ctx,
    rules: list[dict[str, Any]],
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    detail: str | None = None,
    status: int = 200,
) -> web.Response:
    return ctx.render(
        "officer_rules.html",
        {
            "rules": rules,
            "values": values or {"kind": "keyword", "lbcp": "", "active": "on"},
            "errors": errors or {},
            "detail": detail,
            "kinds": RULE_KINDS,
            "lbcp_names": DEFAULT_LBCPS,
            "done": DONE.get(ctx.request.query.get("done", "")),
            "idem": forms.new_token(),
        },
        status=status,
    )


@page(ROLE)
async def rules(ctx: Ctx) -> web.StreamResponse:
    return _rules_page(ctx, await risk_rules.all_rules(ctx.request))


def rule_doc(form: Any) -> dict[str, Any]:
    """The rule form as `POST /v1/risk-rules` takes it (a blank LBCP: every LBCP)."""
    doc: dict[str, Any] = {
        "kind": forms.text(form, "kind"),
        "value": forms.text(form, "value"),
        "active": forms.text(form, "active") == "on",
    }
    lbcp = forms.text(form, "lbcp")
    if lbcp:
        doc["lbcp"] = lbcp
    return doc


@page(ROLE)
async def create_rule(ctx: Ctx) -> web.StreamResponse:
    assert ctx.form is not None and ctx.account is not None
    doc = rule_doc(ctx.form)
    try:
        r = parse_model(RuleIn, doc)
        request = forms.with_idempotency(ctx.request, forms.text(ctx.form, forms.IDEMPOTENCY_FIELD))
        forms.accepted(await risk_rules.create_rule_as(request, ctx.account, forms.body_of(doc), r))
    except Problem as p:
        if p.status not in (409, 422):
            raise
        values = {n: forms.text(ctx.form, n) for n in ("kind", "value", "lbcp", "active")}
        return _rules_page(
            ctx,
            await risk_rules.all_rules(ctx.request),
            values=values,
            errors=forms.field_errors(p),
            detail=p.detail,
            status=p.status,
        )
    return redirect("/officer/rules?done=created")


@page(ROLE)
async def set_rule_active(ctx: Ctx) -> web.StreamResponse:
    assert ctx.form is not None and ctx.account is not None
    rule_id = common.path_id(ctx.request, "rule")
    active = forms.text(ctx.form, "active")
    if active not in ("true", "false"):
        raise invalid([{"field": "active", "message": "true or false"}])
    doc = {"active": active == "true"}
    request = forms.with_idempotency(ctx.request, forms.text(ctx.form, forms.IDEMPOTENCY_FIELD))
    p = parse_model(RulePatch, doc)
    body = forms.body_of(doc)
    forms.accepted(await risk_rules.update_rule_as(request, ctx.account, rule_id, body, p))
    done = "activated" if p.active else "deactivated"
    return redirect(f"/officer/rules?done={done}#rule-{rule_id}")


def _registrations_page(
    ctx: Ctx,
    items: list[dict[str, Any]],
    status: str,
    *,
    issued: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    detail: str | None = None,
    code: int = 200,
) -> web.Response:
    return ctx.render(
        "officer_registrations.html",
        {
            "items": items,
            "status": status,
            "statuses": REGISTRATION_STATUSES,
            "issued": issued,
            "errors": errors or {},
            "detail": detail,
            "done": DONE.get(ctx.request.query.get("done", "")),
            "idem": forms.new_token,
        },
        status=code,
    )


def _status_of(ctx: Ctx) -> str:
    status = ctx.request.query.get("status", "pending")
    return status if status in REGISTRATION_STATUSES else "pending"


@page(ROLE)
async def registrations_list(ctx: Ctx) -> web.StreamResponse:
    status = _status_of(ctx)
    return _registrations_page(
        ctx, await registrations.registrations_of(ctx.request, status), status
    )


def _registration_id(ctx: Ctx) -> uuid.UUID:
    try:
        return uuid.UUID(ctx.request.match_info["id"])
    except ValueError as exc:
        raise invalid([{"field": "id", "message": "not a registration id"}]) from exc


@page(ROLE)
async def approve(ctx: Ctx) -> web.StreamResponse:
    """The answer holds the new account's API key, shown on this page once (never stored,
    never redirected to: a replay of the same form answers without it, as the API does)."""
    assert ctx.form is not None and ctx.account is not None
    rid = _registration_id(ctx)
    request = forms.with_idempotency(ctx.request, forms.text(ctx.form, forms.IDEMPOTENCY_FIELD))
    try:
        issued = forms.accepted(
            await registrations.decide_as(
                request, ctx.account, rid, b"", DecisionIn(), approve=True
            )
        )
    except Problem as p:
        if p.status not in (404, 409, 422):
            raise
        items = await registrations.registrations_of(ctx.request, "pending")
        return _registrations_page(ctx, items, "pending", detail=p.detail, code=p.status)
    items = await registrations.registrations_of(ctx.request, "pending")
    return _registrations_page(ctx, items, "pending", issued=issued)


@page(ROLE)
async def reject(ctx: Ctx) -> web.StreamResponse:
    assert ctx.form is not None and ctx.account is not None
    rid = _registration_id(ctx)
    reason = forms.text(ctx.form, "reason")
    doc = {"reason": reason} if reason else {}
    request = forms.with_idempotency(ctx.request, forms.text(ctx.form, forms.IDEMPOTENCY_FIELD))
    try:
        d = parse_model(DecisionIn, doc)
        forms.accepted(
            await registrations.decide_as(
                request, ctx.account, rid, forms.body_of(doc) if doc else b"", d, approve=False
            )
        )
    except Problem as p:
        if p.status not in (404, 409, 422):
            raise
        items = await registrations.registrations_of(ctx.request, "pending")
        errors = {f"reason-{rid}": msg for msg in forms.field_errors(p).values()}
        return _registrations_page(
            ctx, items, "pending", errors=errors, detail=p.detail, code=p.status
        )
    return redirect("/officer/registrations?done=rejected")


@page(ROLE)
async def itfs_page(ctx: Ctx) -> web.StreamResponse:
    ccrn = ctx.request.query.get("ccrn", "").strip().upper()
    view: dict[str, Any] | None = None
    errors: dict[str, str] = {}
    status = 200
    if ccrn:
        try:
            view = await itfs.itfs_view(ctx.request, ccrn)
        except Problem as p:
            if p.status not in (404, 422):
                raise
            errors = {"ccrn": p.detail or p.title}
            status = p.status
    return ctx.render(
        "officer_itfs.html",
        {"ccrn": ccrn, "view": view, "errors": errors, "values": {"ccrn": ccrn}},
        status=status,
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/officer", selections)
    app.router.add_get("/officer/rules", rules)
    app.router.add_post("/officer/rules", create_rule)
    app.router.add_post("/officer/rules/{id}/active", set_rule_active)
    app.router.add_get("/officer/registrations", registrations_list)
    app.router.add_post("/officer/registrations/{id}/approve", approve)
    app.router.add_post("/officer/registrations/{id}/reject", reject)
    app.router.add_get("/officer/itfs", itfs_page)
    officer_arrivals.add_routes(app)
    officer_contingency.add_routes(app)
