"""#11 target 6: the cost of distance to the DR site. The standby's streaming connection is
routed through a Toxiproxy-API proxy (the chaos suite's, chaos-tests/toxiproxy: the real
`toxiproxy-server` when on PATH, else its Python server) in front of the primary, and the closed
loop is measured with 0, 2, 5 and 20 ms of latency added each way on that link.

Routing: the primary's Patroni advertises `postgresql.connect_address`, and the standby's
Patroni builds its `primary_conninfo` from it. The bench points that address at the proxy in
the primary's patroni.yaml, asks Patroni to reload (REST `POST /reload`, with the operator's
credentials), and waits until the standby's WAL receiver streams from the proxy's port and is
the synchronous standby again. The original file is put back and reloaded afterwards, also when
a measurement fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import yaml

from deploy import admin, http_client
from deploy.bench import closedloop
from deploy.failover_ops import operator_patroni
from deploy.state import REPO_ROOT, StateDir
from deploy.topology import Topology
from kernel.errors import RocarsError
from kernel.names import member_name
from node.config import load_node_config

LAUNCH = REPO_ROOT / "chaos-tests" / "toxiproxy" / "launch.py"
PROXY = "replication"
ROUTE_TIMEOUT_S = 60.0
# Never let an HTTP(S)_PROXY variable route loopback calls elsewhere.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _launch_module() -> ModuleType:
    # chaos-tests/toxiproxy is not a package (see its launch.py): load the file by path.
    name = "rocars_toxiproxy_launch"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, LAUNCH)
    if spec is None or spec.loader is None:
        raise RocarsError(f"cannot load {LAUNCH}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _call(url: str, method: str = "GET", doc: Any = None) -> Any:
    data = None if doc is None else json.dumps(doc).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    with _OPENER.open(req, timeout=10) as r:
        body = r.read()
        is_json = r.headers.get_content_type() == "application/json"
    # Patroni's POST /reload answers plain text ("reload scheduled").
    return json.loads(body) if body and is_json else body.decode(errors="replace")


def set_delay(api: str, delay_ms: int) -> None:
    """Latency of `delay_ms` on both directions of the replication proxy (none for 0)."""
    for t in _call(f"{api}/proxies/{PROXY}/toxics") or []:
        _call(f"{api}/proxies/{PROXY}/toxics/{t['name']}", "DELETE")
    if delay_ms <= 0:
        return
    for stream in ("downstream", "upstream"):
        _call(
            f"{api}/proxies/{PROXY}/toxics",
            "POST",
            {
                "name": f"delay-{stream}",
                "type": "latency",
                "stream": stream,
                "attributes": {"latency": delay_ms, "jitter": 0},
            },
        )


async def _superuser(topo: Topology, state: StateDir, site: str) -> psycopg.AsyncConnection[Any]:
    db = load_node_config(state.node_config(site)).database
    db = db.model_copy(update={"user": "postgres", "passfile": state.pgpass("superuser")})
    return await psycopg.AsyncConnection.connect(
        db.conninfo(application_name="rocars-bench"), autocommit=True
    )


async def _streams_from(
    topo: Topology, state: StateDir, primary: str, standby: str, port: int
) -> bool:
    """The standby streams from `port` and the primary counts it as its synchronous standby."""
    try:
        async with await _superuser(topo, state, standby) as c:
            cur = await c.execute("SELECT status, sender_port FROM pg_stat_wal_receiver")
            rx = await cur.fetchone()
        async with await _superuser(topo, state, primary) as c:
            cur = await c.execute(
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s",
                (member_name(standby),),
            )
            tx = await cur.fetchone()
    except psycopg.Error:
        return False
    return (
        rx is not None and rx[0] == "streaming" and rx[1] == port
        and tx is not None and tx[0] == "sync"
    )  # fmt: skip


def _wait_streaming(topo: Topology, state: StateDir, primary: str, standby: str, port: int) -> None:
    deadline = time.monotonic() + ROUTE_TIMEOUT_S
    while not asyncio.run(_streams_from(topo, state, primary, standby, port)):
        if time.monotonic() > deadline:
            raise RocarsError(
                f"the standby did not stream from port {port} as the synchronous standby within"
                f" {ROUTE_TIMEOUT_S:.0f} s"
            )
        time.sleep(0.5)


def _reload(topo: Topology, state: StateDir, site: str) -> None:
    """POST /reload, an unsafe method: with the operator's credentials (#12 item 3)."""

    async def ask() -> tuple[int, str]:
        async with http_client.session(topo, state) as s:
            return await operator_patroni(s, state).reload(topo.patroni_url(site))

    code, text = asyncio.run(ask())
    if code >= 300:
        raise RocarsError(f"Patroni {site} refused to reload ({code}): {text}")


@contextlib.contextmanager
def routed(
    topo: Topology, state: StateDir, primary: str, standby: str, listen: str
) -> Iterator[None]:
    """The standby's streaming connection goes to `listen` (host:port) while inside."""
    path: Path = state.member_dir(primary) / "patroni.yaml"
    original = path.read_text()
    cfg = yaml.safe_load(original)
    direct_port = int(cfg["postgresql"]["connect_address"].rsplit(":", 1)[1])
    cfg["postgresql"]["connect_address"] = listen
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    try:
        _reload(topo, state, primary)
        _wait_streaming(topo, state, primary, standby, int(listen.rsplit(":", 1)[1]))
        yield
    finally:
        path.write_text(original)
        _reload(topo, state, primary)
        _wait_streaming(topo, state, primary, standby, direct_port)


def measure(
    topo: Topology,
    state: StateDir,
    wrk_script: str,
    delays_ms: tuple[int, ...],
    seconds: float,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    """Closed-loop API rate and p50 directly, then through the proxy with each delay."""
    api = topo.entry_url()
    primary = asyncio.run(admin.leader_site(topo))
    standby = next(s for s in topo.data_sites if s != primary)
    pg = topo.sites[primary].postgres
    assert pg is not None
    upstream = f"{topo.sites[primary].host}:{pg.port}"
    script = wrk_script
    direct = closedloop.run_wrk(api, script, seconds)
    rows = []
    with _launch_module().start_toxiproxy("127.0.0.1", 0) as tp:
        proxy = _call(
            f"{tp.url}/proxies",
            "POST",
            {"name": PROXY, "listen": "127.0.0.1:0", "upstream": upstream, "enabled": True},
        )
        with routed(topo, state, primary, standby, proxy["listen"]):
            for d in delays_ms:
                set_delay(tp.url, d)
                r = closedloop.run_wrk(api, script, seconds)
                echo(f"  {d} ms: {r.rate:,.0f} req/s, p50 {r.latency.p50:.1f} ms")
                rows.append(
                    {
                        "delay_ms": d,
                        "rps": round(r.rate, 1),
                        "p50_ms": round(r.latency.p50, 3),
                        "p99_ms": round(r.latency.p99, 3),
                        "statuses": r.statuses,
                    }
                )
            set_delay(tp.url, 0)
        kind = tp.kind
    return {
        "proxy": kind,
        "direct": {"rps": round(direct.rate, 1), "p50_ms": round(direct.latency.p50, 3)},
        "delays": rows,
        "by_delay": {str(r["delay_ms"]): r for r in rows},
    }
