"""Patroni's REST API: a member's own view, the cluster view, and switchover requests.

Serves: the node's role watcher, cluster status, and the failover controller. Timeouts are short
on purpose: a frozen Patroni (SIGSTOP) must read as "not known to be primary" within a second,
never as a hang (DESIGN.md section 6, the zombie primary).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

from kernel.cluster import Member
from kernel.errors import PatroniUnavailable

DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=0.8, connect=0.4)


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
