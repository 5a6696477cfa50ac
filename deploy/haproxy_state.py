"""The servers' state a reloaded HAProxy hands to the process that takes over from it.

A new HAProxy process starts with every server up, and its first failed check marks a standby
node down with `on-marked-down shutdown-sessions`, which cuts the requests the new process had
meanwhile sent there: measured on the running system under 4 writers, 5 of 10 reloads marked
the standby down with 1-2 sessions on it, and one cost a client a connection closed without an
answer (`certs rotate` under load in CI, stop 34). So before a new process
starts, the running one's view (`show servers state` on its admin socket) is written where the
new one reads it (`server-state-file`), and the new process starts where the old one was:
standby down, active node up.

HAProxy also takes each server's address and port from that file over its configuration
(measured, 2.6: a server moved to another port in the file kept the old port), so a line is
kept only for a server the new configuration has at the same address and port; a moved or
new server starts as on a first start.
"""

from __future__ import annotations

import contextlib
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from deploy.state import StateDir
from kernel.files import write_atomically

# How long the running process may take to answer on its admin socket (a few ms when well).
ANSWER_S = 2.0
_SERVER = re.compile(r"^\s+server\s+(\S+)\s+(\S+):(\d+)(?:\s|$)")
_SECTION = re.compile(r"^(\S+)(?:\s+(\S+))?")


@dataclass(frozen=True)
class ServerState:
    """A HAProxy process's admin socket (`stats socket`, mode 0600, in the run folder) and the
    file its successor reads the servers' state from."""

    socket: Path
    file: Path


def for_process(state: StateDir, name: str) -> ServerState:
    """`haproxy` -> run/haproxy.sock and run/haproxy.servers."""
    return ServerState(state.run / f"{name}.sock", state.run / f"{name}.servers")


def config_lines(ss: ServerState) -> tuple[list[str], list[str]]:
    """(global lines, defaults lines) of a configuration that answers on `ss.socket` and
    starts from `ss.file`."""
    return (
        [
            f"    stats socket {ss.socket} mode 600 level admin",
            f"    server-state-file {ss.file}",
        ],
        ["    load-server-state-from-file global"],
    )


def servers(config: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(backend, server) -> (address, port) for every `server` line of a HAProxy file."""
    out: dict[tuple[str, str], tuple[str, str]] = {}
    section: tuple[str, str | None] = ("", None)
    for line in config.splitlines():
        if line and not line[0].isspace():
            m = _SECTION.match(line)
            section = (m[1], m[2]) if m else ("", None)
        elif (m := _SERVER.match(line)) and section[0] in ("backend", "listen") and section[1]:
            out[(section[1], m[1])] = (m[2], m[3])
    return out


def keep(dump: str, config: str) -> str | None:
    """The lines of `dump` (`show servers state`, version 1) the process of `config` may load:
    those of servers it has at the same address and port. None when `dump` is not such an
    answer."""
    lines = dump.splitlines()
    if len(lines) < 2 or lines[0].strip() != "1" or not lines[1].startswith("# be_id "):
        return None
    fields = lines[1][2:].split()
    try:
        be, srv, addr, port = (
            fields.index(f) for f in ("be_name", "srv_name", "srv_addr", "srv_port")
        )
    except ValueError:
        return None
    wanted = servers(config)
    kept = [
        line
        for line in lines[2:]
        if len(cols := line.split()) == len(fields)
        and wanted.get((cols[be], cols[srv])) == (cols[addr], cols[port])
    ]
    return "\n".join([lines[0], lines[1], *kept, ""])


def ask(path: Path, command: str) -> str:
    """HAProxy's answer to one command on its admin socket (it closes after answering)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(ANSWER_S)
        s.connect(str(path))
        s.sendall(f"{command}\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def save(ss: ServerState, config: Path) -> str | None:
    """Write the running process's view for the one about to start with `config`; None when
    written, else why not (the file is then removed, and the new process starts with every
    server up, as on a first start)."""
    try:
        dump = ask(ss.socket, "show servers state")
        kept = keep(dump, config.read_text())
    except (OSError, ValueError) as exc:  # ValueError: not text
        forget(ss)
        return f"no servers' state from {ss.socket}: {exc}"
    if kept is None:
        forget(ss)
        return f"no servers' state from {ss.socket}: unexpected answer {dump[:80]!r}"
    write_atomically(ss.file, kept.encode(), mode=0o600)
    return None


def forget(ss: ServerState) -> None:
    """A process started afresh starts from its checks, not from a state left by another."""
    with contextlib.suppress(FileNotFoundError):
        ss.file.unlink()
