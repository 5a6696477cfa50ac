"""#12 item 1: `rocars certs rotate` applies the rotation to a running system (by default;
`--files-only` opts out), `rocars certs reload` finishes one, and a failed reload says what
to do; plus deploy/cert_reload.py's probes that need no cluster."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploy import cert_reload, pki
from deploy.cert_reload import Change, ReloadError
from deploy.cli import cli
from deploy.pki import PkiDir
from deploy.state import DEFAULT_TOPOLOGY, StateDir
from deploy.topology import Topology, load_topology
from kernel import tls

Applied = list[Change]


@pytest.fixture
def state(tmp_path: Path) -> list[str]:
    """A state folder with every certificate issued (no process runs)."""
    runner = CliRunner()
    args = ["--state-dir", str(tmp_path / "var")]
    assert runner.invoke(cli, ["certs", "issue", *args]).exit_code == 0
    return args


@pytest.fixture
def running(monkeypatch: pytest.MonkeyPatch) -> Applied:
    """The system counts as running; what `apply` is asked to do is recorded."""
    applied: Applied = []

    def fake_apply(
        _topo: Topology, _state: StateDir, change: Change, progress: Callable[[str], None]
    ) -> None:
        applied.append(change)
        progress("haproxy: reloaded (fake)")

    monkeypatch.setattr(cert_reload, "running", lambda _t, _s: True)
    monkeypatch.setattr(cert_reload, "apply_sync", fake_apply)
    return applied


def test_rotate_applies_new_leaves_to_a_running_system(state: list[str], running: Applied) -> None:
    """#12 item 1: `rotate` on a running system reissues, then reloads every component and
    prints its lines (one per component)."""
    out = CliRunner().invoke(cli, ["certs", "rotate", *state])
    assert out.exit_code == 0, out.output
    assert running == [Change.LEAVES]
    assert "haproxy: reloaded (fake)" in out.output


def test_ca_steps_apply_a_trust_change(state: list[str], running: Applied) -> None:
    """#12 item 1: `rotate --ca` and `rotate --drop-old-ca` change the bundle: they apply a
    trust change (etcd's rolling restart), and say what the next step is."""
    runner = CliRunner()
    first = runner.invoke(cli, ["certs", "rotate", "--ca", *state])
    assert first.exit_code == 0, first.output
    assert "give API clients the new ca-bundle.pem" in first.output
    assert "then 'rocars certs rotate', then 'rocars certs rotate --drop-old-ca'" in first.output
    last = runner.invoke(cli, ["certs", "rotate", "--drop-old-ca", *state])
    assert last.exit_code == 0, last.output
    assert running == [Change.TRUST, Change.TRUST]


def test_files_only_touches_no_process_and_says_how_to_finish(
    state: list[str], running: Applied
) -> None:
    """#12 item 1: `--files-only` writes the files and names the command that applies them."""
    runner = CliRunner()
    out = runner.invoke(cli, ["certs", "rotate", "--files-only", *state])
    assert out.exit_code == 0, out.output
    assert "'rocars certs reload' makes the running system use them" in out.output
    ca = runner.invoke(cli, ["certs", "rotate", "--ca", "--files-only", *state])
    assert "'rocars certs reload --trust'" in ca.output
    assert running == []


def test_reload_applies_what_is_on_disk(state: list[str], running: Applied) -> None:
    """#12 item 1: `reload` (after --files-only or a failure) applies without rotating."""
    key = Path(state[1], "pki", "node-A.key").read_bytes()
    runner = CliRunner()
    assert runner.invoke(cli, ["certs", "reload", *state]).exit_code == 0
    assert runner.invoke(cli, ["certs", "reload", "--trust", *state]).exit_code == 0
    assert running == [Change.LEAVES, Change.TRUST]
    assert Path(state[1], "pki", "node-A.key").read_bytes() == key


def test_a_stopped_system_gets_the_files_only(state: list[str]) -> None:
    """#12 item 1: with nothing running there is nothing to reload: the command says the
    system uses the files when it starts."""
    out = CliRunner().invoke(cli, ["certs", "rotate", *state])
    assert out.exit_code == 0, out.output
    assert "the system is not running: it uses the new files when it starts" in out.output


def test_a_failed_reload_exits_2_naming_the_component_and_the_fix(
    state: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """#12 item 1: a component that does not take the files stops the command with exit 2,
    its name, the cause, and the command that finishes the job once it is fixed."""

    def failing(_t: Topology, _s: StateDir, _c: Change, _p: Callable[[str], None]) -> None:
        raise ReloadError("sentinel-B: sentinel-B back after its restart not seen within 60s")

    monkeypatch.setattr(cert_reload, "running", lambda _t, _s: True)
    monkeypatch.setattr(cert_reload, "apply_sync", failing)
    out = CliRunner().invoke(cli, ["certs", "rotate", "--ca", *state])
    assert out.exit_code == 2
    assert "sentinel-B: sentinel-B back after its restart" in out.output
    assert "run 'rocars certs reload --trust' to finish" in out.output


# -- probes (no cluster) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> PkiDir:
    folder = PkiDir(tmp_path_factory.mktemp("probe") / "pki")
    pki.issue_all(folder, pki.plan(load_topology(DEFAULT_TOPOLOGY)))
    return folder


@pytest.fixture
def fake_postgres(issued: PkiDir) -> Iterator[int]:
    """A listener that answers PostgreSQL's SSLRequest with 'S', then TLS as postgres-A."""
    ctx = tls.server_context(issued.cert("postgres-A"), issued.key("postgres-A"))
    lsn = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = lsn.accept()
        with conn:
            if conn.recv(8) == cert_reload._SSL_REQUEST:
                conn.sendall(b"S")
                with ctx.wrap_socket(conn, server_side=True) as t:
                    t.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield lsn.getsockname()[1]
    thread.join(5)
    lsn.close()


def test_postgres_certificate_is_read_after_the_sslrequest(
    issued: PkiDir, fake_postgres: int
) -> None:
    """#12 item 1: the serial check of PostgreSQL's listener speaks its SSLRequest first."""
    got = cert_reload.presented_serial(
        "127.0.0.1", fake_postgres, tls.client_context(issued.bundle), postgres=True
    )
    assert got == cert_reload.file_serial(issued, "postgres-A")


def test_sighup_handler_is_seen_in_proc() -> None:
    """#12 item 1: a process without a SIGHUP handler (a node started before reloads
    existed, which SIGHUP would end) is told apart from one with it."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        assert not cert_reload.catches_sighup(os.getpid())
        signal.signal(signal.SIGHUP, lambda *_: None)
        assert cert_reload.catches_sighup(os.getpid())
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_a_plain_listener_fails_the_serial_check(issued: PkiDir) -> None:
    """#12 item 1: a listener that does not speak TLS is an error, never a match."""
    lsn = socket.create_server(("127.0.0.1", 0))

    def answer_plain() -> None:
        conn, _ = lsn.accept()
        with conn:
            conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=answer_plain, daemon=True)
    thread.start()
    with lsn, pytest.raises((ssl.SSLError, OSError)):
        cert_reload.presented_serial(
            "127.0.0.1", lsn.getsockname()[1], tls.client_context(issued.bundle)
        )
    thread.join(5)
