"""Starting, finding and stopping the local system's processes (pid files + /proc identity).

A process counts as running only when its pid file names a live, non-zombie process whose
command line still mentions its own configuration file, so a recycled pid is never mistaken for
a member and `make run` on a partly running system starts exactly what is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

import psutil

from deploy import haproxy_state, netns
from deploy.state import DbUser, StateDir
from kernel.errors import LaunchError
from monitoring.logs import json_log_path


@dataclass(frozen=True)
class ProcessSpec:
    name: str  # e.g. "etcd-A"; names the pid file and the log file
    site: str
    argv: tuple[str, ...]
    marker: str  # a string that must appear in the live process's command line
    ports: tuple[tuple[str, str, int], ...] = ()  # (what, host, port) it listens on
    user: DbUser | None = None  # run as this user instead of ourselves
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    netns: str | None = None  # the site's network namespace, when sites run in their own
    umask: int = -1  # the process's umask (-1: ours); 0o077 for those that write secrets
    # HAProxy has no reread: a changed file is applied by a new process taking over from the
    # running one (take_over); every other process rereads on SIGHUP (reload).
    takes_over: bool = False
    # Where a HAProxy answers its admin socket and its successor reads the servers' state.
    server_state: haproxy_state.ServerState | None = None


def _alive(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def running_pid(state: StateDir, spec: ProcessSpec) -> int | None:
    path = state.pidfile(spec.name)
    try:
        pid = int(path.read_text().strip())
        proc = psutil.Process(pid)
        if _alive(proc) and spec.marker in " ".join(proc.cmdline()):
            return pid
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def who_listens(port: int) -> str:
    """Best effort: 'pid N (name)' of whoever holds a TCP port, for error messages."""
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            lport = getattr(conn.laddr, "port", None)
            if lport == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    return "another process"


def check_ports_free(spec: ProcessSpec) -> None:
    for what, host, port in spec.ports:
        with netns.inside(spec.netns):
            busy = port_in_use(host, port)
        if busy:
            raise LaunchError(
                f"cannot start {spec.name}: port {host}:{port} ({what}) is already in use by "
                f"{who_listens(port)}; stop it or change the port in the topology file"
            )


def start(
    state: StateDir, spec: ProcessSpec, *, note: str | None = None, handed_over: bool = False
) -> int:
    """Start `spec` detached (its own session), output appended to its log file after a start
    marker and `note`. A HAProxy started afresh starts from its own checks, not from a state
    another process left; one `handed_over` (take_over) reads the state just written."""
    if spec.server_state is not None and not handed_over:
        haproxy_state.forget(spec.server_state)
    env = {**os.environ, **spec.env}
    with state.open_log(spec.name) as log, _output(spec, log) as out:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {spec.name}\n".encode())
        if note:
            log.write(f"=== {note}\n".encode())
        log.flush()
        try:
            with netns.inside(spec.netns):  # the child is forked inside the namespace
                proc = subprocess.Popen(
                    spec.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=spec.cwd,
                    env=env,
                    start_new_session=True,
                    umask=spec.umask,
                    user=spec.user.uid if spec.user and spec.user.is_other else None,
                    group=spec.user.gid if spec.user and spec.user.is_other else None,
                    extra_groups=[] if spec.user and spec.user.is_other else None,
                )
        except FileNotFoundError as exc:
            raise LaunchError(
                f"cannot start {spec.name}: {spec.argv[0]} not found; run 'make run' "
                "(it installs the Debian packages) or install it"
            ) from exc
    state.pidfile(spec.name).write_text(f"{proc.pid}\n")
    _await_own_cmdline(proc.pid)
    return proc.pid


@contextlib.contextmanager
def _output(spec: ProcessSpec, log: BinaryIO) -> Iterator[BinaryIO | int]:
    """Where `spec`'s output goes: its log file, or for a process that takes over, a pipe to a
    `cat` appending to it. Such a process shares its log with the one it replaces, and HAProxy
    sets its output non-blocking with F_SETFL, which also clears O_APPEND (read in
    /proc/<pid>/fdinfo/1: flags 0104001): each process then wrote at its own offset, over the
    other's lines and the start marker, and a reload's log lost lines. The `cat` alone holds
    the appending descriptor, and exits when the process's end of the pipe closes."""
    if not spec.takes_over:
        yield log
        return
    read_end, write_end = os.pipe()
    try:
        subprocess.Popen(
            ["cat"], stdin=read_end, stdout=log, stderr=subprocess.DEVNULL, start_new_session=True
        )
        yield write_end
    finally:
        os.close(read_end)
        os.close(write_end)


# Python starts children with vfork, and the parent runs on once the child's exec has let go of
# its memory: before the kernel has set the new program's arguments. For that moment
# /proc/<pid>/cmdline reads empty (measured: 16% of 2,000 starts here), and running_pid, which
# tells a process by its command line, would not know a process just started (CI, stop 32).
_CMDLINE_WAIT_S = 1.0


def _await_own_cmdline(pid: int) -> None:
    deadline = time.monotonic() + _CMDLINE_WAIT_S
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes():
                return
        except OSError:  # gone already: whoever looks next sees it is not running
            return
        time.sleep(0.001)


# How long a new HAProxy may take to bind its ports when it takes over (a few ms when well).
TAKE_OVER_S = 10.0


def take_over(state: StateDir, spec: ProcessSpec, *, timeout: float = TAKE_OVER_S) -> int | None:
    """HAProxy's reload: start a new `spec` told to take over from the running one (`-sf`:
    once the new process has bound its ports the old one stops listening and finishes the
    connections it has), and wait until the new one listens on every port of `spec`. The new
    pid; None when none was running (the next start reads the file). When the new process
    exits or does not bind in time, the old one serves on and LaunchError says why. A spec with
    a `server_state` starts the new process from the running one's view of its servers
    (deploy.haproxy_state)."""
    old = running_pid(state, spec)
    if old is None:
        return None
    note = None
    if spec.server_state is not None:
        config = Path(spec.argv[spec.argv.index("-f") + 1])
        if why := haproxy_state.save(spec.server_state, config):
            note = f"{why}; this process starts with every server up until checked"
    taking_over = replace(spec, argv=(*spec.argv, "-sf", str(old)))
    new = start(state, taking_over, note=note, handed_over=True)
    wanted = {port for _what, _host, port in spec.ports}
    deadline = time.monotonic() + timeout
    while True:
        try:
            if not _alive(psutil.Process(new)):
                raise psutil.NoSuchProcess(new)
            bound = listening_ports(new)
        except (psutil.Error, OSError):
            bound = None
        if bound is not None and wanted <= bound:
            return new
        if bound is None or time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(new, signal.SIGTERM)
            state.pidfile(spec.name).write_text(f"{old}\n")
            why = "exited" if bound is None else f"did not listen on {sorted(wanted)} in time"
            raise LaunchError(
                f"{spec.name}: the new process (pid {new}) {why}; the old one (pid {old}) serves "
                "on with the previous configuration; see why below, then run `rocars cluster up`"
                f" again. Last lines of {spec.name}.log:\n"
                f"{log_tail(state, spec.name)}"
            )
        time.sleep(0.05)


_TCP_LISTEN = "0A"  # the state column of /proc/net/tcp (include/net/tcp_states.h)


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on, read in its own network namespace
    (/proc/<pid>/net): psutil reads ours (/proc/net), which misses the sockets of a process
    in a site's namespace. Its sockets are told from another's on the same port (a process
    taking over) by their inodes. OSError when it is gone."""
    inodes = set()
    for fd in os.scandir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed while read
            link = os.readlink(fd.path)
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
            fields = line.split()
            if fields[3] == _TCP_LISTEN and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def ensure_running(state: StateDir, spec: ProcessSpec) -> int | None:
    """Start `spec` unless it runs already; the new pid, or None when nothing was started."""
    if running_pid(state, spec) is not None:
        return None
    check_ports_free(spec)
    return start(state, spec)


# How much of a log's end is read for its last lines (the files may be 50 MiB).
_TAIL_BYTES = 64 * 1024


def _last_lines(path: Path, lines: int) -> list[str] | None:
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - _TAIL_BYTES))
            text = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    return text[-lines:]


def _readable(line: str) -> str:
    """A JSON log line (monitoring.logs) as `time level logger: message`, plus its traceback's
    last line; anything else as it is."""
    try:
        doc = json.loads(line)
        head = f"{doc['time']} {doc['level']} {doc['logger']}: {doc['message']}"
    except (ValueError, KeyError, TypeError):
        return line
    exc = str(doc.get("exc") or "").strip().splitlines()
    return f"{head} | {exc[-1]}" if exc else head


def log_tail(state: StateDir, name: str, lines: int = 15) -> str:
    """The last lines of `name`'s output (`<name>.log`) and, when the process writes one, of
    its JSON log (`<name>.jsonl`: the node's, where its errors go once it has started)."""
    out = _last_lines(state.logfile(name), lines)
    jsonl = _last_lines(json_log_path(state.logs, name), lines)
    parts = []
    if out is not None:
        parts += ["    " + x for x in out]
    if jsonl:
        parts += [f"  last lines of {name}.jsonl:"] + ["    " + _readable(x) for x in jsonl]
    return "\n".join(parts) if parts else "(no log)"


def reload(state: StateDir, spec: ProcessSpec) -> bool:
    """Ask a running process to reread its configuration (SIGHUP); False when not running."""
    pid = running_pid(state, spec)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGHUP)
        return True
    return False


def stop_pids(pids: Iterable[int], *, timeout: float = 15.0) -> None:
    """SIGTERM, wait, then SIGKILL whatever is left (with its children)."""
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            procs.append(p)
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            for child in p.children(recursive=True):
                child.kill()
            p.kill()
    psutil.wait_procs(alive, timeout=5)


def signal_pids(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def kill_trees(pids: Iterable[int]) -> None:
    """SIGKILL each process and all its descendants, and wait for them to be gone."""
    procs: list[psutil.Process] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            procs += [p, *p.children(recursive=True)]
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(procs, timeout=5)


def stop_many(state: StateDir, specs: list[ProcessSpec], *, timeout: float = 15.0) -> list[str]:
    """Stop several processes at once; returns the names of those that were running."""
    running = {s.name: pid for s in specs if (pid := running_pid(state, s)) is not None}
    stop_pids(running.values(), timeout=timeout)
    for s in specs:
        state.pidfile(s.name).unlink(missing_ok=True)
    return list(running)


def leftovers(markers: Iterable[str]) -> list[psutil.Process]:
    """Live processes whose command line mentions any marker (a state or runtime path)."""
    marks = [m for m in markers if m]
    # Never ourselves or a shell that started us: their command lines may name the state folder.
    mine = {os.getpid()} | {a.pid for a in psutil.Process().parents()}
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.pid in mine:
            continue
        cmd = " ".join(p.info.get("cmdline") or [])
        if any(m in cmd for m in marks) and _alive(p):
            out.append(p)
    return out


def postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def tree_memory(pid: int) -> int:
    """Memory of a process and all its descendants, in bytes: PSS (shared pages split among
    the processes sharing them, so PostgreSQL's shared buffers count once), else RSS."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            try:
                total += p.memory_full_info().pss
            except (psutil.AccessDenied, AttributeError):
                total += p.memory_info().rss
    return total
