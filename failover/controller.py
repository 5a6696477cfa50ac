"""The failover controller's adapter: gathers an `Observation`, runs `decide`, acts.

Serves the pure core `failover.decision`. It runs on every node; only the node on the target
site acts on a "switchover" (the active node is the one that is down), and the time of the
last switchover is kept in etcd so both nodes honour the minimum interval.

The switchover request is an unsafe method of Patroni's REST API: the `PatroniRest` it is given
carries the credentials (#12 item 3; node.app reads them from the file the node configuration
names). Refused credentials are logged as an error and the controller keeps running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp

from failover.decision import (
    ControllerConfig,
    Decision,
    MemberFacts,
    NodeHealth,
    Observation,
    SiteView,
    decide,
)
from failover.role import RoleWatcher
from failover.switchover import SwitchoverRefused, switchover
from kernel.errors import ComponentUnavailable, ConfigError
from kernel.names import LAST_SWITCHOVER_KEY, member_name, member_site
from replication.etcd_gateway import EtcdGateway
from replication.patroni_rest import PatroniCluster, PatroniRest

log = logging.getLogger("rocars.failover")


def member_facts(view: PatroniCluster, member: str) -> MemberFacts | None:
    m = next((x for x in view.members if x.name == member), None)
    if m is None:
        return None
    role = "primary" if m.role in ("leader", "master", "primary") else "replica"
    state = m.state if m.state in ("running", "streaming") else "stopped"
    return MemberFacts(
        role=role,  # type: ignore[arg-type]
        state=state,  # type: ignore[arg-type]
        is_sync_standby=m.role == "sync_standby",
        lag_bytes=m.lag_bytes,
        timeline=m.timeline,
    )


class FailoverController:
    def __init__(
        self,
        *,
        site: str,
        sites: dict[str, str],  # site -> node base URL
        session: aiohttp.ClientSession,
        patroni: PatroniRest,
        patroni_url: str,
        etcd: EtcdGateway,
        role: RoleWatcher,
        config: ControllerConfig,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.site = site
        self.sites = sites
        self._session = session
        self._patroni = patroni
        self._patroni_url = patroni_url
        self._etcd = etcd
        self._role = role
        self.config = config
        self._interval = interval_s
        self._clock = clock
        self._unhealthy_since: dict[str, float] = {}
        self.decision = Decision("none", None, "starting: nothing observed yet.")

    async def _node_healthy(self, site: str, leader_site: str | None) -> bool:
        if site == self.site:
            return True  # this code runs, so this node is alive
        # The leader's site's node must be ready (active), not merely alive: one that cannot
        # reach its own PostgreSQL is alive but standby (failover.role_rule), and the site
        # should move. The other site's node only has to be alive to take over.
        probe = "ready" if site == leader_site else "live"
        try:
            async with self._session.get(
                f"{self.sites[site]}/health/{probe}", timeout=aiohttp.ClientTimeout(total=0.8)
            ) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def observe(self) -> Observation | None:
        now = self._clock()
        facts = self._role.facts
        if facts is None or not facts.leader_known:
            return None
        leader_site = member_site(facts.leader_key)
        if leader_site not in self.sites:
            leader_site = None
        try:
            view = await self._patroni.cluster(self._patroni_url)
        except ComponentUnavailable:
            return None
        last = None
        try:
            kv = await self._etcd.get(LAST_SWITCHOVER_KEY)
            last = float(kv.value) if kv else None
        except (ComponentUnavailable, ValueError):
            return None  # without the shared history we cannot honour the minimum interval
        views = []
        for site in sorted(self.sites):
            healthy = await self._node_healthy(site, leader_site)
            if healthy:
                self._unhealthy_since.pop(site, None)
            else:
                self._unhealthy_since.setdefault(site, now)
            views.append(
                SiteView(
                    name=site,
                    node=NodeHealth(healthy, self._unhealthy_since.get(site)),
                    member=member_facts(view, member_name(site)),
                )
            )
        return Observation(
            now=now,
            leader_site=leader_site,
            paused=view.paused,
            sites=(views[0], views[1]),
            last_switchover_at=last,
        )

    async def cycle(self) -> Decision:
        obs = await self.observe()
        if obs is None:
            decision = Decision("none", None, "no quorum view of the cluster: nothing to decide.")
        else:
            decision = decide(obs, self.config)
        if decision.reason != self.decision.reason:
            log.info("failover controller: %s", decision.reason)
        self.decision = decision
        if decision.action == "switchover" and decision.target_site == self.site and obs:
            await self._switch(obs, decision)
        return decision

    async def _switch(self, obs: Observation, decision: Decision) -> None:
        assert obs.leader_site is not None and decision.target_site is not None
        # Record first: if two cycles race, the second one sees the interval not yet passed.
        await self._etcd.put(LAST_SWITCHOVER_KEY, str(self._clock()))
        log.warning(
            "failover controller asks Patroni to switch over: %s",
            decision.reason,
            extra={"event": "switchover_requested"},
        )
        # No checkpoint: this node reaches only its own member, the standby. Any Patroni
        # member accepts the request, so ask the local one (the leader's site may be sick).
        try:
            await switchover(
                decision.target_site,
                leader=obs.leader_site,
                patroni=self._patroni,
                patroni_url=self._patroni_url,
                progress=lambda line: log.warning("failover controller: %s", line),
            )
        except (ComponentUnavailable, SwitchoverRefused, ConfigError) as exc:
            log.error("switchover request failed: %s", exc)

    async def run(self) -> None:
        while True:
            try:
                await self.cycle()
            except Exception:  # one bad cycle must not stop the controller
                log.exception("failover controller cycle failed")
            await asyncio.sleep(self._interval)
