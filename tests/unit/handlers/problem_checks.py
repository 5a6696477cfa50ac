"""Requests against the in-process node, and what every problem answer must look like."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from route_table import Route

PROBLEM_JSON = "application/problem+json"
Client = TestClient[web.Request, web.Application]
AiohttpClient = Callable[[web.Application], Awaitable[Client]]


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    content_type: str
    body: Any

    def fields(self) -> list[str]:
        return [e["field"] for e in (self.body or {}).get("errors") or []]


async def call(
    client: Client,
    route: Route,
    *,
    headers: dict[str, str] | None = None,
    url: str | None = None,
    data: bytes | str | None = "valid",
    method: str | None = None,
) -> Answer:
    """`route` with its valid body unless `data` says otherwise."""
    body = route.data() if data == "valid" else data
    hdrs = dict(headers or {})
    if body is not None and "Content-Type" not in hdrs:
        hdrs["Content-Type"] = "application/json"
    # aiohttp warns that a large bytes body blocks the loop; a stream does not.
    payload = io.BytesIO(body) if body is not None and len(body) > 2**18 else body
    async with client.request(
        method or route.method, url or route.url, data=payload, headers=hdrs
    ) as resp:
        raw = await resp.read()
        parsed = None
        if raw and resp.content_type.endswith("json"):
            parsed = await resp.json(content_type=None)
        return Answer(resp.status, dict(resp.headers), resp.content_type, parsed)


def assert_problem(answer: Answer, status: int, *, field: str | None = None) -> None:
    """An RFC 9457 document whose status is `status`, naming `field` when given."""
    assert answer.status == status, answer
    assert answer.content_type == PROBLEM_JSON, answer
    assert answer.body["status"] == status, answer
    assert answer.body["title"], answer
    assert answer.body["detail"], answer
    if field is not None:
        assert field in answer.fields(), answer
