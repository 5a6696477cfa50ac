"""Patroni's REST API: a member's own view, the cluster view, and switchover requests.

Serves: the node's role watcher, cluster status, and the failover controller. Timeouts are short
on purpose: a frozen Patroni (SIGSTOP) must read as "not known to be primary" within a second,
never as a hang (DESIGN.md section 6, the zombie primary).

Authentication (#12 item 3): Patroni checks `restapi.authentication` (HTTP basic auth) on every
unsafe method (its handlers decorated `check_access`: POST /switchover, /failover, /restart,
/reinitialize, /reload, PATCH and PUT /config, DELETE /switchover and /restart). GETs stay open,
for Prometheus (/metrics), the readiness checks and `rocars cluster status` (/cluster,
/patroni, /primary...). So credentials go with the unsafe requests only, and Patroni's refusal
of them (401, or 403) becomes a ConfigError naming what to fix.

TLS (#12 item 2): Patroni serves its REST API over TLS only and asks every client for a
certificate signed by the system's CA (`restapi.verify_client: required`), so the client is
given the SSLContext to dial with (kernel.tls.client_context with the caller's role
certificate); an `https://` URL without one is a ConfigError, never a silent fallback to the
system's trust store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from ssl import SSLContext
from typing import Any

import aiohttp

from kernel.cluster import Member
from kernel.errors import ConfigError, PatroniUnavailable

DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=0.8, connect=0.4)
# The one user of Patroni's REST API for unsafe methods (`restapi.authentication.username`);
# its password is the "patroni-rest" secret (deploy.state.StateDir.secret_file).
PATRONI_REST_USER = "rocars-admin"


@dataclass(frozen=True)
class RestCredentials:
    """Basic-auth credentials for Patroni's unsafe methods; the password stays out of repr()
    (and so out of logs and tracebacks)."""

    username: str
    password: str = field(repr=False)

    @property
    def header(self) -> str:
        """The `Authorization` header's value."""
        return aiohttp.encode_basic_auth(self.username, self.password)


def read_credentials(password_file: Path, username: str = PATRONI_REST_USER) -> RestCredentials:
    """Credentials for Patroni's unsafe methods, the password read from its own file (given by
    path, so it never appears in a configuration file, argv or the environment)."""
    try:
        password = password_file.read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read Patroni's REST password file {password_file}: {exc.strerror}; "
            "run 'rocars cluster up' to generate it"
        ) from exc
    if not password:
        raise ConfigError(f"Patroni's REST password file {password_file} is empty")
    return RestCredentials(username, password)


@dataclass(frozen=True)
class MemberView:
    """One member's answer from `GET /patroni`: what the role watcher needs of it."""

    role: str  # "primary" | "replica" | "standby_leader" | "uninitialized" | ...
    state: str  # "running" | "streaming" | "stopped" | "starting" | ...
    paused: bool


@dataclass(frozen=True)
class PatroniCluster:
    """One member's answer from `GET /cluster`: the members it knows and the pause flag.

    It names no leader on purpose: an isolated member's view can be stale (DESIGN.md section
    6), so who leads comes from a quorum read of the leader key instead."""

    members: tuple[Member, ...]
    paused: bool


def _lag(value: Any) -> int | None:
    # Patroni reports lag as bytes, or "unknown" when it cannot compute it.
    return int(value) if isinstance(value, int | float) else None


class PatroniRest:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
        auth: RestCredentials | None = None,
        ssl: SSLContext | None = None,
    ) -> None:
        """`auth`: sent with the unsafe requests only (GETs need none, and carrying the
        password on every role-watcher poll would only widen where it travels). `ssl`: the
        context to dial `https://` members with (required for them)."""
        self._session = session
        self._timeout = timeout
        self._auth = auth
        self._ssl = ssl

    def _tls(self, url: str) -> SSLContext | bool:
        """What to pass aiohttp as `ssl` for `url`."""
        if self._ssl is not None:
            return self._ssl
        if url.startswith("https://"):
            raise ConfigError(
                f"{url}: Patroni over https needs a TLS context (kernel.tls.client_context)"
            )
        return True

    async def _get(self, url: str) -> tuple[int, dict[str, Any]]:
        tls = self._tls(url)
        try:
            async with self._session.get(url, timeout=self._timeout, ssl=tls) as r:
                data = await r.json(content_type=None)
                return r.status, data if isinstance(data, dict) else {}
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise PatroniUnavailable(f"{url}: {exc!r}") from exc

    async def is_primary(self, base_url: str) -> bool:
        """The member answers 200 on GET /primary: it runs as the primary with the lock."""
        status, _ = await self._get(f"{base_url}/primary")
        return status == 200

    async def member(self, base_url: str) -> MemberView:
        _, d = await self._get(f"{base_url}/patroni")
        return MemberView(
            role=str(d.get("role", "unknown")),
            state=str(d.get("state", "unknown")),
            paused=bool(d.get("pause", False)),
        )

    async def cluster(self, base_url: str) -> PatroniCluster:
        _, d = await self._get(f"{base_url}/cluster")
        members = tuple(
            Member(
                name=str(m.get("name")),
                role=str(m.get("role")),
                state=str(m.get("state")),
                lag_bytes=_lag(m.get("lag", 0 if m.get("role") == "leader" else None)),
                timeline=m.get("timeline"),
            )
            for m in d.get("members", [])
        )
        return PatroniCluster(members=members, paused=bool(d.get("pause", False)))

    async def _unsafe(
        self, method: str, url: str, *, json: Any = None, timeout_s: float
    ) -> tuple[int, str]:
        """An unsafe request with the credentials; (HTTP status, Patroni's message). Raises
        ConfigError when Patroni refuses the credentials, PatroniUnavailable when it does not
        answer."""
        tls = self._tls(url)
        try:
            async with self._session.request(
                method,
                url,
                json=json,
                headers={} if self._auth is None else {"Authorization": self._auth.header},
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                ssl=tls,
            ) as r:
                status, text = r.status, (await r.text()).strip()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PatroniUnavailable(f"{url}: {exc!r}") from exc
        if status in (401, 403):
            given = "no credentials" if self._auth is None else f"user {self._auth.username!r}"
            raise ConfigError(
                f"Patroni refused {method} {url} ({status} {text}) with {given}: the caller "
                "needs Patroni's REST credentials (the 'patroni-rest' secret, which is "
                "restapi.authentication in patroni.yaml); regenerate them with "
                "'rocars cluster up'"
            )
        return status, text

    async def switchover(
        self, base_url: str, *, leader: str, candidate: str, timeout_s: float = 30.0
    ) -> tuple[int, str]:
        """Ask Patroni for a planned switchover; returns (HTTP status, Patroni's message)."""
        return await self._unsafe(
            "POST",
            f"{base_url}/switchover",
            json={"leader": leader, "candidate": candidate},
            timeout_s=timeout_s,
        )

    async def dynamic_config(self, base_url: str) -> dict[str, Any]:
        """The cluster-wide settings Patroni keeps in the DCS (GET /config)."""
        status, data = await self._get(f"{base_url}/config")
        if status != 200:
            raise PatroniUnavailable(f"{base_url}/config answered {status}")
        return data

    async def patch_dynamic_config(
        self, base_url: str, changes: dict[str, Any], *, timeout_s: float = 10.0
    ) -> tuple[int, str]:
        """Change cluster-wide settings (PATCH /config); every member applies them on its next
        loop."""
        return await self._unsafe("PATCH", f"{base_url}/config", json=changes, timeout_s=timeout_s)

    async def reload(self, base_url: str, *, timeout_s: float = 10.0) -> tuple[int, str]:
        """Ask a member to reread its configuration file (POST /reload)."""
        return await self._unsafe("POST", f"{base_url}/reload", timeout_s=timeout_s)
