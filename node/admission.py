"""Admission control (#11 target 3): a node handles at most `max_in_flight` requests at once and
answers the next one 503 problem+json with `Retry-After` at once, instead of letting it queue
behind the others for seconds.

Through HAProxy the node never reaches its limit: HAProxy sends it at most the topology's
`entry.admission.server_maxconn` requests and sheds the rest from its own queue
(deploy/configgen.py). This limit is for every other caller (operators, drills, a second
entry point) and keeps the node's latency bounded whoever calls it.

Health, metrics, the public notice and the contingency routes are never refused: HAProxy's
checks, Prometheus and operators must get answers from a saturated node, and manual clearance
must stay reachable (I4). They are cheap or rare, and not counted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from node import appkeys
from node.problems import PROBLEMS, Problem

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Route templates (never raw paths, which a client can dress up) that are always admitted.
EXEMPT_ROUTES = frozenset({"/health", "/health/live", "/health/ready", "/metrics", "/v1/status"})
EXEMPT_PREFIX = "/v1/contingency"
# One second: long enough that clients retrying after it do not come back as the same wave.
RETRY_AFTER_S = 1
BUSY = PROBLEMS + "busy"


def is_exempt(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    if resource is None:  # no route matched: a cheap 404/405, counted like any request
        return False
    route = resource.canonical
    return route in EXEMPT_ROUTES or route.startswith(EXEMPT_PREFIX)


def busy(limit: int) -> Problem:
    return Problem(
        503,
        "Service Unavailable",
        f"this node is handling its limit of {limit} requests; retry after Retry-After",
        type_=BUSY,
        headers={"Retry-After": str(RETRY_AFTER_S)},
        extra={"retry_after_ms": RETRY_AFTER_S * 1000},
    )


def admission_middleware(max_in_flight: int) -> Middleware:
    """The middleware of one app: it counts that app's requests in progress. Place it inside
    the request metrics (so sheds are counted as 503s) and outside everything else (a shed
    request costs no authentication, parsing or Redis)."""
    in_flight = 0

    @web.middleware
    async def admission(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal in_flight
        if is_exempt(request):
            return await handler(request)
        metrics = request.app[appkeys.METRICS]
        if in_flight >= max_in_flight:
            metrics.shed.inc()
            return busy(max_in_flight).response(request.path)
        in_flight += 1
        metrics.in_flight.set(in_flight)
        try:
            return await handler(request)
        finally:
            # Also on errors and on cancellation (the client went away).
            in_flight -= 1
            metrics.in_flight.set(in_flight)

    return admission
