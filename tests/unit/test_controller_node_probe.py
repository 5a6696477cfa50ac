"""failover.controller.FailoverController judges the other site's API node over HTTP: the
leader's site's node by `/health/ready` (it must be serving writes), the other site's by
`/health/live` (it only has to be alive to take over). Against a real aiohttp server in
process; Patroni and etcd are fakes."""

from __future__ import annotations

from typing import Any, cast

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from failover.controller import FailoverController
from failover.decision import ControllerConfig
from failover.role_rule import RoleFacts
from kernel.cluster import Member
from replication.patroni_rest import PatroniCluster

MEMBERS = (
    Member("pg-A", "leader", "running", 0, 3),
    Member("pg-B", "sync_standby", "streaming", 0, 3),
)


class Patroni:
    async def cluster(self, base_url: str) -> PatroniCluster:
        return PatroniCluster(MEMBERS, paused=False)


class Etcd:
    async def get(self, key: str) -> None:
        return None  # no switchover yet


class Role:
    def __init__(self, leader: str) -> None:
        self.facts = RoleFacts("pg-B", "replica", "streaming", leader, True)


async def _health(ready: int, live: int) -> TestServer:
    """A node answering /health/ready and /health/live with the given statuses."""

    async def ready_(_r: web.Request) -> web.Response:
        return web.Response(status=ready)

    async def live_(_r: web.Request) -> web.Response:
        return web.Response(status=live)

    app = web.Application()
    app.router.add_get("/health/ready", ready_)
    app.router.add_get("/health/live", live_)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def _healthy_by_site(leader: str, ready: int, live: int) -> dict[str, bool]:
    """Run one observation on site B's controller with site A's node answering as given."""
    server = await _health(ready, live)
    try:
        async with aiohttp.ClientSession() as session:
            controller = FailoverController(
                site="B",
                sites={"A": str(server.make_url("")).rstrip("/"), "B": "https://127.0.0.1:1"},
                session=session,
                patroni=cast(Any, Patroni()),
                patroni_url="https://127.0.0.1:1",
                etcd=cast(Any, Etcd()),
                role=cast(Any, Role(leader)),
                config=ControllerConfig(),
                clock=lambda: 100.0,
            )
            obs = await controller.observe()
    finally:
        await server.close()
    assert obs is not None
    return {s.name: s.node.healthy for s in obs.sites}


async def test_the_leaders_node_alive_but_not_ready_is_unhealthy() -> None:
    """#14 item 3 (node -> PostgreSQL cut): site A leads and its node is alive but not ready
    (it cannot reach its database, so it is standby): the controller on B sees it unhealthy,
    which starts the grace period toward a switchover; ready, it is healthy."""
    assert await _healthy_by_site("pg-A", ready=503, live=200) == {"A": False, "B": True}
    assert await _healthy_by_site("pg-A", ready=200, live=200) == {"A": True, "B": True}


async def test_the_other_sites_node_needs_only_to_be_alive() -> None:
    """Site B leads (this controller's own site); site A's node is a standby, never ready: it
    counts as healthy while alive, and unhealthy once it is not."""
    assert await _healthy_by_site("pg-B", ready=503, live=200) == {"A": True, "B": True}
    assert await _healthy_by_site("pg-B", ready=503, live=503) == {"A": False, "B": True}
