"""The chaos topology's Toxiproxy server and proxies (#14 item 1), for deploy.launcher.

The server is the real `toxiproxy-server` when one is on PATH, else the chaos suite's Python
server (chaos-tests/toxiproxy/server.py, DESIGN.md section 5), run as
`python -m deploy.chaos_proxies --state-dir ...` so its command line names the state folder
(`rocars cluster down` then stops it with the other leftovers, after etcd). The proxies of
deploy.chaos_links's plan are created through `toxiproxy-python`, like the tests drive them;
the plan is also written to the state folder (config/toxiproxy.json: which proxy is which).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from toxiproxy import Toxiproxy

from deploy import chaos_links
from deploy.processes import ProcessSpec
from deploy.state import REPO_ROOT, StateDir
from deploy.topology import Topology
from kernel.errors import LaunchError

PROCESS = "toxiproxy"
SERVER_SCRIPT = REPO_ROOT / "chaos-tests" / "toxiproxy" / "server.py"
BINARY = "toxiproxy-server"
# Loopback only: never let an HTTP(S)_PROXY variable route the probe elsewhere.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def plan_file(state: StateDir) -> Path:
    return state.config / "toxiproxy.json"


def prepare(topo: Topology, state: StateDir) -> dict[str, ProcessSpec]:
    """Write the plan and return the server's process spec ({} without chaos proxies)."""
    if not topo.chaos_proxies:
        return {}
    assert topo.chaos is not None
    port = topo.chaos.toxiproxy_port
    path = plan_file(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([x.as_toxiproxy() for x in chaos_links.plan(topo)], indent=2))
    binary = shutil.which(BINARY)
    argv: tuple[str, ...]
    if binary is not None:
        # The Go server creates the plan's proxies itself from -config, and names the file.
        argv = (binary, "-host", chaos_links.PROXY_HOST, "-port", str(port), "-config", str(path))
        marker = str(path)
    else:
        argv = (
            sys.executable, "-m", "deploy.chaos_proxies",
            "--state-dir", str(state.root), "--port", str(port),
        )  # fmt: skip
        marker = f"--state-dir {state.root}"
    spec = ProcessSpec(
        name=PROCESS,
        site=topo.entry.site,
        argv=argv,
        marker=marker,
        ports=(("Toxiproxy API", chaos_links.PROXY_HOST, port),),
        env={"PYTHONUNBUFFERED": "1"},
    )
    return {PROCESS: spec}


def api_url(topo: Topology) -> str:
    assert topo.chaos is not None
    return f"http://{chaos_links.PROXY_HOST}:{topo.chaos.toxiproxy_port}"


def client(topo: Topology) -> Toxiproxy:
    """A toxiproxy-python client of this topology's server (its API address is global to the
    library: one server per process at a time)."""
    assert topo.chaos is not None
    tp = Toxiproxy()
    tp.update_api_consumer(chaos_links.PROXY_HOST, topo.chaos.toxiproxy_port)
    return tp


def api_ready(topo: Topology) -> bool:
    try:
        with _OPENER.open(f"{api_url(topo)}/version", timeout=1.0) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def ensure_proxies(topo: Topology) -> list[str]:
    """Create the plan's proxies that are missing (or differ); the names created. An existing
    proxy is left as it is (enabled or not, with its toxics): tests own its state."""
    try:
        made = client(topo).populate([x.as_toxiproxy() for x in chaos_links.plan(topo)])
    except Exception as exc:  # requests' and the library's errors alike
        raise LaunchError(f"cannot create the chaos proxies at {api_url(topo)}: {exc}") from exc
    return [str(p.name) for p in made]


def _serve(argv: list[str] | None = None) -> int:
    """The Python server, under a command line that names the state folder."""
    parser = argparse.ArgumentParser(description="the chaos topology's Toxiproxy server")
    parser.add_argument("--state-dir", required=True, help="names this cluster's process")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    # chaos-tests/toxiproxy is not a package (see its server.py): load the file by path.
    spec = importlib.util.spec_from_file_location("rocars_toxiproxy_server", SERVER_SCRIPT)
    if spec is None or spec.loader is None:
        raise LaunchError(f"cannot load {SERVER_SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return int(module.main(["--host", chaos_links.PROXY_HOST, "--port", str(args.port)]))


if __name__ == "__main__":
    sys.exit(_serve())
