"""The FastAGI protocol as node.phone.agi reads it (issue 16): Asterisk's answer lines, its
variable block, and the limits that keep a hostile peer from holding the server."""

from __future__ import annotations

import asyncio

import pytest

from node.phone.agi import CallEnded, Reply, parse_reply, quoted, read_environment


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("200 result=1234", Reply(200, "1234", "")),
        ("200 result=1234 (timeout)", Reply(200, "1234", "timeout")),
        ("200 result= (timeout)", Reply(200, "", "timeout")),
        ("200 result=", Reply(200, "", "")),
        ("200 result=0 endpos=16000", Reply(200, "0", "")),
        ("200 result=-1", Reply(200, "-1", "")),
        ("510 Invalid or unknown command", Reply(510, "", "")),
        ("520-Invalid command syntax.  Proper usage follows:", Reply(520, "", "")),
    ],
)
def test_answer_lines(line: str, reply: Reply) -> None:
    """#16: each of Asterisk's answer forms is read as code, result and data."""
    assert parse_reply(line) == reply


@pytest.mark.parametrize("line", ["HANGUP", "511 Command Not Permitted on a dead channel", "junk"])
def test_hangups_and_nonsense_end_the_call(line: str) -> None:
    """#16: a hang-up, a dead channel or an unreadable line ends the call."""
    with pytest.raises(CallEnded):
        parse_reply(line)


def test_arguments_are_quoted() -> None:
    """#16: SET VARIABLE values are quoted with quotes and backslashes escaped."""
    assert quoted('a"b\\c') == '"a\\"b\\\\c"'


def _reader(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=4096)
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


async def test_the_variable_block_ends_at_its_blank_line() -> None:
    """#16: `agi_*` lines up to the blank line, as Asterisk sends them."""
    env = await read_environment(_reader(b"agi_network: yes\nagi_network_script: bundle\n\n"))
    assert env == {"agi_network": "yes", "agi_network_script": "bundle"}


@pytest.mark.parametrize(
    "data",
    [
        b"agi_network: yes\n",  # closed before the blank line (panoramisk spins forever here)
        b"GET / HTTP/1.1\n\n",  # not AGI
        b"agi_x: " + b"y" * 5000 + b"\n\n",  # a line over the limit
        b"".join(b"agi_v%d: 1\n" % i for i in range(300)) + b"\n",  # too many variables
    ],
)
async def test_a_bad_variable_block_ends_the_call(data: bytes) -> None:
    """#16, #10: a peer that is not Asterisk, or a hostile one, is dropped, never waited on."""
    with pytest.raises(CallEnded):
        await read_environment(_reader(data))
