"""The trucker's pages: bundle CCRNs (typed, or scanned from their QR codes) with the
vehicle, declare an empty truck, see the instruction in large type with a countdown, cancel an
open bundle.

A QR code holds `/trucker?ccrn=...`, so a phone's camera opens the bundle form; each scan adds
its CCRN to the ones scanned before in this session (kept in the sealed session cookie until
they are bundled), listed on the form, each with a button to remove it.

Each page calls what the matching API handler calls (node.api.bundles: `create_bundle`,
`visible_bundle`, `cancel_bundle`) with the signed-in account and the API's own document.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from aiohttp import web

from kernel.domain.lbcp import DEFAULT_LBCPS
from node.api import bundles, common
from node.problems import Problem
from node.schemas import BundleIn
from node.validation import parse_model
from node.web import forms, session
from node.web.render import Ctx, page, redirect

DONE = {"cancelled": "Bundle cancelled."}
_SEPARATORS = re.compile(r"[\s,;]+")
# What a scan may add to the session's list: a CCRN's shape, or near enough for the API to
# name what is wrong with it at bundling. Anything else goes into the typed field instead.
_SCANNABLE = re.compile(r"[0-9A-Z]{1,32}")
_CCRN_FIELD = re.compile(r"ccrns\[(\d+)\]")


def instruction(bundle: dict[str, Any], now: datetime) -> tuple[bool, datetime]:
    """(cross now?, not before): the gate's precomputed time against the clock now, so the
    page turns to "Cross now" once the wait is over."""
    not_before = datetime.fromisoformat(bundle["not_before"])
    return now >= not_before, not_before


def _home_page(
    ctx: Ctx,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    detail: str | None = None,
    empty_errors: dict[str, str] | None = None,
    status: int = 200,
    mine: list[dict[str, Any]] | None = None,
) -> web.Response:
    return ctx.render(
        "trucker_home.html",
        {
            "scanned": session.current(ctx.request).scanned,
            "values": values or {},
            "errors": errors or {},
            "empty_errors": empty_errors or {},
            "detail": detail,
            "lbcp_names": DEFAULT_LBCPS,
            "idem": forms.new_token(),
            "idem_empty": forms.new_token(),
            "mine": mine or [],
        },
        status=status,
    )


async def _mine(ctx: Ctx) -> list[dict[str, Any]]:
    """The bundles made in this session that can still be seen, newest first."""
    assert ctx.account is not None
    out = []
    for bid in session.current(ctx.request).bundles:
        try:
            out.append(await bundles.visible_bundle(ctx.request, ctx.account, bid))
        except Problem:
            continue
    return out


@page("trucker")
async def home(ctx: Ctx) -> web.StreamResponse:
    ccrn = ctx.request.query.get("ccrn", "").strip().upper()
    typed = ""
    if _SCANNABLE.fullmatch(ccrn):
        session.set_current(ctx.request, session.current(ctx.request).with_scanned(ccrn))
    else:
        typed = ccrn
    values = {"ccrns": typed, "lbcp": "LMC"}
    return _home_page(ctx, values=values, mine=await _mine(ctx))


async def _create(ctx: Ctx, doc: dict[str, Any]) -> web.Response:
    assert ctx.form is not None and ctx.account is not None
    b = parse_model(BundleIn, doc)
    request = forms.with_idempotency(ctx.request, forms.text(ctx.form, forms.IDEMPOTENCY_FIELD))
    response = await bundles.create_bundle(request, ctx.account, forms.body_of(doc), b)
    answer = forms.accepted(response)
    s = session.current(ctx.request).with_bundle(int(answer["id"]))
    session.set_current(ctx.request, s.without_scanned(*doc.get("ccrns", ())))
    return redirect(f"/trucker/b/{answer['id']}")


def _naming_the_ccrn(p: Problem, ccrns: list[str]) -> dict[str, str]:
    """The problem's field errors, each about one CCRN starting with that CCRN: the list and
    the typed field are one field on the form, so the index alone would not say which."""
    named = []
    for err in p.errors or []:
        m = _CCRN_FIELD.fullmatch(err.get("field", ""))
        if m is not None and int(m.group(1)) < len(ccrns):
            err = {**err, "message": f"{ccrns[int(m.group(1))]}: {err.get('message', '')}"}
        named.append(err)
    return forms.field_errors(Problem(p.status, p.title, p.detail, errors=named))


@page("trucker")
async def bundle(ctx: Ctx) -> web.StreamResponse:
    assert ctx.form is not None
    # The scanned ones the form listed, then the typed ones; each once, in that order.
    scanned = [c for c in ctx.form.getall("scanned", []) if isinstance(c, str)]
    typed = [c.upper() for c in _SEPARATORS.split(forms.text(ctx.form, "ccrns")) if c]
    ccrns = list(dict.fromkeys([*scanned, *typed]))
    doc = {"vrn": forms.text(ctx.form, "vrn"), "lbcp": forms.text(ctx.form, "lbcp"), "ccrns": ccrns}
    try:
        return await _create(ctx, doc)
    except Problem as p:
        if p.status not in (409, 422):
            raise
        values = {n: forms.text(ctx.form, n) for n in ("vrn", "lbcp", "ccrns")}
        return _home_page(
            ctx,
            values=values,
            errors=_naming_the_ccrn(p, ccrns),
            detail=p.detail,
            status=p.status,
            mine=await _mine(ctx),
        )


@page("trucker")
async def empty(ctx: Ctx) -> web.StreamResponse:
    assert ctx.form is not None
    doc = {"vrn": forms.text(ctx.form, "vrn"), "lbcp": forms.text(ctx.form, "lbcp"), "empty": True}
    try:
        return await _create(ctx, doc)
    except Problem as p:
        if p.status not in (409, 422):
            raise
        return _home_page(
            ctx,
            values={"lbcp": "LMC"},
            empty_errors=forms.field_errors(p),
            detail=p.detail,
            status=p.status,
            mine=await _mine(ctx),
        )


@page("trucker")
async def remove_scanned(ctx: Ctx) -> web.StreamResponse:
    """One scanned CCRN off the list. What was typed in the bundle form is not kept: the list
    is put right while scanning, before the vehicle is typed."""
    assert ctx.form is not None
    ccrn = forms.text(ctx.form, "ccrn")
    session.set_current(ctx.request, session.current(ctx.request).without_scanned(ccrn))
    return redirect("/trucker")


@page("trucker")
async def show(ctx: Ctx) -> web.StreamResponse:
    assert ctx.account is not None
    bid = common.path_id(ctx.request, "bundle")
    b = await bundles.visible_bundle(ctx.request, ctx.account, bid)
    now = common.now(ctx.request)
    cross_now, not_before = instruction(b, now)
    return ctx.render(
        "trucker_bundle.html",
        {
            "b": b,
            "cross_now": cross_now,
            "not_before": not_before,
            "seconds_left": max(0, int((not_before - now).total_seconds())),
            "done": DONE.get(ctx.request.query.get("done", "")),
            "lbcp_names": DEFAULT_LBCPS,
            "idem": forms.new_token(),
        },
    )


@page("trucker")
async def cancel(ctx: Ctx) -> web.StreamResponse:
    assert ctx.form is not None and ctx.account is not None
    bid = common.path_id(ctx.request, "bundle")
    request = forms.with_idempotency(ctx.request, forms.text(ctx.form, forms.IDEMPOTENCY_FIELD))
    response = await bundles.cancel_bundle(request, ctx.account, bid, b"")
    if response.status >= 400:
        answer = forms.answer_of(response)
        raise Problem(response.status, str(answer.get("title", "")), str(answer.get("detail", "")))
    return redirect(f"/trucker/b/{bid}?done=cancelled")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/trucker", home)
    app.router.add_post("/trucker/bundle", bundle)
    app.router.add_post("/trucker/empty", empty)
    app.router.add_post("/trucker/scanned/remove", remove_scanned)
    app.router.add_get("/trucker/b/{id}", show)
    app.router.add_post("/trucker/b/{id}/cancel", cancel)
