"""`processes.take_over`, HAProxy's reload as `cluster up` does it when haproxy.cfg changed
(#11: the phone servers' tracked checks reach a running system this way): the new process
must listen on every port of its spec before it counts, and when it exits or never binds the
old one keeps serving and is named again in the pid file. Small Python processes stand in for
the old and new HAProxy (what `-sf <old pid>` asks of HAProxy is tested live, in
test_cluster_lifecycle), except for the servers' state a reload hands on, read from real
HAProxy processes; each is stopped when the test ends."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from deploy import cert_reload, haproxy_state, processes
from deploy.cert_reload import Action, How
from deploy.processes import ProcessSpec
from deploy.state import REPO_ROOT, StateDir
from deploy.topology import Topology, load_topology
from kernel.errors import LaunchError

pytestmark = [
    pytest.mark.integration,
    # processes.start leaves its daemons detached on purpose (their own session, a pid file);
    # the Popen it drops says so when collected, here in the test's process.
    pytest.mark.filterwarnings(r"ignore:subprocess \d+ is still running:ResourceWarning"),
]

SLEEP = "import sys, time; time.sleep(60)"
# Binds the port in argv[1] and waits; `-sf <pid>` arrives as further arguments.
LISTEN = (
    "import socket, sys, time; s = socket.socket(); "
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
    "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(60)"
)
EXIT = "import sys; print('[ALERT] config : parsing error'); sys.exit(1)"


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


def _spec(tmp_path: Path, code: str, port: int) -> ProcessSpec:
    marker = str(tmp_path / "fake-haproxy.cfg")
    return ProcessSpec(
        name="haproxy",
        site="A",
        argv=(sys.executable, "-c", code, str(port), marker),
        marker=marker,
        ports=(("HAProxy entry", "127.0.0.1", port),),
    )


def test_a_new_process_that_listens_takes_over(state: StateDir, tmp_path: Path) -> None:
    """The new pid is returned once it listens on the spec's port, and the pid file names it;
    it was told which process to take over from."""
    port = _free_port()
    old = processes.start(state, _spec(tmp_path, SLEEP, port))
    new = processes.take_over(state, _spec(tmp_path, LISTEN, port))
    assert new is not None
    assert new != old
    assert state.pidfile("haproxy").read_text().strip() == str(new)
    assert psutil.Process(new).cmdline()[-2:] == ["-sf", str(old)]
    listening = {c.laddr.port for c in psutil.Process(new).net_connections("tcp")}
    assert port in listening


def test_a_new_process_that_exits_leaves_the_old_one_serving(
    state: StateDir, tmp_path: Path
) -> None:
    """A new process that exits (a configuration HAProxy refuses) is reported with its log's
    last lines; the old process runs on and the pid file names it again."""
    port = _free_port()
    old = processes.start(state, _spec(tmp_path, SLEEP, port))
    with pytest.raises(LaunchError) as caught:
        processes.take_over(state, _spec(tmp_path, EXIT, port))
    message = str(caught.value)
    assert "exited" in message
    assert f"the old one (pid {old}) serves on" in message
    assert "parsing error" in message
    assert state.pidfile("haproxy").read_text().strip() == str(old)
    assert psutil.Process(old).is_running()


def test_a_new_process_that_never_listens_is_stopped(state: StateDir, tmp_path: Path) -> None:
    """A new process that does not bind in time is stopped, and the old one keeps serving."""
    port = _free_port()
    old = processes.start(state, _spec(tmp_path, SLEEP, port))
    with pytest.raises(LaunchError, match="did not listen") as caught:
        processes.take_over(state, _spec(tmp_path, SLEEP, port), timeout=0.5)
    new = int(str(caught.value).split("(pid ", 1)[1].split(")", 1)[0])
    assert psutil.wait_procs([psutil.Process(new)], timeout=5)[1] == []
    assert state.pidfile("haproxy").read_text().strip() == str(old)


def test_nothing_running_starts_nothing(state: StateDir, tmp_path: Path) -> None:
    """With no HAProxy running there is nothing to take over: the next start reads the file."""
    assert processes.take_over(state, _spec(tmp_path, LISTEN, _free_port())) is None


NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


@pytest.fixture
def namespace() -> Iterator[str]:
    """A network namespace of its own (loopback up), deleted at the end."""
    name = f"rtakeover-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@NEEDS_ROOT
def test_a_process_in_a_namespace_takes_over(
    state: StateDir, tmp_path: Path, namespace: str
) -> None:
    """A site's HAProxy on the floating-address topology runs in the site's namespace: the
    new process's ports are read there (psutil reads ours and sees none, which failed every
    take-over of a site's HAProxy)."""
    port = _free_port()
    spec = replace(_spec(tmp_path, SLEEP, port), netns=namespace)
    old = processes.start(state, spec)
    new = processes.take_over(state, replace(spec, argv=_spec(tmp_path, LISTEN, port).argv))
    assert new not in (None, old)
    assert processes.listening_ports(new) == {port}
    assert port not in {c.laddr.port for c in psutil.Process(new).net_connections()}


def test_listening_ports_are_the_processs_own_listeners() -> None:
    """Listeners only (a socket that connects is not one), of this process only; a process
    that is gone raises."""
    with _listener() as server, socket.create_connection(server.getsockname()):
        assert processes.listening_ports(os.getpid()) == {server.getsockname()[1]}
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with pytest.raises(FileNotFoundError):
        processes.listening_ports(gone.pid)


def _listener() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_a_process_is_known_as_running_as_soon_as_start_returns(
    state: StateDir, tmp_path: Path
) -> None:
    """`start` returns only once the new process shows its own command line: right after a
    vfork'd exec /proc/<pid>/cmdline reads empty for a moment (read at once after Popen: 323
    of 2,000 here), and `running_pid` would not recognise a process just started. Through
    `start` the moment has mostly passed by the time it returns (the pid file is written in
    between): without the wait this test fails on a loaded host, as CI was, not reliably on
    an idle one."""
    # coreutils' sleep shows the moment far more often than a Python interpreter (about half of
    # the starts against a few in a hundred, measured).
    spec = ProcessSpec(name="sleep", site="A", argv=("/bin/sleep", "3607"), marker="3607")
    for _ in range(40):
        pid = processes.start(state, spec)
        # Read at once: running_pid's own look comes a few hundred microseconds later and
        # misses the moment except on a loaded host (CI).
        assert spec.marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert processes.running_pid(state, spec) == pid
        psutil.Process(pid).kill()
        psutil.Process(pid).wait(5)


# HAProxy's way with its output: F_SETFL O_NONBLOCK, which clears O_APPEND. Prints a line, then
# waits for the file in argv[2] and prints another (the old process still logging after the new
# one started); binds the port in argv[1] meanwhile, shared like HAProxy's (SO_REUSEPORT).
CLEARS_APPEND = (
    "import fcntl, os, socket, sys, time; fcntl.fcntl(1, fcntl.F_SETFL, os.O_NONBLOCK); "
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1); "
    "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); print(f'{os.getpid()} up', flush=True); "
    "[time.sleep(0.01) for _ in range(3000) if not os.path.exists(sys.argv[2])]; "
    "print(f'{os.getpid()} still logging', flush=True)"
)


def test_a_process_that_takes_over_loses_no_line_of_the_shared_log(
    state: StateDir, tmp_path: Path
) -> None:
    """The old and the new process of a take-over write one log file at once, and HAProxy
    clears O_APPEND on its output: the old one's lines after the new one started must not land
    over the new one's start marker and lines (they did: a reload's log lost both, and the
    HAProxy lines CI failures were to be read from)."""
    port, go_on = _free_port(), tmp_path / "go-on"
    spec = replace(
        _spec(tmp_path, CLEARS_APPEND, port),
        argv=(sys.executable, "-c", CLEARS_APPEND, str(port), str(go_on), str(tmp_path)),
        marker=str(tmp_path),
        takes_over=True,
    )
    log = state.logfile(spec.name)
    old = processes.start(state, spec)
    _until(lambda: f"{old} up" in log.read_text())
    new = processes.take_over(state, spec)
    assert new is not None
    _until(lambda: f"{new} up" in log.read_text())
    go_on.touch()
    _until(lambda: f"{old} still logging" in log.read_text())
    _until(lambda: f"{new} still logging" in log.read_text())
    text = log.read_text()
    assert len(re.findall(r"^=== \S+ starting haproxy$", text, re.MULTILINE)) == 2, text
    assert text.index(f"{old} up") < text.index(f"{new} up"), text


def _until(fact: Callable[[], bool], what: str = "") -> None:
    deadline = time.monotonic() + 30
    while not fact():
        assert time.monotonic() < deadline, f"not within 30 s: {what}"
        time.sleep(0.01)


async def test_a_reload_whose_new_process_listens_but_never_answers_keeps_it_serving(
    state: StateDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rocars certs reload` of HAProxy: once the new process has bound every port HAProxy has
    told the old one to stop listening, so a readiness answer that does not come must not get
    the new process killed (it did: the reload's check met the unauthenticated rate limit under
    load, and no HAProxy was left). The reload fails saying why, the new process runs on and
    the pid file names it."""
    topo = _free_entry(load_topology(REPO_ROOT / "deploy" / "topology.yaml"))
    ports = (topo.entry.port, topo.entry.stats_port)
    monkeypatch.setattr(cert_reload, "WAIT_S", 1.0)
    async with aiohttp.ClientSession() as session:
        run = cert_reload._Run(topo, state, session)
        # Listens on both ports and never answers, as a process whose check cannot pass.
        code = LISTEN.replace(
            "s.listen()",
            f"s.listen(); t = socket.socket(); t.bind(('127.0.0.1', {ports[1]})); t.listen()",
        )
        spec = replace(
            _spec(tmp_path, code, ports[0]),
            ports=(("HAProxy entry", "127.0.0.1", ports[0]), ("stats", "127.0.0.1", ports[1])),
            takes_over=True,
        )
        run.specs["haproxy"] = spec
        old = processes.start(
            state, replace(spec, argv=(sys.executable, "-c", SLEEP, *spec.argv[3:]))
        )
        with pytest.raises(
            cert_reload.ReloadError, match=r"took over from pid \d+ and listens, but"
        ):
            await run.haproxy_reload(Action("haproxy", How.HAPROXY_RELOAD))
    new = processes.running_pid(state, spec)
    assert new not in (None, old)
    assert ports[0] in processes.listening_ports(new)


def _free_entry(topo: Topology) -> Topology:
    """`topo` moved to ports where the entry and stats ports are free."""
    for offset in range(20_000, 40_000, 997):
        moved = topo.with_port_offset(offset)
        if not any(
            processes.port_in_use("127.0.0.1", p)
            for p in (moved.entry.port, moved.entry.stats_port)
        ):
            return moved
    raise AssertionError("no free ports")


# -- the servers' state a reload hands on, on real HAProxy processes (deploy.haproxy_state) --
# A new process used to start with every server up, and its first failed check then marked
# the standby down and cut the requests it had meanwhile sent there (`on-marked-down
# shutdown-sessions`): a client's connection closed without an answer during `certs rotate`
# under load (CI, stop 34).


@pytest.fixture
def up_server() -> Iterator[int]:
    """A port that accepts connections: a server HAProxy's TCP check finds up."""
    with _listener() as s:
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
    dump = haproxy_state.ask(ss.socket, "show servers state nodes").splitlines()
    fields = dump[1][2:].split()
    rows = [dict(zip(fields, line.split(), strict=True)) for line in dump[2:] if line.strip()]
    return {r["srv_name"]: (r["srv_op_state"], r["srv_port"]) for r in rows}


def _answers(ss: haproxy_state.ServerState, pid: int | None) -> bool:
    return f"Pid: {pid}\n" in haproxy_state.ask(ss.socket, "show info")


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
    _until(lambda: ss.socket.exists(), "the old process answers on the socket")
    _until(lambda: _servers(ss)["node-B"][0] == "0", "the old process has marked node-B down")

    cfg.write_text(_config(ss, entry, up_server, down, "1h"))
    new = processes.take_over(state, spec)
    assert new not in (None, old)
    _until(lambda: _answers(ss, new), "the new process answers on the socket")
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
    _until(lambda: ss.socket.exists(), "the old process answers on the socket")
    _until(lambda: _servers(ss)["node-B"][0] == "0", "the old process has marked node-B down")

    cfg.write_text(_config(ss, entry, up_server, moved, "1h"))
    new = processes.take_over(state, spec)
    assert new is not None
    _until(lambda: _answers(ss, new), "the new process answers on the socket")
    assert _servers(ss) == {"node-A": ("2", str(up_server)), "node-B": ("2", str(moved))}
