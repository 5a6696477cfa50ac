"""The node's FastAGI server (issue 16): Asterisk hands each call to `agi://<entry>:4573/bundle`.

Serves node.phone.dialogue over node.phone.agi, with node.phone.calls answering its queries.
It listens on both nodes (the topology's `phone` port of each site) and takes calls only on
the active one: the standby says the service is unavailable, sets `ROCARS_RESULT` to
`failed:unavailable` and hangs up, so the dialplan can try again. HAProxy (`mode tcp`) sends
new calls to the active node only, by the same `/health/ready` check as the API.

Every call is bounded: MAX_CALLS at once (the rest hear "unavailable"), CALL_LIMIT_S in all,
and node.phone.agi's limits on each line and answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from node import appkeys
from node.phone import dialogue as d
from node.phone.agi import CallEnded, Channel, quoted, read_environment
from node.phone.calls import CallStores

log = logging.getLogger("rocars.phone")
SCRIPT = "bundle"  # agi://host:port/bundle
MAX_CALLS = 64
CALL_LIMIT_S = 15 * 60.0
PROMPT_FOLDER = "rocars"


def _command(action: d.Action) -> str:
    """The AGI command line of an action that is not a query."""
    if isinstance(action, d.GetData):
        return f"GET DATA {PROMPT_FOLDER}/{action.prompt} {action.timeout_ms} {action.max_digits}"
    if isinstance(action, d.StreamFile):
        return f'STREAM FILE {PROMPT_FOLDER}/{action.prompt} ""'
    if isinstance(action, d.SayAlpha):
        return f'SAY ALPHA {action.text} ""'
    if isinstance(action, d.SayTime):
        return f'SAY TIME {int(action.at.timestamp())} ""'
    if isinstance(action, d.SetVariable):
        return f"SET VARIABLE {action.name} {quoted(action.value)}"
    if isinstance(action, d.Hangup):
        return "HANGUP"
    raise TypeError(f"{type(action).__name__} is a query, not a command")


def _script(env: dict[str, str]) -> str:
    """The path of agi_network_script without slashes or arguments."""
    return env.get("agi_network_script", "").strip("/").split("?", 1)[0]


async def run_call(
    channel: Channel, stores: CallStores, call: d.Call, first: list[d.Action]
) -> d.Call:
    """Drive the dialogue from `call` and its first actions to its end (or the caller's
    hang-up, CallEnded); the call's last state."""
    actions = first
    while True:
        event: d.Event | None = None
        for action in actions:
            if isinstance(action, d.VerifyPin | d.CheckMode | d.CheckCcrn | d.MakeBundle):
                event = await stores.answer(action)
                continue
            reply = await channel.command(_command(action))
            if isinstance(action, d.Hangup):
                return call
            if reply.code != 200:
                raise CallEnded(f"Asterisk refused {_command(action)!r}: {reply.code}")
            if isinstance(action, d.GetData):
                if reply.result == "-1":
                    raise CallEnded("the caller hung up during a prompt")
                event = d.Keys(reply.result, timed_out=reply.data == "timeout")
            elif reply.result == "-1" and not isinstance(action, d.SetVariable):
                raise CallEnded("the caller hung up")
        if event is None:
            raise RuntimeError("the dialogue gave nothing to wait for")
        call, actions = d.step(call, event)


async def _refuse(channel: Channel) -> None:
    for action in (
        d.SetVariable(d.RESULT_VARIABLE, "failed:unavailable"),
        d.StreamFile("service-unavailable"),
        d.Hangup(),
    ):
        await channel.command(_command(action))


class PhoneServer:
    """The FastAGI listener of one node."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._slots = asyncio.Semaphore(MAX_CALLS)
        self._server: asyncio.Server | None = None
        self._calls: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._accept, host, port, limit=4096)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._calls):
            task.cancel()
        await asyncio.gather(*self._calls, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._calls.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._calls.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        channel = Channel(reader, writer)
        calls = self._app[appkeys.METRICS].phone_calls
        try:
            env = await read_environment(reader)
            if _script(env) != SCRIPT:
                log.warning("FastAGI request for unknown script %r", _script(env)[:40])
                await channel.command("HANGUP")
                return
            active = self._app[appkeys.ROLE].role == "active"
            if not active or self._slots.locked():
                calls["refused"].inc()
                await _refuse(channel)
                return
            async with self._slots, asyncio.timeout(CALL_LIMIT_S):
                call, first = d.start(self._app[appkeys.CLOCK]())
                end = await run_call(channel, CallStores(self._app), call, first)
                log.info(
                    "phone call ended: %s",
                    end.result,
                    extra={"event": "phone_call", "result": end.result},
                )
                calls[(end.result or "failed").split(":", 1)[0]].inc()
        except CallEnded as exc:
            calls["hung_up"].inc()
            log.info("phone call ended early: %s", exc)
        except TimeoutError:
            calls["error"].inc()
            log.warning("phone call over %.0f s cut", CALL_LIMIT_S)
        except Exception:
            calls["error"].inc()
            log.exception("phone call failed")


async def phone_ctx(app: web.Application) -> AsyncIterator[None]:
    """The FastAGI server, on the node's `phone_port` (none when the topology gives none)."""
    cfg = app[appkeys.CONFIG]
    if cfg.phone_port is None:
        yield
        return
    server = PhoneServer(app)
    await server.start(cfg.listen_host, cfg.phone_port)
    log.info("FastAGI phone channel on %s:%d", cfg.listen_host, server.port)
    yield
    await server.close()
