"""Helpers for the e-ACI API tests (issue 3): an HTTP caller that refuses any 5xx, request-body
builders, problem-document assertions, the database moves that simulate time passing, and, for
the outage stories, stopping both databases and waiting for the nodes' key caches.

Fixtures live in conftest.py next to this module; test modules import these helpers by name
(pytest puts this folder on sys.path, as it has no __init__.py).
"""

from __future__ import annotations

import asyncio
import io
import json as jsonlib
import os
import re
import secrets
import signal
import string
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import aiohttp
import psutil
import psycopg
from multidict import CIMultiDictProxy

from contingency.keycache import KeyCache
from deploy import processes
from deploy.harness import LocalCluster
from kernel.domain.lbcp import HK_TZ

PROBLEM_JSON = "application/problem+json"
PROBLEM_KEYS = ("type", "title", "status", "detail")
_NOTSET: Any = object()


@dataclass(frozen=True)
class Account:
    id: int
    kind: str
    name: str
    key: str


@dataclass(frozen=True)
class Accounts:
    officer: Account
    trader: Account
    trader2: Account
    trucker: Account
    trucker2: Account


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    content_type: str
    text: str
    node: str | None

    @property
    def json(self) -> Any:
        return jsonlib.loads(self.text)


@dataclass
class Api:
    """Calls the service; every answer is checked: no 5xx unless a test explicitly allows 503."""

    session: aiohttp.ClientSession
    base: str
    seen: list[tuple[str, str, int]] = field(default_factory=list)

    async def call(
        self,
        method: str,
        path: str,
        key: str | None = None,
        *,
        json: Any = _NOTSET,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        base: str | None = None,
        allow_503: bool = False,
    ) -> Reply:
        hdrs = dict(headers or {})
        if key is not None:
            hdrs["Authorization"] = f"Bearer {key}"
        kwargs: dict[str, Any] = {"headers": hdrs}
        if json is not _NOTSET:
            kwargs["data"] = jsonlib.dumps(json)
            hdrs.setdefault("Content-Type", "application/json")
        elif data is not None:
            kwargs["data"] = data
        raw = kwargs.get("data")
        if raw is not None and len(raw) > 512 * 1024:
            # aiohttp warns (an error under filterwarnings) about sending large raw bytes.
            kwargs["data"] = io.BytesIO(raw.encode() if isinstance(raw, str) else raw)
        async with self.session.request(method, (base or self.base) + path, **kwargs) as r:
            text = await r.text(errors="replace")
            reply = Reply(r.status, r.headers, r.content_type, text, r.headers.get("X-Rocars-Node"))
        self.seen.append((method, path, r.status))
        if allow_503:
            assert reply.status < 500 or reply.status == 503, (method, path, reply.text)
        else:
            assert reply.status < 500, (method, path, reply.status, reply.text)
        return reply

    async def get(self, path: str, key: str | None = None, **kw: Any) -> Reply:
        return await self.call("GET", path, key, **kw)

    async def post(self, path: str, key: str | None = None, **kw: Any) -> Reply:
        return await self.call("POST", path, key, **kw)

    async def patch(self, path: str, key: str | None = None, **kw: Any) -> Reply:
        return await self.call("PATCH", path, key, **kw)

    async def delete(self, path: str, key: str | None = None, **kw: Any) -> Reply:
        return await self.call("DELETE", path, key, **kw)


# ---------------------------------------------------------------------------------------------
# Request bodies and assertions


REQUIRED_FIELDS = (
    "direction",
    "lbcp",
    "package_count",
    "package_description",
    "article_description",
    "consignor_name",
    "consignor_address",
    "consignee_name",
    "consignee_address",
    "expected_at",
)


def iso_in(lead: timedelta, *, now: datetime | None = None) -> str:
    """ISO 8601 in Hong Kong time (with its +08:00 offset), `lead` after now."""
    return ((now or datetime.now(UTC)) + lead).astimezone(HK_TZ).isoformat()


def consignment_body(lead: timedelta = timedelta(hours=2), **overrides: Any) -> dict[str, Any]:
    """A valid e-ACI submission whose expected_at is `lead` after now; overrides win."""
    body: dict[str, Any] = {
        "direction": "import",
        "lbcp": "LMC",
        "package_count": 12,
        "package_description": "cartons on 2 pallets",
        "article_description": "cotton T-shirts",
        "consignor_name": "Shenzhen Garment Works Ltd",
        "consignor_address": "8 Industrial Road, Longgang, Shenzhen",
        "consignee_name": "Kowloon Apparel Trading Co",
        "consignee_address": "22 Canton Road, Tsim Sha Tsui, Kowloon",
        "expected_at": iso_in(lead),
    }
    body.update(overrides)
    return body


def token() -> str:
    """A unique word for keyword rules and watch-lists, so rules hit only this test's cargo."""
    return "zq" + uuid.uuid4().hex[:12]


def new_vrn() -> str:
    """A fresh vehicle registration mark (8 characters, canonical form)."""
    alphabet = string.ascii_uppercase + string.digits
    return "T" + "".join(secrets.choice(alphabet) for _ in range(7))


def assert_problem(reply: Reply, status: int, *fields: str) -> dict[str, Any]:
    """The answer is an RFC 9457 problem with this status naming at least `fields`."""
    assert reply.status == status, (reply.status, reply.text)
    assert reply.content_type == PROBLEM_JSON, reply.content_type
    doc = reply.json
    assert isinstance(doc, dict)
    for k in PROBLEM_KEYS:
        assert k in doc, (k, doc)
    assert doc["status"] == status
    assert isinstance(doc["detail"], str)
    assert doc["detail"]
    if fields:
        assert isinstance(doc.get("errors"), list), doc
        named = {e["field"] for e in doc["errors"]}
        assert set(fields) <= named, (fields, doc["errors"])
        assert all(isinstance(e.get("message"), str) and e["message"] for e in doc["errors"])
    return doc


async def submit(api: Api, key: str, **overrides: Any) -> dict[str, Any]:
    """Submit a valid consignment (with overrides) and return the stored record."""
    lead = overrides.pop("lead", timedelta(hours=2))
    r = await api.post("/v1/consignments", key, json=consignment_body(lead, **overrides))
    assert r.status == 201, r.text
    doc: dict[str, Any] = r.json
    return doc


async def bundle(
    api: Api, key: str, ccrns: list[str], *, lbcp: str = "LMC", vrn: str | None = None
) -> dict[str, Any]:
    """Bundle CCRNs with a (fresh) vehicle and return the bundle."""
    r = await api.post(
        "/v1/bundles", key, json={"vrn": vrn or new_vrn(), "lbcp": lbcp, "ccrns": ccrns}
    )
    assert r.status == 201, r.text
    doc: dict[str, Any] = r.json
    return doc


async def backdate_consignments(
    db: psycopg.AsyncConnection[Any], ccrns: list[str], by: timedelta
) -> None:
    """Simulate time passing: move the consignments' last change `by` into the past."""
    await db.execute(
        "UPDATE consignments SET last_changed_at = last_changed_at - %s WHERE ccrn = ANY(%s)",
        (by, ccrns),
    )


async def open_gate(db: psycopg.AsyncConnection[Any], bundle_id: int) -> None:
    """Simulate the 30-minute profiling window having passed for a bundle (not_before -> past)."""
    await db.execute(
        "UPDATE bundles SET not_before = now() - interval '1 second' WHERE id = %s", (bundle_id,)
    )


def kill_databases(c: LocalCluster) -> None:
    """SIGKILL Patroni and PostgreSQL on both sites; returns once they are gone."""
    killed = []
    for site in c.topo.data_sites:
        for pid in (
            c.pid(f"patroni-{site}"),
            processes.postmaster_pid(c.state.member_dir(site) / "data"),
        ):
            if pid:
                killed.append(psutil.Process(pid))
                os.kill(pid, signal.SIGKILL)
    _, alive = psutil.wait_procs(killed, timeout=10)
    assert not alive, alive


async def keys_cached(c: LocalCluster, keys: list[str], timeout: float = 30) -> None:
    """Wait until every node's on-disk key cache verifies `keys` (auth without a database)."""
    folder = c.state.root / "contingency"
    caches = [KeyCache(folder / f"keycache-{site}.json") for site in c.topo.data_sites]
    give_up = time.monotonic() + timeout
    while not all(cache.verify(key) is not None for cache in caches for key in keys):
        assert time.monotonic() < give_up, "a key is not in every node's key cache"
        await asyncio.sleep(0.2)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def node_metric(session: aiohttp.ClientSession, node_url: str, name: str) -> float:
    """The value of the unlabelled series `name` on a node's /metrics."""
    async with session.get(node_url + "/metrics") as r:
        text = await r.text()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert m is not None, name
    return float(m.group(1))


T = TypeVar("T")


async def until(
    what: str, probe: Callable[[], Awaitable[T | None]], timeout_s: float
) -> tuple[T, float]:
    """Poll `probe` every 0.5 s until it returns something true; (that, seconds it took).
    Fails naming `what` and the last answer."""
    t0 = time.monotonic()
    last: T | None = None
    while time.monotonic() - t0 < timeout_s:
        last = await probe()
        if last:
            return last, time.monotonic() - t0
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what} not seen within {timeout_s:.0f}s (last: {last})")
