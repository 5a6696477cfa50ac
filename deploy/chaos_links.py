"""The chaos topology's proxy plan (#14 item 1): which links go through which Toxiproxy proxy.

Pure: a topology in, a list of links out, and the address each client dials (`address`). With
the topology's `chaos.proxies` off, `plan` is empty and `address` is the upstream itself, so
deploy.configgen renders exactly what it renders without the option.

One proxy per link and site, on loopback ports after `chaos.toxiproxy_port`, in plan order:

- `node-postgres`: site S's node -> S's PostgreSQL (its pool; admin tools reading the node's
  configuration go the same way).
- `node-etcd`: S's node -> each etcd member T (its gateway and the witness placement).
- `patroni-etcd`: S's Patroni -> each etcd member T (Patroni told the hosts are proxies, so it
  does not discover the members' own addresses and bypass them).
- `replication`: the other data site's standby -> S's PostgreSQL: S's Patroni advertises the
  proxy as its `connect_address`, from which the standby builds `primary_conninfo` (also used
  for pg_rewind and base backups from S).
- `redis`: everyone -> S's Redis. The node finds the Redis primary through Sentinel, so the
  address it dials is the one Sentinel monitors: Redis S announces its proxy and Sentinel and
  the replica dial it too (cutting it makes Redis S unreachable to all, as a lost host would).
- `haproxy-node`: HAProxy -> S's node (requests and health checks).

TLS passes through (the proxies are TCP-level) and every client still checks the upstream's
certificate: the proxies listen on 127.0.0.1, the address the certificates name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from deploy.topology import CHAOS_PROXY_PORTS, Topology, TopologyError

LinkKind = Literal[
    "node-postgres", "node-etcd", "patroni-etcd", "replication", "redis", "haproxy-node"
]
KINDS: tuple[LinkKind, ...] = (
    "node-postgres",
    "node-etcd",
    "patroni-etcd",
    "replication",
    "redis",
    "haproxy-node",
)
PROXY_HOST = "127.0.0.1"
# The chaos suite's cluster (chaos-tests/chaos_cluster.py): the default topology shifted by
# its offset in deploy.harness.TEST_PORT_OFFSETS, with Toxiproxy's API and proxies on this
# block, which no cluster uses, all below the ephemeral range (the unit tests check both).
TEST_TOXIPROXY_PORT = 11000


@dataclass(frozen=True)
class Link:
    """One proxy: clients on `site` of `kind` dial `listen` to reach `upstream` on `target`."""

    name: str
    kind: LinkKind
    site: str  # whose link it is (the client's site; HAProxy's entry site for haproxy-node)
    target: str  # the site of the upstream
    listen: str  # host:port
    upstream: str  # host:port

    def as_toxiproxy(self) -> dict[str, str | bool]:
        """The proxy as toxiproxy-python's `populate` (and the server's POST) takes it."""
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": True,
        }


def _upstream(topo: Topology, kind: LinkKind, target: str) -> tuple[str, int]:
    s = topo.sites[target]
    if kind in ("node-etcd", "patroni-etcd"):
        return s.host, s.etcd.client_port
    service = {
        "node-postgres": s.postgres,
        "replication": s.postgres,
        "redis": s.redis,
        "haproxy-node": s.node,
    }[kind]
    assert service is not None, f"site {target} has no upstream for {kind}"
    return s.host, service.port


def _other(topo: Topology, site: str) -> str:
    return next(n for n in topo.data_sites if n != site)


def _pairs(topo: Topology) -> list[tuple[LinkKind, str, str, str]]:
    """(kind, client site, target site, proxy name) for every link, in port order."""
    out: list[tuple[LinkKind, str, str, str]] = []
    data = topo.data_sites
    for s in data:
        out.append(("node-postgres", s, s, f"node-{s}-to-postgres-{s}"))
    for s in data:
        out += [("node-etcd", s, t, f"node-{s}-to-etcd-{t}") for t in topo.sites]
    for s in data:
        out += [("patroni-etcd", s, t, f"patroni-{s}-to-etcd-{t}") for t in topo.sites]
    for t in data:
        out.append(("replication", _other(topo, t), t, f"replication-{_other(topo, t)}-to-{t}"))
    for t in data:
        out.append(("redis", t, t, f"to-redis-{t}"))
    for t in data:
        out.append(("haproxy-node", topo.entry.site, t, f"haproxy-to-node-{t}"))
    return out


def plan(topo: Topology) -> list[Link]:
    """Every proxy of a chaos topology (none without `chaos.proxies`)."""
    if not topo.chaos_proxies:
        return []
    assert topo.chaos is not None
    pairs = _pairs(topo)
    if len(pairs) > CHAOS_PROXY_PORTS:
        raise TopologyError(f"{len(pairs)} proxies do not fit in {CHAOS_PROXY_PORTS} ports")
    first = topo.chaos.toxiproxy_port + 1
    links = []
    for i, (kind, site, target, name) in enumerate(pairs):
        host, port = _upstream(topo, kind, target)
        links.append(Link(name, kind, site, target, f"{PROXY_HOST}:{first + i}", f"{host}:{port}"))
    return links


def link(topo: Topology, kind: LinkKind, site: str, target: str) -> Link:
    """The proxy of `kind` from `site` to `target` (TopologyError when there is none)."""
    for x in plan(topo):
        if (x.kind, x.site, x.target) == (kind, site, target):
            return x
    raise TopologyError(f"no {kind} proxy from site {site} to site {target}")


def links(topo: Topology, kind: LinkKind, *, site: str | None = None) -> list[Link]:
    """The proxies of one kind, optionally only those of one (client) site."""
    return [x for x in plan(topo) if x.kind == kind and (site is None or x.site == site)]


def address(topo: Topology, kind: LinkKind, site: str, target: str) -> tuple[str, int]:
    """What `site`'s client of `kind` dials to reach `target`: the proxy in a chaos topology,
    else the upstream itself."""
    if not topo.chaos_proxies:
        return _upstream(topo, kind, target)
    host, port = link(topo, kind, site, target).listen.rsplit(":", 1)
    return host, int(port)


def hostport(topo: Topology, kind: LinkKind, site: str, target: str) -> str:
    host, port = address(topo, kind, site, target)
    return f"{host}:{port}"


def replication_address(topo: Topology, site: str) -> str:
    """Where the other data site's standby streams from `site` (Patroni's connect_address)."""
    return hostport(topo, "replication", _other(topo, site), site)


def redis_address(topo: Topology, site: str) -> tuple[str, int]:
    """The address Redis `site` is known by (to Sentinel, its replica and so the nodes)."""
    return address(topo, "redis", site, site)


def redis_announce_lines(topo: Topology, site: str) -> list[str]:
    """Redis `site` announces its proxy, so Sentinel hands that to every client (none
    without proxies)."""
    if not topo.chaos_proxies:
        return []
    host, port = redis_address(topo, site)
    return [f"replica-announce-ip {host}", f"replica-announce-port {port}"]


def patroni_etcd_options(topo: Topology) -> dict[str, bool]:
    """Patroni's etcd3 options for proxied hosts: it must not discover the members' own
    addresses (which bypass the proxies). Nothing without proxies."""
    return {"use_proxies": True} if topo.chaos_proxies else {}


def with_proxies(topo: Topology, toxiproxy_port: int) -> Topology:
    """`topo` as a chaos topology: its links through proxies, Toxiproxy on `toxiproxy_port`."""
    raw = topo.model_dump()
    raw["chaos"] = {"proxies": True, "toxiproxy_port": toxiproxy_port}
    return Topology.model_validate(raw)
