"""Moving etcd's leadership through the JSON gateway, against a scripted in-process etcd."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kernel.errors import EtcdUnavailable
from replication.etcd_gateway import EtcdGateway

AiohttpServer = Callable[[web.Application], Awaitable[TestServer]]

# Two members behind one server, told apart by a path prefix: "a" leads, "c" is the witness.
IDS = {"a": "1", "c": "3"}


def fake_etcd(transfer_delay_s: float, transfers: list[str]) -> web.Application:
    async def status(request: web.Request) -> web.Response:
        member = request.match_info["member"]
        return web.json_response({"header": {"member_id": IDS[member]}, "leader": IDS["a"]})

    async def transfer(request: web.Request) -> web.Response:
        body = await request.json()
        transfers.append(f"{request.match_info['member']}->{body['targetID']}")
        await asyncio.sleep(transfer_delay_s)  # etcd answers once the new leader is elected
        return web.json_response({"header": {}})

    app = web.Application()
    app.router.add_post("/{member}/v3/maintenance/status", status)
    app.router.add_post("/{member}/v3/maintenance/transfer-leadership", transfer)
    return app


async def gateway_for(
    aiohttp_server: AiohttpServer,
    s: aiohttp.ClientSession,
    delay: float,
    transfers: list[str],
    *,
    timeout: float,
    move_timeout: float,
) -> tuple[EtcdGateway, str]:
    server = await aiohttp_server(fake_etcd(delay, transfers))
    base = str(server.make_url("")).rstrip("/")
    gw = EtcdGateway(
        s,
        [f"{base}/a", f"{base}/c"],
        timeout=aiohttp.ClientTimeout(total=timeout),
        move_timeout=aiohttp.ClientTimeout(total=move_timeout),
    )
    return gw, f"{base}/c"


async def test_a_transfer_slower_than_an_ordinary_call_still_completes(
    aiohttp_server: AiohttpServer,
) -> None:
    """#11 CI flake (stop 20): a transfer answers only after the election, longer than the
    ordinary call deadline; the move has its own deadline and is not cut off."""
    transfers: list[str] = []
    async with aiohttp.ClientSession() as s:
        gw, witness = await gateway_for(
            aiohttp_server, s, 0.3, transfers, timeout=0.1, move_timeout=5.0
        )
        assert await gw.move_leader(witness) is True
    assert transfers == ["a->3"]


async def test_a_transfer_past_its_deadline_is_an_etcd_error_not_a_bare_timeout(
    aiohttp_server: AiohttpServer,
) -> None:
    """A move cut off by its deadline raises EtcdUnavailable (what the placement loop
    catches), never aiohttp's TimeoutError."""
    transfers: list[str] = []
    async with aiohttp.ClientSession() as s:
        gw, witness = await gateway_for(
            aiohttp_server, s, 1.0, transfers, timeout=1.0, move_timeout=0.05
        )
        with pytest.raises(EtcdUnavailable, match="moving etcd's leadership"):
            await gw.move_leader(witness)
