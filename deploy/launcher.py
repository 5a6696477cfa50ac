"""The local cluster launcher: `rocars cluster up | down` (and so `make run` / `make stop`).

Order matters: etcd (all three, they need each other for quorum) -> Patroni on the primary site
(so a fresh cluster bootstraps there) -> Patroni on the DR site -> Redis and Sentinels -> the
application database -> both API nodes -> HAProxy. Each step starts only what is not running, so
running `up` again is harmless and on a partly running system it restarts what is missing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import psycopg
import yaml
from psycopg import sql
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from deploy import configgen, netns, processes
from deploy.processes import ProcessSpec
from deploy.state import DbUser, StateDir
from deploy.topology import Topology, load_topology
from kernel.errors import EtcdUnavailable, LaunchError
from replication.etcd_gateway import EtcdGateway

Progress = Callable[[str], None]

REQUIRED_BINARIES = {
    "etcd": "etcd-server",
    "redis-server": "redis-server",
    "haproxy": "haproxy",
    f"{configgen.PG_BIN_DIR}/postgres": "postgresql-15",
}


def patroni_bin() -> str:
    """Patroni from the venv the install step built for the database user (see install.sh)."""
    marker = Path(sys.prefix) / ".patroni-venv"
    if marker.exists():
        candidate = Path(marker.read_text().strip()) / "bin" / "patroni"
        if candidate.exists():
            return str(candidate)
    return str(Path(sys.prefix) / "bin" / "patroni")


def check_binaries() -> None:
    missing = []
    for binary, package in REQUIRED_BINARIES.items():
        if not (shutil.which(binary) or Path(binary).exists()):
            missing.append(f"{binary} (Debian package {package})")
    if not Path(patroni_bin()).exists():
        missing.append(f"{patroni_bin()} (pip package patroni[etcd3], installed by make run)")
    if missing:
        raise LaunchError(
            "missing binaries: " + ", ".join(missing) + "; run 'make run' as root to install them"
        )


# -- configuration files ---------------------------------------------------------------------


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    tmp.replace(path)


def _chown(path: Path, user: DbUser) -> None:
    if user.is_other:
        os.chown(path, user.uid, user.gid)


def write_configs(topo: Topology, state: StateDir) -> None:
    state.ensure()
    user = DbUser.current()
    passwords = state.secrets()
    _write(state.topology_copy, yaml.safe_dump(topo.model_dump(), sort_keys=False))
    topo_hash = hashlib.sha256(state.topology_copy.read_bytes()).hexdigest()

    runtime = state.runtime
    if user.is_other:
        runtime.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(runtime.parent, 0o755)
    runtime.mkdir(parents=True, exist_ok=True)
    os.chmod(runtime, 0o700)
    _chown(runtime, user)
    link = state.root / "pg"
    if runtime != link and not link.is_symlink():
        link.symlink_to(runtime)

    for name in topo.sites:
        _write(
            state.config / f"etcd-{name}.yaml",
            configgen.etcd_config(topo, name, state.data / f"etcd-{name}"),
        )
    # Redis and Sentinel rewrite their own files after a failover; regenerate them only when
    # the topology changed, or a restart would undo Sentinel's choice of primary.
    stamp = state.config / ".redis-topology"
    fresh = not stamp.exists() or stamp.read_text() != topo_hash
    for name, site in topo.sites.items():
        sentinel = state.config / f"sentinel-{name}.conf"
        if fresh or not sentinel.exists():
            (state.data / f"sentinel-{name}").mkdir(parents=True, exist_ok=True)
            _write(sentinel, configgen.sentinel_config(topo, name, state.data / f"sentinel-{name}"))
        if site.redis is not None:
            redis = state.config / f"redis-{name}.conf"
            if fresh or not redis.exists():
                (state.data / f"redis-{name}").mkdir(parents=True, exist_ok=True)
                _write(redis, configgen.redis_config(topo, name, state.data / f"redis-{name}"))
    stamp.write_text(topo_hash)

    _write(state.config / "haproxy.cfg", configgen.haproxy_config(topo))
    for name in topo.data_sites:
        member = state.member_dir(name)
        for sub in ("", "sock", "log"):
            d = member / sub
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
            _chown(d, user)
        cfg = configgen.patroni_config(topo, name, member, passwords)
        path = member / "patroni.yaml"
        _write(path, yaml.safe_dump(cfg, sort_keys=False), 0o600)
        _chown(path, user)
        _write(
            state.node_config(name),
            yaml.safe_dump(
                configgen.node_config(topo, name, state_root=state.root, passwords=passwords),
                sort_keys=False,
            ),
            0o600,
        )


# -- process specifications ------------------------------------------------------------------


def specs(topo: Topology, state: StateDir) -> dict[str, ProcessSpec]:
    user = DbUser.current()
    out: dict[str, ProcessSpec] = {}
    for name, site in topo.sites.items():
        cfg = str(state.config / f"etcd-{name}.yaml")
        out[f"etcd-{name}"] = ProcessSpec(
            name=f"etcd-{name}",
            site=name,
            netns=topo.netns(name),
            argv=("etcd", "--config-file", cfg),
            marker=cfg,
            ports=(
                ("etcd client", site.host, site.etcd.client_port),
                ("etcd peer", site.host, site.etcd.peer_port),
            ),
        )
    for name in topo.data_sites:
        site = topo.sites[name]
        assert site.patroni and site.postgres and site.redis and site.node
        member = state.member_dir(name)
        cfg = str(member / "patroni.yaml")
        out[f"patroni-{name}"] = ProcessSpec(
            name=f"patroni-{name}",
            site=name,
            netns=topo.netns(name),
            argv=(patroni_bin(), cfg),
            marker=cfg,
            ports=(
                ("Patroni REST", site.host, site.patroni.port),
                ("PostgreSQL", site.host, site.postgres.port),
            ),
            user=user,
            cwd=member,
            env={"HOME": str(member), "PATH": f"{configgen.PG_BIN_DIR}:/usr/bin:/bin"},
        )
    for name, site in topo.sites.items():
        if site.redis is not None:
            cfg = str(state.config / f"redis-{name}.conf")
            out[f"redis-{name}"] = ProcessSpec(
                name=f"redis-{name}",
                site=name,
                netns=topo.netns(name),
                argv=("redis-server", cfg),
                marker=f"{site.host}:{site.redis.port}",
                ports=(("Redis", site.host, site.redis.port),),
            )
    for name, site in topo.sites.items():
        cfg = str(state.config / f"sentinel-{name}.conf")
        out[f"sentinel-{name}"] = ProcessSpec(
            name=f"sentinel-{name}",
            site=name,
            netns=topo.netns(name),
            argv=("redis-server", cfg, "--sentinel"),
            marker=f"{site.host}:{site.sentinel.port}",
            ports=(("Sentinel", site.host, site.sentinel.port),),
        )
    for name in topo.data_sites:
        site = topo.sites[name]
        assert site.node is not None
        out[f"node-{name}"] = ProcessSpec(
            name=f"node-{name}",
            site=name,
            netns=topo.netns(name),
            argv=(
                sys.executable,
                "-m",
                "node",
                "serve",
                "--supervise",
                "--site",
                name,
                "--state-dir",
                str(state.root),
            ),
            marker=f"--state-dir {state.root}",
            ports=(("API node", site.host, site.node.port),),
            env={"PYTHONUNBUFFERED": "1"},
        )
    cfg = str(state.config / "haproxy.cfg")
    entry_host = topo.entry_host()
    out["haproxy"] = ProcessSpec(
        name="haproxy",
        site=topo.entry.site,
        netns=topo.namespaces.hub() if topo.namespaces else None,
        argv=("haproxy", "-db", "-f", cfg),
        marker=cfg,
        ports=(
            ("HAProxy entry", entry_host, topo.entry.port),
            ("HAProxy stats", entry_host, topo.entry.stats_port),
        ),
    )
    return out


# -- readiness -------------------------------------------------------------------------------


async def _wait(
    what: str,
    check: Callable[[], Awaitable[bool]],
    *,
    timeout: float,
    state: StateDir,
    logs: list[str],
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await check():
                return
        except Exception:
            pass
        await asyncio.sleep(0.2)
    tails = "\n".join(f"  last lines of {n}.log:\n{processes.log_tail(state, n)}" for n in logs)
    raise LaunchError(
        f"{what} did not become ready within {timeout:.0f}s (logs in {state.logs})\n{tails}"
    )


async def _http_ok(session: aiohttp.ClientSession, url: str) -> bool:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
        return r.status == 200


def _ensure_running(
    state: StateDir, spec: ProcessSpec, progress: Progress, started: list[str]
) -> None:
    if processes.running_pid(state, spec) is not None:
        return
    processes.check_ports_free(spec)
    pid = processes.start(state, spec)
    started.append(spec.name)
    progress(f"started {spec.name} (pid {pid})")


async def _leader_member(
    session: aiohttp.ClientSession, topo: Topology, namespace: str
) -> str | None:
    gw = EtcdGateway(session, topo.etcd_urls())
    kv = await gw.get(f"{namespace}{topo.name}/leader")
    return kv.value.decode() if kv else None


def bootstrap_database(topo: Topology, state: StateDir, leader_site: str) -> None:
    """Create the application role and database on the leader (idempotent), retrying while
    the freshly promoted or restarted leader starts accepting connections."""
    for attempt in Retrying(
        stop=stop_after_delay(60),
        wait=wait_fixed(0.5),
        retry=retry_if_exception_type(psycopg.OperationalError),
        reraise=True,
    ):
        with attempt:
            _bootstrap_database(topo, state, leader_site)


def _bootstrap_database(topo: Topology, state: StateDir, leader_site: str) -> None:
    site = topo.sites[leader_site]
    assert site.postgres is not None
    pw = state.secrets()
    with psycopg.connect(
        host=site.host,
        port=site.postgres.port,
        user="postgres",
        password=pw["superuser"],
        dbname="postgres",
        connect_timeout=3,
        autocommit=True,
    ) as conn:
        role = conn.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (configgen.APP_USER,)
        ).fetchone()
        if role is None:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(configgen.APP_USER), sql.Literal(pw["app"])
                )
            )
        db = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (configgen.APP_DATABASE,)
        ).fetchone()
        if db is None:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(configgen.APP_DATABASE), sql.Identifier(configgen.APP_USER)
                )
            )


async def up(topo: Topology, state: StateDir, progress: Progress, *, timeout: float = 90) -> None:
    check_binaries()
    if topo.namespaces is not None:
        if netns.create(topo):
            progress(f"created network namespaces {', '.join(netns.all_namespaces(topo))}")
        # From here on this process talks to the sites from the hub, like HAProxy does.
        netns.enter_hub(topo)
    write_configs(topo, state)
    all_specs = specs(topo, state)
    started: list[str] = []
    member = configgen.member_name
    async with aiohttp.ClientSession() as session:
        for name in topo.sites:
            _ensure_running(state, all_specs[f"etcd-{name}"], progress, started)
        gw = EtcdGateway(session, topo.etcd_urls())

        async def etcd_quorum() -> bool:
            await gw.get("/rocars/ping")  # linearizable read: needs a quorum
            return True

        await _wait(
            "etcd quorum",
            etcd_quorum,
            timeout=timeout,
            state=state,
            logs=[f"etcd-{n}" for n in topo.sites],
        )

        primary, dr = topo.data_sites
        fresh = not (state.member_dir(primary) / "data" / "PG_VERSION").exists()
        _ensure_running(state, all_specs[f"patroni-{primary}"], progress, started)
        if fresh:
            # Let the primary site initialise the cluster so it starts out as the leader.
            async def has_leader() -> bool:
                return await _leader_member(session, topo, configgen.PATRONI_NAMESPACE) == member(
                    primary
                )

            await _wait(
                f"Patroni bootstrap on site {primary}",
                has_leader,
                timeout=timeout,
                state=state,
                logs=[f"patroni-{primary}"],
            )
        _ensure_running(state, all_specs[f"patroni-{dr}"], progress, started)

        for name, spec in all_specs.items():
            if name.startswith(("redis-", "sentinel-")):
                _ensure_running(state, spec, progress, started)

        leader_name: list[str] = []

        async def any_leader() -> bool:
            lm = await _leader_member(session, topo, configgen.PATRONI_NAMESPACE)
            if lm is None:
                return False
            site = lm.removeprefix("pg-")
            ok = await _http_ok(session, f"{topo.patroni_url(site)}/primary")
            if ok:
                leader_name[:] = [site]
            return ok

        await _wait(
            "a Patroni leader",
            any_leader,
            timeout=timeout,
            state=state,
            logs=[f"patroni-{n}" for n in topo.data_sites],
        )
        await asyncio.to_thread(bootstrap_database, topo, state, leader_name[0])
        from deploy import admin

        applied = await admin.run_migrations(topo, state)
        if applied:
            progress(f"applied migrations: {', '.join(applied)}")

        for name in topo.data_sites:
            _ensure_running(state, all_specs[f"node-{name}"], progress, started)
        _ensure_running(state, all_specs["haproxy"], progress, started)

        for name in topo.data_sites:
            url = f"{topo.node_url(name)}/health/live"
            await _wait(
                f"API node {name}",
                lambda u=url: _http_ok(session, u),  # type: ignore[misc]
                timeout=timeout,
                state=state,
                logs=[f"node-{name}"],
            )

        async def entry_ready() -> bool:
            return await _http_ok(session, f"{topo.entry_url()}/health/ready")

        await _wait(
            "HAProxy routing to the active node",
            entry_ready,
            timeout=timeout,
            state=state,
            logs=["haproxy", *[f"node-{n}" for n in topo.data_sites]],
        )

        async def sync_standby() -> bool:
            async with session.get(
                f"{topo.patroni_url(leader_name[0])}/cluster",
                timeout=aiohttp.ClientTimeout(total=1),
            ) as r:
                data = await r.json()
            return any(
                m.get("role") == "sync_standby" and m.get("state") == "streaming"
                for m in data.get("members", [])
            )

        await _wait(
            "a streaming synchronous standby",
            sync_standby,
            timeout=timeout,
            state=state,
            logs=[f"patroni-{n}" for n in topo.data_sites],
        )
        await _etcd_leader_to_witness(session, topo, progress)
    if not started:
        progress("everything was already running")


async def _etcd_leader_to_witness(
    session: aiohttp.ClientSession, topo: Topology, progress: Progress
) -> None:
    """Start with etcd's raft leader on the witness site, so losing a data site never also
    loses the etcd leader (whose loss renews Patroni's leader key: a slower failover); the
    active node keeps it there afterwards (failover/etcd_placement.py)."""
    witness = topo.witness_site
    try:
        if await EtcdGateway(session, topo.etcd_urls()).move_leader(topo.etcd_url(witness)):
            progress(f"moved the etcd leadership to the witness site {witness}")
    except EtcdUnavailable as exc:  # an optimisation, not a condition for being up
        progress(f"etcd leadership stays where it is: {exc}")


def down(topo: Topology, state: StateDir, progress: Progress) -> None:
    all_specs = specs(topo, state)
    # Tier by tier (each tier at once): entry and API nodes, then Redis, then the database
    # members, then etcd last so Patroni can release its leader key cleanly.
    tiers = [
        ["haproxy", *[f"node-{n}" for n in topo.data_sites]],
        [n for n in all_specs if n.startswith(("sentinel-", "redis-"))],
        [f"patroni-{n}" for n in topo.data_sites],
        [f"etcd-{n}" for n in topo.sites],
    ]
    for tier in tiers:
        for name in processes.stop_many(state, [all_specs[n] for n in tier]):
            progress(f"stopped {name}")
    # A PostgreSQL whose Patroni was killed keeps running on its own: stop it by its pid file.
    for name in topo.data_sites:
        pid = processes.postmaster_pid(state.member_dir(name) / "data")
        if pid is not None and processes.leftovers([str(state.member_dir(name))]):
            processes.stop_pids([pid])
            progress(f"stopped orphaned PostgreSQL of site {name}")
    rest = processes.leftovers([str(state.root), str(state.runtime)])
    if rest:
        processes.stop_pids([p.pid for p in rest], timeout=5)
        progress(f"stopped {len(rest)} leftover process(es)")
    if topo.namespaces is not None:
        removed = netns.destroy(topo)
        if removed:
            progress(f"deleted network namespaces {', '.join(removed)}")


def purge(state: StateDir) -> None:
    """Remove the state folder and the PostgreSQL runtime folder (after `down`)."""
    shutil.rmtree(state.runtime, ignore_errors=True)
    shutil.rmtree(state.root, ignore_errors=True)


def load_state_topology(state: StateDir, topology: Path | None) -> Topology:
    """The topology a state folder was generated from, unless one is named explicitly."""
    if topology is not None:
        return load_topology(topology)
    if state.topology_copy.exists():
        return load_topology(state.topology_copy)
    from deploy.state import DEFAULT_TOPOLOGY

    return load_topology(DEFAULT_TOPOLOGY)


def summary(topo: Topology, state: StateDir) -> dict[str, object]:
    return {
        "api": topo.entry_url(),
        "nodes": {n: topo.node_url(n) for n in topo.data_sites},
        "patroni": {n: topo.patroni_url(n) for n in topo.data_sites},
        "metrics": {n: f"{topo.node_url(n)}/metrics" for n in topo.data_sites},
        "haproxy_stats": f"http://{topo.entry_host()}:{topo.entry.stats_port}/stats",
        "logs": str(state.logs),
        "state_dir": str(state.root),
    }


def dump_summary(topo: Topology, state: StateDir) -> str:
    return json.dumps(summary(topo, state), indent=2)
