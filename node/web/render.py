"""What every page shares: the templates, the page decorator (session, sign-in, CSRF, errors)
and the answer's headers.

`page(*kinds)` wraps a page handler `(request, ctx) -> response`: it reads the session, turns
its API key into the account through node.auth (the API's own authentication), checks the
form's CSRF token on a POST, and renders every refusal the API would answer with a problem
(node.problems) as an HTML page instead. Page handlers call the same functions the API
handlers call and catch `Problem` only where they show it beside a form's fields.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
import jinja2
from aiohttp import web
from multidict import MultiDictProxy

from kernel.domain.lbcp import HK_TZ
from kernel.errors import RocarsError
from node.account import Account
from node.auth import account_for_key, require_kind
from node.driver_errors import translate
from node.problems import Problem, problem_of
from node.web import i18n, session

log = logging.getLogger("rocars.web")
TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
# The sign-in page (node.web.public), where pages send a visitor without a session.
SIGN_IN = "/signin"
# HAProxy replaces a node's 400, 413 and 431 answers that are not problem+json (they are
# aiohttp's own parse errors, deploy/configgen.py): pages answer those as 422.
_REPLACED_BY_PROXY = (400, 413, 431)
# Pages load only their own scripts, styles and images; no one may frame them.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
    " object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@dataclass
class Ctx:
    """What a page handler gets: the signed-in account (None on public pages), the language
    and its translation function."""

    request: web.Request
    account: Account | None
    lang: i18n.Lang
    _: Callable[[str], str]
    form: MultiDictProxy[str | bytes | bytearray | web.FileField] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def render(
        self, template: str, context: Mapping[str, Any], *, status: int = 200
    ) -> web.Response:
        return render(self.request, template, {**self.base(), **context}, status=status)

    def base(self) -> dict[str, Any]:
        s = session.current(self.request) if self.account is not None else None
        return {
            "lang": self.lang,
            "_": self._,
            "langs": i18n.NATIVE,
            "account": self.account,
            "csrf": s.csrf if s is not None else None,
            "path": self.request.path_qs,
        }


def hk_time(value: str | datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """An ISO 8601 time (as the API answers it) shown in Hong Kong time."""
    if value is None or value == "":
        return ""
    dt = datetime.fromisoformat(value) if isinstance(value, str) else value
    return dt.astimezone(HK_TZ).strftime(fmt)


def setup_templates(app: web.Application) -> None:
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=True),
        undefined=jinja2.StrictUndefined,
        filters={"hk": hk_time, "urlq": lambda s: quote(str(s), safe="")},
        default_helpers=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def language(request: web.Request) -> i18n.Lang:
    return i18n.choose(
        request.cookies.get(i18n.LANG_COOKIE), request.headers.get("Accept-Language")
    )


def secure_headers(response: web.StreamResponse) -> None:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"


def render(
    request: web.Request, template: str, context: Mapping[str, Any], *, status: int = 200
) -> web.Response:
    if status in _REPLACED_BY_PROXY:
        status = 422
    response = aiohttp_jinja2.render_template(template, request, dict(context), status=status)
    secure_headers(response)
    return response


def redirect(location: str) -> web.Response:
    """303 See Other: after a POST the browser GETs the answer (no resubmission on reload)."""
    return web.Response(status=303, headers={"Location": location})


def local_path(target: str | None, default: str = "/") -> str:
    """`target` if it is a path on this site (no scheme, no host, no //), else `default`."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def problem_from(exc: Exception, request: web.Request) -> Problem | None:
    """The problem the API would answer `exc` with; None for a bug."""
    if isinstance(exc, Problem):
        return exc
    kernel = exc if isinstance(exc, RocarsError) else translate(exc)
    return None if kernel is None else problem_of(kernel, request)


def error_page(ctx: Ctx, problem: Problem) -> web.Response:
    response = ctx.render(
        "error.html",
        {"problem": problem, "detail": problem.detail or problem.title},
        status=problem.status,
    )
    if "Retry-After" in problem.headers:
        response.headers["Retry-After"] = problem.headers["Retry-After"]
    return response


PageHandler = Callable[[Ctx], Awaitable[web.StreamResponse]]


def _sign_in_again(request: web.Request, notice: str) -> web.Response:
    response = redirect(f"{SIGN_IN}?notice={notice}&next={quote(request.path_qs, safe='')}")
    session.end(request, response)
    return response


def page(
    *kinds: str,
) -> Callable[[PageHandler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """A page for signed-in accounts of `kinds`. Every answer renews the session cookie and
    is not stored by browsers or proxies."""

    def wrap(handler: PageHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        @functools.wraps(handler)
        async def run(request: web.Request) -> web.StreamResponse:
            lang = language(request)
            s = session.current(request)
            if s.key is None:
                response: web.StreamResponse = redirect(
                    f"{SIGN_IN}?next={quote(request.path_qs, safe='')}"
                )
                return response
            ctx = Ctx(request, None, lang, i18n.gettext(lang))
            try:
                account = await account_for_key(request, s.key)
            except Problem as p:
                if p.status == 401:
                    return _sign_in_again(request, "ended")
                if p.status == 403:
                    return _sign_in_again(request, "suspended")
                return error_page(ctx, p)
            except Exception as exc:
                p2 = problem_from(exc, request)
                if p2 is None:
                    raise
                return error_page(ctx, p2)
            ctx.account = account
            try:
                require_kind(account, *kinds)
                if request.method == "POST" and not request.content_type.startswith("multipart/"):
                    ctx.form = form = await request.post()
                    raw = form.get(session.CSRF_FIELD)
                    session.check_csrf(request, raw if isinstance(raw, str) else None)
                response = await handler(ctx)
            except session.CsrfRefused as exc:
                log.warning("web form refused: %s", exc, extra={"event": "web_csrf_refused"})
                response = error_page(
                    ctx,
                    Problem(
                        403,
                        "Forbidden",
                        ctx._("The form expired or was sent from another site. Please try again."),
                    ),
                )
            except Exception as exc:
                p3 = problem_from(exc, request)
                if p3 is None:
                    raise
                response = error_page(ctx, p3)
            session.write_cookie(request, response)
            response.headers["Cache-Control"] = "no-store"
            secure_headers(response)
            return response

        return run

    return wrap
