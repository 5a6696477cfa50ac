"""The chaos suite's cluster (#14 item 1): the default topology with `chaos.proxies` on, so the
same launcher (`rocars cluster up`) runs every link the scenarios break through a Toxiproxy
proxy (deploy/chaos_links.py), and `Links`, which breaks and heals them through
`toxiproxy-python`.

Its ports: deploy.harness.TEST_PORT_OFFSETS["chaos"] (ROCARS_CHAOS_PORT_OFFSET overrides it),
beside the other suites' clusters; the unit tests check that they never meet.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from toxiproxy.proxy import Proxy

from deploy import chaos_links, chaos_proxies, http_client, readiness
from deploy.chaos_links import LinkKind
from deploy.harness import TEST_ABUSE_LIMITS, TEST_PORT_OFFSETS, LocalCluster
from deploy.state import DEFAULT_TOPOLOGY, StateDir
from deploy.topology import Topology, load_topology

PORT_OFFSET = int(os.environ.get("ROCARS_CHAOS_PORT_OFFSET", str(TEST_PORT_OFFSETS["chaos"])))
TOXIPROXY_PORT = chaos_links.TEST_TOXIPROXY_PORT + PORT_OFFSET - TEST_PORT_OFFSETS["chaos"]
SETTLE_S = 120.0


def create(root: Path) -> LocalCluster:
    """A chaos cluster's topology file and state folder under `root` (nothing started)."""
    topo = (
        load_topology(DEFAULT_TOPOLOGY)
        .with_port_offset(PORT_OFFSET)
        .with_abuse_limits(TEST_ABUSE_LIMITS)
        .without_monitoring()
    )
    topo = chaos_links.with_proxies(topo, TOXIPROXY_PORT)
    root.mkdir(parents=True, exist_ok=True)
    topo_file = root / "topology.yaml"
    topo_file.write_text(yaml.safe_dump(topo.model_dump(), sort_keys=False))
    return LocalCluster(topo, StateDir((root / "var").resolve()), topo_file)


@contextlib.contextmanager
def running(root: Path) -> Iterator[LocalCluster]:
    """A started chaos cluster, stopped and deleted afterwards (Toxiproxy with it: its command
    line names the state folder), also when start-up or the block fails."""
    c = create(root)
    try:
        c.up()
        yield c
    finally:
        c.close()


@dataclass
class Links:
    """A chaos cluster's proxies, by link kind, client site and target site."""

    topo: Topology

    def proxies(
        self, kind: LinkKind, *, site: str | None = None, target: str | None = None
    ) -> list[Proxy]:
        found = chaos_proxies.client(self.topo).proxies()
        chosen = [
            found[x.name]
            for x in chaos_links.links(self.topo, kind, site=site)
            if target is None or x.target == target
        ]
        assert chosen, f"no {kind} proxy from {site} to {target}"
        return chosen

    @contextlib.contextmanager
    def cut(
        self, kind: LinkKind, *, site: str | None = None, target: str | None = None
    ) -> Iterator[list[Proxy]]:
        """The links disabled while inside (their connections closed, new ones refused)."""
        chosen = self.proxies(kind, site=site, target=target)
        try:
            for p in chosen:
                p.disable()
            found = chaos_proxies.client(self.topo).proxies()
            assert not any(found[p.name].enabled for p in chosen), "a proxy stayed enabled"
            yield chosen
        finally:
            for p in chosen:
                p.enable()

    def node_resets(self, site: str) -> contextlib.AbstractContextManager[list[Proxy]]:
        """A third of the connections from HAProxy to `site`'s node reset on their first
        request bytes (the "HAProxy -> node resets" fault)."""
        return self.toxic(
            "haproxy-node",
            "reset_peer",
            {"timeout": 0},
            target=site,
            streams=("upstream",),
            toxicity=0.33,
        )

    @contextlib.contextmanager
    def toxic(
        self,
        kind: LinkKind,
        toxic: str,
        attributes: dict[str, int],
        *,
        site: str | None = None,
        target: str | None = None,
        streams: tuple[str, ...] = ("upstream", "downstream"),
        toxicity: float = 1.0,
    ) -> Iterator[list[Proxy]]:
        """A toxic on each stream of the links while inside."""
        chosen = self.proxies(kind, site=site, target=target)
        names = [f"{toxic}-{stream}" for stream in streams]
        try:
            for p in chosen:
                for name, stream in zip(names, streams, strict=True):
                    p.add_toxic(
                        name=name,
                        type=toxic,
                        stream=stream,
                        toxicity=toxicity,
                        attributes=attributes,
                    )
                # toxiproxy-python does not check the server's answer: look.
                assert sorted(p.toxics()) == sorted(names), f"toxics not set on {p.name}"
            yield chosen
        finally:
            for p in chosen:
                for name in names:
                    p.destroy_toxic(name)

    def heal(self) -> None:
        """Every proxy enabled, every toxic removed."""
        chaos_proxies.client(self.topo).reset()


async def poll(what: str, check: Callable[[], Awaitable[bool]], *, timeout: float) -> float:
    """Seconds until `check()` holds (an exception counts as not yet); AssertionError after
    `timeout`."""
    t0 = time.monotonic()
    last: BaseException | None = None
    while time.monotonic() - t0 < timeout:
        try:
            if await check():
                return time.monotonic() - t0
        except Exception as exc:  # the component is still recovering
            last = exc
        await asyncio.sleep(0.25)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s (last error: {last!r})")


async def leader(c: LocalCluster) -> str | None:
    """The site holding the leader key (a quorum read of etcd, direct: not through a proxy)."""
    async with http_client.session(c.topo, c.state) as s:
        return await readiness.leader_site(s, c.topo)


async def settled(c: LocalCluster, *, timeout: float = SETTLE_S) -> str:
    """Wait until a leader serves writes, its synchronous standby streams and HAProxy routes
    to the active node; the leader's site."""
    site: str | None = None

    async def ok() -> bool:
        nonlocal site
        async with http_client.session(c.topo, c.state) as s:
            site = await readiness.serving_leader(s, c.topo, c.state)
            return (
                site is not None
                and await readiness.sync_standby_streams(s, c.topo, c.state, site)
                and await readiness.http_ok(s, f"{c.topo.entry_url()}/health/ready")
            )

    await poll("a serving leader with a streaming sync standby", ok, timeout=timeout)
    assert site is not None
    return site
