"""The web channel (#15): server-rendered pages (aiohttp-jinja2) on the same node, the same
rules and the same write path as the API, with progressive enhancement (every page works
without scripts; the small script adds the upload's progress bar, the countdown, the status
page's refresh and copying the CCRN).

One page module per audience, each with its `add_routes(app)`: `public` (sign-in, sign-out,
language, `/status`), `trader`, `trucker`; officers' and SREs' modules slot in the same way
(add them to `AUDIENCES`). What every page shares: `session` (the sealed session cookie and
CSRF), `i18n` (English and Traditional Chinese), `render` (templates, the page decorator, error
pages), `forms` (form fields to the API's documents and problems back to the fields), `qr`.
"""

from __future__ import annotations

from aiohttp import web

from node import appkeys
from node.web import officer, page_metrics, public, render, session, sre, trader, trucker

AUDIENCES = (public, trader, trucker, officer, sre)


def setup_web(app: web.Application) -> None:
    """Templates, the session secret, the static files and every audience's pages."""
    render.setup_templates(app)
    secret = session.secret_from(app[appkeys.CONFIG].web_session_key_file)
    app[session.SESSIONS] = session.SessionCodec(secret)
    app.router.add_static("/static", render.STATIC)
    page_metrics.setup(app)
    for module in AUDIENCES:
        module.add_routes(app)


def is_web_page(route: web.AbstractRoute) -> bool:
    """A route of the web channel (a page or its static files), not of the API."""
    resource = route.resource
    if isinstance(resource, web.StaticResource):
        return True
    return getattr(route.handler, "__module__", "").startswith(__name__ + ".")
