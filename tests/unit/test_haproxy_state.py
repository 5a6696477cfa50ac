"""deploy.haproxy_state: which servers' state a reloaded HAProxy hands on, and what happens
when its admin socket does not answer (the real HAProxy round trip is in
tests/integration/test_haproxy_server_state.py)."""

from __future__ import annotations

import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from unit_fakes import HAPROXY_TLS

from deploy import configgen, haproxy_state
from deploy.state import DEFAULT_TOPOLOGY, StateDir
from deploy.topology import load_topology

TOPO = load_topology(DEFAULT_TOPOLOGY)
HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight"
    " srv_iweight srv_time_since_last_change srv_check_status srv_check_result"
    " srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn"
    " srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr"
    " srv_agent_port"
)


def _line(be: str, srv: str, addr: str, port: int, op: int) -> str:
    return f"3 {be} 1 {srv} {addr} {op} 0 1 1 4 8 2 0 6 0 0 0 - {port} - 1 0 - - 0"


def _dump(*lines: str) -> str:
    return "\n".join(["1", HEADER, *lines, "", ""])


CONFIG = configgen.haproxy_config(TOPO, HAPROXY_TLS)


def test_the_servers_of_a_generated_file_are_read_by_backend() -> None:
    """Every `server` line of the generated file, under the backend it belongs to."""
    got = haproxy_state.servers(CONFIG)
    assert got[("nodes", "node-A")] == ("127.0.0.1", "18081")
    assert got[("nodes", "node-B")] == ("127.0.0.1", "28081")
    assert got[("any_live_node", "node-B")] == ("127.0.0.1", "28081")
    assert ("phone_nodes", "phone-A") in got
    assert not [k for k in got if k[0] in ("api", "stats", "")]


def test_only_servers_at_the_same_address_and_port_are_handed_on() -> None:
    """HAProxy would take a server's address and port from the file over its configuration:
    lines of a moved server, one at another address, or one the new file does not have are
    left out; the rest are kept as they were."""
    kept_a = _line("nodes", "node-A", "127.0.0.1", 18081, 2)
    kept_b = _line("nodes", "node-B", "127.0.0.1", 28081, 0)
    dump = _dump(
        kept_a,
        kept_b,
        _line("any_live_node", "node-A", "127.0.0.1", 18082, 2),
        _line("any_live_node", "node-B", "10.0.0.9", 28081, 2),
        _line("nodes", "node-C", "127.0.0.1", 38081, 2),
        _line("gone", "node-A", "127.0.0.1", 18081, 2),
    )
    assert haproxy_state.keep(dump, CONFIG) == _dump(kept_a, kept_b)[:-1]


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "Unknown command: 'show servers state'\n",
        "2\n" + HEADER + "\n",
        "1\n# be_id be_name\n",
        "1\n",
    ],
)
def test_an_answer_that_is_not_a_version_1_state_hands_on_nothing(answer: str) -> None:
    """An empty, refused, other-version or truncated answer is no state at all."""
    assert haproxy_state.keep(answer, CONFIG) is None


@pytest.fixture
def admin_socket(tmp_path: Path) -> Iterator[tuple[Path, list[str | bytes]]]:
    """A stand-in for HAProxy's admin socket: answers each command with the next scripted
    answer (set by the test) and closes, as HAProxy does in non-interactive mode."""
    path = tmp_path / "run" / "haproxy.sock"
    path.parent.mkdir()
    answers: list[str | bytes] = []
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(1024)
                answer = answers.pop(0)
                conn.sendall(answer if isinstance(answer, bytes) else answer.encode())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield path, answers
    server.close()
    t.join(5)


def test_save_writes_the_kept_lines_readable_by_root_alone(
    tmp_path: Path, admin_socket: tuple[Path, list[str | bytes]]
) -> None:
    """The running process's answer, less the servers the new file moved, is written 0600
    where the new process reads it."""
    path, answers = admin_socket
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(CONFIG)
    b = _line("nodes", "node-B", "127.0.0.1", 28081, 0)
    answers.append(_dump(b, _line("nodes", "node-A", "127.0.0.1", 1, 2)))
    ss = haproxy_state.ServerState(path, tmp_path / "run" / "haproxy.servers")
    assert haproxy_state.save(ss, cfg) is None
    assert ss.file.read_text() == _dump(b)[:-1]
    assert stat.S_IMODE(ss.file.stat().st_mode) == 0o600


def test_without_an_answer_no_state_is_left_and_the_reason_is_given(
    tmp_path: Path, admin_socket: tuple[Path, list[str | bytes]]
) -> None:
    """No socket, or a socket that answers something else or not text: a state file left by
    an earlier process is removed (the new one starts from its checks) and save says why."""
    path, answers = admin_socket
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(CONFIG)
    ss = haproxy_state.ServerState(tmp_path / "run" / "none.sock", tmp_path / "run" / "s")
    ss.file.write_text("stale")
    why = haproxy_state.save(ss, cfg)
    assert why is not None
    assert "none.sock" in why
    assert "No such file" in why
    assert not ss.file.exists()
    answers.append("Permission denied.\n")
    ss = haproxy_state.ServerState(path, tmp_path / "run" / "s")
    ss.file.write_text("stale")
    why = haproxy_state.save(ss, cfg)
    assert why is not None
    assert "unexpected answer 'Permission denied" in why
    assert not ss.file.exists()
    answers.append(b"1\n\xff\xfe")
    ss.file.write_text("stale")
    why = haproxy_state.save(ss, cfg)
    assert why is not None
    assert "can't decode" in why
    assert not ss.file.exists()


def test_the_file_asks_for_the_socket_and_the_state_only_when_given() -> None:
    """With a runtime, HAProxy's file opens its admin socket to root alone (mode 600, in the
    run folder) and loads the servers' state; without one (a production host's unit) it does
    neither."""
    ss = haproxy_state.for_process(StateDir(Path("/st")), "haproxy")
    text = configgen.haproxy_config(TOPO, HAPROXY_TLS, runtime=ss)
    glob = text.split("\ndefaults\n")[0]
    defaults = text.split("\ndefaults\n")[1].split("\n\n")[0]
    assert "    stats socket /st/run/haproxy.sock mode 600 level admin" in glob.splitlines()
    assert "    server-state-file /st/run/haproxy.servers" in glob.splitlines()
    assert "    load-server-state-from-file global" in defaults.splitlines()
    for word in ("stats socket", "server-state", "load-server-state"):
        assert word not in CONFIG


def test_an_old_process_lives_at_most_half_an_hour_after_a_reload() -> None:
    """A reload's old process is stopped hard 30 minutes after it was told to stop, longer
    than a phone call's 20-minute timeouts."""
    assert "    hard-stop-after 30m" in CONFIG.split("\ndefaults\n")[0].splitlines()
    assert "timeout client 20m" in CONFIG
