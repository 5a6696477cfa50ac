"""Pages for everyone: sign-in and sign-out, the language switch, and the public status page.

Sign-in checks the API key exactly as the API does (node.auth.account_for_key: PostgreSQL, or
the node's key cache while it is down) and needs neither Redis nor a writable database. The
status page reads what `GET /v1/status` reads (the contingency runtime: etcd, or the node's
local override), never PostgreSQL, so either node serves it in any outage they survive.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from contingency import state as cstate
from kernel.domain.lbcp import DEFAULT_LBCPS
from node import appkeys
from node.api import common
from node.api.consignments import min_lead
from node.api.contingency import state_json
from node.auth import account_for_key
from node.problems import Problem
from node.web import i18n, render, session
from node.web.render import SIGN_IN, Ctx

# Where each kind of account lands after signing in (`_home`); any other kind lands on the
# status page.
HOME = {"trader": "/trader", "trucker": "/trucker", "officer": "/officer", "sre": "/sre"}
OFFICER_OUTAGE_HOME = "/officer/contingency"
NOTICES = {
    "ended": "Your session has ended. Please sign in again.",
    "suspended": "This account is suspended.",
    "signed_out": "You have signed out.",
}
STATUS_REFRESH_S = 15
MAX_KEY_CHARS = 200


def _public_ctx(request: web.Request) -> Ctx:
    lang = render.language(request)
    return Ctx(request, None, lang, i18n.gettext(lang))


def _sign_in_page(
    request: web.Request, *, error: str | None = None, status: int = 200
) -> web.Response:
    ctx = _public_ctx(request)
    s = session.current(request)
    notice = NOTICES.get(request.query.get("notice", ""))
    response = ctx.render(
        "signin.html",
        {
            "csrf": s.csrf,
            "error": error,
            "notice": notice,
            "next": render.local_path(request.query.get("next"), ""),
        },
        status=status,
    )
    session.write_cookie(request, response)
    response.headers["Cache-Control"] = "no-store"
    return response


def _home(request: web.Request, kind: str) -> str:
    """Where an account lands after signing in. An officer signing in on a node that is not
    active (HAProxy sends sign-in to any live node only when none is: the database is down)
    lands on the contingency page, the one officers' page that works then and that HAProxy
    lets through (deploy/configgen.py, manual_ops)."""
    if kind == "officer" and request.app[appkeys.ROLE].role != "active":
        return OFFICER_OUTAGE_HOME
    return HOME.get(kind, "/status")


async def sign_in_form(request: web.Request) -> web.StreamResponse:
    s = session.current(request)
    if s.key is not None and s.kind in HOME and "next" not in request.query:
        return render.redirect(_home(request, s.kind))
    return _sign_in_page(request)


async def sign_in(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    raw_csrf = form.get(session.CSRF_FIELD)
    try:
        session.check_csrf(request, raw_csrf if isinstance(raw_csrf, str) else None)
    except session.CsrfRefused:
        # A fresh token comes with this answer; the visitor just sends the form again.
        _ = i18n.gettext(render.language(request))
        return _sign_in_page(
            request,
            error=_("The form expired or was sent from another site. Please try again."),
            status=403,
        )
    raw_key = form.get("api_key")
    key = raw_key.strip() if isinstance(raw_key, str) else ""
    _ = i18n.gettext(render.language(request))
    if not key or len(key) > MAX_KEY_CHARS:
        return _sign_in_page(request, error=_("The API key is not valid."), status=401)
    try:
        account = await account_for_key(request, key)
    except Problem as p:
        messages = {
            401: "The API key is not valid.",
            403: "This account is suspended.",
            429: "Too many requests: please wait a moment and try again.",
        }
        text = messages.get(p.status, p.detail or p.title)
        return _sign_in_page(request, error=_(text), status=p.status)
    except Exception as exc:
        p2 = render.problem_from(exc, request)
        if p2 is None:
            raise
        return _sign_in_page(request, error=p2.detail, status=p2.status)
    nxt = request.query.get("next") or (
        form.get("next") if isinstance(form.get("next"), str) else None
    )
    target = render.local_path(nxt if isinstance(nxt, str) else None, _home(request, account.kind))
    response = render.redirect(target)
    session.set_current(
        request,
        session.current(request).signed_in(key, account.kind, account.name, session.now_s()),
    )
    session.write_cookie(request, response)
    return response


async def sign_out(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    raw = form.get(session.CSRF_FIELD)
    try:
        session.check_csrf(request, raw if isinstance(raw, str) else None)
    except session.CsrfRefused:
        return _sign_in_page(request, status=403)
    response = render.redirect(f"{SIGN_IN}?notice=signed_out")
    session.end(request, response)
    return response


async def switch_language(request: web.Request) -> web.StreamResponse:
    """GET /lang?to=zh-Hant&next=/status: a link, so it works without scripts and forms."""
    to = request.query.get("to")
    response = render.redirect(render.local_path(request.query.get("next")))
    if to in i18n.LANGS:
        response.set_cookie(
            i18n.LANG_COOKIE,
            to,
            path="/",
            max_age=365 * 86400,
            samesite="Lax",
            httponly=True,
            secure=session.over_tls(request),
        )
    return response


def _grace(request: web.Request, now: datetime) -> tuple[bool, datetime | None]:
    """Whether late submissions are accepted now (the API's own rule, `min_lead`), and until
    when when that is known (the latest manual period's end plus the grace)."""
    if min_lead(request, now).total_seconds() > 0:
        return False, None
    rt = request.app[appkeys.CONTINGENCY]
    ends = [w.end for w in rt.state.windows]
    if rt.any_manual or rt.override is not None or any(e is None for e in ends):
        return True, None
    latest = max((e for e in ends if e is not None), default=None)
    return True, None if latest is None else latest + cstate.LATE_GRACE


async def status(request: web.Request) -> web.StreamResponse:
    ctx = _public_ctx(request)
    doc = state_json(request)
    now = common.now(request)
    grace, grace_until = _grace(request, now)
    manual = set(doc["lbcps"])
    response = ctx.render(
        "status.html",
        {
            "doc": doc,
            "lbcps": [(code, DEFAULT_LBCPS[code], code in manual) for code in DEFAULT_LBCPS],
            "grace": grace,
            "grace_until": grace_until,
            "updated": now,
            "refresh_s": STATUS_REFRESH_S,
        },
    )
    # Short-lived: a cache may keep it for seconds, never a stale mode for long.
    response.headers["Cache-Control"] = "max-age=5"
    return response


def add_routes(app: web.Application) -> None:
    # Sign-in lives at SIGN_IN, which HAProxy lets through to any live node while no node is
    # active (deploy/configgen.py's manual_ops): officers sign in for manual clearance with
    # the database down. `/` shows the same form for everyday use; its POST stays for a form
    # a node of the previous release rendered (a rolling upgrade).
    app.router.add_get("/", sign_in_form)
    app.router.add_post("/", sign_in)
    app.router.add_get(SIGN_IN, sign_in_form)
    app.router.add_post(SIGN_IN, sign_in)
    app.router.add_post("/signout", sign_out)
    app.router.add_get("/lang", switch_language)
    app.router.add_get("/status", status)
