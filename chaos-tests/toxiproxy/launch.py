"""Start a Toxiproxy server for the chaos suite: the real `toxiproxy-server` when one is on PATH,
otherwise the Python server in `server.py` next to this file (DESIGN.md section 5).

This directory is not a package (see server.py for why); load this file by path::

    spec = importlib.util.spec_from_file_location("rocars_toxiproxy_launch", path_to_this_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)

    with module.start_toxiproxy("127.0.0.1", 0) as handle:   # 0 = pick a free port
        Toxiproxy().update_api_consumer(handle.host, handle.port)
        ...

The handle's `stop()` (also run on leaving the `with` block) terminates the process and waits for
it. The Python server is additionally started with `--exit-on-stdin-eof` on a pipe that only this
process holds, so it exits by itself if the test run dies without calling `stop()`.
"""

from __future__ import annotations

import ipaddress
import json
import selectors
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Literal

SERVER_SCRIPT: Final = Path(__file__).resolve().with_name("server.py")
BINARY_NAME: Final = "toxiproxy-server"
STOP_TIMEOUT: Final = 5.0

# The API is only ever on loopback; never let an HTTP(S)_PROXY variable route the probe elsewhere.
_OPENER: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ToxiproxyStartError(RuntimeError):
    """The server did not come up (exited, or did not answer /version in time)."""


class ToxiproxyHandle:
    """A running Toxiproxy server process. Use as a context manager or call stop()."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        host: str,
        port: int,
        kind: Literal["binary", "python"],
    ) -> None:
        self.process = process
        self.host = host
        self.port = port
        self.kind = kind

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """Terminate the server (SIGTERM, then SIGKILL after `timeout`); return its exit code.
        Safe to call more than once."""
        proc = self.process
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Close our pipe ends only after the process is gone so it never sees a broken pipe
        # mid-shutdown; closing them also avoids ResourceWarnings under filterwarnings=error.
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        return proc.returncode

    def __enter__(self) -> ToxiproxyHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ToxiproxyHandle({self.kind}, {self.url}, pid={self.pid})"


def _check_loopback(host: str) -> None:
    # Same rule as the server: nothing in this project may listen or send beyond loopback.
    if host == "localhost":
        return
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"toxiproxy host must be a loopback address, got {host!r}")


def _free_port(host: str) -> int:
    """Ask the kernel for a free port (only for the Go binary, which cannot report one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _version_ok(url: str) -> bool:
    try:
        with _OPENER.open(url + "/version", timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _read_ready_line(stdout: IO[bytes], proc: subprocess.Popen[bytes], deadline: float) -> int:
    """Read the server's {"event": "ready", "port": N} line; return N."""
    with selectors.DefaultSelector() as sel:
        sel.register(stdout, selectors.EVENT_READ)
        while (remaining := deadline - time.monotonic()) > 0:
            if not sel.select(remaining):
                continue
            line = stdout.readline()
            if not line:
                raise ToxiproxyStartError(f"server exited early (code {proc.wait()})")
            try:
                message = json.loads(line)
            except ValueError:
                continue  # not our line (stray output); keep waiting
            if isinstance(message, dict) and message.get("event") == "ready":
                return int(message["port"])
    raise ToxiproxyStartError("server did not report readiness in time")


def start_toxiproxy(
    host: str = "127.0.0.1",
    port: int = 8474,
    *,
    prefer_binary: bool = True,
    startup_timeout: float = 10.0,
) -> ToxiproxyHandle:
    """Start a Toxiproxy API server on host:port and wait until GET /version answers.

    Uses `toxiproxy-server` from PATH when present and `prefer_binary` is true, otherwise runs
    server.py with this interpreter. `port=0` picks a free port (see handle.port).
    """
    host = host.strip("[]")  # "[::1]" -> "::1"; brackets are added back for URLs only
    _check_loopback(host)
    deadline = time.monotonic() + startup_timeout
    binary = shutil.which(BINARY_NAME) if prefer_binary else None
    handle: ToxiproxyHandle
    if binary is not None:
        if port == 0:
            port = _free_port(host)
        proc = subprocess.Popen(
            [binary, "-host", host, "-port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        handle = ToxiproxyHandle(proc, host, port, "binary")
    else:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(SERVER_SCRIPT),
                "--host",
                host,
                "--port",
                str(port),
                "--exit-on-stdin-eof",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # Unbuffered, so select() on the fd and readline() agree about what has been read.
            bufsize=0,
        )
        handle = ToxiproxyHandle(proc, host, port, "python")
    try:
        if handle.kind == "python":
            assert proc.stdout is not None
            handle.port = _read_ready_line(proc.stdout, proc, deadline)
        while not _version_ok(handle.url):
            if proc.poll() is not None:
                raise ToxiproxyStartError(f"{handle!r} exited with code {proc.returncode}")
            if time.monotonic() > deadline:
                raise ToxiproxyStartError(f"{handle!r} did not answer /version in time")
            time.sleep(0.05)
    except BaseException:
        handle.stop()
        raise
    return handle
