"""#12 item 3: the etcd gateway logs in, sends its token, and logs in again when a member has
forgotten it; against a scripted in-process etcd with two members (a path prefix each)."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kernel.errors import EtcdUnavailable
from replication.etcd_gateway import EtcdCredentials, EtcdGateway, EtcdRefused

AiohttpServer = Callable[[web.Application], Awaitable[TestServer]]

PASSWORDS = {"rocars-node": "s3cret"}
WRITABLE = {"rocars-node": {"/rocars/contingency/state"}}


def _error(status: int, message: str) -> web.Response:
    # The shape of etcd 3.4's JSON gateway errors.
    return web.json_response({"error": message, "code": 16, "message": message}, status=status)


@dataclass
class FakeEtcd:
    """Members "a" and "b": each keeps its own tokens (simple tokens are per member)."""

    auth_enabled: bool = True
    tokens: dict[str, dict[str, str]] = field(default_factory=lambda: {"a": {}, "b": {}})
    logins: list[str] = field(default_factory=list)
    puts: list[tuple[str, str, str | None]] = field(default_factory=list)
    down: set[str] = field(default_factory=set)

    def expire(self, member: str) -> None:
        self.tokens[member].clear()

    def app(self) -> web.Application:
        async def authenticate(request: web.Request) -> web.Response:
            member = request.match_info["member"]
            body = await request.json()
            if not self.auth_enabled:
                return _error(412, "etcdserver: authentication is not enabled")
            if PASSWORDS.get(body["name"]) != body["password"]:
                return _error(400, "etcdserver: authentication failed, invalid user ID or password")
            self.logins.append(member)
            token = f"{member}.{body['name']}.{len(self.logins)}"
            self.tokens[member][token] = body["name"]
            return web.json_response({"header": {}, "token": token})

        async def put(request: web.Request) -> web.Response:
            member = request.match_info["member"]
            if member in self.down:
                return _error(503, "etcdserver: request timed out")
            body = await request.json()
            key = base64.b64decode(body["key"]).decode()
            token = request.headers.get("Authorization")
            user = None
            if self.auth_enabled:
                if token is None:
                    return _error(400, "etcdserver: user name is empty")
                user = self.tokens[member].get(token)
                if user is None:
                    return _error(401, "etcdserver: invalid auth token")
                if key not in WRITABLE.get(user, set()):
                    return _error(403, "etcdserver: permission denied")
            self.puts.append((member, key, token))
            return web.json_response({"header": {"revision": str(len(self.puts))}})

        app = web.Application()
        app.router.add_post("/{member}/v3/auth/authenticate", authenticate)
        app.router.add_post("/{member}/v3/kv/put", put)
        return app


async def _gateway(
    aiohttp_server: AiohttpServer,
    s: aiohttp.ClientSession,
    etcd: FakeEtcd,
    creds: EtcdCredentials | None,
) -> EtcdGateway:
    server = await aiohttp_server(etcd.app())
    base = str(server.make_url("")).rstrip("/")
    return EtcdGateway(s, [f"{base}/a", f"{base}/b"], credentials=creds)


NODE = EtcdCredentials("rocars-node", "s3cret")
KEY = "/rocars/contingency/state"


async def test_logs_in_once_and_sends_the_raw_token(aiohttp_server: AiohttpServer) -> None:
    """#12 item 3: the token from /v3/auth/authenticate goes in `Authorization` as is (no
    "Bearer"), and one login serves many calls."""
    etcd = FakeEtcd()
    async with aiohttp.ClientSession() as s:
        gw = await _gateway(aiohttp_server, s, etcd, NODE)
        await gw.put(KEY, "x")
        await gw.put(KEY, "y")
    assert etcd.logins == ["a"]
    assert [p[2] for p in etcd.puts] == ["a.rocars-node.1", "a.rocars-node.1"]


async def test_an_expired_token_is_renewed_and_the_call_retried_once(
    aiohttp_server: AiohttpServer,
) -> None:
    """#12 item 3: when the member has forgotten the token (TTL, restart) it answers "invalid
    auth token"; the gateway logs in again at that member and the call succeeds."""
    etcd = FakeEtcd()
    async with aiohttp.ClientSession() as s:
        gw = await _gateway(aiohttp_server, s, etcd, NODE)
        await gw.put(KEY, "x")
        etcd.expire("a")
        await gw.put(KEY, "y")
    assert etcd.logins == ["a", "a"]
    assert [(p[0], p[2]) for p in etcd.puts] == [("a", "a.rocars-node.1"), ("a", "a.rocars-node.2")]


async def test_tokens_are_per_member(aiohttp_server: AiohttpServer) -> None:
    """#12 item 3: a simple token is valid only at the member that issued it: when the first
    member fails, the gateway logs in at the next one instead of sending it the first's."""
    etcd = FakeEtcd()
    async with aiohttp.ClientSession() as s:
        gw = await _gateway(aiohttp_server, s, etcd, NODE)
        await gw.put(KEY, "x")
        etcd.down.add("a")
        await gw.put(KEY, "y")
    assert etcd.puts[-1] == ("b", KEY, "b.rocars-node.2")
    assert etcd.logins == ["a", "b"]


async def test_a_member_without_authentication_gets_no_token_until_it_asks(
    aiohttp_server: AiohttpServer,
) -> None:
    """#12 item 3: before `auth enable` (a fresh cluster's bootstrap) the login answers
    "authentication is not enabled" and calls go without a token; once authentication is on
    ("user name is empty") the gateway logs in and retries."""
    etcd = FakeEtcd(auth_enabled=False)
    async with aiohttp.ClientSession() as s:
        gw = await _gateway(aiohttp_server, s, etcd, NODE)
        await gw.put(KEY, "x")
        etcd.auth_enabled = True
        await gw.put(KEY, "y")
    assert etcd.puts == [("a", KEY, None), ("a", KEY, "a.rocars-node.1")]


async def test_permission_denied_is_a_refusal_not_a_failover(
    aiohttp_server: AiohttpServer,
) -> None:
    """#12 item 3: the node's user writing Patroni's leader key is refused ("permission
    denied") at once; the gateway neither logs in again nor asks the other member."""
    etcd = FakeEtcd()
    async with aiohttp.ClientSession() as s:
        gw = await _gateway(aiohttp_server, s, etcd, NODE)
        with pytest.raises(EtcdRefused, match="permission denied") as err:
            await gw.put("/service/rocars/leader", "pg-A")
    assert err.value.status == 403
    assert etcd.logins == ["a"]
    assert etcd.puts == []


async def test_without_credentials_writes_are_refused(aiohttp_server: AiohttpServer) -> None:
    """#12 item 3: with authentication on, a gateway without credentials gets "user name is
    empty" (an EtcdUnavailable, so existing callers treat it as etcd being unusable)."""
    etcd = FakeEtcd()
    async with aiohttp.ClientSession() as s:
        gw = await _gateway(aiohttp_server, s, etcd, None)
        with pytest.raises(EtcdUnavailable, match="user name is empty"):
            await gw.put(KEY, "x")
    assert etcd.puts == []


async def test_a_wrong_password_is_refused_with_the_user_named(
    aiohttp_server: AiohttpServer,
) -> None:
    """#12 item 3: a wrong password is reported as a refused login of that user (never the
    password), without trying every member."""
    etcd = FakeEtcd()
    async with aiohttp.ClientSession() as s:
        gw = await _gateway(aiohttp_server, s, etcd, EtcdCredentials("rocars-node", "wrong"))
        with pytest.raises(EtcdRefused, match="login as 'rocars-node' refused") as err:
            await gw.put(KEY, "x")
    assert "wrong" not in str(err.value)
    assert "wrong" not in repr(EtcdCredentials("rocars-node", "wrong"))
