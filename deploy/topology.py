"""The topology file: which processes live on which site, their addresses and ports.

Everything else (etcd, Patroni, Redis, Sentinel, HAProxy and node configuration) is generated
from a `Topology`; this module only parses and validates it, so a bad file is rejected with a
message naming the offending key before any process starts.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from kernel.errors import ConfigError
from kernel.names import READ_REPLICA_SUFFIX
from node.config import DEFAULT_MAX_IN_FLIGHT

SiteRole = Literal["primary", "dr", "witness"]

# Patroni 4 raises values under these floors with only a warning; we refuse them instead so the
# configuration says what actually runs.
PATRONI_MIN_TTL = 20
PATRONI_MIN_LOOP_WAIT = 1
PATRONI_MIN_RETRY_TIMEOUT = 3
# A site's monitoring ports (#13): the first three on the witness site, the last on data sites.
MONITORING_SERVICES = ("prometheus", "alertmanager", "redis_exporter", "postgres_exporter")


class TopologyError(ConfigError, ValueError):
    """The topology file is unreadable or inconsistent; the message says where and how to fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EtcdPorts(_Strict):
    client_port: int = Field(ge=1, le=65535)
    peer_port: int = Field(ge=1, le=65535)


class Port(_Strict):
    port: int = Field(ge=1, le=65535)


class ReadReplica(_Strict):
    """#17 item 5: a second standby on a data site, for the officers' queries and reports. A
    Patroni member of the same cluster on the site's host (`sites.<X>.read_replica`), tagged
    so that it is never promoted (`nofailover`) nor chosen as the synchronous standby
    (`nosync`): failover and RPO 0 stay the two main members' business. It streams from its
    own site's main member (`replicatefrom`), so the link between sites carries the WAL once.
    Reports log in to its PostgreSQL port as the read-only role (deploy.pg_roles.READER_USER),
    which only this member's pg_hba admits."""

    postgres: Port
    patroni: Port


def read_replica_process(site: str) -> str:
    """The read replica's Patroni process (#17 item 5): `patroni-replica-B`, of kind
    `patroni-replica` (deploy.host_render), beside `patroni-B`."""
    return f"patroni-replica-{site}"


class Site(_Strict):
    role: SiteRole
    host: str
    etcd: EtcdPorts
    sentinel: Port
    postgres: Port | None = None
    patroni: Port | None = None
    redis: Port | None = None
    node: Port | None = None
    # The node's FastAGI phone channel (issue 16, node.phone.agi_server); None: no phone.
    phone: Port | None = None
    # Monitoring (#13): Prometheus, Alertmanager and the Redis exporter on the witness site
    # (it survives the loss of either data site); a PostgreSQL exporter beside each database.
    prometheus: Port | None = None
    alertmanager: Port | None = None
    redis_exporter: Port | None = None
    postgres_exporter: Port | None = None
    read_replica: ReadReplica | None = None

    @model_validator(mode="after")
    def _data_sites_are_complete(self) -> Site:
        data = (self.postgres, self.patroni, self.redis, self.node)
        watchers = (self.prometheus, self.alertmanager, self.redis_exporter)
        if self.role == "witness":
            extras = (*data, self.postgres_exporter, self.phone, self.read_replica)
            if any(x is not None for x in extras):
                raise ValueError("a witness site runs only etcd, sentinel and monitoring")
            if any(x is not None for x in watchers) and any(x is None for x in watchers):
                raise ValueError(
                    "monitoring needs prometheus, alertmanager and redis_exporter ports together"
                )
        else:
            if any(x is None for x in data):
                raise ValueError(
                    f"a {self.role} site needs postgres, patroni, redis and node ports"
                )
            if any(x is not None for x in watchers):
                raise ValueError(
                    "prometheus, alertmanager and redis_exporter run on the witness site"
                )
        return self


class PatroniTiming(_Strict):
    ttl: int = 20
    loop_wait: int = 1
    retry_timeout: int = 5
    primary_start_timeout: int = Field(default=0, ge=0)
    # Off: with its standby gone (DR site down, its disk full, the link cut) the primary goes on
    # acknowledging writes alone rather than stopping trade; Patroni then promotes no member, so
    # a failover still loses nothing (RPO 0). On: no commit returns until a standby confirms
    # it, so with two data members the loss of either site stops every write (README,
    # "Synchronous replication: strict or not").
    synchronous_mode_strict: bool = False

    @model_validator(mode="after")
    def _timing_invariant(self) -> PatroniTiming:
        # Patroni's own rule: a leader must be able to retry a failed DCS update twice within
        # one loop before its key expires, or it loses the lock while still healthy.
        if self.ttl < PATRONI_MIN_TTL:
            raise ValueError(f"ttl {self.ttl} is below Patroni 4's floor of {PATRONI_MIN_TTL}")
        if self.loop_wait < PATRONI_MIN_LOOP_WAIT:
            raise ValueError(f"loop_wait {self.loop_wait} is below the floor of 1")
        if self.retry_timeout < PATRONI_MIN_RETRY_TIMEOUT:
            raise ValueError(f"retry_timeout {self.retry_timeout} is below the floor of 3")
        if self.loop_wait + 2 * self.retry_timeout > self.ttl:
            raise ValueError(
                f"loop_wait + 2*retry_timeout = {self.loop_wait + 2 * self.retry_timeout} "
                f"exceeds ttl {self.ttl}"
            )
        return self


class AbuseLimits(_Strict):
    """Per client address, enforced by HAProxy at the entry point (stick tables), before any
    node spends a database query on the request (#10 item 5). Over a limit: 429 problem+json
    with Retry-After (the window). Requests with a good key count against neither limit (the
    nodes limit each account by itself).

    The defaults are for production: 100 requests without an Authorization header per 10 s
    (10 a second sustained: public status polling from a whole depot behind one NAT address
    stays well under it), and 20 answers of 401 to requests with credentials per 60 s (a
    mistyped key is retried a few times, a key-guessing run is stopped after 20). An address
    over the failure limit has all its requests with credentials refused until its rate falls
    back under it, good keys included: HAProxy cannot tell a good key from a guess. Test
    clusters, where every client is 127.0.0.1, raise them (deploy/harness.py).
    """

    unauthenticated_requests: int = Field(default=100, ge=1)
    unauthenticated_window_s: int = Field(default=10, ge=1, le=3600)
    auth_failures: int = Field(default=20, ge=1)
    auth_failure_window_s: int = Field(default=60, ge=1, le=3600)


class Admission(_Strict):
    """Overload shedding (#11 target 3): what the system cannot serve in time is answered 503
    problem+json with Retry-After at once instead of queueing for seconds.

    HAProxy sends each node at most `server_maxconn` requests at once; the rest wait in its
    queue (cheap, outside the node's one Python process) for at most `queue_timeout_ms`, then
    are answered 503. The defaults come from the measured capacity of one node (about 350
    submissions/s on 2 cores, a pool of 10 connections): 16 at once already saturates it (16
    and 64 client connections gave the same throughput), so a node serves an admitted request
    in about 16/350 s = 46 ms (p99 about 90 ms). A saturated node on 2 cores takes 120-150
    ms per request at 16 at once, so the queue wait is 75 ms, measured against 100 and 50
    (day 3, alternately in each comparison, on the bench's overload phase and its open loop):
    - at 3x the offer, the accepted p99 was 174-286 ms with 100 ms of queue, once 1,674 (4
      of 11 runs over the 250 ms budget, full benches since day 1 included), 125-132 with 75,
      101-167 with 50;
    - at 500 submissions and 200 gate decisions a second, just over what 2 cores serve, the
      system swings between rounds (12 to 297 submissions/s served at one setting) and the
      shorter queue sheds more: served submissions median 209/s with 100 ms and 133 with 50,
      and gate decisions shed in 2 of 6 rounds with 100 ms, 6 of 6 with 50, 1 of 2 with 75.
    75 ms keeps the overload budget with margin and sheds less than 50 near saturation; it is
    the least measured of the three.

    The node keeps its own limit (`node_max_in_flight`, node.admission) for callers that do
    not come through HAProxy; it must be above `server_maxconn`: HAProxy retries a node's 503
    (`retry-on 503`, for a standby's refusal), so a node shedding HAProxy's own traffic would
    be asked again three times.
    """

    server_maxconn: int = Field(default=16, ge=1, le=10_000)
    queue_timeout_ms: int = Field(default=75, ge=1, le=5_000)
    node_max_in_flight: int = Field(default=DEFAULT_MAX_IN_FLIGHT, ge=1, le=10_000)

    @model_validator(mode="after")
    def _node_limit_above_haproxy(self) -> Admission:
        if self.node_max_in_flight <= self.server_maxconn:
            raise ValueError(
                f"node_max_in_flight ({self.node_max_in_flight}) must be above server_maxconn"
                f" ({self.server_maxconn}): HAProxy retries a node's 503 three times"
            )
        return self


_INTERFACE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")  # a Linux interface name (IFNAMSIZ)


class Floating(_Strict):
    """#17 item 2: an address clients use whatever site is active. Each data site runs its own
    HAProxy (the hub's configuration, listening on every address of the site) and keepalived,
    which holds this address on the site whose Patroni holds the leader key
    (deploy/floating_address.py). An unused host address of the data sites' subnet: with
    `namespaces` theirs (each site's interface is eth0); with the sites on their own hosts, the
    subnet both data sites' hosts share (one link: VRRP and gratuitous ARP do not cross a
    router), `interface` and `prefix_len` then saying which interface of each host carries it
    and the subnet's length."""

    address: str
    interface: str | None = None
    prefix_len: int | None = None


class Entry(_Strict):
    site: str
    # HTTPS (#12 item 2): the one port clients use.
    port: int = Field(ge=1, le=65535)
    # Plain HTTP that answers nothing but a redirect to `port` (None: no such listener).
    http_port: int | None = Field(default=None, ge=1, le=65535)
    stats_port: int = Field(ge=1, le=65535)
    # FastAGI (issue 16): HAProxy in mode tcp to the active node's phone port; None: no phone.
    phone_port: int | None = Field(default=None, ge=1, le=65535)
    limits: AbuseLimits = AbuseLimits()
    admission: Admission = Admission()
    floating: Floating | None = None


class Namespaces(_Strict):
    """Each site in a network namespace of its own, so a site can be cut off with nftables.

    The sites' namespaces hang off one bridge in a hub namespace, which holds nothing but the
    bridge, HAProxy (the entry tier, reachable from every site) and the operator's commands
    (`rocars ...` enters it by itself). Nothing is added to the machine's own namespace.
    """

    prefix: str = Field(pattern=r"^[a-z][a-z0-9]{0,11}$")  # namespaces <prefix>-hub, <prefix>-a
    hub_host: str  # the hub's address on the bridge: HAProxy and operator commands
    prefix_len: int = Field(default=24, ge=8, le=30)

    def hub(self) -> str:
        return f"{self.prefix}-hub"

    def of(self, site: str) -> str:
        return f"{self.prefix}-{site.lower()}"


class Chaos(_Strict):
    """#14 item 1: with `proxies`, every link the chaos suite breaks (node -> PostgreSQL, Redis
    and etcd; Patroni -> etcd; standby -> primary replication; HAProxy -> node) goes through a
    Toxiproxy proxy (deploy/chaos_links.py plans them). The Toxiproxy API listens on
    `toxiproxy_port` and the proxies on the `CHAOS_PROXY_PORTS` ports after it, on loopback:
    a test topology only, never production."""

    proxies: bool = False
    toxiproxy_port: int = Field(ge=1, le=65535 - 32)


CHAOS_PROXY_PORTS = 32  # ports reserved after chaos.toxiproxy_port for the proxies


class Backups(_Strict):
    """#17 item 3: pgBackRest backups (deploy/backup_config.py generates its files). With this
    section, PostgreSQL archives WAL through pgBackRest from whichever member is primary into
    the repository on the witness site (outside both database hosts); without it (the local
    default) nothing is archived. `full_schedule`/`incr_schedule` are systemd OnCalendar
    expressions for `rocars backup run --type full|incr`."""

    archive: bool = True
    # The repository on the witness host; None: the witness's folder in the runtime folder.
    repo_path: str | None = Field(default=None, pattern=r"^/")
    retention_full: int = Field(default=2, ge=1, le=99)
    # A WAL switch at least this often, so a quiet system's last writes reach the repository.
    archive_timeout_s: int = Field(default=60, ge=0, le=3600)
    full_schedule: str = "Sun *-*-* 01:00:00"
    incr_schedule: str = "Mon..Sat *-*-* 01:00:00"


_PG_SIZE = re.compile(r"^([1-9][0-9]{0,8})(kB|MB|GB|TB)$")
_PG_SIZE_UNITS = {"kB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}
# Below these PostgreSQL would start but thrash (buffers) or checkpoint all the time (WAL).
_PG_SIZE_FLOORS = {"shared_buffers": "16MB", "max_wal_size": "256MB"}
_PG_TIME = re.compile(r"^([1-9][0-9]{0,5})(s|min|h)$")
_PG_TIME_UNITS = {"s": 1, "min": 60, "h": 3600}


def pg_size_bytes(text: str) -> int:
    """Bytes of a PostgreSQL size setting written with its unit ("32MB"); ValueError if not."""
    m = _PG_SIZE.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not a size such as 512MB or 4GB (units kB, MB, GB, TB)")
    return int(m.group(1)) * _PG_SIZE_UNITS[m.group(2)]


def pg_time_seconds(text: str) -> int:
    """Seconds of a PostgreSQL time setting written with its unit ("15min"); ValueError if
    not."""
    m = _PG_TIME.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not a time such as 300s, 15min or 1h (units s, min, h)")
    return int(m.group(1)) * _PG_TIME_UNITS[m.group(2)]


class PostgresTuning(_Strict):
    """#11: what PostgreSQL's memory and checkpoints are sized for, on both main members (and
    a read replica). The defaults suit the local system, every process of three sites on one
    small machine; a production topology sizes them for its database hosts
    (deploy/topology.production.yaml).

    Why these four. A CCRN is random (kernel.domain.ccrn), so every submission inserts into
    three indexes at random places (consignments' and versions' keys, the audit log's subject),
    and the first change to a page after a checkpoint writes the whole page into the WAL
    (full_page_writes, which a crash needs). Measured on the local system with 1.3 million
    consignments: 2 such page images per submission in the first seconds after a checkpoint,
    14 KB of WAL against 3.4 once the pages were touched, and with a 1 GB max_wal_size the
    writes themselves brought the next checkpoint within a minute. On a production database
    whose indexes outgrow what a checkpoint interval touches, that is every submission, and all
    of it crosses the link to the DR site before a commit returns."""

    # PostgreSQL's page cache. Small by default: its pages count in the local system's idle
    # memory (#11 target 5) once touched. A database host: about a quarter of its memory.
    shared_buffers: str = "32MB"
    # WAL written between checkpoints before one is forced; the checkpoint_timeout should end
    # intervals, not this. Disk: pg_wal may hold about this much.
    max_wal_size: str = "4GB"
    # Longer intervals mean fewer full-page storms; crash recovery replays at most one
    # interval's WAL (a failover does not wait for it: the synchronous standby has it).
    checkpoint_timeout: str = "15min"
    # Page images compressed: lz4 wrote 9.7 KB per transaction against 12.7 uncompressed at
    # the same rate right after a checkpoint; zstd wrote 8.4 but cost a quarter of the
    # throughput on 2 cores (pgbench on the submission's SQL, alternately, twice each).
    wal_compression: Literal["off", "pglz", "lz4", "zstd"] = "lz4"

    @field_validator("shared_buffers", "max_wal_size")
    @classmethod
    def _size(cls, v: str, info: ValidationInfo) -> str:
        floor = _PG_SIZE_FLOORS[str(info.field_name)]
        if pg_size_bytes(v) < pg_size_bytes(floor):
            raise ValueError(f"{v} is below {floor}")
        return v

    @field_validator("checkpoint_timeout")
    @classmethod
    def _interval(cls, v: str) -> str:
        if not 30 <= pg_time_seconds(v) <= 86_400:  # PostgreSQL's own range
            raise ValueError(f"{v} is not within 30s-24h")
        return v

    def parameters(self) -> dict[str, str]:
        """The PostgreSQL parameters, as Patroni's `postgresql.parameters` takes them."""
        return {k: str(v) for k, v in self.model_dump().items()}


class Topology(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,30}$")
    patroni: PatroniTiming = PatroniTiming()
    entry: Entry
    sites: dict[str, Site]
    namespaces: Namespaces | None = None
    chaos: Chaos | None = None
    backups: Backups | None = None
    # None: the local defaults (PostgresTuning()); absent from the dump like the sections above.
    postgresql: PostgresTuning | None = None

    @model_serializer(mode="wrap")
    def _without_absent_chaos(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A topology without chaos dumps as it did before the option existed (its state copy,
        # whose hash decides whether Redis's files are regenerated, stays the same).
        data: dict[str, Any] = handler(self)
        if self.chaos is None:
            data.pop("chaos", None)
        if self.backups is None:  # likewise (#17 item 3)
            data.pop("backups", None)
        if self.postgresql is None:  # likewise (#11)
            data.pop("postgresql", None)
        if self.entry.floating is None:  # likewise (#17 item 2)
            data["entry"].pop("floating", None)
        else:  # a namespaced one has neither interface nor prefix_len
            floating = data["entry"]["floating"]
            for key in ("interface", "prefix_len"):
                if floating.get(key) is None:
                    floating.pop(key, None)
        for name, site in self.sites.items():  # likewise (#17 item 5)
            if site.read_replica is None:
                data["sites"][name].pop("read_replica", None)
        return data

    @property
    def pg_tuning(self) -> PostgresTuning:
        """The topology's `postgresql` section, or the local defaults."""
        return self.postgresql or PostgresTuning()

    @property
    def chaos_proxies(self) -> bool:
        """Whether the links run through Toxiproxy proxies (#14 item 1)."""
        return self.chaos is not None and self.chaos.proxies

    @model_validator(mode="after")
    def _shape(self) -> Topology:
        roles = sorted(s.role for s in self.sites.values())
        if roles != ["dr", "primary", "witness"]:
            raise ValueError(
                "sites must be exactly one primary, one dr and one witness site "
                f"(got roles {roles})"
            )
        if self.entry.site not in self.sites:
            raise ValueError(f"entry.site {self.entry.site!r} is not a site")
        for name in self.sites:
            if name.endswith(READ_REPLICA_SUFFIX):
                raise ValueError(
                    f"site {name!r}: a site's name must not end in {READ_REPLICA_SUFFIX}"
                )
        if self.namespaces is not None:
            self._check_namespace_addresses(self.namespaces)
        if self.entry.floating is not None:
            self._check_floating(self.entry.floating)
        if self.chaos_proxies and (
            self.namespaces is not None or any(s.host != "127.0.0.1" for s in self.sites.values())
        ):
            raise ValueError("chaos proxies need every site on 127.0.0.1 and no namespaces")
        if self.chaos_proxies and self.read_replica_sites:
            raise ValueError("chaos proxies and read replicas are not combined (#17 item 5)")
        exporters = [self.sites[n].postgres_exporter is not None for n in self.data_sites]
        if exporters != [self.monitored] * len(exporters):
            raise ValueError(
                "with monitoring (prometheus on the witness site) every data site needs a "
                "postgres_exporter port, and without it none does"
            )
        seen: dict[tuple[str, int], str] = {}
        for where, host, port in self.endpoints():
            key = (host, port)
            if key in seen:
                raise ValueError(f"port clash: {where} and {seen[key]} both use {host}:{port}")
            seen[key] = where
        return self

    def _check_namespace_addresses(self, ns: Namespaces) -> None:
        hosts = {"namespaces.hub_host": ns.hub_host}
        hosts |= {f"sites.{n}.host": s.host for n, s in self.sites.items()}
        try:
            net = ipaddress.ip_interface(f"{ns.hub_host}/{ns.prefix_len}").network
        except ValueError as exc:
            raise ValueError(f"namespaces.hub_host: not an IPv4 address ({exc})") from exc
        seen: dict[str, str] = {}
        for where, host in hosts.items():
            try:
                addr = ipaddress.ip_address(host)
            except ValueError as exc:
                raise ValueError(f"{where}: {host!r} is not an IP address") from exc
            if (
                addr.is_loopback
                or addr not in net
                or addr in (net.network_address, net.broadcast_address)
            ):
                raise ValueError(
                    f"{where}: {host} must be a host address of {net} when sites run in "
                    "network namespaces"
                )
            if host in seen:
                raise ValueError(f"{where} and {seen[host]} both use {host}")
            seen[host] = where

    def _check_floating(self, floating: Floating) -> None:
        address = floating.address
        try:
            addr = ipaddress.ip_address(address)
        except ValueError as exc:
            raise ValueError(f"entry.floating.address: {address!r} is not an IP address") from exc
        ns = self.namespaces
        if ns is not None:
            for key in ("interface", "prefix_len"):
                if getattr(floating, key) is not None:
                    raise ValueError(
                        f"entry.floating.{key}: only for sites on their own hosts; in "
                        "namespaces each site's interface is eth0 on the namespaces' subnet"
                    )
            net = ipaddress.ip_interface(f"{ns.hub_host}/{ns.prefix_len}").network
            taken = {ns.hub_host: "namespaces.hub_host"}
        else:
            net = self._floating_subnet(floating)
            taken = {}
        if addr not in net or addr in (net.network_address, net.broadcast_address):
            raise ValueError(f"entry.floating.address: {address} must be a host address of {net}")
        taken |= {s.host: f"sites.{n}.host" for n, s in self.sites.items()}
        if str(addr) in taken:
            raise ValueError(f"entry.floating.address: {address} is {taken[str(addr)]}")

    def _floating_subnet(self, floating: Floating) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """The one subnet of the data sites' hosts (sites on their own hosts), checked."""
        for key, example in (("interface", "eth0"), ("prefix_len", "24")):
            if getattr(floating, key) is None:
                raise ValueError(
                    f"entry.floating.{key} is required when the sites are on their own hosts"
                    f" (no 'namespaces'), e.g. {key}: {example}"
                )
        name, prefix_len = floating.interface, floating.prefix_len
        assert name is not None and prefix_len is not None
        if not _INTERFACE_NAME.fullmatch(name) or name == "lo":
            raise ValueError(
                f"entry.floating.interface: {name!r} is not a network interface name (1-15 "
                "letters, digits, '_', '.' or '-'; not lo)"
            )
        if not 8 <= prefix_len <= 30:
            raise ValueError(f"entry.floating.prefix_len: {prefix_len} must be 8-30")
        nets: dict[str, str] = {}
        for n in self.data_sites:
            host = self.sites[n].host
            try:
                addr = ipaddress.ip_address(host)
            except ValueError as exc:
                raise ValueError(
                    f"sites.{n}.host: {host!r} must be an IP address with a floating address"
                ) from exc
            if addr.is_loopback:
                raise ValueError(
                    f"sites.{n}.host: {host} is a loopback address; a floating address moves"
                    " between the data sites' hosts (use namespaces to run them on one machine)"
                )
            nets[n] = str(ipaddress.ip_interface(f"{host}/{prefix_len}").network)
        hosts = [self.sites[n].host for n in self.data_sites]
        if len(set(hosts)) != len(hosts):
            raise ValueError(
                f"entry.floating: the data sites share a host ({', '.join(hosts)}); a floating"
                " address moves between two hosts"
            )
        if len(set(nets.values())) != 1:
            where = ", ".join(f"{n} on {net}" for n, net in nets.items())
            raise ValueError(
                f"entry.floating: the data sites' hosts must share one subnet (one link: VRRP"
                f" and gratuitous ARP do not cross a router); with prefix_len {prefix_len}: {where}"
            )
        return ipaddress.ip_network(next(iter(nets.values())))

    # -- derived views -------------------------------------------------------------------------

    def entry_host(self) -> str:
        """Where HAProxy listens: the hub namespace, else the entry site's host."""
        if self.namespaces is not None:
            return self.namespaces.hub_host
        return self.sites[self.entry.site].host

    def monitoring_networks(self) -> list[str]:
        """Where control-plane pages (/metrics, the detailed /health) may be read from without
        the monitoring key: the system's own addresses (each site's, and the hub's where
        HAProxy and the operators' commands run) and this host's 127.0.0.1, nothing else; so
        locally another loopback address (127.0.0.2) is an outsider (#12 item 3)."""
        hosts = {s.host for s in self.sites.values()} | {self.entry_host(), "127.0.0.1"}
        return sorted(f"{h}/32" for h in hosts)

    def netns(self, site: str) -> str | None:
        """The network namespace a site's processes run in (None: the machine's own)."""
        return self.namespaces.of(site) if self.namespaces is not None else None

    def endpoints(self) -> Iterator[tuple[str, str, int]]:
        """Every listening endpoint as (what, host, port), for clash checks and port probes."""
        entry_host = self.entry_host()
        yield "entry.port", entry_host, self.entry.port
        yield "entry.stats_port", entry_host, self.entry.stats_port
        if self.entry.http_port is not None:
            yield "entry.http_port", entry_host, self.entry.http_port
        if self.entry.phone_port is not None:
            yield "entry.phone_port", entry_host, self.entry.phone_port
        for name, site in self.sites.items():
            yield f"sites.{name}.etcd.client_port", site.host, site.etcd.client_port
            yield f"sites.{name}.etcd.peer_port", site.host, site.etcd.peer_port
            yield f"sites.{name}.sentinel.port", site.host, site.sentinel.port
            for svc in ("postgres", "patroni", "redis", "node", "phone", *MONITORING_SERVICES):
                p = getattr(site, svc)
                if p is not None:
                    yield f"sites.{name}.{svc}.port", site.host, p.port
            if site.read_replica is not None:
                where = f"sites.{name}.read_replica"
                yield f"{where}.postgres.port", site.host, site.read_replica.postgres.port
                yield f"{where}.patroni.port", site.host, site.read_replica.patroni.port
        if self.chaos is not None and self.chaos.proxies:
            first = self.chaos.toxiproxy_port
            for i in range(CHAOS_PROXY_PORTS + 1):
                yield f"chaos.toxiproxy_port+{i}", "127.0.0.1", first + i

    @property
    def data_sites(self) -> list[str]:
        """Sites that run PostgreSQL and an API node, primary first."""
        order = {"primary": 0, "dr": 1}
        return sorted(
            (n for n, s in self.sites.items() if s.role != "witness"),
            key=lambda n: order[self.sites[n].role],
        )

    @property
    def read_replica_sites(self) -> list[str]:
        """Data sites with a read replica (#17 item 5), primary first."""
        return [n for n in self.data_sites if self.sites[n].read_replica is not None]

    def read_replica(self, site: str) -> ReadReplica:
        replica = self.sites[site].read_replica
        if replica is None:
            raise TopologyError(f"site {site!r} of topology {self.name!r} has no read replica")
        return replica

    def read_replica_patroni_url(self, site: str) -> str:
        return f"https://{self.sites[site].host}:{self.read_replica(site).patroni.port}"

    def with_read_replica(self, site: str, *, postgres_port: int, patroni_port: int) -> Topology:
        """This topology with a read replica on data site `site` (test clusters)."""
        raw = self.model_dump()
        raw["sites"][site]["read_replica"] = {
            "postgres": {"port": postgres_port},
            "patroni": {"port": patroni_port},
        }
        return Topology.model_validate(raw)

    @property
    def monitored(self) -> bool:
        """Whether this topology runs Prometheus and Alertmanager (on the witness site)."""
        return self.sites[self.witness_site].prometheus is not None

    def monitoring_url(self, service: str) -> str:
        """https://host:port of a monitoring service of the witness site: prometheus,
        alertmanager or redis_exporter (#12 item 2: TLS, the system's CA)."""
        site = self.sites[self.witness_site]
        port: Port | None = getattr(site, service)
        if port is None:
            raise TopologyError(f"topology {self.name!r} runs no {service}")
        return f"https://{site.host}:{port.port}"

    def without_monitoring(self) -> Topology:
        """This topology without Prometheus, Alertmanager and the exporters (test clusters that
        do not look at monitoring stay lean)."""
        raw = self.model_dump()
        for site in raw["sites"].values():
            for svc in MONITORING_SERVICES:
                site[svc] = None
        return Topology.model_validate(raw)

    @property
    def primary_site(self) -> str:
        return next(n for n, s in self.sites.items() if s.role == "primary")

    @property
    def witness_site(self) -> str:
        return next(n for n, s in self.sites.items() if s.role == "witness")

    def etcd_url(self, site: str) -> str:
        s = self.sites[site]
        # TLS with client certificates (#12 item 2): clients pass an SSLContext (kernel.tls).
        return f"https://{s.host}:{s.etcd.client_port}"

    def etcd_urls(self) -> list[str]:
        return [self.etcd_url(n) for n in self.sites]

    def entry_url(self) -> str:
        """The API's address for clients: HTTPS only (#12 items 2 and 5); with a floating
        address (#17 item 2), that address, held by the active site's own HAProxy."""
        if self.entry.floating is not None:
            return f"https://{self.entry.floating.address}:{self.entry.port}"
        return f"https://{self.entry_host()}:{self.entry.port}"

    def phone_url(self) -> str | None:
        """The phone channel's entry, as a dialplan names it (agi://host:port/bundle)."""
        if self.entry.phone_port is None:
            return None
        return f"agi://{self.entry_host()}:{self.entry.phone_port}/bundle"

    def node_url(self, site: str) -> str:
        s = self.sites[site]
        assert s.node is not None
        return f"https://{s.host}:{s.node.port}"

    def patroni_url(self, site: str) -> str:
        s = self.sites[site]
        assert s.patroni is not None
        return f"https://{s.host}:{s.patroni.port}"  # TLS only (#12 item 2)

    def with_port_offset(self, offset: int) -> Topology:
        """This topology with every port shifted, so a test cluster can run beside `make run`."""
        raw = self.model_dump()

        def shift(obj: Any) -> Any:
            if isinstance(obj, dict):
                return {
                    k: (v + offset if k.endswith("port") and isinstance(v, int) else shift(v))
                    for k, v in obj.items()
                }
            return obj

        return Topology.model_validate(shift(raw))

    def with_abuse_limits(self, limits: AbuseLimits) -> Topology:
        """This topology with other per-address limits at the entry point."""
        return self.model_copy(update={"entry": self.entry.model_copy(update={"limits": limits})})

    def with_admission(self, admission: Admission) -> Topology:
        """This topology with other overload limits (HAProxy's queue, the nodes' own limit)."""
        entry = self.entry.model_copy(update={"admission": admission})
        return self.model_copy(update={"entry": entry})

    def with_namespace_prefix(self, prefix: str) -> Topology:
        """This topology with its network namespaces renamed (another cluster's are left be)."""
        if self.namespaces is None:
            raise TopologyError(f"topology {self.name!r} has no namespaces section")
        raw = self.model_dump()
        raw["namespaces"]["prefix"] = prefix
        return Topology.model_validate(raw)


def parse_topology(data: Any, *, source: str = "<topology>") -> Topology:
    """Validate a parsed topology document; errors name the key path."""
    try:
        return Topology.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise TopologyError(f"{source}: {problems}") from exc


def load_topology(path: Path) -> Topology:
    try:
        text = path.read_text()
    except OSError as exc:
        raise TopologyError(f"cannot read topology file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path}: not valid YAML: {exc}") from exc
    return parse_topology(data, source=str(path))
