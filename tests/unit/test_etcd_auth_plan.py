"""#12 item 3: etcd's roles and grants are made from the key names, and `apply` brings a
cluster to them idempotently (against a scripted in-process etcd auth store); the node's
configuration names its password's file, never the password."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from deploy import configgen, etcd_auth
from deploy.etcd_auth import plan, prefix_end
from deploy.state import StateDir
from deploy.topology import load_topology
from kernel.names import (
    CONTINGENCY_STATE_KEY,
    DRILL_RESULTS_KEY,
    LAST_SWITCHOVER_KEY,
    PATRONI_NAMESPACE,
    WRITE_HEARTBEAT_KEY,
    leader_key,
)
from node.config import NodeConfig
from replication.etcd_gateway import EtcdCredentials, EtcdGateway

AiohttpServer = Callable[[web.Application], Awaitable[TestServer]]
TOPOLOGY = Path(__file__).resolve().parents[2] / "deploy" / "topology.yaml"


def _may(user: str, perm: str, key: str) -> bool:
    """Whether `plan()` lets `user` do `perm` ("READ" or "WRITE") on `key`, as etcd decides."""
    roles = {r.name: r for r in plan().roles}
    for role in plan().users[user]:
        for g in roles[role].grants if role in roles else ():
            inside = key == g.key if not g.range_end else g.key <= key < g.range_end
            if inside and perm in g.perm:
                return True
    return False


def test_prefix_end_is_etcds() -> None:
    """#12 item 3: a prefix grant covers [prefix, prefix with its last byte + 1)."""
    assert prefix_end("/service/") == "/service0"
    assert prefix_end("/rocars/a") == "/rocars/b"


def test_only_patroni_writes_patronis_namespace() -> None:
    """#12 item 3: Patroni's leader key is writable by `patroni` alone (not the node, not the
    operator); `patroni` writes nothing outside its namespace."""
    leader = leader_key("rocars")
    assert _may("patroni", "WRITE", leader)
    assert not _may("rocars-node", "WRITE", leader)
    assert not _may("operator", "WRITE", leader)
    assert _may("rocars-node", "READ", leader)
    assert _may("operator", "READ", leader)
    for key in (CONTINGENCY_STATE_KEY, WRITE_HEARTBEAT_KEY, "/servicf", "/rocars/x"):
        assert not _may("patroni", "WRITE", key)
        assert not _may("patroni", "READ", key)


def test_the_node_writes_only_the_keys_it_writes() -> None:
    """#12 item 3: the node's user writes the contingency state, the write heartbeat and the
    last switchover (what node/, contingency/ and failover/ put), reads the drill results,
    and writes nothing else."""
    for key in (CONTINGENCY_STATE_KEY, WRITE_HEARTBEAT_KEY, LAST_SWITCHOVER_KEY):
        assert _may("rocars-node", "WRITE", key)
    assert _may("rocars-node", "READ", DRILL_RESULTS_KEY)
    assert not _may("rocars-node", "WRITE", DRILL_RESULTS_KEY)
    assert not _may("rocars-node", "WRITE", "/rocars/contingency/state2")
    assert not _may("rocars-node", "WRITE", PATRONI_NAMESPACE + "rocars/config")


def test_the_operator_switches_contingency_and_publishes_drills() -> None:
    """#12 item 3: officers' commands change the contingency state; drills publish their
    results; neither writes the node's heartbeat."""
    assert _may("operator", "WRITE", CONTINGENCY_STATE_KEY)
    assert _may("operator", "WRITE", DRILL_RESULTS_KEY)
    assert _may("operator", "READ", WRITE_HEARTBEAT_KEY)
    assert not _may("operator", "WRITE", WRITE_HEARTBEAT_KEY)


def test_root_has_the_root_role_and_nobody_else_does() -> None:
    """#12 item 3: only `root` is an admin."""
    users = plan().users
    assert users["root"] == ("root",)
    assert [u for u, roles in users.items() if "root" in roles] == ["root"]


# -- apply against a scripted auth store -------------------------------------------------------


def _err(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "code": 9, "message": message}, status=status)


@dataclass
class FakeAuthStore:
    """The parts of etcd's auth store `apply` uses; admin calls need root's token once on."""

    enabled: bool = False
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    roles: dict[str, set[tuple[str, str, str]]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    writes: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            op = request.match_info["op"]
            body = await request.json()
            if op == "authenticate":
                if not self.enabled:
                    return _err(412, "etcdserver: authentication is not enabled")
                u = self.users.get(body["name"])
                if u is None or u["password"] != body["password"]:
                    return _err(400, "etcdserver: authentication failed, invalid user ID or")
                token = f"t{len(self.tokens)}"
                self.tokens[token] = body["name"]
                return web.json_response({"token": token})
            if self.enabled:
                user = self.tokens.get(request.headers.get("Authorization", ""))
                if user is None:
                    return _err(400, "etcdserver: user name is empty")
                if "root" not in self.users[user]["roles"]:
                    return _err(403, "etcdserver: permission denied")
            return self._admin(op, body)

        app = web.Application()
        app.router.add_post("/v3/auth/{op:.*}", handle)
        return app

    def _admin(self, op: str, b: dict[str, Any]) -> web.Response:
        def d(v: str | None) -> str:
            return base64.b64decode(v or "").decode()

        if op == "role/get":
            if b["role"] not in self.roles:
                return _err(400, "etcdserver: role name not found")
            perms = [
                {"key": base64.b64encode(k.encode()).decode(),
                 "range_end": base64.b64encode(e.encode()).decode(),
                 **({} if p == "READ" else {"permType": p})}
                for k, e, p in sorted(self.roles[b["role"]])
            ]  # fmt: skip
            return web.json_response({"perm": perms})
        if op == "user/get":
            if b["name"] not in self.users:
                return _err(400, "etcdserver: user name not found")
            return web.json_response({"roles": sorted(self.users[b["name"]]["roles"])})
        self.writes.append(op)
        if op == "role/add":
            self.roles[b["name"]] = set()
        elif op == "role/grant":  # one permission per key range: a grant replaces
            p = b["perm"]
            key = (d(p["key"]), d(p["range_end"]))
            kept = {g for g in self.roles[b["name"]] if g[:2] != key}
            self.roles[b["name"]] = kept | {(*key, p["permType"])}
        elif op == "role/revoke":
            kept = {g for g in self.roles[b["role"]] if g[:2] != (d(b["key"]), d(b["range_end"]))}
            self.roles[b["role"]] = kept
        elif op == "user/add":
            self.users[b["name"]] = {"password": b["password"], "roles": set()}
        elif op == "user/changepw":
            self.users[b["name"]]["password"] = b["password"]
        elif op == "user/grant":
            self.users[b["user"]]["roles"].add(b["role"])
        elif op == "user/revoke":
            self.users[b["name"]]["roles"].discard(b["role"])
        elif op == "enable":
            if "root" not in self.users.get("root", {}).get("roles", set()):
                return _err(412, "etcdserver: root user does not exist")
            self.enabled = True
        return web.json_response({})


PASSWORDS = {name: f"pw-{name}" for name in etcd_auth.SECRET_OF.values()}


async def _apply(aiohttp_server: AiohttpServer, store: FakeAuthStore) -> list[str]:
    server = await aiohttp_server(store.app())
    async with aiohttp.ClientSession() as s:
        root = EtcdGateway(
            s, [str(server.make_url("")).rstrip("/")],
            credentials=EtcdCredentials("root", PASSWORDS["etcd-root"]),
        )  # fmt: skip
        return await etcd_auth.apply(root, PASSWORDS, lambda _line: None)


async def test_apply_builds_the_plan_then_enables_and_is_idempotent(
    aiohttp_server: AiohttpServer,
) -> None:
    """#12 item 3: on a fresh etcd `apply` creates every role, grant and user, then switches
    authentication on; run again (now logged in as root) it changes nothing."""
    store = FakeAuthStore()
    done = await _apply(aiohttp_server, store)
    assert store.enabled
    assert "added user root" in done
    assert "granted role root to user root" in done
    for role in plan().roles:
        assert store.roles[role.name] == {(g.key, g.range_end, g.perm) for g in role.grants}
        assert store.users[role.name]["roles"] == {role.name}
        assert store.users[role.name]["password"] == PASSWORDS[etcd_auth.SECRET_OF[role.name]]
    store.writes.clear()
    assert await _apply(aiohttp_server, store) == []
    assert store.writes == ["enable"]


async def test_apply_repairs_grants_roles_and_passwords(aiohttp_server: AiohttpServer) -> None:
    """#12 item 3: on a cluster with authentication on, an extra grant (the node writing
    Patroni's namespace), an extra role and a changed password are put back to the plan."""
    store = FakeAuthStore()
    await _apply(aiohttp_server, store)
    ns = (PATRONI_NAMESPACE, prefix_end(PATRONI_NAMESPACE))
    store.roles["rocars-node"] = {g for g in store.roles["rocars-node"] if g[:2] != ns}
    store.roles["rocars-node"].add((*ns, "READWRITE"))
    store.users["operator"]["roles"].add("root")
    store.users["patroni"]["password"] = "old"
    done = await _apply(aiohttp_server, store)
    assert sorted(done) == sorted(
        [
            f"revoked READWRITE {PATRONI_NAMESPACE!r} from role rocars-node",
            f"granted READ {PATRONI_NAMESPACE!r} to role rocars-node",
            "revoked role root from user operator",
            "set the password of user patroni from the secrets folder",
        ]
    )
    node = {
        (g.key, g.range_end, g.perm)
        for g in next(r for r in plan().roles if r.name == "rocars-node").grants
    }
    assert store.roles["rocars-node"] == node
    assert store.users["operator"]["roles"] == {"operator"}
    assert store.users["patroni"]["password"] == PASSWORDS["etcd-patroni"]


# -- generated configuration --------------------------------------------------------------------


def test_node_config_names_the_password_file_not_the_password(tmp_path: Path) -> None:
    """#12 item 3: the node's configuration holds its etcd user and the PATH of the password
    file (in the secrets folder), never the password; Patroni's (0600) holds its own user's."""
    topo = load_topology(TOPOLOGY)
    state = StateDir(tmp_path)
    passwords = state.secrets()
    doc = configgen.node_config(topo, "A", state_root=tmp_path)
    cfg = NodeConfig.model_validate(doc)
    assert cfg.etcd_user == "rocars-node"
    assert cfg.etcd_password_file == state.secret_file("etcd-node")
    assert cfg.etcd_password_file.read_text().strip() == passwords["etcd-node"]
    text = yaml.safe_dump(doc)
    for name in etcd_auth.SECRET_OF.values():
        assert passwords[name] not in text
    patroni = configgen.patroni_config(topo, "A", tmp_path / "pg-A", passwords)["etcd3"]
    assert (patroni["username"], patroni["password"]) == ("patroni", passwords["etcd-patroni"])
    assert passwords["etcd-root"] not in yaml.safe_dump(patroni)


@pytest.mark.parametrize("user", ["root", "patroni", "rocars-node", "operator"])
def test_each_user_reads_its_own_secret_file(tmp_path: Path, user: str) -> None:
    """#12 item 3: credentials come from the user's own 0600 file in the secrets folder."""
    state = StateDir(tmp_path)
    passwords = state.secrets()
    creds = etcd_auth.credentials(state, user)
    assert creds is not None
    assert creds.user == user
    assert creds.password == passwords[etcd_auth.SECRET_OF[user]]
    assert state.secret_file(etcd_auth.SECRET_OF[user]).stat().st_mode & 0o777 == 0o600
