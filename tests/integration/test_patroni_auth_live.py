"""#12 item 3 on the real cluster: Patroni's REST API refuses its unsafe methods (switchover,
restart, a pause through PATCH /config) without the "patroni-rest" credentials or with a wrong
password, and nothing happens; its GETs stay open to Prometheus, the readiness checks and
`rocars cluster status`; `rocars failover switchover` (which sends the credentials) still works.

Patroni answers a switchover, a restart or a PATCH /config only once it is done (none is
scheduled here), so "nothing happened" can be checked as soon as the 401 has come back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from deploy.harness import LocalCluster
from kernel.names import member_name, member_site
from replication.patroni_rest import PATRONI_REST_USER, RestCredentials, read_credentials

pytestmark = pytest.mark.integration

NO_CREDENTIALS = None
WRONG_PASSWORD = RestCredentials(PATRONI_REST_USER, "not-the-password")


@pytest.fixture
async def http(cluster: LocalCluster) -> AsyncIterator[aiohttp.ClientSession]:
    async with cluster.session(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


def _leader(cluster: LocalCluster, timeout: float = 60) -> str:
    """The leader member's site, from `rocars cluster status` (a quorum read of etcd), once
    the cluster is healthy (an earlier test may have left it settling)."""
    doc = cluster.wait_healthy(timeout=timeout)
    site = member_site(doc["postgres"]["leader"])
    assert site is not None, doc["postgres"]
    return site


async def _json(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url) as r:
        assert r.status == 200, (url, r.status)
        data = await r.json(content_type=None)
    assert isinstance(data, dict)
    return data


async def _facts(http: aiohttp.ClientSession, cluster: LocalCluster) -> dict[str, Any]:
    """What an accepted unsafe request would change: the leader, the dynamic configuration
    (pause is a key of it) and each member's postmaster start time."""
    topo = cluster.topo
    url = topo.patroni_url(topo.data_sites[0])
    members = {s: await _json(http, f"{topo.patroni_url(s)}/patroni") for s in topo.data_sites}
    return {
        "leader": _leader(cluster),
        "config": await _json(http, f"{url}/config"),
        "paused": (await _json(http, f"{url}/cluster")).get("pause", False),
        "started": {s: m.get("postmaster_start_time") for s, m in members.items()},
    }


@pytest.mark.parametrize("auth", [NO_CREDENTIALS, WRONG_PASSWORD], ids=["none", "wrong"])
async def test_unsafe_methods_refused_without_the_credentials_and_nothing_happens(
    cluster: LocalCluster, http: aiohttp.ClientSession, auth: RestCredentials | None
) -> None:
    """#12 item 3: POST /switchover, PATCH /config (pause) and POST /restart, sent to the
    leader's Patroni without credentials or with a wrong password, get 401; afterwards the
    leader, the dynamic configuration, the pause flag and both postmasters are unchanged."""
    topo = cluster.topo
    leader = _leader(cluster)
    other = next(s for s in topo.data_sites if s != leader)
    url = topo.patroni_url(leader)
    before = await _facts(http, cluster)
    headers = {} if auth is None else {"Authorization": auth.header}
    requests = [
        ("POST", "/switchover", {"leader": member_name(leader), "candidate": member_name(other)}),
        ("PATCH", "/config", {"pause": True}),
        ("POST", "/restart", {}),
    ]
    answers = {}
    try:
        for method, path, body in requests:
            async with http.request(method, f"{url}{path}", json=body, headers=headers) as r:
                answers[path] = (r.status, (await r.text()).strip())
    finally:
        # Should the guard ever fail, leave the shared cluster running, not paused.
        if (await _json(http, f"{url}/cluster")).get("pause"):
            creds = read_credentials(cluster.state.secret_file("patroni-rest"))
            async with http.patch(
                f"{url}/config", json={"pause": False}, headers={"Authorization": creds.header}
            ):
                pass
    reason = "no auth header received" if auth is None else "not authenticated"
    assert answers == {path: (401, reason) for _, path, _ in requests}
    assert await _facts(http, cluster) == before


async def test_safe_methods_stay_open_without_credentials(
    cluster: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """#12 item 3: GET /cluster, /patroni, /health and /metrics answer 200 on both members
    without credentials, /primary (/leader) on the leader and /replica on the standby: what
    Prometheus, the readiness checks and `rocars cluster status` rely on."""
    topo = cluster.topo
    leader = _leader(cluster)
    for site in topo.data_sites:
        role = "/primary" if site == leader else "/replica"
        for path in ("/cluster", "/patroni", "/health", "/metrics", role):
            url = f"{topo.patroni_url(site)}{path}"
            async with http.get(url) as r:
                assert r.status == 200, (url, r.status, await r.text())
    async with http.get(f"{topo.patroni_url(leader)}/leader") as r:
        assert r.status == 200
    async with http.get(f"{topo.patroni_url(leader)}/metrics") as r:
        text = await r.text()
    assert f'patroni_primary{{scope="{topo.name}",name="{member_name(leader)}"}} 1' in text


def test_rocars_failover_switchover_still_works_with_the_credentials(
    cluster: LocalCluster,
) -> None:
    """#12 item 3: `rocars failover switchover` (the real CLI, with the state folder's
    credentials) moves the leader to the other site and back to where it was, so the
    session cluster is left as it was found."""
    start = _leader(cluster)
    other = next(s for s in cluster.topo.data_sites if s != start)
    state = str(cluster.state.root)
    for target in (other, start):
        out = cluster.rocars("failover", "switchover", "--to", target, "--state-dir", state)
        assert f"site {target} is active" in out, out
        assert _leader(cluster) == target
