"""Structured logs (#13 item 5): one JSON object per line, from the node and its supervisor.

Every line has `time` (ISO 8601 UTC, milliseconds), `level`, `site`, `node` ("node-A"),
`logger` and `message`; `exc` holds a traceback, `stack` a stack. Fields given with `extra=` are
written as they are. While a request is handled (`bind_request`), every line also carries its
`request_id`, and its `account_id` once the request has authenticated (never the key). The
node's one line per request (logger `rocars.access`) adds `method`, `route` (the route
template, as in the metrics), `status` and `duration_ms`.

Lines an SRE looks for carry a stable `event` name; the wording of the message may change,
the name does not:

    node_started, node_stopping,           the node (node.app) opened its resources and
    node_stopped                           serves / stops serving / has closed everything
    role_changed                           this node's role (failover.role)
    leader_changed                         the Patroni leader key's holder (failover.role)
    switchover_requested                   the failover controller asked Patroni to switch
    contingency_mode_changed               normal/manual mode (node.app)
    contingency_auto_activated             manual mode switched on automatically
    supervisor_started_node                the supervisor (node.supervise) started the node
    supervisor_restarting_node             ... the node exited and is restarted

Credentials never reach a line in clear: `configure` installs kernel.redact's filter, which
also rewrites extra fields. The standard library only, and not even logging.handlers (0.7 MiB):
the supervisor imports this module and must stay small. The node's log file is
monitoring.log_files.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Final

from kernel import redact

if TYPE_CHECKING:  # pathlib costs the supervisor memory for nothing
    from pathlib import Path

REQUEST_ID_HEADER: Final = "X-Request-Id"
MAX_REQUEST_ID: Final = 128
# "Sane" client ids: visible ASCII (no spaces or controls), so an id is one word to grep and
# safe to echo in a header; anything else is replaced by one of ours.
_SANE_ID: Final = re.compile(rf"[!-~]{{1,{MAX_REQUEST_ID}}}")

REQUEST_ID: ContextVar[str | None] = ContextVar("rocars_request_id", default=None)
ACCOUNT_ID: ContextVar[int | None] = ContextVar("rocars_account_id", default=None)
ACCESS: Final = logging.getLogger("rocars.access")


def new_request_id() -> str:
    """A random UUID (version 4) in hex, as uuid.uuid4().hex, without importing uuid (and its
    platform probe) into the supervisor."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def request_id(sent: str | None) -> str:
    """The id of a request whose client sent `sent` (its X-Request-Id): kept when sane and free
    of credentials (it is written to every line of the request), else a new one."""
    if sent is not None and _SANE_ID.fullmatch(sent) and redact.redact(sent) == sent:
        return sent
    return new_request_id()


RequestTokens = tuple[Token[str | None], Token[int | None]]


def bind_request(rid: str) -> RequestTokens:
    """Lines logged from now on in this task (and tasks it starts) carry `rid`; the account
    is not known yet. Undo with `unbind_request`."""
    return REQUEST_ID.set(rid), ACCOUNT_ID.set(None)


def unbind_request(tokens: RequestTokens) -> None:
    REQUEST_ID.reset(tokens[0])
    ACCOUNT_ID.reset(tokens[1])


def bind_account(account_id: int) -> None:
    """The request being handled has authenticated as `account_id`."""
    ACCOUNT_ID.set(account_id)


# One encoder for every line: json.dumps with any option builds a new one per call. Anything
# that is not JSON (a path, an exception) is written as its text; output is ASCII.
_ENCODER: Final = json.JSONEncoder(default=str, separators=(",", ":"))


class JsonFormatter(logging.Formatter):
    """One record as one line of JSON (ASCII only, so its length is its size in bytes)."""

    def __init__(self, site: str) -> None:
        super().__init__()
        self.site = site
        self.node = f"node-{site}"
        # The formatted second, reused by every line within it: strftime is most of the cost
        # of the time stamp. One tuple, so threads never see one half updated.
        self._second: tuple[int, str] = (-1, "")

    def stamp(self, created: float) -> str:
        second = int(created)
        cached = self._second
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._second = cached
        return f"{cached[1]}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": self.stamp(record.created),
            "level": record.levelname,
            "site": self.site,
            "node": self.node,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = REQUEST_ID.get()
        if rid is not None:
            doc["request_id"] = rid
            account = ACCOUNT_ID.get()
            if account is not None:
                doc["account_id"] = account
        fields = record.__dict__
        for name in fields.keys() - redact.RECORD_ATTRS:
            doc[name] = fields[name]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return _ENCODER.encode(doc)


def json_log_path(log_dir: Path, process: str) -> Path:
    """Where `process` ("node-A") writes its JSON lines: next to the launcher's `<process>.log`
    (its standard output and error)."""
    return log_dir / f"{process}.jsonl"


def configure(site: str, handler: logging.Handler, level: int = logging.INFO) -> None:
    """The process's root logger writes JSON lines through `handler` only, credentials
    redacted (kernel.redact)."""
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    handler.setFormatter(JsonFormatter(site))
    root.addHandler(handler)
    root.setLevel(level)
    redact.install(root)
    # The JSON lines carry none of the caller's file and line, thread or process (the node
    # has one of each): skip collecting them for every record, as the logging HOWTO's
    # "Optimization" section says. The access line of every request pays it otherwise (#11).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
