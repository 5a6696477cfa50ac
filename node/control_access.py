"""Who may read a node's control-plane pages (#12 item 3).

`/metrics` and the detailed `/health` say which site leads, where the Redis primary is, what
the failover controller decided and how the database is doing: a map for an attacker. They are
served to callers on the monitoring networks (the sites' own addresses, from which Prometheus,
HAProxy's checks and the operators' commands come; the topology generates the list) or to a
caller presenting the monitoring key as `Authorization: Bearer <key>`, for a tool elsewhere.
Anyone else gets 403 problem+json. `/health/live` and `/health/ready` stay open: they say one
word and HAProxy's checks need them.

The public entry point (HAProxy) also refuses these paths to clients outside the monitoring
networks: HAProxy's own address is on them, so the node alone could not tell a client behind
it from HAProxy itself (deploy/configgen.py).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from node.problems import PROBLEMS, Problem

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Route templates, as matched (never the raw path, which a client can dress up).
CONTROL_ROUTES = frozenset({"/metrics", "/health"})
FORBIDDEN = PROBLEMS + "monitoring-only"


@dataclass(frozen=True)
class ControlAccess:
    networks: tuple[Network, ...]
    key: str | None = None

    @classmethod
    def of(cls, networks: Iterable[str], key: str | None = None) -> ControlAccess:
        return cls(tuple(ipaddress.ip_network(n, strict=False) for n in networks), key or None)

    def allows(self, remote: str | None, authorization: str | None) -> bool:
        if remote is not None:
            try:
                addr = ipaddress.ip_address(remote)
            except ValueError:
                addr = None
            if addr is not None and any(addr in net for net in self.networks):
                return True
        if self.key is None or authorization is None:
            return False
        scheme, _, given = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self.key.encode()
        )


def forbidden(path: str) -> Problem:
    return Problem(
        403,
        "Forbidden",
        f"{path} is served to the monitoring networks, or with the monitoring key as"
        " 'Authorization: Bearer <key>'",
        type_=FORBIDDEN,
    )


def control_access_middleware(access: ControlAccess) -> Middleware:
    """Refuse the control routes to callers `access` does not allow. Place it inside the
    request metrics (refusals are counted) and before anything that does work."""

    @web.middleware
    async def control_access(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if (
            resource is not None
            and resource.canonical in CONTROL_ROUTES
            and not access.allows(request.remote, request.headers.get("Authorization"))
        ):
            raise forbidden(resource.canonical)
        return await handler(request)

    return control_access
