"""The local cluster launcher: `rocars cluster up` (and so `make run`) as a list of steps.

Order matters: etcd (all three, they need each other for quorum) -> Patroni on the primary site
(so a fresh cluster bootstraps there) -> Patroni on the DR site -> Redis and Sentinels -> the
application database -> both API nodes -> HAProxy. Each step starts only what is not running, so
running `up` again is harmless and on a partly running system it restarts what is missing.

The other jobs live beside it: deploy.binaries (installed programs), deploy.config_files
(generated files), deploy.process_specs (how each process starts), deploy.readiness (ready
checks and the wait), deploy.database_bootstrap, deploy.teardown (`down`), deploy.endpoints.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_fixed

from deploy import admin, chaos_proxies, etcd_auth, http_client, netns, processes, readiness
from deploy.binaries import check_binaries
from deploy.config_files import write_configs
from deploy.configgen import patroni_settings, patroni_settings_changes
from deploy.database_bootstrap import bootstrap_database
from deploy.failover_ops import operator_patroni
from deploy.floating_address import process_names
from deploy.process_specs import monitoring_names, specs
from deploy.processes import ProcessSpec
from deploy.state import StateDir
from deploy.topology import Topology, read_replica_process
from kernel.errors import EtcdUnavailable, LaunchError
from replication.etcd_gateway import EtcdRefused

Progress = Callable[[str], None]


@dataclass
class Launch:
    """What the steps of one `up` share."""

    topo: Topology
    state: StateDir
    session: aiohttp.ClientSession
    progress: Progress
    leader: str | None = None  # the serving Patroni leader's site, once a step has seen it


Check = Callable[[Launch], Awaitable[bool]]
Action = Callable[[Launch], Awaitable[None]]


@dataclass(frozen=True)
class Step:
    """Start `start` (those not running), wait until `ready` holds (else fail showing the
    last lines of `logs`), then run `then`. Every part is optional."""

    what: str  # names the awaited fact in the error when `ready` never holds
    start: tuple[str, ...] = ()  # process names (deploy.process_specs)
    ready: Check | None = None
    logs: tuple[str, ...] = ()
    then: Action | None = None


def steps(topo: Topology, *, fresh: bool) -> list[Step]:
    """The steps of `up`, in order; `fresh`: the primary site has no data directory yet."""
    primary, dr = topo.data_sites
    etcd = tuple(f"etcd-{s}" for s in topo.sites)
    patroni = tuple(f"patroni-{s}" for s in topo.data_sites)
    redis = tuple(f"redis-{s}" for s, site in topo.sites.items() if site.redis is not None)
    sentinels = tuple(f"sentinel-{s}" for s in topo.sites)
    nodes = tuple(f"node-{s}" for s in topo.data_sites)
    # Read replicas (#17 item 5): cloned from the leader once it exists; never bootstrap.
    replicas = tuple(read_replica_process(s) for s in topo.read_replica_sites)
    streaming = (
        [Step("streaming read replicas", ready=_read_replicas, logs=replicas)] if replicas else []
    )
    watchers = monitoring_names(topo)
    monitoring = (
        [Step("Prometheus and Alertmanager", start=watchers, ready=_monitoring, logs=watchers)]
        if watchers
        else []
    )
    # A chaos topology (#14 item 1): its proxies exist before anything dials them.
    proxies = chaos_proxies.PROCESS
    chaos = (
        [
            Step(
                "the chaos proxies",
                start=(proxies,),
                ready=_toxiproxy,
                logs=(proxies,),
                then=_proxy,
            )
        ]
        if topo.chaos_proxies
        else []
    )
    return [
        *chaos,
        Step("etcd quorum", start=etcd, ready=_etcd_quorum, logs=etcd),
        # Before anything else uses etcd: its users, roles and authentication (#12 item 3).
        Step("etcd authentication", then=_etcd_auth),
        # A fresh cluster is initialised by the primary site, so it starts out as the leader.
        Step(
            f"Patroni bootstrap on site {primary}",
            start=(f"patroni-{primary}",),
            ready=_leads(primary) if fresh else None,
            logs=(f"patroni-{primary}",),
        ),
        Step(
            "the DR member, Redis and Sentinels",
            start=(f"patroni-{dr}", *replicas, *redis, *sentinels),
        ),
        Step("a Patroni leader", ready=_serving_leader, logs=patroni, then=_prepare_database),
        Step("Patroni's cluster-wide settings", then=_patroni_settings),
        Step("the API nodes and HAProxy", start=(*nodes, "haproxy", *process_names(topo))),
        *(Step(f"API node {s}", ready=_live(s), logs=(f"node-{s}",)) for s in topo.data_sites),
        Step("HAProxy routing to the active node", ready=_entry_ready, logs=("haproxy", *nodes)),
        Step(
            "a streaming synchronous standby",
            ready=_sync_standby,
            logs=patroni,
            then=_etcd_leader_to_witness,
        ),
        *streaming,
        # Last: the PostgreSQL exporters log in with the role the database step creates.
        *monitoring,
    ]


async def run_steps(
    launch: Launch, plan: Sequence[Step], all_specs: dict[str, ProcessSpec], *, timeout: float
) -> list[str]:
    """Run the steps in order; returns the names of the processes it started."""
    started: list[str] = []
    for step in plan:
        for name in step.start:
            pid = processes.ensure_running(launch.state, all_specs[name])
            if pid is not None:
                started.append(name)
                launch.progress(f"started {name} (pid {pid})")
        if step.ready is not None:
            await readiness.wait_until(
                step.what,
                functools.partial(step.ready, launch),
                timeout=timeout,
                state=launch.state,
                logs=step.logs,
            )
        if step.then is not None:
            await step.then(launch)
    return started


async def up(topo: Topology, state: StateDir, progress: Progress, *, timeout: float = 90) -> None:
    orphan = state.orphaned_database()
    if orphan is not None:
        raise LaunchError(
            f"{orphan} holds PostgreSQL data made with another state folder's passwords (the "
            f"state folder {state.root} was removed or replaced without 'rocars cluster down "
            f"--purge'). To start afresh, delete {orphan} (its data is lost); to keep the data, "
            "put back the state folder it was made with"
        )
    check_binaries(topo)
    if topo.namespaces is not None:
        if netns.create(topo):
            progress(f"created network namespaces {', '.join(netns.all_namespaces(topo))}")
        # From here on this process talks to the sites from the hub, like HAProxy does.
        netns.enter_hub(topo)
    changed = write_configs(topo, state)
    etcd_auth.use_state(topo, state)
    all_specs = specs(topo, state) | chaos_proxies.prepare(topo, state)
    for name in changed:
        if name not in all_specs:  # the hub's haproxy.cfg, where the sites run their own
            continue
        if all_specs[name].takes_over:
            new = await asyncio.to_thread(processes.take_over, state, all_specs[name])
            if new is not None:
                progress(
                    f"reloaded {name} (its configuration changed): pid {new} took over, the old"
                    " one finishes its connections"
                )
        elif processes.reload(state, all_specs[name]):
            progress(f"reloaded {name} (its configuration changed)")
    fresh = not (state.member_dir(topo.data_sites[0]) / "data" / "PG_VERSION").exists()
    async with http_client.session(topo, state) as session:
        launch = Launch(topo, state, session, progress)
        started = await run_steps(launch, steps(topo, fresh=fresh), all_specs, timeout=timeout)
    if not started:
        progress("everything was already running")


# -- what the steps check and do --------------------------------------------------------------


async def _toxiproxy(launch: Launch) -> bool:
    return await asyncio.to_thread(chaos_proxies.api_ready, launch.topo)


async def _proxy(launch: Launch) -> None:
    made = await asyncio.to_thread(chaos_proxies.ensure_proxies, launch.topo)
    if made:
        launch.progress(f"created {len(made)} chaos proxies")


async def _etcd_quorum(launch: Launch) -> bool:
    return await readiness.etcd_quorum(launch.session, launch.topo)


def _leads(site: str) -> Check:
    async def check(launch: Launch) -> bool:
        return await readiness.leader_site(launch.session, launch.topo) == site

    return check


async def _serving_leader(launch: Launch) -> bool:
    launch.leader = await readiness.serving_leader(launch.session, launch.topo, launch.state)
    return launch.leader is not None


def _live(site: str) -> Check:
    async def check(launch: Launch) -> bool:
        return await readiness.http_ok(launch.session, f"{launch.topo.node_url(site)}/health/live")

    return check


async def _entry_ready(launch: Launch) -> bool:
    return await readiness.http_ok(launch.session, f"{launch.topo.entry_url()}/health/ready")


async def _monitoring(launch: Launch) -> bool:
    topo, session = launch.topo, launch.session
    return await readiness.http_ok(
        session, f"{topo.monitoring_url('prometheus')}/-/ready"
    ) and await readiness.http_ok(session, f"{topo.monitoring_url('alertmanager')}/-/ready")


async def _sync_standby(launch: Launch) -> bool:
    assert launch.leader is not None, "the leader step runs first"
    return await readiness.sync_standby_streams(
        launch.session, launch.topo, launch.state, launch.leader
    )


async def _read_replicas(launch: Launch) -> bool:
    assert launch.leader is not None, "the leader step runs first"
    return await readiness.read_replicas_stream(
        launch.session, launch.topo, launch.state, launch.leader
    )


async def _prepare_database(launch: Launch) -> None:
    """The application's role and database on the leader, then pending migrations."""
    assert launch.leader is not None, "set by the leader check"
    await asyncio.to_thread(bootstrap_database, launch.topo, launch.state, launch.leader)
    applied = await admin.run_migrations(launch.topo, launch.state)
    if applied:
        launch.progress(f"applied migrations: {', '.join(applied)}")


async def _patroni_settings(launch: Launch) -> None:
    """The topology's cluster-wide Patroni settings on a running cluster too: Patroni takes
    bootstrap.dcs only when it initialises the cluster, so a changed topology (timings,
    synchronous_mode_strict) is applied here, through the leader's PATCH /config."""
    assert launch.leader is not None, "set by the leader check"
    rest = operator_patroni(launch.session, launch.state)
    url = launch.topo.patroni_url(launch.leader)
    changes = patroni_settings_changes(
        await rest.dynamic_config(url), patroni_settings(launch.topo)
    )
    if not changes:
        return
    status, text = await rest.patch_dynamic_config(url, changes)
    if status != 200:
        raise LaunchError(f"Patroni refused the settings {changes} ({status} {text})")
    launch.progress(f"set Patroni's {', '.join(sorted(changes))} as the topology says")


# An etcd election right after the quorum step (a member that was cut off rejoining, as after
# the isolate-site drill) leaves no leader for a second or two, and every member's answer then
# misses its 1 s deadline (CI, stop 37). The authentication step plans from what etcd holds,
# so running it again is safe; it is retried through such a blip, a refusal (a wrong
# password, a missing grant) is not.
ETCD_BLIP_S = 20.0
_BLIP_WAIT = wait_fixed(0.5)


def _etcd_blip(exc: BaseException) -> bool:
    """etcd did not answer, or answered with trouble of the moment (no leader): not a refusal
    that every member would repeat."""
    refused = isinstance(exc, EtcdRefused) and exc.refusal
    return isinstance(exc, EtcdUnavailable) and not refused


async def _etcd_auth(launch: Launch) -> None:
    """#12 item 3: users, roles and grants as deploy.etcd_auth plans them, then authentication
    on; on a cluster where it is on already, log in as root and repair what differs."""
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(ETCD_BLIP_S),
        wait=_BLIP_WAIT,
        retry=retry_if_exception(_etcd_blip),
        reraise=True,
    ):
        with attempt:
            await etcd_auth.ensure(launch.session, launch.topo, launch.state, launch.progress)


async def _etcd_leader_to_witness(launch: Launch) -> None:
    """Start with etcd's raft leader on the witness site, so losing a data site never also
    loses the etcd leader (whose loss renews Patroni's leader key: a slower failover); the
    active node keeps it there afterwards (failover/etcd_placement.py). As root (#12 item 3):
    etcd 3.4.42+ and 3.5.28+ allow moving the leader to an admin only, and this bootstrap step
    is then the one place that still can (the node never holds root)."""
    topo = launch.topo
    witness = topo.witness_site
    root = etcd_auth.gateway(launch.session, topo, launch.state, etcd_auth.ROOT_USER)
    try:
        if await root.move_leader(topo.etcd_url(witness)):
            launch.progress(f"moved the etcd leadership to the witness site {witness}")
    except EtcdUnavailable as exc:  # an optimisation, not a condition for being up
        launch.progress(f"etcd leadership stays where it is: {exc}")
