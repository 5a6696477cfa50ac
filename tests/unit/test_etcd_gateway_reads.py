"""replication.etcd_gateway.get_many: several keys read in one call, as etcd 3.4's JSON gateway
answers a transaction of reads; against a scripted in-process etcd."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kernel.errors import EtcdUnavailable
from replication.etcd_gateway import EtcdGateway, KeyValue

AiohttpServer = Callable[[web.Application], Awaitable[TestServer]]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _etcd(
    stored: dict[str, tuple[str, int]], asked: list[dict[str, Any]], drop: int = 0
) -> web.Application:
    """Answers /v3/kv/txn's reads from `stored` (key -> (value, mod_revision)) in the gateway's
    shape (numbers as strings, a missing key without `kvs`), keeping each body in `asked`;
    `drop` leaves that many answers out."""

    async def txn(request: web.Request) -> web.Response:
        body = await request.json()
        asked.append(body)
        responses = []
        for op in body.get("success", []):
            key = base64.b64decode(op["request_range"]["key"]).decode()
            rng: dict[str, Any] = {"header": {"revision": "9"}}
            if key in stored:
                value, rev = stored[key]
                rng["kvs"] = [{"key": _b64(key), "value": _b64(value), "mod_revision": str(rev)}]
                rng["count"] = "1"
            responses.append({"response_range": rng})
        kept = responses[: len(responses) - drop]
        return web.json_response({"header": {}, "succeeded": True, "responses": kept})

    app = web.Application()
    app.router.add_post("/v3/kv/txn", txn)
    return app


async def test_reads_every_key_in_one_transaction_in_the_order_asked(
    aiohttp_server: AiohttpServer,
) -> None:
    """One request carries a read of each key (no compare: the reads always run, together, in
    one snapshot); the answer has each key's value and revision, None for a missing one, in
    the order the keys were asked."""
    asked: list[dict[str, Any]] = []
    server = await aiohttp_server(_etcd({"/a": ("one", 5), "/c": ("three", 7)}, asked))
    async with aiohttp.ClientSession() as s:
        gw = EtcdGateway(s, [str(server.make_url("")).rstrip("/")])
        got = await gw.get_many(["/c", "/b", "/a"])
    assert got == [KeyValue("/c", b"three", 7), None, KeyValue("/a", b"one", 5)]
    assert asked == [{"success": [{"request_range": {"key": _b64(k)}} for k in ("/c", "/b", "/a")]}]


async def test_an_answer_short_of_reads_is_an_unavailable_etcd(
    aiohttp_server: AiohttpServer,
) -> None:
    """An answer with fewer reads than keys asked is not taken for missing keys: the caller
    gets EtcdUnavailable, as when no member answers, and keeps what it had."""
    server = await aiohttp_server(_etcd({"/a": ("one", 5)}, [], drop=1))
    async with aiohttp.ClientSession() as s:
        gw = EtcdGateway(s, [str(server.make_url("")).rstrip("/")])
        with pytest.raises(EtcdUnavailable, match="1 reads for the 2 keys"):
            await gw.get_many(["/a", "/b"])
