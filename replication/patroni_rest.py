"""Patroni's REST API: a member's own view, the cluster view, and switchover requests.

Serves: the node's role watcher, cluster status, and the failover controller. Timeouts are short
on purpose: a frozen Patroni (SIGSTOP) must read as "not known to be primary" within a second,
never as a hang (DESIGN.md section 6, the zombie primary).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp

from kernel.errors import PatroniUnavailable

DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=0.8, connect=0.4)


@dataclass(frozen=True)
class MemberView:
    """One member's answer from `GET /patroni`."""

    name: str
    role: str  # "primary" | "replica" | "standby_leader" | "uninitialized" | ...
    state: str  # "running" | "streaming" | "stopped" | "starting" | ...
    timeline: int | None
    paused: bool
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def is_running_primary(self) -> bool:
        return self.role in ("primary", "master") and self.state == "running"


@dataclass(frozen=True)
class ClusterMember:
    name: str
    role: str  # "leader" | "sync_standby" | "replica" | ...
    state: str
    host: str | None
    port: int | None
    lag: int | None
    timeline: int | None
    api_url: str | None


@dataclass(frozen=True)
class ClusterView:
    members: tuple[ClusterMember, ...]
    paused: bool

    @property
    def leader(self) -> str | None:
        return next((m.name for m in self.members if m.role == "leader"), None)


def _lag(value: Any) -> int | None:
    # Patroni reports lag as bytes, or "unknown" when it cannot compute it.
    return int(value) if isinstance(value, int | float) else None


class PatroniRest:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
    ) -> None:
        self._session = session
        self._timeout = timeout

    async def _get(self, url: str) -> tuple[int, dict[str, Any]]:
        try:
            async with self._session.get(url, timeout=self._timeout) as r:
                data = await r.json(content_type=None)
                return r.status, data if isinstance(data, dict) else {}
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise PatroniUnavailable(f"{url}: {exc!r}") from exc

    async def member(self, base_url: str) -> MemberView:
        _, d = await self._get(f"{base_url}/patroni")
        return MemberView(
            name=str(d.get("patroni", {}).get("name", "")),
            role=str(d.get("role", "unknown")),
            state=str(d.get("state", "unknown")),
            timeline=d.get("timeline"),
            paused=bool(d.get("pause", False)),
            raw=d,
        )

    async def cluster(self, base_url: str) -> ClusterView:
        _, d = await self._get(f"{base_url}/cluster")
        members = tuple(
            ClusterMember(
                name=str(m.get("name")),
                role=str(m.get("role")),
                state=str(m.get("state")),
                host=m.get("host"),
                port=m.get("port"),
                lag=_lag(m.get("lag", 0 if m.get("role") == "leader" else None)),
                timeline=m.get("timeline"),
                api_url=m.get("api_url"),
            )
            for m in d.get("members", [])
        )
        return ClusterView(members=members, paused=bool(d.get("pause", False)))

    async def switchover(
        self, base_url: str, *, leader: str, candidate: str, timeout_s: float = 30.0
    ) -> tuple[int, str]:
        """Ask Patroni for a planned switchover; returns (HTTP status, Patroni's message)."""
        try:
            async with self._session.post(
                f"{base_url}/switchover",
                json={"leader": leader, "candidate": candidate},
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as r:
                return r.status, (await r.text()).strip()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PatroniUnavailable(f"{base_url}/switchover: {exc!r}") from exc
