"""`rocars upgrade`: a rolling upgrade without downtime (#17 item 4), the steps of
`deploy.upgrade_plan` carried out one at a time, each waiting on a fact before the next.

- restart-node: stop the site's node (its supervisor, which stops the node gracefully) and
  start it again from the code now installed; wait until it is live and its /health reports the
  expected version (`monitoring.health.code_version`, read once when a node starts).
- switchover: the one planned switchover of `rocars failover switchover`
  (`deploy.failover_ops.run_switchover`: pre-checks, Patroni, then the whole system healthy),
  then the new site's node must be the ready one and HAProxy must route.
- restart-member: Patroni's `POST /restart` on a replica, then wait until its PostgreSQL has a
  new start time and streams as the synchronous standby again. With new PostgreSQL binaries
  installed (a minor release: same data format) this is the whole minor upgrade.
- restart-read-replica: the same for a read replica (#17 item 5), which must stream again.

Any step that would restart what serves writes (the active node, the primary) is refused on the
live state, whatever the plan says.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from deploy import control_tls, failover_ops, http_client, processes, readiness, status
from deploy.process_specs import specs
from deploy.state import StateDir
from deploy.topology import Topology, read_replica_process
from deploy.upgrade_plan import Step, UpgradePlan, plan
from kernel.errors import RocarsError
from kernel.names import member_name, read_replica_key
from replication.patroni_rest import read_credentials

_TIMEOUT = aiohttp.ClientTimeout(total=2)
# Patroni's restart answers once PostgreSQL is up again (or it gave up).
RESTART_REQUEST_S = 120.0


class UpgradeError(RocarsError):
    """A step failed or its wait ran out; the message says which and what to do."""


async def _node_health(session: aiohttp.ClientSession, topo: Topology, site: str) -> dict[str, Any]:
    async with session.get(f"{topo.node_url(site)}/health", timeout=_TIMEOUT) as r:
        doc = await r.json(content_type=None)
    return doc if isinstance(doc, dict) else {}


async def _node_live(session: aiohttp.ClientSession, topo: Topology, site: str) -> bool:
    return await readiness.http_ok(session, f"{topo.node_url(site)}/health/live")


async def _patroni_member(session: aiohttp.ClientSession, patroni_url: str) -> dict[str, Any]:
    async with session.get(f"{patroni_url}/patroni", timeout=_TIMEOUT) as r:
        doc = await r.json(content_type=None)
    return doc if isinstance(doc, dict) else {}


class Upgrade:
    """One run of a plan against the running system; `progress` gets one line per step."""

    def __init__(
        self,
        topo: Topology,
        state: StateDir,
        *,
        version: str,
        node_env: Mapping[str, str] | None = None,
        progress: Callable[[str], None],
        timeout_s: float = 90.0,
    ) -> None:
        self.topo = topo
        self.state = state
        self.version = version  # what every restarted node must report
        self.node_env = dict(node_env or {})  # added to the restarted nodes' environment
        self.progress = progress
        self.timeout_s = timeout_s

    async def prepare(self, *, nodes: bool, postgres: bool) -> UpgradePlan:
        """The plan for the system as it is now; refuses an unhealthy system."""
        view = await status.collect(self.topo, self.state)
        if not view.is_healthy or view.leader_site is None:
            raise UpgradeError(
                "the system is not healthy, so an upgrade could cause downtime: "
                + "; ".join(view.problems())
                + ". Fix that first ('rocars cluster status')."
            )
        return plan(
            self.topo.data_sites,
            view.leader_site,
            nodes=nodes,
            postgres=postgres,
            read_replicas=self.topo.read_replica_sites,
        )

    async def run(self, p: UpgradePlan) -> float:
        """Carry out every step; returns the seconds it took."""
        t0 = time.monotonic()
        for i, step in enumerate(p.steps, 1):
            t = time.monotonic()
            try:
                done = await self._do(step)
            except RocarsError as exc:
                rest = [s.describe() for s in p.steps[i:]]
                raise UpgradeError(
                    f"step {i}/{len(p.steps)} ({step.describe()}) failed: {exc}\n"
                    "nothing further was changed; "
                    + (f"steps left: {'; '.join(rest)}. " if rest else "")
                    + "Fix the cause ('rocars cluster status', the logs in "
                    f"{self.state.logs}), then run 'rocars upgrade' again: repeating the steps "
                    "already done is harmless."
                ) from exc
            self.progress(f"[{i}/{len(p.steps)}] {done} ({time.monotonic() - t:.1f}s)")
        return time.monotonic() - t0

    async def _do(self, step: Step) -> str:
        if step.kind == "restart-node":
            return await self.restart_node(step.site)
        if step.kind == "switchover":
            return await self.switchover(step.site)
        if step.kind == "restart-read-replica":
            return await self.restart_read_replica(step.site)
        return await self.restart_member(step.site)

    async def _leader(self) -> str | None:
        async with http_client.session(self.topo, self.state) as s:
            return await readiness.leader_site(s, self.topo)

    async def restart_node(self, site: str) -> str:
        if await self._leader() == site:
            raise UpgradeError(f"site {site} is active: its node serves the writes")
        spec = specs(self.topo, self.state)[f"node-{site}"]
        spec = dataclasses.replace(spec, env={**spec.env, **self.node_env})
        old = processes.running_pid(self.state, spec)
        # In threads: stopping waits for the node's graceful shutdown, and a drill's writers
        # share this event loop.
        await asyncio.to_thread(processes.stop_many, self.state, [spec])
        await asyncio.to_thread(processes.ensure_running, self.state, spec)
        seen: dict[str, Any] = {}
        async with http_client.session(self.topo, self.state) as s:

            async def new_version() -> bool:
                if not await _node_live(s, self.topo, site):
                    return False
                seen.update(await _node_health(s, self.topo, site))
                return seen.get("version") == self.version

            try:
                await readiness.wait_until(
                    f"node {site} (live, version {self.version})",
                    new_version,
                    timeout=self.timeout_s,
                    state=self.state,
                    logs=[spec.name],
                )
            except RocarsError as exc:
                got = seen.get("version", "no answer")
                raise UpgradeError(f"{exc}\nlast version reported: {got}") from exc
        return (
            f"restarted the API node of site {site} (supervisor pid {old} -> "
            f"{processes.running_pid(self.state, spec)}): live, role {seen.get('role')}, "
            f"version {self.version}"
        )

    async def switchover(self, site: str) -> str:
        lines: list[str] = []
        took = await failover_ops.run_switchover(self.topo, self.state, site, lines.append)
        view = await status.collect(self.topo, self.state)
        node = view.node(site)
        if node is None or not node.ready or not view.entry.routes:
            raise UpgradeError(
                f"after the switchover the node of site {site} is not the one HAProxy routes "
                f"to: {view.problems() or 'node not ready'}"
            )
        return f"switched over to site {site} in {took:.1f}s: its node is active, HAProxy routes"

    async def sync_standby_again(self, s: aiohttp.ClientSession, leader: str, member: str) -> bool:
        """Whether `member` streams as the synchronous standby in the leader's view, which
        decides whether it may be switched over to."""
        view = await control_tls.patroni(s, self.state).cluster(self.topo.patroni_url(leader))
        return any(m.name == member and m.is_streaming_sync_standby for m in view.members)

    async def _restart_through_patroni(
        self,
        s: aiohttp.ClientSession,
        patroni_url: str,
        member: str,
        back: Callable[[dict[str, Any]], Awaitable[bool]],
        *,
        what: str,
        logs: list[str],
    ) -> dict[str, Any]:
        """Patroni's POST /restart at `patroni_url`, then wait until `member`'s PostgreSQL has
        a new start time, streams, and `back` holds; the member's last /patroni answer."""
        auth = read_credentials(self.state.secret_file("patroni-rest"))
        before = await _patroni_member(s, patroni_url)
        async with s.post(
            f"{patroni_url}/restart",
            json={},
            headers={"Authorization": auth.header},
            timeout=aiohttp.ClientTimeout(total=RESTART_REQUEST_S),
        ) as r:
            code, text = r.status, (await r.text()).strip()
        if code != 200:
            raise UpgradeError(f"Patroni did not restart {member} ({code}): {text}")
        after: dict[str, Any] = {}

        async def streams_again() -> bool:
            after.update(await _patroni_member(s, patroni_url))
            if after.get("postmaster_start_time") == before.get("postmaster_start_time"):
                return False  # not restarted (yet)
            if after.get("replication_state", "streaming") != "streaming":
                return False
            return await back(after)

        await readiness.wait_until(
            f"{member} {what}", streams_again, timeout=self.timeout_s, state=self.state, logs=logs
        )
        return after

    async def restart_member(self, site: str) -> str:
        member = member_name(site)
        async with http_client.session(self.topo, self.state) as s:
            leader = await readiness.leader_site(s, self.topo)
            if leader is None or leader == site:
                raise UpgradeError(f"{member} is the primary (or there is none): not restarted")

            async def sync_again(_: dict[str, Any]) -> bool:
                return await self.sync_standby_again(s, leader, member)

            after = await self._restart_through_patroni(
                s,
                self.topo.patroni_url(site),
                member,
                sync_again,
                what="streaming as the synchronous standby again",
                logs=[f"patroni-{site}"],
            )
        return (
            f"restarted PostgreSQL {member} (server_version {after.get('server_version')}, "
            f"started {after.get('postmaster_start_time')}): streaming synchronous standby"
        )

    async def restart_read_replica(self, site: str) -> str:
        member = member_name(read_replica_key(site))
        async with http_client.session(self.topo, self.state) as s:
            leader = await readiness.leader_site(s, self.topo)
            if leader is None:
                raise UpgradeError(f"no leader: {member} would have nothing to stream from")

            async def streams(_: dict[str, Any]) -> bool:
                return await readiness.read_replicas_stream(s, self.topo, self.state, leader)

            after = await self._restart_through_patroni(
                s,
                self.topo.read_replica_patroni_url(site),
                member,
                streams,
                what="streaming again",
                logs=[read_replica_process(site)],
            )
        return (
            f"restarted the read replica {member} (server_version "
            f"{after.get('server_version')}, started {after.get('postmaster_start_time')}): "
            "streaming"
        )


async def run_upgrade(
    topo: Topology,
    state: StateDir,
    *,
    nodes: bool,
    postgres: bool,
    version: str,
    node_env: Mapping[str, str] | None = None,
    progress: Callable[[str], None],
    timeout_s: float = 90.0,
) -> tuple[UpgradePlan, float]:
    """Plan and carry out a rolling upgrade; (the plan, seconds it took)."""
    up = Upgrade(
        topo, state, version=version, node_env=node_env, progress=progress, timeout_s=timeout_s
    )
    p = await up.prepare(nodes=nodes, postgres=postgres)
    progress("plan: " + "; ".join(s.describe() for s in p.steps))
    return p, await up.run(p)
