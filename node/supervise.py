"""A tiny process supervisor for the API node: restart it when it dies (like systemd's
Restart=always), so a crashed node is back within about a second and a half.

The supervisor itself does nothing else, so it has nothing to crash on; it forwards SIGTERM and
SIGINT to the node and exits once the node has exited. The launcher runs it as
`python -m node.supervise <node's argv>`: it imports only the standard library, the log
redaction and the JSON log format (monitoring.logs), about 12 MiB instead of the 35 of the whole
`rocars` CLI, once per site (#11 target 5, idle memory). Its own lines are JSON on standard
error, which the launcher appends to `<state>/log/node-<site>.log` (#13 item 5).
"""

from __future__ import annotations

import itertools
import logging
import signal
import subprocess
import sys
import time
from types import FrameType

from monitoring import logs

log = logging.getLogger("rocars.supervise")
MIN_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0
# A child that lived this long was healthy; the next crash restarts it at once again.
STABLE_AFTER_S = 10.0


def supervise(argv: list[str]) -> int:
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    backoff = MIN_BACKOFF_S
    while not stopping:
        started = time.monotonic()
        child = subprocess.Popen(argv)
        log.warning(
            "supervisor started node pid %d", child.pid, extra={"event": "supervisor_started_node"}
        )
        code = child.wait()
        if stopping:
            return 0
        lived = time.monotonic() - started
        backoff = MIN_BACKOFF_S if lived > STABLE_AFTER_S else min(backoff * 2, MAX_BACKOFF_S)
        log.warning(
            "node pid %d exited with %s after %.1fs; restarting in %.1fs",
            child.pid,
            code,
            lived,
            backoff,
            extra={"event": "supervisor_restarting_node", "exit_code": code},
        )
        time.sleep(backoff)
    return 0


def site_of(argv: list[str]) -> str:
    """The site named by the node's `--site` argument ("?" when there is none)."""
    for flag, value in itertools.pairwise(argv):
        if flag == "--site":
            return value
    return "?"


def main(argv: list[str]) -> None:
    # JSON lines, credentials redacted (#10, #13 item 5).
    logs.configure(site_of(argv), logging.StreamHandler(sys.stderr))
    sys.exit(supervise(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
