"""#10 item 6: no credential in clear in any log line, and process log files are 0640."""

from __future__ import annotations

import io
import logging
import os
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from deploy import processes
from deploy.processes import ProcessSpec
from deploy.state import LOG_MODE, StateDir
from kernel.redact import MASK, RedactingFilter, install, redact

KEY = "rk_0badcafe_Zq3-x_9AbCdEfGhIjKlMnOpQrStUvWx"
SECRET = "Zq3-x_9AbCdEfGhIjKlMnOpQrStUvWx"


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        (f"authorization: Bearer {KEY}", SECRET, "authorization: Bearer "),
        (f"{{'Authorization': 'Bearer {KEY}'}}", SECRET, "'Authorization': '"),
        ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz", "Basic "),
        (f"unknown key {KEY} from 10.0.0.1", SECRET, "rk_0badcafe_"),
        ("key rk_not-a-real-key given", "not-a-real-key", "key rk_"),
        ("postgresql://rocars:s3cr%40t@127.0.0.1:5432/rocars", "s3cr%40t", "rocars:"),
        ("redis://:hunter2@127.0.0.1:6379/0", "hunter2", "127.0.0.1:6379"),
        ("host=127.0.0.1 user=app password=hunter2 dbname=rocars", "hunter2", "dbname=rocars"),
        ("password='two words' host=x", "two words", "host=x"),
        ('{"password": "p\\"w", "user": "app"}', 'p\\"w', '"user": "app"'),
        ("{'password': 'hunter2', 'port': 5432}", "hunter2", "'port': 5432"),
    ],
)
def test_redact_masks_each_kind_of_credential(text: str, secret: str, kept: str) -> None:
    """#10 item 6: bearer/basic credentials, rocars API keys (prefix kept), and passwords in
    URLs, libpq strings and dicts are masked; the rest of the line is kept."""
    out = redact(text)
    assert secret not in out, out
    assert MASK in out, out
    assert kept in out, out


def test_redact_leaves_ordinary_lines_alone() -> None:
    """#10 item 6: lines without credentials are unchanged (URLs without passwords too)."""
    for text in ("GET http://127.0.0.1:8080/v1/status 200", "token bucket full", "tokens=3"):
        assert redact(text) == text


@pytest.fixture
def stream() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    parent = logging.getLogger("test_hostile_logs")
    parent.addHandler(handler)
    parent.propagate = False
    install(parent)
    try:
        yield logging.getLogger("test_hostile_logs.child"), out
    finally:
        parent.removeHandler(handler)
        parent.propagate = True


def test_the_filter_redacts_args_tracebacks_and_child_loggers(
    stream: tuple[logging.Logger, io.StringIO],
) -> None:
    """#10 item 6: a record from a child logger, with the credential in its args and in the
    exception it carries (aiohttp logs the bad header line in its exception), is written
    without it; the rest of the message is kept."""
    log, out = stream
    log.warning("bad request header %r", {"Authorization": f"Bearer {KEY}"})
    try:
        raise ValueError(f"Invalid header value char: b'authorization: Bearer {KEY}\\x01'")
    except ValueError:
        log.exception("Error handling request from %s", "127.0.0.1")
    log.error("connect failed: %s", "postgresql://app:hunter2@127.0.0.1/rocars", stack_info=True)
    text = out.getvalue()
    assert SECRET not in text, text
    assert "hunter2" not in text, text
    assert "bad request header" in text
    assert "Error handling request from 127.0.0.1" in text
    assert "ValueError: Invalid header value char" in text
    assert "Traceback" in text


def test_install_is_idempotent() -> None:
    """#10 item 6: installing twice leaves one filter per handler."""
    logger = logging.getLogger("test_hostile_logs.idempotent")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        install(logger)
        install(logger)
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    finally:
        logger.removeHandler(handler)


@contextmanager
def _bare_root() -> Iterator[logging.Logger]:
    """The root logger without handlers, so basicConfig acts; pytest's own (which it adds to
    the root logger for each test phase) are put back afterwards."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers = []
    try:
        yield root
    finally:
        root.handlers = saved
        root.setLevel(level)


def test_the_cli_logs_through_the_filter(capsys: pytest.CaptureFixture[str]) -> None:
    """#10 item 6: where the CLI configures logging (`deploy.cli`, which also runs the node:
    `rocars serve`), the credential filter is installed: a logged key is not written."""
    from deploy import cli

    with _bare_root():
        cli._setup_logging()
        logging.getLogger("rocars.http").error("unhandled error: Authorization: Bearer %s", KEY)
    err = capsys.readouterr().err
    assert "unhandled error: Authorization: Bearer" in err
    assert SECRET not in err


def test_the_node_supervisor_logs_through_the_filter(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """#10 item 6: the node's supervisor installs the credential filter where it configures
    logging (its own supervising loop is replaced: unit tests start no processes)."""
    from node import supervise

    monkeypatch.setattr(supervise, "supervise", lambda argv: 0)
    with _bare_root():
        with pytest.raises(SystemExit):
            supervise.main([])
        logging.getLogger("rocars.supervise").warning("node argv: --key %s", KEY)
    err = capsys.readouterr().err
    assert "node argv: --key rk_0badcafe_" in err
    assert SECRET not in err


@pytest.mark.parametrize("umask", [0o022, 0o000, 0o077])
def test_log_files_are_0640_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    """#10 item 6: a process log file the launcher opens is 0640 under any umask, and an
    existing 0644 file (from an older version) is narrowed to 0640."""
    state = StateDir(tmp_path)
    old = os.umask(umask)
    try:
        with state.open_log("node-A") as fh:
            fh.write(b"first\n")
        assert stat.S_IMODE(state.logfile("node-A").stat().st_mode) == LOG_MODE == 0o640
        state.logfile("etcd-A").write_text("old\n")
        state.logfile("etcd-A").chmod(0o644)
        with state.open_log("etcd-A") as fh:
            fh.write(b"appended\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(state.logfile("etcd-A").stat().st_mode) == 0o640
    assert state.logfile("etcd-A").read_text() == "old\nappended\n"


def test_the_launcher_starts_processes_with_0640_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#10 item 6: `processes.start` writes the process's output to a 0640 log file (the
    process itself is faked: unit tests start none)."""

    class FakePopen:
        pid = 4242

        def __init__(self, argv: Any, **kw: Any) -> None:
            self.stdout = kw["stdout"]

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    state = StateDir(tmp_path)
    state.ensure()
    old = os.umask(0o000)
    try:
        pid = processes.start(state, ProcessSpec("haproxy", "A", ("haproxy",), "haproxy"))
    finally:
        os.umask(old)
    assert pid == 4242
    assert stat.S_IMODE(state.logfile("haproxy").stat().st_mode) == 0o640
