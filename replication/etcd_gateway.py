"""etcd through its v3 JSON gateway (`/v3/kv/...`, `/v3/maintenance/...`), with aiohttp: no gRPC
stack.

Serves: the node's role watcher (leader key), cluster status, and contingency mode storage.
Reads are linearizable (etcd's default) so an isolated member cannot hand us a stale leader:
its minority view fails instead (DESIGN.md section 6).

Authentication (#12 item 3): with `credentials` the gateway logs in at each member
(`/v3/auth/authenticate`) and sends the token as the raw `Authorization` header. etcd's simple
tokens are local to the member that issued them and expire (`--auth-token-ttl`, 300 s idle), and
any change to the users or roles makes them old: on such an answer the gateway logs in again at
that member and retries once. A member with authentication off answers the login with
"authentication is not enabled": the gateway then sends no token until that member asks for one.

TLS (#12 item 2): etcd serves its clients over TLS and requires a client certificate signed by
the system's CA (`client-cert-auth`), so the gateway is given the SSLContext to dial with
(kernel.tls.client_context with the caller's role certificate); an `https://` URL without one
is a configuration error, never a silent fallback to the system's trust store. The password
login above still decides who the caller is (etcd reads the token before the certificate's CN).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from ssl import SSLContext
from typing import Any

import aiohttp

from kernel.errors import ConfigError, EtcdUnavailable

DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=1.0, connect=0.5)
# etcd answers a leadership transfer only once the transferee has caught up and won its
# election: several election timeouts (1 s each) on a loaded machine. A 1 s deadline cut a
# transfer that then went through anyway (CI, stop 20).
MOVE_TIMEOUT = aiohttp.ClientTimeout(total=5.0, connect=0.5)

# etcd's answers (rpctypes) that mean "log in (again) at this member"; after a new token the
# call is retried once.
TOKEN_ERRORS = (
    "invalid auth token",
    "user name is empty",
    "revision of auth store is old",
)
AUTH_NOT_ENABLED = "authentication is not enabled"


class EtcdRefused(EtcdUnavailable):
    """etcd answered with an error (`error`: its message, e.g. "etcdserver: permission
    denied"), as opposed to not answering."""

    def __init__(self, message: str, *, error: str, status: int) -> None:
        super().__init__(message)
        self.error = error
        self.status = status

    @property
    def refusal(self) -> bool:
        """An answer every member would give alike ("permission denied", "role name not
        found", a bad password...): asking the next member is pointless. Transient trouble
        (no leader, timeouts) is 5xx, and "too many requests" 429."""
        return 400 <= self.status < 500 and self.status != 429

    @property
    def wants_token(self) -> bool:
        return any(t in self.error for t in TOKEN_ERRORS)


@dataclass(frozen=True)
class EtcdCredentials:
    """An etcd user and its password (#12 item 3); the password never shows in a repr."""

    user: str
    password: str = field(repr=False)

    @classmethod
    def from_file(cls, user: str, path: Path) -> EtcdCredentials:
        """The password is the file's content (0600, written by deploy.state)."""
        return cls(user, path.read_text().strip())


# The tokens of one user, by member URL ("" where the member has authentication off). A caller
# that makes many short-lived gateways shares one so that each does not log in again (a login
# is a raft round and a bcrypt check).
TokenCache = dict[str, str]


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int


@dataclass(frozen=True)
class MemberStatus:
    url: str
    healthy: bool
    member_id: str | None = None
    leader_id: str | None = None
    error: str | None = None
    # Each election and each handover of leadership starts a new term: two moves apart, the
    # term is at least two higher, whether or not the mover saw its call answered.
    raft_term: int | None = None


class EtcdGateway:
    """A small client over several etcd members: each call tries members in turn."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        urls: Sequence[str],
        *,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
        move_timeout: aiohttp.ClientTimeout = MOVE_TIMEOUT,
        credentials: EtcdCredentials | None = None,
        tokens: TokenCache | None = None,
        ssl: SSLContext | None = None,
    ) -> None:
        """`ssl`: the context to dial `https://` members with (required for them)."""
        if not urls:
            raise ValueError("at least one etcd URL is needed")
        if ssl is None and any(u.startswith("https://") for u in urls):
            raise ConfigError("etcd over https needs a TLS context (kernel.tls.client_context)")
        self._session = session
        self._urls = list(urls)
        self._timeout = timeout
        self._move_timeout = move_timeout
        self._credentials = credentials
        self._tokens: TokenCache = {} if tokens is None else tokens
        self._login_locks: dict[str, asyncio.Lock] = {}
        self._ssl: SSLContext | bool = True if ssl is None else ssl

    @property
    def user(self) -> str | None:
        return self._credentials.user if self._credentials is not None else None

    async def _send(
        self,
        url: str,
        path: str,
        body: dict[str, Any],
        timeout: aiohttp.ClientTimeout,
        token: str | None,
    ) -> dict[str, Any]:
        headers = {"Authorization": token} if token else None
        async with self._session.post(
            f"{url}{path}", json=body, timeout=timeout, headers=headers, ssl=self._ssl
        ) as r:
            data: dict[str, Any] = await r.json(content_type=None)
            if r.status != 200:
                error = str(data.get("error") or data.get("message") or "")
                raise EtcdRefused(
                    f"{url}{path}: HTTP {r.status}: {error}", error=error, status=r.status
                )
            return data

    async def _token(self, url: str, timeout: aiohttp.ClientTimeout) -> str | None:
        """This member's token for our user, logging in when there is none yet."""
        creds = self._credentials
        if creds is None:
            return None
        lock = self._login_locks.setdefault(url, asyncio.Lock())
        async with lock:  # concurrent calls wait for one login
            if url not in self._tokens:
                try:
                    data = await self._send(
                        url,
                        "/v3/auth/authenticate",
                        {"name": creds.user, "password": creds.password},
                        timeout,
                        None,
                    )
                    self._tokens[url] = str(data.get("token") or "")
                except EtcdRefused as exc:
                    if AUTH_NOT_ENABLED not in exc.error:
                        raise EtcdRefused(
                            f"{url}: etcd login as {creds.user!r} refused: {exc.error}",
                            error=exc.error,
                            status=exc.status,
                        ) from None
                    self._tokens[url] = ""
            return self._tokens[url] or None

    async def _post_one(
        self,
        url: str,
        path: str,
        body: dict[str, Any],
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> dict[str, Any]:
        """One call to one member, with a login first when needed and once more when the
        member says our token is gone (expired, issued elsewhere, or the auth store changed)."""
        timeout = timeout or self._timeout
        for attempt in (1, 2):
            token = await self._token(url, timeout)
            try:
                return await self._send(url, path, body, timeout, token)
            except EtcdRefused as exc:
                if attempt == 2 or self._credentials is None or not exc.wants_token:
                    raise
                self._tokens.pop(url, None)
        raise AssertionError("unreachable")

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        errors = []
        for url in self._urls:
            try:
                return await self._post_one(url, path, body)
            except EtcdRefused as exc:
                if exc.refusal:  # every member would say the same
                    raise
                errors.append(f"{url}: {exc!r}")
            except (aiohttp.ClientError, TimeoutError, ValueError, EtcdUnavailable) as exc:
                errors.append(f"{url}: {exc!r}")
        raise EtcdUnavailable("no etcd member answered: " + "; ".join(errors))

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Any other JSON gateway call (e.g. `/v3/auth/role/add`), to the first member that
        answers; etcd's refusals raise EtcdRefused."""
        return await self._post(path, body)

    async def get(self, key: str) -> KeyValue | None:
        data = await self._post("/v3/kv/range", {"key": _b64(key)})
        kvs = data.get("kvs") or []
        if not kvs:
            return None
        kv = kvs[0]
        return KeyValue(key, _unb64(kv.get("value", "")), int(kv.get("mod_revision", 0)))

    async def get_many(self, keys: Sequence[str]) -> list[KeyValue | None]:
        """Several keys in one call (a transaction of reads: one linearizable read, one
        snapshot), each KeyValue or None in the order asked. A poller of two keys pays etcd
        one request instead of two."""
        data = await self._post(
            "/v3/kv/txn", {"success": [{"request_range": {"key": _b64(k)}} for k in keys]}
        )
        responses = data.get("responses") or []
        if len(responses) != len(keys):
            raise EtcdUnavailable(
                f"etcd answered {len(responses)} reads for the {len(keys)} keys asked"
            )
        out: list[KeyValue | None] = []
        for key, response in zip(keys, responses, strict=True):
            kvs = (response.get("response_range") or {}).get("kvs") or []
            out.append(
                KeyValue(key, _unb64(kvs[0].get("value", "")), int(kvs[0].get("mod_revision", 0)))
                if kvs
                else None
            )
        return out

    async def put(self, key: str, value: bytes | str) -> int:
        data = await self._post("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})
        return int(data.get("header", {}).get("revision", 0))

    async def delete(self, key: str) -> int:
        data = await self._post("/v3/kv/deleterange", {"key": _b64(key)})
        return int(data.get("deleted", 0))

    async def put_if(self, key: str, value: bytes | str, *, mod_revision: int) -> bool:
        """Compare-and-swap: write only if the key's mod_revision is still `mod_revision`
        (0: only if the key does not exist). Returns whether the write happened."""
        compare = (
            {"key": _b64(key), "target": "CREATE", "create_revision": 0}
            if mod_revision == 0
            else {"key": _b64(key), "target": "MOD", "mod_revision": mod_revision}
        )
        data = await self._post(
            "/v3/kv/txn",
            {
                "compare": [compare],
                "success": [{"request_put": {"key": _b64(key), "value": _b64(value)}}],
            },
        )
        return bool(data.get("succeeded", False))

    async def member_statuses(self) -> list[MemberStatus]:
        """Ask every member for its own status (each call goes to that member alone)."""
        out = []
        for url in self._urls:
            try:
                st = await self._post_one(url, "/v3/maintenance/status", {})
                out.append(
                    MemberStatus(
                        url=url,
                        healthy=True,
                        member_id=str(st.get("header", {}).get("member_id")),
                        leader_id=str(st.get("leader")),
                        raft_term=int(st["raftTerm"]) if "raftTerm" in st else None,
                    )
                )
            except (aiohttp.ClientError, TimeoutError, ValueError, EtcdUnavailable) as exc:
                out.append(MemberStatus(url=url, healthy=False, error=repr(exc)))
        return out

    async def move_leader(
        self, to_url: str, statuses: Sequence[MemberStatus] | None = None
    ) -> bool:
        """Hand etcd's raft leadership to the member at `to_url`; False if it already leads.

        Why: when the raft leader is lost, the new leader renews every lease to its full TTL,
        so a site failure that also takes the etcd leader keeps Patroni's leader key alive
        for about 5 s longer (measured: 24-27 s instead of 20-22 s with ttl 20).

        Who may (#12 item 3): etcd 3.4.23 (Debian bookworm) lets any client move leadership,
        with or without a token (v3rpc/maintenance.go: `authMaintenanceServer.MoveLeader` only
        calls through); etcd 3.4.42+ and 3.5.28+ require an admin (root). There a non-root
        user's move fails with "permission denied" (EtcdRefused): the node never holds root, so
        placement is then done only by the launcher at the end of `up`, and a failover that
        later moves the leader to a data site costs the 5 s above until the next `up`."""
        # `statuses`: a caller that has just asked every member need not ask again.
        by_url = {s.url: s for s in statuses or await self.member_statuses()}
        target = by_url.get(to_url)
        if target is None or not target.healthy or target.member_id is None:
            raise EtcdUnavailable(f"etcd member {to_url} is not healthy; cannot move leadership")
        if target.leader_id == target.member_id:
            return False
        leader_url = next(
            (u for u, s in by_url.items() if s.healthy and s.member_id == target.leader_id),
            None,
        )
        if leader_url is None:
            raise EtcdUnavailable("the etcd leader did not answer; cannot move leadership")
        try:
            await self._post_one(
                leader_url,
                "/v3/maintenance/transfer-leadership",
                {"targetID": target.member_id},
                self._move_timeout,
            )
        except EtcdRefused as exc:
            raise EtcdRefused(
                f"moving etcd's leadership to {to_url} was refused: {exc.error}",
                error=exc.error,
                status=exc.status,
            ) from exc
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise EtcdUnavailable(f"moving etcd's leadership to {to_url} failed: {exc!r}") from exc
        return True

    async def member_names(self) -> dict[str, str]:
        data = await self._post("/v3/cluster/member/list", {})
        return {str(m.get("ID")): str(m.get("name")) for m in data.get("members", [])}
