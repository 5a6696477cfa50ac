"""A reloaded HAProxy hands its servers' state to the process that takes over (deploy.
haproxy_state, through `processes.take_over`), on real HAProxy processes: a new process used to
start with every server up, and its first failed check then marked the standby down and cut the
requests it had meanwhile sent there (`on-marked-down shutdown-sessions`): a client's
connection closed without an answer during `certs rotate` under load (CI, stop 34)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from deploy import haproxy_state, processes
from deploy.processes import ProcessSpec
from deploy.state import StateDir

pytestmark = [
    pytest.mark.integration,
    # processes.start leaves its daemons detached on purpose (their own session, a pid file).
    pytest.mark.filterwarnings(r"ignore:subprocess \d+ is still running:ResourceWarning"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateDir]:
    """A state folder; every process started under it is killed at the end."""
    st = StateDir(tmp_path)
    st.ensure()
    started: list[int] = []
    real_start = processes.start

    def start(state: StateDir, spec: ProcessSpec, **kw: Any) -> int:
        pid = real_start(state, spec, **kw)
        started.append(pid)
        return pid

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(processes, "start", start)
        yield st
    for pid in started:
        try:
            p = psutil.Process(pid)
            p.kill()
            p.wait(5)
        except psutil.NoSuchProcess:
            pass


@pytest.fixture
def up_server() -> Iterator[int]:
    """A port that accepts connections: a server HAProxy's TCP check finds up."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield int(s.getsockname()[1])


def _config(ss: haproxy_state.ServerState, entry: int, up: int, down: int, inter: str) -> str:
    glob, defaults = haproxy_state.config_lines(ss)
    return "\n".join(
        [
            "global",
            *glob,
            "defaults",
            "    mode tcp",
            "    timeout connect 1s",
            "    timeout client 5s",
            "    timeout server 5s",
            *defaults,
            "frontend entry",
            f"    bind 127.0.0.1:{entry}",
            "    default_backend nodes",
            "backend nodes",
            f"    default-server check inter {inter} rise 1 fall 1",
            f"    server node-A 127.0.0.1:{up}",
            f"    server node-B 127.0.0.1:{down}",
            "",
        ]
    )


def _servers(ss: haproxy_state.ServerState) -> dict[str, tuple[str, str]]:
    """server name -> (srv_op_state, srv_port) as the process on `ss.socket` sees it now
    (op state 0: down, 2: up)."""
    dump = haproxy_state._ask(ss.socket, "show servers state nodes").splitlines()
    fields = dump[1][2:].split()
    rows = [dict(zip(fields, line.split(), strict=True)) for line in dump[2:] if line.strip()]
    return {r["srv_name"]: (r["srv_op_state"], r["srv_port"]) for r in rows}


def _answers(ss: haproxy_state.ServerState, pid: int | None) -> bool:
    return f"Pid: {pid}\n" in haproxy_state._ask(ss.socket, "show info")


def _until(what: str, fact: Any) -> None:
    deadline = time.monotonic() + 30
    while not fact():
        assert time.monotonic() < deadline, f"not within 30 s: {what}"
        time.sleep(0.02)


def _haproxy(state: StateDir, cfg: Path, entry: int) -> ProcessSpec:
    ss = haproxy_state.for_process(state, "haproxy")
    return ProcessSpec(
        name="haproxy",
        site="A",
        argv=("haproxy", "-db", "-f", str(cfg)),
        marker=str(cfg),
        ports=(("HAProxy entry", "127.0.0.1", entry),),
        takes_over=True,
        server_state=ss,
    )


def test_the_new_process_starts_with_the_servers_the_old_one_had_marked_down(
    state: StateDir, tmp_path: Path, up_server: int
) -> None:
    """The old process has marked node-B down; the new process (whose checks would take an
    hour) sees node-B down and node-A up from its first moment, its log says the state came
    from the old process, and a later fresh start removes the file (it starts from checks)."""
    entry, down = _free_port(), _free_port()
    cfg = tmp_path / "haproxy.cfg"
    spec = _haproxy(state, cfg, entry)
    ss = spec.server_state
    assert ss is not None
    cfg.write_text(_config(ss, entry, up_server, down, "100ms"))
    old = processes.start(state, spec)
    _until("the old process answers on the socket", lambda: ss.socket.exists())
    _until("the old process has marked node-B down", lambda: _servers(ss)["node-B"][0] == "0")

    cfg.write_text(_config(ss, entry, up_server, down, "1h"))
    new = processes.take_over(state, spec)
    assert new not in (None, old)
    _until("the new process answers on the socket", lambda: _answers(ss, new))
    assert _servers(ss) == {"node-A": ("2", str(up_server)), "node-B": ("0", str(down))}
    assert (
        "node-B is DOWN, changed from server-state after a reload"
        in state.logfile("haproxy").read_text()
    )

    psutil.Process(new).kill()
    psutil.Process(new).wait(5)
    assert ss.file.exists()
    processes.start(state, spec)
    assert not ss.file.exists()


def test_a_server_moved_to_another_port_starts_from_the_new_configuration(
    state: StateDir, tmp_path: Path, up_server: int
) -> None:
    """HAProxy takes a server's address and port from the state file over its configuration;
    a server that moved must not: its line is left out, and it starts as on a first start (up
    until checked) at its new port, while the unmoved one keeps its state."""
    entry, down, moved = _free_port(), _free_port(), _free_port()
    cfg = tmp_path / "haproxy.cfg"
    spec = _haproxy(state, cfg, entry)
    ss = spec.server_state
    assert ss is not None
    cfg.write_text(_config(ss, entry, up_server, down, "100ms"))
    processes.start(state, spec)
    _until("the old process answers on the socket", lambda: ss.socket.exists())
    _until("the old process has marked node-B down", lambda: _servers(ss)["node-B"][0] == "0")

    cfg.write_text(_config(ss, entry, up_server, moved, "1h"))
    new = processes.take_over(state, spec)
    assert new is not None
    _until("the new process answers on the socket", lambda: _answers(ss, new))
    assert _servers(ss) == {"node-A": ("2", str(up_server)), "node-B": ("2", str(moved))}
