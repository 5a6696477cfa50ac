"""The cluster-wide Patroni settings the topology decides (deploy.configgen.patroni_settings):
in the bootstrap configuration, and applied to a running cluster by `cluster up` through
Patroni's GET and PATCH /config (replication.patroni_rest), only where they differ. The live
proof is chaos-tests/test_chaos_processes.py's strict disk-full scenario."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from pytest_aiohttp import AiohttpServer
from unit_fakes import MEMBER_PASSWORDS

from deploy import configgen
from deploy.state import DEFAULT_TOPOLOGY, REPO_ROOT
from deploy.topology import Topology, load_topology
from kernel.errors import PatroniUnavailable
from replication.patroni_rest import PATRONI_REST_USER, PatroniRest, RestCredentials


def _strict_topology(tmp_path: Path, source: Path = DEFAULT_TOPOLOGY) -> Topology:
    doc = yaml.safe_load(source.read_text())
    doc.setdefault("patroni", {})["synchronous_mode_strict"] = True
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_topology(path)


@pytest.mark.parametrize(
    "source", [DEFAULT_TOPOLOGY, REPO_ROOT / "deploy" / "topology.production.yaml"]
)
def test_synchronous_mode_is_on_and_not_strict_unless_the_topology_says(
    source: Path, tmp_path: Path
) -> None:
    """Every shipped topology bootstraps synchronous_mode without strict (availability when
    the standby is gone; Patroni promotes no other member, so RPO 0 holds); a topology with
    `patroni.synchronous_mode_strict: true` bootstraps strict, the rest unchanged."""
    topo = load_topology(source)
    site = topo.data_sites[0]
    dcs = configgen.patroni_config(topo, site, Path("/rt/pg"), MEMBER_PASSWORDS)["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] is True
    assert dcs["synchronous_mode_strict"] is False
    strict = _strict_topology(tmp_path, source)
    strict_dcs = configgen.patroni_config(strict, site, Path("/rt/pg"), MEMBER_PASSWORDS)[
        "bootstrap"
    ]["dcs"]
    assert strict_dcs == {**dcs, "synchronous_mode_strict": True}


def test_bootstrap_holds_every_setting_up_reconciles() -> None:
    """What `cluster up` sets on a running cluster is exactly what a new one bootstraps with,
    so a cluster made from a topology and one changed to it agree."""
    topo = load_topology(DEFAULT_TOPOLOGY)
    settings = configgen.patroni_settings(topo)
    dcs = configgen.patroni_config(topo, "A", Path("/rt/pg"), MEMBER_PASSWORDS)["bootstrap"]["dcs"]
    assert settings == {k: dcs[k] for k in settings}
    assert set(settings) >= {"ttl", "loop_wait", "retry_timeout", "synchronous_mode_strict"}


def test_changes_are_only_what_differs_or_is_missing() -> None:
    """The PATCH body: the wanted settings the cluster does not hold (a different value, or
    none, as after a Patroni upgrade that dropped a key); nothing when all agree; settings
    the topology does not decide are never touched."""
    wanted = {"ttl": 20, "synchronous_mode": True, "synchronous_mode_strict": True}
    current = {
        "ttl": 20,
        "synchronous_mode": True,
        "synchronous_mode_strict": False,
        "maximum_lag_on_failover": 1048576,
    }
    assert configgen.patroni_settings_changes(current, wanted) == {"synchronous_mode_strict": True}
    assert configgen.patroni_settings_changes({"ttl": 20}, wanted) == {
        "synchronous_mode": True,
        "synchronous_mode_strict": True,
    }
    assert configgen.patroni_settings_changes({**current, **wanted}, wanted) == {}


class ConfigPatroni:
    """Patroni's /config: GET answers the dynamic configuration; PATCH merges the body into it
    when the credentials are right (401 otherwise), as patroni/api.py's do_PATCH_config."""

    def __init__(self) -> None:
        self.config: dict[str, Any] = {"ttl": 20, "synchronous_mode_strict": False}
        self.patches: list[dict[str, Any]] = []
        self.key = RestCredentials(PATRONI_REST_USER, "pw").header

    async def get(self, _: web.Request) -> web.Response:
        return web.json_response(self.config)

    async def patch(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != self.key:
            return web.Response(status=401, text="not authenticated")
        body = await request.json()
        self.patches.append(body)
        self.config = {**self.config, **body}
        return web.Response(text=json.dumps(self.config))


@pytest.fixture
async def served(aiohttp_server: AiohttpServer) -> tuple[ConfigPatroni, str]:
    fake = ConfigPatroni()
    app = web.Application()
    app.router.add_get("/config", fake.get)
    app.router.add_patch("/config", fake.patch)
    server = await aiohttp_server(app)
    return fake, str(server.make_url("")).rstrip("/")


async def test_dynamic_config_is_read_and_patched_with_the_credentials(
    served: tuple[ConfigPatroni, str], session: aiohttp.ClientSession
) -> None:
    """GET /config reads the settings; PATCH /config sends only the given changes, with the
    operator's credentials, and the next read shows them."""
    fake, url = served
    rest = PatroniRest(session, auth=RestCredentials(PATRONI_REST_USER, "pw"))
    assert (await rest.dynamic_config(url))["synchronous_mode_strict"] is False
    status, _ = await rest.patch_dynamic_config(url, {"synchronous_mode_strict": True})
    assert status == 200
    assert fake.patches == [{"synchronous_mode_strict": True}]
    assert (await rest.dynamic_config(url))["synchronous_mode_strict"] is True


async def test_an_unreadable_config_is_patroni_unavailable(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    """A member that answers GET /config with an error is not read as an empty configuration
    (which would make `up` patch every setting): PatroniUnavailable naming the URL."""

    async def unavailable(_: web.Request) -> web.Response:
        return web.json_response({}, status=503)

    app = web.Application()
    app.router.add_get("/config", unavailable)
    server = await aiohttp_server(app)
    url = str(server.make_url("")).rstrip("/")
    with pytest.raises(PatroniUnavailable, match="/config answered 503"):
        await PatroniRest(session).dynamic_config(url)
