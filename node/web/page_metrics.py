"""The web channel on the dashboards (#15 item 6): `rocars_web_requests_total{page,status}`,
every page answered, by page (its route template, never the path, so the series stay few and
what a visitor typed stays out of them) and HTTP status. Static files are not pages and are not
counted. Declared with the node's other metrics (monitoring.metrics), next to
rocars_http_requests_total (which counts the same requests by method and route with the
API's): this one is the channel's own view, one series per page and answer.

Counted when the answer is prepared (aiohttp's on_response_prepare), so the error pages and
the redirects to sign in count with their own status; a visitor gone before any answer is not
counted here (rocars_http_requests_total has them as 499).
"""

from __future__ import annotations

from aiohttp import web

from node import appkeys

_PAGE_MODULES = __name__.rsplit(".", 1)[0] + "."


def page_of(route: web.AbstractRoute) -> str | None:
    """The page's route template, or None when the route is not a page of the web channel (an
    API route, the static files, aiohttp's own for no route at all)."""
    resource = route.resource
    # The static files' handler is aiohttp's own, like the 404 and 405 answers'.
    if resource is None or not getattr(route.handler, "__module__", "").startswith(_PAGE_MODULES):
        return None
    return resource.canonical


async def _count(request: web.Request, response: web.StreamResponse) -> None:
    page = page_of(request.match_info.route)
    if page is not None:
        request.app[appkeys.METRICS].web_requests.labels(
            page=page, status=str(response.status)
        ).inc()


def setup(app: web.Application) -> None:
    app.on_response_prepare.append(_count)
    app.on_startup.append(_declare)


async def _declare(app: web.Application) -> None:
    """Each page's 200 series from the start, at 0: a dashboard's rate() then reads 0 for a
    page nobody opened yet rather than nothing."""
    counter = app[appkeys.METRICS].web_requests
    for route in app.router.routes():
        page = page_of(route)
        if page is not None and route.method == "GET":
            counter.labels(page=page, status="200")
