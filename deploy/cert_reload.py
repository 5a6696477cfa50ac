"""Making a running local system use rotated certificates, with no downtime (#12 item 1).

`rocars certs rotate` writes new files into `<state>/pki` (deploy/pki.py); this module then
tells every running component, by the least disruptive means it allows (the table in
deploy/pki.py's docstring):

    component         new leaves (rotate)                 trust changed (--ca, --drop-old-ca)
    Patroni/Postgres  SIGHUP: PostgreSQL reloads; Patroni's  the same (Patroni's REST trust
                      REST rebuilds on a new serial           follows at the next leaf change)
    Redis             CONFIG SET tls-cert-file (rereads       the same
                      every tls-* file)
    Sentinel          restart, one at a time, each waited    the same
                      for until every Sentinel sees it
    HAProxy           a new process with -sf <old>: it       the same
                      binds beside the old, which finishes
                      its connections and exits; the hub's,
                      then each data site's (a floating
                      address, deploy/floating_address.py)
    API nodes         SIGHUP (node/tls_reload.py)            the same (a dropped CA is forgotten
                                                             by their links at a restart)
    etcd              nothing: rereads its certificate per   restart, one member at a time,
                      connection                              the raft leader last, waited for
    monitoring        nothing: the toolkit and the exporter  nothing, except the Redis
                      read their files per connection         exporter: restarted

`plan(topo, change)` is that table for one topology, pure. `apply` carries a plan out on the
running system: first the generated files (the members' copies of their TLS files), then each
action in order, each followed by a fact-based wait: a listener whose certificate changed must
present the serial number of the file on disk, a restarted member must be back in its quorum.
It stops at the first component that does not come back, saying what to do; the files are
rotated by then, and `rocars certs reload` finishes the job once the cause is fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import signal
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from cryptography import x509
from redis.asyncio import Redis

from deploy import (
    config_files,
    control_tls,
    etcd_auth,
    floating_address,
    netns,
    processes,
    readiness,
    redis_acl,
)
from deploy.configgen import REDIS_MASTER_NAME
from deploy.pki import PkiDir
from deploy.process_specs import specs
from deploy.state import StateDir
from deploy.topology import Topology, read_replica_process
from kernel.errors import EtcdUnavailable, LaunchError

# -- the plan (pure) -------------------------------------------------------------------------


class Change(enum.Enum):
    """What a rotation changed."""

    LEAVES = "leaves"  # `rotate`: every leaf reissued, trust unchanged
    TRUST = "trust"  # `rotate --ca` or `--drop-old-ca`: the CA bundle changed, leaves did not


class How(enum.Enum):
    NOTHING = "nothing to do"
    SIGHUP = "reload (SIGHUP)"
    CONFIG_SET = "CONFIG SET tls-cert-file"
    RESTART = "restart"
    HAPROXY_RELOAD = "reload (new process, -sf old)"


@dataclass(frozen=True)
class Listener:
    """A TLS port and the certificate (pki file stem) it must present once reloaded."""

    host: str
    port: int
    cert: str
    postgres: bool = False  # PostgreSQL: TLS after its SSLRequest
    # The name the certificate is checked against when it does not name `host`: a data site's
    # HAProxy presents the hub's certificate, which names the floating address, not the site.
    name: str | None = None

    @property
    def tls_name(self) -> str:
        return self.name or self.host


@dataclass(frozen=True)
class Action:
    process: str  # a deploy.process_specs name
    how: How
    listeners: tuple[Listener, ...] = ()  # checked for the new serial (new leaves only)
    note: str = ""


# The monitoring processes of the witness site (one each, named without a site).
WITNESS_SERVICES = ("prometheus", "alertmanager", "redis-exporter")


def _listeners(topo: Topology, process: str) -> tuple[Listener, ...]:
    """The TLS ports `process` serves and the certificate of each."""
    sites = topo.sites
    if process == "haproxy":
        host = topo.entry_host()
        return (
            Listener(host, topo.entry.port, "haproxy"),
            Listener(host, topo.entry.stats_port, "haproxy"),
        )
    kind, _, site = process.rpartition("-")
    if kind == "haproxy":  # a data site's own HAProxy (a floating address)
        assert topo.entry.floating is not None, process
        name = topo.entry.floating.address
        host = sites[site].host
        return (
            Listener(host, topo.entry.port, "haproxy", name=name),
            Listener(host, topo.entry.stats_port, "haproxy", name=name),
        )
    if process in WITNESS_SERVICES:
        w = topo.witness_site
        port = getattr(sites[w], process.replace("-", "_")).port
        return (Listener(sites[w].host, port, f"{process}-{w}"),)
    if kind == "keepalived":  # no listener: its check is a client (curl)
        return ()
    if kind == "etcd":
        s = sites[site]
        return (
            Listener(s.host, s.etcd.client_port, f"etcd-{site}"),
            Listener(s.host, s.etcd.peer_port, f"etcd-peer-{site}"),
        )
    if kind == "patroni":
        s = sites[site]
        assert s.patroni is not None and s.postgres is not None
        return (
            Listener(s.host, s.postgres.port, f"postgres-{site}", postgres=True),
            Listener(s.host, s.patroni.port, f"patroni-{site}"),
        )
    if kind == "patroni-replica":  # a read replica (#17 item 5): its site's certificates
        r = topo.read_replica(site)
        return (
            Listener(sites[site].host, r.postgres.port, f"postgres-{site}", postgres=True),
            Listener(sites[site].host, r.patroni.port, f"patroni-{site}"),
        )
    if kind == "redis":
        redis = sites[site].redis
        assert redis is not None
        return (Listener(sites[site].host, redis.port, f"redis-{site}"),)
    if kind == "sentinel":
        return (Listener(sites[site].host, sites[site].sentinel.port, f"sentinel-{site}"),)
    if kind == "node":
        node = sites[site].node
        assert node is not None
        return (Listener(sites[site].host, node.port, f"node-{site}"),)
    assert kind == "postgres-exporter", process
    exp = sites[site].postgres_exporter
    assert exp is not None
    return (Listener(sites[site].host, exp.port, process),)


def plan(topo: Topology, change: Change) -> tuple[Action, ...]:
    """What to do, in order, so that every component of `topo` uses the files after `change`.

    Patroni comes first: its REST API trusts a new CA only once it rebuilds its listener for a
    new certificate, and in the second step of a CA rotation every client starts presenting
    certificates from the new CA. etcd's members restart first on a trust change, so that
    everything that dials etcd next meets members that already trust the bundle."""
    leaves = change is Change.LEAVES

    def act(process: str, how: How, note: str = "") -> Action:
        return Action(process, how, _listeners(topo, process) if leaves else (), note)

    etcd = [f"etcd-{s}" for s in topo.sites]
    out: list[Action] = []
    if not leaves:
        out += [act(p, How.RESTART, "it reads its CA file only at start") for p in etcd]
    out += [
        act(
            f"patroni-{s}",
            How.SIGHUP,
            "" if leaves else "its REST API trusts the new bundle from the next leaf rotation on",
        )
        for s in topo.data_sites
    ]
    out += [
        act(read_replica_process(s), How.SIGHUP, "a read replica: its site's certificates")
        for s in topo.read_replica_sites
    ]
    out += [act(f"redis-{s}", How.CONFIG_SET) for s, site in topo.sites.items() if site.redis]
    out += [
        act(f"sentinel-{s}", How.RESTART, "Sentinel cannot reload its TLS files")
        for s in topo.sites
    ]
    if not floating_address.replaces_hub(topo):
        out.append(act("haproxy", How.HAPROXY_RELOAD))
    if topo.entry.floating is not None:  # each data site's HAProxy serves the floating address
        out += [act(f"haproxy-{s}", How.HAPROXY_RELOAD) for s in topo.data_sites]
        out += [
            act(f"keepalived-{s}", How.NOTHING, "its check's curl reads its files at each run")
            for s in topo.data_sites
        ]
    out += [
        act(
            f"node-{s}",
            How.SIGHUP,
            ""
            if leaves
            else "a dropped CA stays trusted by its etcd and Patroni links until it restarts",
        )
        for s in topo.data_sites
    ]
    if leaves:
        out += [act(p, How.NOTHING, "rereads its certificate per connection") for p in etcd]
    if topo.monitored:
        watchers = [
            "prometheus",
            "alertmanager",
            *(f"postgres-exporter-{s}" for s in topo.data_sites),
        ]
        out += [act(p, How.NOTHING, "rereads its files per connection") for p in watchers]
        out.append(
            act("redis-exporter", How.NOTHING, "rereads its certificate per connection")
            if leaves
            else act("redis-exporter", How.RESTART, "it may hold its CA file from its start")
        )
    return tuple(out)


# -- carrying it out (I/O) ---------------------------------------------------------------------

WAIT_S = 60.0
POLL_S = 0.25
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=2)
_SSL_REQUEST = struct.pack("!ii", 8, 80877103)  # PostgreSQL's SSLRequest message

Progress = Callable[[str], None]


class ReloadError(LaunchError):
    """A component did not take the new files; the message names it and says what to do."""


@dataclass(frozen=True)
class Outcome:
    process: str
    done: str


def file_serial(pki: PkiDir, cert: str) -> int:
    """The serial number of the certificate file `cert` (a pki file stem)."""
    return x509.load_pem_x509_certificate(pki.cert(cert).read_bytes()).serial_number


def presented_serial(
    host: str,
    port: int,
    ctx: ssl.SSLContext,
    *,
    postgres: bool = False,
    timeout: float = 3.0,
    name: str | None = None,
) -> int:
    """The serial number of the certificate a TLS listener presents now (a new connection;
    the certificate verified by `ctx` for `name`, default `host`). `postgres`: PostgreSQL's
    port, TLS after SSLRequest."""
    with socket.create_connection((host, port), timeout=timeout) as raw:
        if postgres:
            raw.sendall(_SSL_REQUEST)
            if raw.recv(1) != b"S":
                raise ssl.SSLError(f"{host}:{port} refused TLS")
        with ctx.wrap_socket(raw, server_hostname=name or host) as tls:
            der = tls.getpeercert(binary_form=True)
    if der is None:
        raise ssl.SSLError(f"{host}:{port} presented no certificate")
    return x509.load_der_x509_certificate(der).serial_number


def catches_sighup(pid: int) -> bool:
    """Whether process `pid` has a handler for SIGHUP (its SigCgt mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


async def _until(what: str, check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """Poll `check` (an exception counts as not yet) until it holds; ReloadError after
    `timeout` seconds, with the last error seen."""
    deadline = time.monotonic() + timeout
    last = "it never held"
    while True:
        try:
            if await check():
                return
        except Exception as exc:  # a component coming back fails in many ways
            last = f"last error: {exc!r}"
        if time.monotonic() > deadline:
            raise ReloadError(f"{what} not seen within {timeout:.0f}s ({last})")
        await asyncio.sleep(POLL_S)


def _up(entry: dict[str, Any]) -> bool:
    """A Sentinel's view of a peer or the primary (redis-py's parsed form): reachable, linked."""
    return not entry.get("is_sdown", True) and not entry.get("is_disconnected", True)


def _linked(peers: object, sites: list[str], topo: Topology) -> bool:
    """`peers` (SENTINEL SENTINELS, parsed) lists the Sentinel of every one of `sites`, by
    address, each up."""
    if not isinstance(peers, list):
        return False
    seen = {(p.get("ip"), p.get("port")) for p in peers if isinstance(p, dict) and _up(p)}
    return all((topo.sites[s].host, topo.sites[s].sentinel.port) in seen for s in sites)


class _Run:
    """One `apply`: the system, its process specs and an operator's HTTP session."""

    def __init__(self, topo: Topology, state: StateDir, session: aiohttp.ClientSession) -> None:
        self.topo, self.state, self.session = topo, state, session
        self.pki = PkiDir(state.pki)
        self.specs = specs(topo, state)

    def _ctx(self) -> ssl.SSLContext:
        return control_tls.context(self.state)

    async def serves_new(self, listener: Listener) -> bool:
        want = file_serial(self.pki, listener.cert)
        got = await asyncio.to_thread(
            presented_serial,
            listener.host,
            listener.port,
            self._ctx(),
            postgres=listener.postgres,
            name=listener.name,
        )
        return got == want

    async def wait_listeners(self, action: Action) -> None:
        for lsn in action.listeners:
            await _until(
                f"{action.process} presenting the new certificate {lsn.cert} on "
                f"{lsn.host}:{lsn.port}",
                lambda lsn=lsn: self.serves_new(lsn),  # type: ignore[misc]
                WAIT_S,
            )

    # each How --------------------------------------------------------------------------------

    async def sighup(self, action: Action) -> str:
        spec = self.specs[action.process]
        pid = processes.running_pid(self.state, spec)
        if pid is None:
            return "not running (uses the new files when it starts)"
        if action.process.startswith("node-"):
            # The pid file names the node's supervisor, which a SIGHUP would end: the node is
            # its child.
            targets = [c.pid for c in psutil.Process(pid).children() if "serve" in c.cmdline()]
            if not targets:
                raise ReloadError(f"its supervisor (pid {pid}) runs no node right now; try again")
        else:
            targets = [pid]
        for t in targets:
            if not catches_sighup(t):
                # Its default action would end it: a node started before node/tls_reload.py.
                raise ReloadError(
                    f"pid {t} does not handle SIGHUP (started before certificate reloads "
                    f"existed); restart it once ('rocars cluster down' and 'up', or end pid "
                    f"{t}: its supervisor starts it again), then run 'rocars certs reload'"
                )
            os.kill(t, signal.SIGHUP)
        return f"reloaded (SIGHUP to pid {', '.join(map(str, targets))})"

    async def config_set(self, action: Action) -> str:
        spec = self.specs[action.process]
        if processes.running_pid(self.state, spec) is None:
            return "not running (uses the new files when it starts)"
        site = self.topo.sites[spec.site]
        assert site.redis is not None
        client = redis_acl.connect(
            self.state, site.host, site.redis.port, socket_timeout=5, decode_responses=True
        )
        try:
            # The path it runs with (the same file): Redis 7.0.1+ rereads every tls-* file.
            path = (await client.config_get("tls-cert-file")).get("tls-cert-file")
            if not path:
                raise ReloadError("it runs without TLS (no tls-cert-file): restart it")
            await client.config_set("tls-cert-file", path)
        finally:
            await client.aclose()
        return "reloaded (CONFIG SET tls-cert-file)"

    async def restart(self, action: Action) -> str:
        spec = self.specs[action.process]
        if processes.running_pid(self.state, spec) is None:
            return "not running (uses the new files when it starts)"
        etcd = action.process.startswith("etcd-")
        moved = await self.etcd_leadership_away(spec.site) if etcd else ""
        processes.stop_many(self.state, [spec])
        processes.check_ports_free(spec)
        pid = processes.start(self.state, spec)
        back = self._back_check(action.process)
        try:
            await _until(f"{action.process} back after its restart", back, WAIT_S)
        except ReloadError as exc:
            tail = processes.log_tail(self.state, action.process)
            raise ReloadError(f"{exc}\n  last lines of {action.process}.log:\n{tail}") from exc
        if etcd:
            moved += await self.etcd_leadership_to_witness()
        return f"restarted (pid {pid}), back in service{moved}"

    async def etcd_leadership_away(self, site: str) -> str:
        """Before the raft leader's member stops, hand leadership to another member: a
        transfer, not an election after a missed heartbeat (during which nothing commits, and
        after which the new leader renews every lease: replication/etcd_gateway.py)."""
        root = etcd_auth.gateway(self.session, self.topo, self.state, etcd_auth.ROOT_USER)
        statuses = await root.member_statuses()
        me = self.topo.etcd_url(site)
        mine = next((s for s in statuses if s.url == me), None)
        if mine is None or mine.member_id is None or mine.member_id != mine.leader_id:
            return ""
        other = next(s.url for s in statuses if s.healthy and s.url != me)
        await root.move_leader(other, statuses)
        return f"; leadership handed to {other} first"

    async def etcd_leadership_to_witness(self) -> str:
        """Leadership back on the witness site's member, where `up` puts it (launcher)."""
        root = etcd_auth.gateway(self.session, self.topo, self.state, etcd_auth.ROOT_USER)
        try:
            if await root.move_leader(self.topo.etcd_url(self.topo.witness_site)):
                return "; leadership back on the witness site"
        except EtcdUnavailable as exc:
            return f"; leadership stays where it is ({exc})"
        return ""

    def _back_check(self, process: str) -> Callable[[], Awaitable[bool]]:
        site = process.rpartition("-")[2]
        if process.startswith("etcd-"):
            return lambda: self.etcd_member_back(site)
        if process.startswith("sentinel-"):
            return lambda: self.sentinel_back(site)
        return lambda: self.serves_any(process)

    async def serves_any(self, process: str) -> bool:
        for lsn in _listeners(self.topo, process):
            await asyncio.to_thread(
                presented_serial, lsn.host, lsn.port, self._ctx(), name=lsn.name
            )
        return True

    async def etcd_member_back(self, site: str) -> bool:
        """The member answers, follows a leader, and the cluster serves a linearizable read."""
        url = self.topo.etcd_url(site)
        gw = etcd_auth.gateway(self.session, self.topo, self.state, etcd_auth.OPERATOR_USER)
        statuses = {s.url: s for s in await gw.member_statuses()}
        st = statuses.get(url)
        if st is None or not st.healthy or st.leader_id in (None, "0", "None"):
            return False
        return await readiness.etcd_quorum(self.session, self.topo)

    async def sentinel_back(self, site: str) -> bool:
        """The restarted Sentinel is linked to the primary and to every other Sentinel, and
        every other Sentinel is linked to it (neither down nor disconnected either way: a
        restarted Sentinel knows its peers from its file before it has reached them)."""
        others = [s for s in self.topo.sites if s != site]
        async with self._sentinel(site) as client:
            master = await client.sentinel_master(REDIS_MASTER_NAME, return_responses=True)
            if not isinstance(master, dict) or not _up(master):
                return False
            mine = await client.sentinel_sentinels(REDIS_MASTER_NAME, True)
            if not _linked(mine, others, self.topo):
                return False
        for other in others:
            async with self._sentinel(other) as client:
                peers = await client.sentinel_sentinels(REDIS_MASTER_NAME, True)
            if not _linked(peers, [site], self.topo):
                return False
        return True

    @contextlib.asynccontextmanager
    async def _sentinel(self, site: str) -> AsyncIterator[Redis]:
        s = self.topo.sites[site]
        client = redis_acl.connect(
            self.state,
            s.host,
            s.sentinel.port,
            user=redis_acl.SENTINEL_ADMIN,
            socket_timeout=2,
            decode_responses=True,
        )
        try:
            yield client
        finally:
            await client.aclose()

    async def haproxy_reload(self, action: Action) -> str:
        spec = self.specs[action.process]
        old = processes.running_pid(self.state, spec)
        if old is None:
            return "not running (uses the new files when it starts)"
        # Once the new process has bound every port, HAProxy has told the old one to stop
        # listening: from then on the new one is the only one serving, and killing it for a
        # late readiness answer left no HAProxy at all (measured: a reload whose check met the
        # unauthenticated rate limit under load). So the new process counts once it listens,
        # as for `cluster up`; a process that exits or never binds is stopped and the old one,
        # never told to stop, serves on.
        try:
            new = await asyncio.to_thread(processes.take_over, self.state, spec)
        except LaunchError as exc:
            raise ReloadError(str(exc)) from None
        if new is None:  # it stopped meanwhile: the next start reads the new files
            return "not running (uses the new files when it starts)"
        entry = _listeners(self.topo, action.process)[0]
        try:
            await _until(
                f"the new HAProxy process routing {entry.host}:{entry.port} to the active node",
                lambda: self.haproxy_up(new, entry),
                WAIT_S,
            )
        except ReloadError as exc:
            raise ReloadError(
                f"{spec.name}: the new process (pid {new}) took over from pid {old} and listens,"
                f" but {exc}; see `rocars cluster status` and the last lines of {spec.name}.log:"
                f"\n{processes.log_tail(self.state, spec.name)}"
            ) from None
        return f"reloaded (pid {new} took over from pid {old}, which finishes its connections)"

    async def haproxy_up(self, pid: int, entry: Listener) -> bool:
        """HAProxy `pid` runs and its own client port (`entry`; not the floating address,
        which another site's HAProxy may hold) routes /health/ready to the active node."""
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            raise ReloadError(f"haproxy pid {pid} exited")
        url = f"https://{entry.host}:{entry.port}/health/ready"
        async with self.session.get(
            url, timeout=_HTTP_TIMEOUT, server_hostname=entry.tls_name
        ) as r:
            return r.status == 200

    async def carry_out(self, action: Action) -> str:
        if action.how is How.NOTHING:
            done = action.note or "nothing to do"
        elif action.how is How.SIGHUP:
            done = await self.sighup(action)
        elif action.how is How.CONFIG_SET:
            done = await self.config_set(action)
        elif action.how is How.RESTART:
            done = await self.restart(action)
        else:
            done = await self.haproxy_reload(action)
        if action.listeners and not done.startswith("not running"):
            await self.wait_listeners(action)
            done += "; presents the new certificate"
        elif action.note and action.how is not How.NOTHING:
            done += f" ({action.note})"
        return done

    async def etcd_leader_last(self, actions: tuple[Action, ...]) -> tuple[Action, ...]:
        """The etcd restarts with the raft leader's member last (one election, not several)."""
        gw = etcd_auth.gateway(self.session, self.topo, self.state, etcd_auth.OPERATOR_USER)
        statuses = await gw.member_statuses()
        leader_url = next(
            (s.url for s in statuses if s.member_id and s.member_id == s.leader_id), None
        )

        def last(a: Action) -> bool:
            site = a.process.rpartition("-")[2]
            return a.process.startswith("etcd-") and self.topo.etcd_url(site) == leader_url

        restarts = [a for a in actions if a.process.startswith("etcd-") and a.how is How.RESTART]
        if not restarts:
            return actions
        ordered = sorted(restarts, key=last)
        rest = [a for a in actions if a not in restarts]
        return (*ordered, *rest)


def running(topo: Topology, state: StateDir) -> bool:
    """Whether any process of the local system runs."""
    return any(processes.running_pid(state, s) is not None for s in specs(topo, state).values())


async def apply(
    topo: Topology, state: StateDir, change: Change, progress: Progress
) -> list[Outcome]:
    """Carry out `plan(topo, change)` on the running system, one line of progress per
    component; ReloadError at the first component that does not take the new files."""
    # The members' copies of their TLS files (PostgreSQL and Patroni run as another user).
    config_files.write_configs(topo, state)
    etcd_auth.use_state(topo, state)
    out: list[Outcome] = []
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=control_tls.context(state), force_close=True)
    ) as session:
        run = _Run(topo, state, session)
        actions = plan(topo, change)
        if change is Change.TRUST:
            actions = await run.etcd_leader_last(actions)
        for action in actions:
            try:
                done = await run.carry_out(action)
            except ReloadError as exc:
                raise ReloadError(f"{action.process}: {exc}") from exc
            except Exception as exc:  # any failure is reported the same way
                raise ReloadError(f"{action.process}: {action.how.value} failed: {exc!r}") from exc
            progress(f"{action.process}: {done}")
            out.append(Outcome(action.process, done))
    return out


def apply_sync(topo: Topology, state: StateDir, change: Change, progress: Progress) -> None:
    """`apply` from a command: moves into the hub namespace first when the sites have theirs
    (before any thread starts, deploy/netns.py)."""
    netns.enter_hub(topo)
    asyncio.run(apply(topo, state, change, progress))
