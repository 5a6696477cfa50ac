"""etcd through its v3 JSON gateway (`/v3/kv/...`, `/v3/maintenance/...`), with aiohttp: no gRPC
stack.

Serves: the node's role watcher (leader key), cluster status, and contingency mode storage.
Reads are linearizable (etcd's default) so an isolated member cannot hand us a stale leader:
its minority view fails instead (DESIGN.md section 6).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from kernel.errors import EtcdUnavailable

DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=1.0, connect=0.5)
# etcd answers a leadership transfer only once the transferee has caught up and won its
# election: several election timeouts (1 s each) on a loaded machine. A 1 s deadline cut a
# transfer that then went through anyway (CI, stop 20).
MOVE_TIMEOUT = aiohttp.ClientTimeout(total=5.0, connect=0.5)


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


class EtcdGateway:
    """A small client over several etcd members: each call tries members in turn."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        urls: Sequence[str],
        *,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
        move_timeout: aiohttp.ClientTimeout = MOVE_TIMEOUT,
    ) -> None:
        if not urls:
            raise ValueError("at least one etcd URL is needed")
        self._session = session
        self._urls = list(urls)
        self._timeout = timeout
        self._move_timeout = move_timeout

    async def _post_one(
        self,
        url: str,
        path: str,
        body: dict[str, Any],
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> dict[str, Any]:
        async with self._session.post(
            f"{url}{path}", json=body, timeout=timeout or self._timeout
        ) as r:
            data: dict[str, Any] = await r.json(content_type=None)
            if r.status != 200:
                raise EtcdUnavailable(f"{url}{path}: HTTP {r.status}: {data.get('message')}")
            return data

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        errors = []
        for url in self._urls:
            try:
                return await self._post_one(url, path, body)
            except (aiohttp.ClientError, TimeoutError, ValueError, EtcdUnavailable) as exc:
                errors.append(f"{url}: {exc!r}")
        raise EtcdUnavailable("no etcd member answered: " + "; ".join(errors))

    async def get(self, key: str) -> KeyValue | None:
        data = await self._post("/v3/kv/range", {"key": _b64(key)})
        kvs = data.get("kvs") or []
        if not kvs:
            return None
        kv = kvs[0]
        return KeyValue(key, _unb64(kv.get("value", "")), int(kv.get("mod_revision", 0)))

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
        for about 5 s longer (measured: 24-27 s instead of 20-22 s with ttl 20)."""
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
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise EtcdUnavailable(f"moving etcd's leadership to {to_url} failed: {exc!r}") from exc
        return True

    async def member_names(self) -> dict[str, str]:
        data = await self._post("/v3/cluster/member/list", {})
        return {str(m.get("ID")): str(m.get("name")) for m in data.get("members", [])}
