"""An Asterisk stand-in for the phone channel's tests: it places one call on a FastAGI server
and answers the server's commands the way Asterisk does (issue 16).

Asterisk connects and sends its `agi_*` variables, one `name: value` line each, ended by a
blank line; then it answers each command line with one line: `200 result=<digits>` to GET DATA
(the keys before `#`, which ends the entry and is not included; ` (timeout)` appended when the
caller stopped keying without `#`), `200 result=0 endpos=<n>` to STREAM FILE, `200 result=0` to
SAY ALPHA / SAY DIGITS / SAY TIME, `200 result=1` to SET VARIABLE and HANGUP, and
`510 Invalid or unknown command` to anything else. A caller who hangs up is a closed socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from dataclasses import dataclass, field


@dataclass
class CallRecord:
    commands: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    hung_up_by_server: bool = False

    def played(self) -> list[str]:
        """The prompts asked or played, in order (GET DATA and STREAM FILE)."""
        out = []
        for c in self.commands:
            parts = c.split()
            if c.startswith(("GET DATA ", "STREAM FILE ")):
                out.append(parts[2])
        return out

    def said(self, verb: str) -> list[str]:
        """The arguments of every `SAY <verb>` command."""
        return [c.split()[2] for c in self.commands if c.startswith(f"SAY {verb} ")]

    @property
    def result(self) -> str | None:
        return self.variables.get("ROCARS_RESULT")


def environment(host: str, port: int, script: str = "bundle") -> bytes:
    lines = {
        "agi_network": "yes",
        "agi_network_script": script,
        "agi_request": f"agi://{host}:{port}/{script}",
        "agi_channel": "PJSIP/trunk-00000042",
        "agi_language": "en",
        "agi_type": "PJSIP",
        "agi_uniqueid": "1767225600.42",
        "agi_version": "20.5.0",
        "agi_callerid": "85291234567",
        "agi_calleridname": "unknown",
        "agi_callingpres": "0",
        "agi_callingani2": "0",
        "agi_callington": "0",
        "agi_callingtns": "0",
        "agi_dnid": "18001234",
        "agi_rdnis": "unknown",
        "agi_context": "rocars",
        "agi_extension": "18001234",
        "agi_priority": "2",
        "agi_enhanced": "0.0",
        "agi_accountcode": "",
        "agi_threadid": "140230001",
    }
    return "".join(f"{k}: {v}\n" for k, v in lines.items()).encode() + b"\n"


TIMEOUT = "<timeout>"  # a GET DATA with nothing keyed


async def place_call(
    host: str,
    port: int,
    keys: list[str],
    *,
    cut_after_prompts: int | None = None,
    cut_at: str | None = None,
    timeout_s: float = 60.0,
) -> CallRecord:
    """Call the server; each GET DATA takes the next entry of `keys` (`"1234#"`, `"#"` alone,
    TIMEOUT, or keys without `#`, answered as timed out). No keys left, `cut_after_prompts` GET
    DATAs answered, or a command starting with `cut_at`: the caller hangs up (the socket
    closes)."""
    record = CallRecord()
    reader, writer = await asyncio.open_connection(host, port)
    answered = 0
    try:
        writer.write(environment(host, port))
        await writer.drain()
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await reader.readline()
                if not raw:
                    return record
                line = raw.decode().rstrip("\n")
                record.commands.append(line)
                if cut_at is not None and line.startswith(cut_at):
                    return record  # the caller hangs up before hearing this
                verb = " ".join(line.split()[:2]).upper()
                if verb == "GET DATA":
                    if not keys or (
                        cut_after_prompts is not None and answered >= cut_after_prompts
                    ):
                        return record  # the caller hangs up: the connection closes
                    entry = keys.pop(0)
                    answered += 1
                    if entry == TIMEOUT:
                        reply = "200 result= (timeout)"
                    elif entry.endswith("#"):
                        reply = f"200 result={entry[:-1]}"
                    else:
                        reply = f"200 result={entry} (timeout)"
                elif verb == "STREAM FILE":
                    reply = "200 result=0 endpos=16000"
                elif verb in ("SAY ALPHA", "SAY DIGITS", "SAY TIME", "SAY NUMBER"):
                    reply = "200 result=0"
                elif verb == "SET VARIABLE":
                    _, _, name, value = shlex.split(line)
                    record.variables[name] = value
                    reply = "200 result=1"
                elif line.upper() == "HANGUP":
                    record.hung_up_by_server = True
                    writer.write(b"200 result=1\n")
                    await writer.drain()
                    return record
                else:
                    reply = "510 Invalid or unknown command"
                writer.write(reply.encode() + b"\n")
                await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
