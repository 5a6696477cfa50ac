"""#12 item 3: Patroni's REST API asks for credentials on its unsafe methods. The generated
patroni.yaml holds them, the node's configuration names the password's file (never the
password), and `PatroniRest` sends them with switchover and reload (and only there), turning
Patroni's refusal into a ConfigError that says what to fix. Against an in-process aiohttp server
scripted the way Patroni checks `restapi.authentication` (patroni/api.py, check_auth_header)."""

from __future__ import annotations

import base64
import logging
import stat
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from pytest_aiohttp import AiohttpServer
from unit_fakes import MemoryEtcd, node_config

from deploy import configgen
from deploy.state import DEFAULT_TOPOLOGY, NETNS_TOPOLOGY, REPO_ROOT, SECRET_NAMES, StateDir
from deploy.topology import load_topology
from failover.controller import FailoverController
from failover.decision import ControllerConfig, Decision, NodeHealth, Observation, SiteView
from failover.role import RoleWatcher
from kernel.errors import ConfigError
from node import appkeys
from node.app import _http_ctx
from node.config import NodeConfig
from node.deps import NodeDeps
from replication.patroni_rest import (
    PATRONI_REST_USER,
    PatroniRest,
    RestCredentials,
    read_credentials,
)

TOPOLOGIES = {
    "local": load_topology(DEFAULT_TOPOLOGY),
    "netns": load_topology(NETNS_TOPOLOGY),
    "production": load_topology(REPO_ROOT / "deploy" / "topology.production.yaml"),
}
PASSWORDS = {k: f"pw-{k}" for k in SECRET_NAMES}
SECRET = "s3cret-rest-password"
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


@dataclass
class FakePatroni:
    """Patroni's access rule: an unsafe method needs `Basic base64(user:password)` (401 with
    Patroni's reasons otherwise); GETs are open. Records every request's Authorization."""

    password: str = SECRET
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization")
        self.seen.append((request.method, request.path, header))
        if request.method in UNSAFE:
            key = base64.b64encode(f"{PATRONI_REST_USER}:{self.password}".encode()).decode()
            if header is None:
                return web.Response(status=401, text="no auth header received")
            if header != f"Basic {key}":
                return web.Response(status=401, text="not authenticated")
            if request.path == "/reload":
                return web.Response(status=202, text="reload scheduled")
            return web.Response(text='Successfully switched over to "pg-B"')
        return web.json_response({"members": [], "pause": False, "role": "primary"})


@pytest.fixture
async def patroni(aiohttp_server: AiohttpServer) -> tuple[FakePatroni, str]:
    fake = FakePatroni()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = await aiohttp_server(app)
    return fake, str(server.make_url("")).rstrip("/")


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_patroni_config_asks_for_the_patroni_rest_secret(name: str) -> None:
    """#12 item 3: every member's restapi section has `authentication` with the operator user
    and the "patroni-rest" secret, in every topology."""
    topo = TOPOLOGIES[name]
    for site in topo.data_sites:
        cfg = configgen.patroni_config(topo, site, Path("/rt/pg"), PASSWORDS)
        assert cfg["restapi"]["authentication"] == {
            "username": PATRONI_REST_USER,
            "password": "pw-patroni-rest",
        }


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_node_config_names_the_password_file_never_the_password(name: str, tmp_path: Path) -> None:
    """#12 item 3: the node configuration holds the path of the 0600 "patroni-rest" file and
    no secret at all; the file it names holds the password Patroni is configured with."""
    topo = TOPOLOGIES[name]
    state = StateDir(tmp_path)
    passwords = state.secrets()
    for site in topo.data_sites:
        raw = configgen.node_config(topo, site, state_root=tmp_path)
        text = yaml.safe_dump(raw)
        assert not [k for k, v in passwords.items() if v in text]
        cfg = NodeConfig.model_validate(yaml.safe_load(text))
        assert cfg.patroni_auth_file == state.secret_file("patroni-rest")
        assert cfg.patroni_auth_file.read_text() == passwords["patroni-rest"]
        assert stat.S_IMODE(cfg.patroni_auth_file.stat().st_mode) == 0o600
        rest = configgen.patroni_config(topo, site, Path("/rt/pg"), passwords)["restapi"]
        assert read_credentials(cfg.patroni_auth_file) == RestCredentials(
            rest["authentication"]["username"], rest["authentication"]["password"]
        )


async def test_switchover_and_reload_carry_the_credentials_gets_do_not(
    patroni: tuple[FakePatroni, str], session: aiohttp.ClientSession
) -> None:
    """#12 item 3: with credentials, switchover and reload are accepted; the password goes
    with those unsafe requests only, never with the role watcher's and status' GETs."""
    fake, url = patroni
    rest = PatroniRest(session, auth=RestCredentials(PATRONI_REST_USER, SECRET))
    await rest.member(url)
    await rest.cluster(url)
    assert await rest.switchover(url, leader="pg-A", candidate="pg-B") == (
        200,
        'Successfully switched over to "pg-B"',
    )
    assert (await rest.reload(url))[0] == 202
    expected = RestCredentials(PATRONI_REST_USER, SECRET).header
    assert fake.seen == [
        ("GET", "/patroni", None),
        ("GET", "/cluster", None),
        ("POST", "/switchover", expected),
        ("POST", "/reload", expected),
    ]


@pytest.mark.parametrize(
    ("auth", "given"),
    [
        (None, "no credentials"),
        (RestCredentials(PATRONI_REST_USER, "wrong"), f"user '{PATRONI_REST_USER}'"),
    ],
)
async def test_refused_credentials_are_a_config_error_that_says_what_to_fix(
    patroni: tuple[FakePatroni, str],
    session: aiohttp.ClientSession,
    auth: RestCredentials | None,
    given: str,
) -> None:
    """#12 item 3: Patroni's 401 is not a refused switchover nor an unavailable Patroni but a
    ConfigError naming the request, what was sent and the secret to fix, without the password
    sent."""
    _, url = patroni
    rest = PatroniRest(session, auth=auth)
    with pytest.raises(ConfigError) as err:
        await rest.switchover(url, leader="pg-A", candidate="pg-B")
    message = str(err.value)
    assert f"POST {url}/switchover (401 " in message
    assert given in message
    assert "'patroni-rest' secret" in message
    assert "wrong" not in message


def test_password_file_read_or_a_clear_error(tmp_path: Path) -> None:
    """#12 item 3: the password is the file's content without its line end; a missing or
    empty file is a ConfigError naming the file."""
    path = tmp_path / "patroni-rest.password"
    path.write_text(SECRET + "\n")
    assert read_credentials(path) == RestCredentials(PATRONI_REST_USER, SECRET)
    path.write_text("\n")
    with pytest.raises(ConfigError, match=r"patroni-rest\.password is empty"):
        read_credentials(path)
    with pytest.raises(ConfigError, match=r"cannot read .*missing\.password"):
        read_credentials(tmp_path / "missing.password")


async def test_node_sends_the_password_of_the_file_its_config_names(
    patroni: tuple[FakePatroni, str], tmp_path: Path
) -> None:
    """#12 item 3: the node builds its PatroniRest (the failover controller's) with the
    password read from `patroni_auth_file`, so its switchover request is accepted."""
    fake, url = patroni
    secret = tmp_path / "patroni-rest.password"
    secret.write_text(SECRET)
    app = web.Application()
    app[appkeys.CONFIG] = node_config(tmp_path, patroni_auth_file=secret, patroni_url=url)
    app[appkeys.DEPS] = NodeDeps(background=False)
    ctx = _http_ctx(app)
    await anext(ctx)
    try:
        code, _ = await app[appkeys.PATRONI].switchover(url, leader="pg-A", candidate="pg-B")
    finally:
        with pytest.raises(StopAsyncIteration):
            await anext(ctx)
    assert code == 200
    assert fake.seen[-1][2] == RestCredentials(PATRONI_REST_USER, SECRET).header


async def test_controller_logs_refused_credentials_and_keeps_going(
    patroni: tuple[FakePatroni, str],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """#12 item 3: a failover controller whose credentials Patroni refuses logs why and
    carries on with its next cycle (one bad request must not end the controller)."""
    _, url = patroni
    etcd = MemoryEtcd()
    rest = PatroniRest(session, auth=RestCredentials(PATRONI_REST_USER, "wrong"))
    role = RoleWatcher(
        patroni=rest,
        patroni_url=url,
        etcd=etcd,  # type: ignore[arg-type]
        leader_key="/service/rocars/leader",
        my_member="pg-B",
        interval_s=0.25,
    )
    controller = FailoverController(
        site="B",
        sites={"A": "http://127.0.0.1:1", "B": "http://127.0.0.1:1"},
        session=session,
        patroni=rest,
        patroni_url=url,
        etcd=etcd,  # type: ignore[arg-type]
        role=role,
        config=ControllerConfig(grace_period_s=5.0, min_interval_s=300.0),
    )
    sites = tuple(SiteView(n, NodeHealth(True, None), None) for n in ("A", "B"))
    obs = Observation(1000.0, "A", False, (sites[0], sites[1]), None)
    with caplog.at_level(logging.ERROR, logger="rocars.failover"):
        await controller._switch(obs, Decision("switchover", "B", "node A down."))
    assert "switchover request failed: Patroni refused POST" in caplog.text
    assert "401" in caplog.text
