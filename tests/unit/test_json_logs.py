"""#13 item 5: the node's and its supervisor's JSON log lines (monitoring.logs): their fields,
credentials redacted in the message and in extra fields, files rotated by size, request ids,
the events SREs grep for, and the launcher's view of a failed start."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import stat
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from deploy import processes
from deploy.state import StateDir
from failover.role import RoleWatcher
from failover.role_rule import RoleFacts
from kernel.redact import MASK, RedactingFilter
from monitoring import log_files, logs

KEY = "rk_0badcafe_Zq3-x_9AbCdEfGhIjKlMnOpQrStUvWx"
SECRET = "Zq3-x_9AbCdEfGhIjKlMnOpQrStUvWx"
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@contextmanager
def json_logger(
    name: str, handler: logging.Handler | None = None
) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing JSON lines of site A (to a string unless `handler` is given) through
    the credential filter, as the node's root logger does."""
    out = io.StringIO()
    handler = handler or logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter("A"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(f"test_json_logs.{name}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.propagate = True


def parsed(text: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in text.splitlines()]


def test_a_line_has_the_fields_and_the_extras() -> None:
    """#13 item 5: one JSON object per line with time (ISO 8601 UTC, ms), level, site, node,
    logger and message (args merged), then the extra fields as given."""
    with json_logger("fields") as (log, out):
        before = datetime.now(UTC)
        log.warning("role changed %s -> %s", "standby", "active", extra={"event": "role_changed"})
        log.info("second", extra={"status": 201, "duration_ms": 1.5})
    first, second = parsed(out.getvalue())
    assert TIME.fullmatch(first["time"]), first
    stamped = datetime.strptime(first["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((stamped - before).total_seconds()) < 5
    assert first["level"] == "WARNING"
    assert first["site"] == "A"
    assert first["node"] == "node-A"
    assert first["logger"] == "test_json_logs.fields"
    assert first["message"] == "role changed standby -> active"
    assert first["event"] == "role_changed"
    assert (second["status"], second["duration_ms"]) == (201, 1.5)
    assert "request_id" not in first  # logged outside any request


def test_the_time_stamp_follows_each_record_across_seconds() -> None:
    """#13 item 5: the cached second is never reused for another second; milliseconds are
    the record's own."""
    fmt = logs.JsonFormatter("B")
    t0 = datetime(2030, 1, 7, 8, 0, 59, tzinfo=UTC).timestamp()
    assert fmt.stamp(t0 + 0.25) == "2030-01-07T08:00:59.250Z"
    assert fmt.stamp(t0 + 0.999) == "2030-01-07T08:00:59.999Z"
    assert fmt.stamp(t0 + 1.125) == "2030-01-07T08:01:00.125Z"
    assert fmt.stamp(t0 + 0.5) == "2030-01-07T08:00:59.500Z"


def test_a_traceback_goes_in_exc_and_values_that_are_not_json_as_text() -> None:
    """#13 item 5: an exception's text is in `exc` (the line stays one line); a value JSON
    cannot hold is written as its text."""
    with json_logger("exc") as (log, out):
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it failed", extra={"path": Path("/x/y")})
    assert out.getvalue().count("\n") == 1
    [line] = parsed(out.getvalue())
    assert line["message"] == "it failed"
    assert line["level"] == "ERROR"
    assert line["exc"].startswith("Traceback")
    assert "ValueError: boom" in line["exc"]
    assert line["path"] == "/x/y"


def test_lines_inside_a_request_carry_its_id_and_account() -> None:
    """#13 item 5: between bind_request and unbind_request lines carry the request id, and
    the account id once bound; afterwards neither."""
    with json_logger("request") as (log, out):
        bound = logs.bind_request("req-1")
        log.info("before auth")
        logs.bind_account(7)
        log.info("after auth")
        logs.unbind_request(bound)
        log.info("after the request")
    before, after, outside = parsed(out.getvalue())
    assert before["request_id"] == "req-1"
    assert "account_id" not in before
    assert (after["request_id"], after["account_id"]) == ("req-1", 7)
    assert "request_id" not in outside
    assert "account_id" not in outside


def test_credentials_in_message_extras_and_tracebacks_are_redacted() -> None:
    """#13 item 5 (and #10 item 6): an Authorization header, an API key and a password are
    masked wherever they are: the message, an extra field (by value, or by its name even when
    the value looks harmless), a dict or list in an extra field, and a traceback; every line
    is still valid JSON."""
    with json_logger("redact") as (log, out):
        log.warning("header Authorization: Bearer %s", KEY)
        log.warning(
            "extras",
            extra={
                "authorization": f"Bearer {KEY}",
                "password": "hunter2",
                "conninfo": "host=db password=s3cret user=app",
                "headers": {"Authorization": "Basic dXNlcjpwYXNz", "Accept": "*/*"},
                "keys": [KEY],
            },
        )
        try:
            raise RuntimeError(f"refused key {KEY}")
        except RuntimeError:
            log.exception("failed")
    text = out.getvalue()
    for secret in (SECRET, "hunter2", "s3cret", "dXNlcjpwYXNz"):
        assert secret not in text, text
    message, extras, failed = parsed(text)
    assert message["message"] == f"header Authorization: Bearer {MASK}"
    assert extras["authorization"] == MASK
    assert extras["password"] == MASK
    assert extras["conninfo"] == f"host=db password={MASK} user=app"
    assert extras["headers"] == {"Authorization": MASK, "Accept": "*/*"}
    assert extras["keys"] == [f"rk_0badcafe_{MASK}"]
    assert "RuntimeError: refused key rk_0badcafe_" in failed["exc"]


def test_each_record_is_formatted_once(tmp_path: Path) -> None:
    """#13 item 5 (cost): the file handler formats a record once (the standard rotating
    handler formats it twice)."""

    class Counting(logs.JsonFormatter):
        calls = 0

        def format(self, record: logging.LogRecord) -> str:
            Counting.calls += 1
            return super().format(record)

    handler = log_files.JsonLinesFile(tmp_path / "n.jsonl", mode=0o640, max_bytes=10_000)
    handler.setFormatter(Counting("A"))
    record = logging.LogRecord("x", logging.INFO, "", 0, "hello", None, None)
    for _ in range(3):
        handler.handle(record)
    handler.close()
    assert Counting.calls == 3
    assert len((tmp_path / "n.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_files_rotate_by_size_and_are_0640(tmp_path: Path, umask: int) -> None:
    """#13 item 5: past max_bytes the file is rotated (n.jsonl.1, .2, ...), at most `backups`
    old files are kept, no file grows past max_bytes, no line is split, the newest lines are
    in n.jsonl, and every file is 0640 whatever the umask."""
    path = tmp_path / "log" / "n.jsonl"
    old = os.umask(umask)
    try:
        handler = log_files.JsonLinesFile(path, mode=0o640, max_bytes=1000, backups=2)
        with json_logger("rotate", handler) as (log, _):
            for i in range(60):
                log.info("line %03d", i)
    finally:
        os.umask(old)
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["n.jsonl", "n.jsonl.1", "n.jsonl.2"]
    seen = []
    for name in ("n.jsonl.2", "n.jsonl.1", "n.jsonl"):
        f = path.parent / name
        assert f.stat().st_size <= 1000
        assert stat.S_IMODE(f.stat().st_mode) == 0o640
        seen += [x["message"] for x in parsed(f.read_text())]
    assert seen[-1] == "line 059"
    assert seen == [f"line {i:03d}" for i in range(60 - len(seen), 60)]  # in order, none lost


def test_a_restarted_node_counts_what_the_file_already_holds(tmp_path: Path) -> None:
    """#13 item 5: a node restarted onto a nearly full file rotates at the limit, not
    max_bytes later; a file an older version left 0644 is narrowed to 0640."""
    path = tmp_path / "n.jsonl"
    path.write_text("x" * 950 + "\n")
    path.chmod(0o644)  # as an older version left it
    handler = log_files.JsonLinesFile(path, mode=0o640, max_bytes=1000, backups=1)
    with json_logger("restart", handler) as (log, _):
        log.info("after the restart")
    assert stat.S_IMODE(path.with_name("n.jsonl.1").stat().st_mode) == 0o640
    assert path.with_name("n.jsonl.1").read_text() == "x" * 950 + "\n"
    assert parsed(path.read_text())[0]["message"] == "after the restart"


@pytest.mark.parametrize(
    "sent", ["abc", "a" * 128, "trace/42:x=y", "Root=1-5759e988-bd862e3fe1be46a994272793"]
)
def test_a_sane_request_id_is_kept(sent: str) -> None:
    """#13 item 5: visible ASCII, 1 to 128 characters, no credential: kept as sent."""
    assert logs.request_id(sent) == sent


@pytest.mark.parametrize(
    "sent",
    [None, "", "a" * 129, "two words", "tab\there", "new\nline", "caf\u00e9", KEY, "password=x"],
)
def test_other_request_ids_are_replaced_by_a_uuid4(sent: str | None) -> None:
    """#13 item 5: missing, empty, too long, with spaces or controls, not ASCII, or holding a
    credential: replaced by a new uuid4 in hex, different each time."""
    first, second = logs.request_id(sent), logs.request_id(sent)
    assert first != second
    for rid in (first, second):
        assert re.fullmatch(r"[0-9a-f]{32}", rid)
        assert uuid.UUID(hex=rid).version == 4
        assert uuid.UUID(hex=rid).variant == uuid.RFC_4122


@contextmanager
def _bare_root() -> Iterator[logging.Logger]:
    """The root logger without handlers (pytest's are put back afterwards)."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers = []
    try:
        yield root
    finally:
        for h in root.handlers:
            h.close()
        root.handlers = saved
        root.setLevel(level)


def test_serve_writes_json_lines_to_its_own_file_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """#13 item 5: `rocars serve` logs JSON lines at INFO and up to <state>/log/node-<site>.jsonl
    (0640, credentials redacted, rotated by size) and nothing to standard error, which keeps
    only what happened before (the launcher appends it to node-<site>.log)."""
    from deploy import cli

    state = StateDir(tmp_path)
    with _bare_root() as root:
        cli._setup_node_logging(state, "B")
        [handler] = root.handlers
        assert isinstance(handler, log_files.JsonLinesFile)
        assert (handler.maxBytes, handler.backupCount) == (log_files.MAX_BYTES, log_files.BACKUPS)
        logging.getLogger("rocars.access").info("GET /v1/status 200")
        logging.getLogger("rocars.http").error("Authorization: Bearer %s", KEY)
        logging.getLogger("rocars.node").debug("not at INFO")
    path = state.logs / "node-B.jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    lines = parsed(path.read_text())
    assert [(x["logger"], x["node"]) for x in lines] == [
        ("rocars.access", "node-B"),
        ("rocars.http", "node-B"),
    ]
    assert SECRET not in path.read_text()
    assert capsys.readouterr().err == ""


def test_the_cli_keeps_human_readable_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """#13 item 5: the other `rocars` commands keep plain text on standard error."""
    from deploy import cli

    with _bare_root():
        cli._setup_logging()
        logging.getLogger("rocars.cli").warning("something for a person")
    err = capsys.readouterr().err
    assert "WARNING rocars.cli: something for a person" in err
    assert not err.lstrip().startswith("{")


def test_the_supervisor_logs_starts_and_restarts_as_json_events(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """#13 item 5: the supervisor's own lines are JSON on standard error with the node's site
    (from its --site argument) and the events supervisor_started_node and
    supervisor_restarting_node (with the exit code); the node process itself is faked."""
    from node import supervise

    handlers: dict[int, Any] = {}
    monkeypatch.setattr(supervise.signal, "signal", lambda sig, fn: handlers.__setitem__(sig, fn))
    monkeypatch.setattr(supervise.time, "sleep", lambda _s: None)

    class FakeNode:
        started = 0

        def __init__(self, argv: list[str]) -> None:
            FakeNode.started += 1
            self.pid = 1000 + FakeNode.started

        def wait(self) -> int:
            if FakeNode.started == 2:  # the operator stops the supervisor
                handlers[supervise.signal.SIGTERM](supervise.signal.SIGTERM, None)
                return 0
            return 3  # the first node crashes

        def poll(self) -> int | None:
            return None

        def send_signal(self, _sig: int) -> None:
            pass

    monkeypatch.setattr(supervise.subprocess, "Popen", FakeNode)
    argv = [sys.executable, "-m", "deploy", "serve", "--site", "B"]
    with _bare_root(), pytest.raises(SystemExit) as exit_:
        supervise.main(argv)
    assert exit_.value.code == 0
    lines = parsed(capsys.readouterr().err)
    assert [x.get("event") for x in lines] == [
        "supervisor_started_node",
        "supervisor_restarting_node",
        "supervisor_started_node",
    ]
    assert {(x["site"], x["node"], x["logger"]) for x in lines} == {
        ("B", "node-B", "rocars.supervise")
    }
    assert lines[1]["exit_code"] == 3


def test_the_supervisor_stays_small() -> None:
    """#13 item 5 (and #11 target 5): the JSON log module the supervisor imports pulls in
    neither aiohttp nor the CLI."""
    import subprocess

    code = (
        "import sys, node.supervise; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('aiohttp', 'click', 'deploy', 'prometheus_client', 'uuid')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_log_tail_shows_the_json_log_too(tmp_path: Path) -> None:
    """#13 item 5: on a failed start the launcher shows the last lines of node-A.log (what
    came before logging was set up) and of node-A.jsonl, the JSON lines as readable text with
    the last line of a traceback."""
    state = StateDir(tmp_path)
    state.ensure()
    state.logfile("node-A").write_text("=== starting node-A\n" + '{"event":"x"}\n')
    bug = {
        "time": "2030-01-07T08:00:00.000Z",
        "level": "ERROR",
        "logger": "rocars.node",
        "message": "cannot open the journal",
        "exc": "Traceback (most recent call last):\n  ...\nJournalError: disk full\n",
    }
    filler = [{**bug, "message": f"filler {i}", "exc": None} for i in range(30)]
    (state.logs / "node-A.jsonl").write_text(
        "".join(json.dumps(x) + "\n" for x in [*filler, bug]) + "not json\n"
    )
    tail = processes.log_tail(state, "node-A", lines=5)
    assert "=== starting node-A" in tail
    assert "last lines of node-A.jsonl" in tail
    assert (
        "2030-01-07T08:00:00.000Z ERROR rocars.node: cannot open the journal"
        " | JournalError: disk full"
    ) in tail
    assert "not json" in tail
    assert "filler 25" not in tail  # only the last lines
    assert processes.log_tail(state, "etcd-A") == "(no log)"


class _Sequence:
    """What the role watcher observes, one RoleFacts per cycle."""

    def __init__(self, *facts: RoleFacts) -> None:
        self.facts = list(facts)

    async def __call__(self) -> RoleFacts:
        return self.facts.pop(0)


async def test_role_and_leader_changes_are_logged_as_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """#13 item 5: the role watcher logs `leader_changed` when the leader key's holder (read
    with quorum) changes, including the first time it is seen, but not after a cycle without
    a quorum answer; and `role_changed` when the node's role changes."""
    watcher = RoleWatcher(
        patroni=None,  # type: ignore[arg-type]  # observe() is replaced
        patroni_url="http://127.0.0.1:1",
        etcd=None,  # type: ignore[arg-type]
        leader_key="/service/rocars/leader",
        my_member="pg-A",
        interval_s=1.0,
    )
    primary = RoleFacts("pg-A", "primary", "running", "pg-A", True)
    watcher.observe = _Sequence(  # type: ignore[method-assign]
        primary,
        primary,
        RoleFacts("pg-A", "primary", "running", None, False),  # etcd gave no quorum answer
        primary,
        RoleFacts("pg-A", "replica", "streaming", "pg-B", True),
    )
    caplog.set_level(logging.INFO, logger="rocars.role")
    for _ in range(5):
        await watcher.cycle()
    events = [
        (getattr(r, "event", None), r.getMessage())
        for r in caplog.records
        if r.name == "rocars.role"
    ]
    assert [e for e, _ in events] == [
        "leader_changed",
        "role_changed",
        "role_changed",  # no quorum: standby
        "role_changed",  # quorum back, same leader: active again, no leader event
        "leader_changed",
        "role_changed",
    ]
    assert events[0][1] == "Patroni leader is pg-A (was not yet observed)"
    assert events[4][1] == "Patroni leader is pg-B (was pg-A)"
    assert events[1][1].startswith("role changed standby -> active")
