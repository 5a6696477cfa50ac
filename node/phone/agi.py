"""The FastAGI protocol, server side, over asyncio streams (what node.phone.agi_server speaks).

Asterisk connects, sends its `agi_*` variables one `name: value` line each and a blank line,
then answers each command line with `200 result=<value>[ (<data>)][ endpos=<n>]`; `HANGUP`
on a line of its own says the caller hung up (the next answers are then `511`). 510 and 520
(a multi-line usage text ending `520 End of proper usage.`) answer a command it does not take.

Written here rather than taken from panoramisk 1.4's FastAGI server, which loops without end
on a connection closed before the blank line (`reader.read` answers b"" forever), keeps an
unbounded header buffer, has no timeouts, swallows CancelledError with BaseException, and is
untyped; the protocol itself is these few lines.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

MAX_LINE = 2048
MAX_ENV_LINES = 200
ENV_TIMEOUT_S = 10.0
# An answer to GET DATA comes after its prompt plus the entry timeout; anything slower is a
# stuck peer.
REPLY_TIMEOUT_S = 120.0
_REPLY = re.compile(r"^(\d{3})[ -](?:result=(\S*))?\s*(?:\(([^)]*)\))?.*$")


class CallEnded(Exception):
    """The caller hung up, or Asterisk went away or answered nonsense: the call is over."""


@dataclass(frozen=True)
class Reply:
    code: int
    result: str
    data: str  # the text in parentheses: "timeout" after GET DATA ran out of time


def parse_reply(line: str) -> Reply:
    """One answer line (without its newline); CallEnded for a hang-up or an unreadable line."""
    if line == "HANGUP":
        raise CallEnded("the caller hung up")
    m = _REPLY.match(line)
    if m is None:
        raise CallEnded(f"not an AGI answer: {line[:80]!r}")
    code = int(m.group(1))
    if code == 511:
        raise CallEnded("the channel is dead")
    return Reply(code, m.group(2) or "", m.group(3) or "")


async def _line(reader: asyncio.StreamReader, timeout_s: float) -> str:
    try:
        async with asyncio.timeout(timeout_s):
            raw = await reader.readline()
    except TimeoutError as exc:
        raise CallEnded("Asterisk did not answer in time") from exc
    except (ValueError, asyncio.LimitOverrunError) as exc:  # a line over the stream's limit
        raise CallEnded("a line too long") from exc
    if not raw.endswith(b"\n"):
        raise CallEnded("the connection closed")
    return raw.decode("utf-8", "replace").rstrip("\r\n")


async def read_environment(reader: asyncio.StreamReader) -> dict[str, str]:
    """The `agi_*` block up to its blank line, within ENV_TIMEOUT_S and MAX_ENV_LINES."""
    env: dict[str, str] = {}
    async with asyncio.timeout(ENV_TIMEOUT_S):
        for _ in range(MAX_ENV_LINES):
            line = await _line(reader, ENV_TIMEOUT_S)
            if not line:
                return env
            name, sep, value = line.partition(": ")
            if not sep or not name.startswith("agi_"):
                raise CallEnded(f"not an AGI variable line: {line[:80]!r}")
            env[name] = value
    raise CallEnded(f"more than {MAX_ENV_LINES} AGI variables")


def quoted(text: str) -> str:
    """An AGI argument: double-quoted, with quotes and backslashes escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Channel:
    """One call's connection: send a command, read its answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def command(self, line: str) -> Reply:
        if "\n" in line or "\r" in line:
            raise ValueError("an AGI command is one line")
        self._writer.write(line.encode() + b"\n")
        try:
            await self._writer.drain()
        except ConnectionError as exc:
            raise CallEnded("the connection closed") from exc
        while True:
            reply = parse_reply(await _line(self._reader, REPLY_TIMEOUT_S))
            if reply.code == 100:  # "100 result=0 Trying..."; the real answer follows
                continue
            if reply.code == 520:
                await self._skip_usage(reply)
            return reply

    async def _skip_usage(self, first: Reply) -> None:
        # "520-Invalid command syntax.  Proper usage follows:" ... "520 End of proper usage."
        for _ in range(100):
            line = await _line(self._reader, REPLY_TIMEOUT_S)
            if line.startswith("520 "):
                return
        raise CallEnded("an endless usage text")
