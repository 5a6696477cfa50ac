"""A rolling restart of every component of a running local system, one at a time, each
followed by a fact-based wait until it serves again (#14 item 3, "a rolling restart of every
component under load"). Nothing that serves writes is restarted before its writes moved:

- etcd: each member restarted as `rocars certs reload` restarts one (deploy/cert_reload.py:
  leadership handed away first, back in its quorum afterwards), the raft leader's last;
- Redis: the replica, then a Sentinel-led failover (SENTINEL FAILOVER) and the old primary,
  once every Sentinel and every API node uses the new one; then each Sentinel (cert_reload's
  restart and its wait: linked to the primary and to every peer, both ways);
- HAProxy: reloaded as cert_reload does it (a new process with -sf old), and the old process
  seen gone (it finishes its connections first);
- API nodes and PostgreSQL: `rocars upgrade`'s plan and steps (deploy/upgrade.py: standby
  node, switchover, old active node; replica, switchover, old primary), with each member's
  step restarting its Patroni process (and so its PostgreSQL), not only PostgreSQL, and waiting
  as `restart_member` does until it streams as the synchronous standby again.

`RollingRestart.run` records each step's name and duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import psutil
from redis.asyncio import Redis

from deploy import control_tls, etcd_auth, http_client, processes, readiness, status
from deploy.cert_reload import Action, How, _Run
from deploy.configgen import REDIS_MASTER_NAME
from deploy.harness import LocalCluster
from deploy.process_specs import specs
from deploy.redis_acl import SENTINEL_ADMIN, connect
from deploy.upgrade import Upgrade, UpgradeError
from deploy.upgrade_plan import Step
from kernel.names import member_name
from monitoring.health import code_version

WAIT_S = 90.0


@dataclass(frozen=True)
class Done:
    """One step: what was restarted, how long the step took (with its wait), what it said."""

    name: str
    seconds: float
    detail: str = ""


class _MemberUpgrade(Upgrade):
    """`rocars upgrade` whose member steps restart the Patroni process (which stops its
    PostgreSQL and starts it again), so that every process of the member restarts."""

    def __init__(self, c: LocalCluster, steps: list[Done]) -> None:
        super().__init__(c.topo, c.state, version=code_version(), progress=lambda _l: None)
        self.steps = steps

    async def _do(self, step: Step) -> str:
        t = time.monotonic()
        done = await super()._do(step)
        name = {"restart-node": f"node-{step.site}", "restart-member": f"patroni-{step.site}"}
        self.steps.append(
            Done(name.get(step.kind, f"switchover to {step.site}"), time.monotonic() - t, done)
        )
        return done

    async def restart_member(self, site: str) -> str:
        member = member_name(site)
        leader = await self._leader()
        if leader is None or leader == site:
            raise UpgradeError(f"{member} is the primary (or there is none): not restarted")
        spec = specs(self.topo, self.state)[f"patroni-{site}"]
        data = self.state.member_dir(site) / "data"
        before = processes.postmaster_pid(data)
        # In threads: Patroni stops its PostgreSQL before it exits; the workload shares the loop.
        await asyncio.to_thread(processes.stop_many, self.state, [spec])

        async def ports_free() -> bool:
            processes.check_ports_free(spec)
            return True

        await readiness.wait_until(
            f"the ports of {spec.name} free", ports_free, timeout=30, state=self.state, logs=()
        )
        await asyncio.to_thread(processes.ensure_running, self.state, spec)

        async def streams_again() -> bool:
            pm = processes.postmaster_pid(data)
            if pm is None or pm == before:
                return False
            async with http_client.session(self.topo, self.state) as s:
                return await self.sync_standby_again(s, leader, member)

        await readiness.wait_until(
            f"{member} streaming as the synchronous standby again",
            streams_again,
            timeout=WAIT_S,
            state=self.state,
            logs=[spec.name],
        )
        return f"restarted Patroni and PostgreSQL {member}: streaming synchronous standby"


@dataclass
class RollingRestart:
    """Every component of `c` restarted, one at a time."""

    c: LocalCluster
    steps: list[Done] = field(default_factory=list)

    def pids(self) -> dict[str, int | None]:
        """Each process's pid now (a node: its supervisor's), and each member's postmaster's."""
        found = {
            name: processes.running_pid(self.c.state, spec)
            for name, spec in specs(self.c.topo, self.c.state).items()
        }
        for site in self.c.topo.data_sites:
            found[f"postgres-{site}"] = processes.postmaster_pid(
                self.c.state.member_dir(site) / "data"
            )
        return found

    async def _wait(
        self, what: str, check: Callable[[], Awaitable[bool]], *logs: str, timeout: float = WAIT_S
    ) -> None:
        # readiness.wait_until (tenacity) awaits `check` only when it is a coroutine function
        # (a partial of one counts): a lambda returning a coroutine would pass at once.
        assert asyncio.iscoroutinefunction(check), check
        await readiness.wait_until(what, check, timeout=timeout, state=self.c.state, logs=logs)

    async def _timed(self, name: str, step: Awaitable[str]) -> None:
        t = time.monotonic()
        detail = await step
        self.steps.append(Done(name, time.monotonic() - t, detail))

    async def run(self) -> None:
        etcd_auth.use_state(self.c.topo, self.c.state)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=control_tls.context(self.c.state), force_close=True)
        ) as session:
            reload = _Run(self.c.topo, self.c.state, session)
            etcd = tuple(Action(f"etcd-{s}", How.RESTART) for s in self.c.topo.sites)
            for action in await reload.etcd_leader_last(etcd):
                await self._timed(action.process, reload.restart(action))
            await self.redis()
            for site in self.c.topo.sites:
                action = Action(f"sentinel-{site}", How.RESTART)
                await self._timed(action.process, reload.restart(action))
            await self._timed("haproxy", self.haproxy(reload))

        async def healthy() -> bool:  # what `rocars upgrade` requires before it starts
            return (await status.collect(self.c.topo, self.c.state)).is_healthy

        await self._wait("the system healthy again", healthy)
        up = _MemberUpgrade(self.c, self.steps)
        await up.run(await up.prepare(nodes=True, postgres=True))

    # Redis -----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _client(self, site: str, *, sentinel: bool = False) -> AsyncIterator[Redis]:
        s = self.c.topo.sites[site]
        if sentinel:
            client = connect(
                self.c.state,
                s.host,
                s.sentinel.port,
                user=SENTINEL_ADMIN,
                socket_timeout=2,
                decode_responses=True,
            )
        else:
            assert s.redis is not None
            client = connect(
                self.c.state, s.host, s.redis.port, socket_timeout=2, decode_responses=True
            )
        try:
            yield client
        finally:
            await client.aclose()

    async def _replication(self, site: str) -> dict[str, object]:
        async with self._client(site) as r:
            return dict(await r.info("replication"))

    async def _linked_replica(self, site: str) -> bool:
        info = await self._replication(site)
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    async def _sentinels_name(self) -> set[str]:
        """The primary's address (as announced) each Sentinel names."""
        names = set()
        for site in self.c.topo.sites:
            async with self._client(site, sentinel=True) as s:
                addr = await s.execute_command(  # type: ignore[no-untyped-call]
                    "SENTINEL", "get-master-addr-by-name", REDIS_MASTER_NAME
                )
            names.add(f"{addr[0]}:{addr[1]}")
        return names

    async def _nodes_use(self) -> set[str | None]:
        """The Redis primary each API node works with (None: its last Redis call failed)."""
        async with http_client.session(self.c.topo, self.c.state) as s:
            return {n.redis_primary for n in await status.nodes(s, self.c.topo)}

    async def _restart(self, name: str) -> str:
        spec = specs(self.c.topo, self.c.state)[name]
        old = processes.running_pid(self.c.state, spec)
        await asyncio.to_thread(processes.stop_many, self.c.state, [spec])
        new = await asyncio.to_thread(processes.ensure_running, self.c.state, spec)
        return f"pid {old} -> {new}"

    async def redis(self) -> None:
        redis_sites = [s for s, site in self.c.topo.sites.items() if site.redis is not None]
        roles = {s: (await self._replication(s)).get("role") for s in redis_sites}
        (primary,) = [s for s, role in roles.items() if role == "master"]
        replicas = [s for s in redis_sites if s != primary]
        assert replicas, roles

        async def replica_step(site: str) -> str:
            done = await self._restart(f"redis-{site}")
            await self._wait(
                f"Redis {site} replicating again",
                functools.partial(self._linked_replica, site),
                f"redis-{site}",
            )
            return done

        for site in replicas:
            await self._timed(f"redis-{site} (replica)", replica_step(site))

        async def primary_step() -> str:
            (old,) = await self._sentinels_name()

            async def failover() -> bool:
                async with self._client(replicas[0], sentinel=True) as s:
                    try:
                        await s.execute_command(  # type: ignore[no-untyped-call]
                            "SENTINEL", "FAILOVER", REDIS_MASTER_NAME
                        )
                    except Exception as exc:  # a failover under way already counts
                        if "INPROG" not in str(exc):
                            raise
                return True

            # Retried: right after the replica's restart a Sentinel may not count it good yet.
            await self._wait("Sentinel accepting a failover", failover, timeout=30)

            async def moved() -> bool:
                names = await self._sentinels_name()
                nodes = await self._nodes_use()
                return (
                    len(names) == 1
                    and old not in names
                    and nodes == names
                    and await self._linked_replica(primary)
                )

            await self._wait(
                "every Sentinel and API node on the new Redis primary",
                moved,
                *(f"sentinel-{s}" for s in self.c.topo.sites),
            )
            done = await self._restart(f"redis-{primary}")
            await self._wait(
                f"Redis {primary} replicating again",
                functools.partial(self._linked_replica, primary),
                f"redis-{primary}",
            )
            return f"failed over from {old} first; {done}"

        await self._timed(f"redis-{primary} (primary)", primary_step())

    # HAProxy ---------------------------------------------------------------------------------

    async def haproxy(self, reload: _Run) -> str:
        spec = specs(self.c.topo, self.c.state)["haproxy"]
        old = processes.running_pid(self.c.state, spec)
        assert old is not None
        done = await reload.haproxy_reload(Action("haproxy", How.HAPROXY_RELOAD))

        async def old_gone() -> bool:
            try:
                return psutil.Process(old).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        await self._wait(f"the old HAProxy (pid {old}) gone", old_gone, "haproxy", timeout=60)
        return done
