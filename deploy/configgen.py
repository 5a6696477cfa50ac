"""Generate every component's configuration from the topology (pure: values in, text out).

Each function returns the file content for one process; `deploy.launcher` writes them into the
state folder. Keeping generation pure lets the unit tests check the invariants that matter
(timings, synchronous mode, ports, who replicates from whom) without starting anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deploy import backup_config, chaos_links, etcd_auth, haproxy_state, redis_acl
from deploy.pg_roles import (
    APP_DATABASE,
    APP_USER,
    REPLICATION_USER,
    REWIND_USER,
    SUPERUSER,
    hba_lines,
    reader_hba_lines,
)
from deploy.pki import PkiDir
from deploy.state import StateDir
from deploy.topology import Topology
from kernel.names import PATRONI_NAMESPACE, member_name, read_replica_key
from replication.patroni_rest import PATRONI_REST_USER

REDIS_MASTER_NAME = "rocars"
PG_BIN_DIR = "/usr/lib/postgresql/15/bin"
# HAProxy's own /status page while no node answers (#15 item 5), shipped with the project.
STATUS_FALLBACK_PAGE = Path(__file__).resolve().parent / "pages" / "status-unreachable.html"


# etcd 3.4 refuses TLS below 1.2 by itself (its transport's floor); within TLS 1.2 it would
# also take CBC suites without forward-secret AEAD, which these leave out (#12 item 2; TLS 1.3
# ignores the list and uses its own AEAD suites). ECDSA because the private CA issues P-256
# keys (deploy/pki.py).
ETCD_CIPHER_SUITES = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
)


def _etcd_tls(cert: Path, key: Path, ca: Path) -> dict[str, Any]:
    return {
        "cert-file": str(cert),
        "key-file": str(key),
        "trusted-ca-file": str(ca),
        # Only a client (or peer) with a certificate from the system's CA may even connect.
        "client-cert-auth": True,
        "auto-tls": False,
    }


def etcd_config(topo: Topology, site: str, data_dir: Path, pki: PkiDir) -> str:
    """One etcd member's file: clients and peers over TLS, each side presenting a certificate
    from the system's CA (#12 item 2), besides the password users of deploy.etcd_auth.

    etcd reads its certificate and key again for every new connection (so leaf rotation needs
    nothing), but its trusted CA file only at start (deploy/pki.py). Its JSON gateway dials the
    member itself with the server certificate (hence its clientAuth usage, etcd #9785); etcd
    3.4 ignores the CN of that certificate for authorization (a gateway request is marked), so
    requests through the gateway act as the user of their token, never as the gateway."""
    s = topo.sites[site]
    initial = ",".join(
        f"etcd-{n}=https://{x.host}:{x.etcd.peer_port}" for n, x in topo.sites.items()
    )
    cfg = {
        "name": f"etcd-{site}",
        "data-dir": str(data_dir),
        "listen-client-urls": f"https://{s.host}:{s.etcd.client_port}",
        "advertise-client-urls": f"https://{s.host}:{s.etcd.client_port}",
        "listen-peer-urls": f"https://{s.host}:{s.etcd.peer_port}",
        "initial-advertise-peer-urls": f"https://{s.host}:{s.etcd.peer_port}",
        "client-transport-security": _etcd_tls(
            pki.cert(f"etcd-{site}"), pki.key(f"etcd-{site}"), pki.bundle
        ),
        "peer-transport-security": _etcd_tls(
            pki.cert(f"etcd-peer-{site}"), pki.key(f"etcd-peer-{site}"), pki.bundle
        ),
        "cipher-suites": list(ETCD_CIPHER_SUITES),
        "initial-cluster": initial,
        "initial-cluster-token": topo.name,
        "initial-cluster-state": "new",
        # etcd's defaults (100 ms heartbeat, 1 s election) already suit loopback and LAN; named
        # here because Patroni's retry_timeout is chosen against the election timeout.
        "heartbeat-interval": 100,
        "election-timeout": 1000,
        # A member cut off from the others (a site isolated) raises its term at each election
        # it cannot win; without pre-vote, rejoining with that term deposes the healthy leader
        # and the whole cluster has no leader for an election (a drill's `cluster up` timed
        # out at all three members, CI stop 37). With it, an isolated member asks first
        # whether it could win and keeps its term. etcd 3.5 turns it on by default.
        "pre-vote": True,
        "logger": "zap",
        "log-outputs": ["stderr"],
        "log-level": "warn",
        "enable-v2": False,
        # With --config-file, etcd 3.4 leaves the JSON gateway off unless asked; the nodes
        # and the operator commands use it (/v3/kv, /v3/maintenance).
        "enable-grpc-gateway": True,
        "quota-backend-bytes": 256 * 1024 * 1024,
        # Every write (the nodes' heartbeat, Patroni's leader key) is a new revision: without
        # compaction the history only grows, until the quota above stops every write (NOSPACE
        # alarm) and with it leader elections. Five minutes, as Kubernetes keeps: nothing here
        # reads old revisions (Patroni's watch restarts from the current one), and each
        # revision kept is memory, its page of the mapped database resident (an hour held about
        # 9,400 of Patroni's 1 KiB writes per member; standalone, 15,000 writes at 100/s left
        # 24.3 MiB of the database file resident with an hour's history, 19.8 with a minute's).
        "auto-compaction-mode": "periodic",
        "auto-compaction-retention": "5m",
        # Raft entries kept in memory: every entry since the last snapshot plus the 5,000 a
        # snapshot keeps for followers that lag (fixed in 3.4). Patroni's writes are about
        # 1 KiB each, 2.6 a second, so with 3.6's default of 10,000 each member's heap grew by
        # up to 14 MiB over an hour before its first snapshot (measured, standalone 3.4, 19,500
        # writes of 1 KiB: 33.6 MiB PSS at 10,000 against 19.1 at 1,000; #11 target 5). A
        # snapshot of this key space is a few kilobytes, so one every 1,000 writes costs nothing.
        "snapshot-count": 1000,
    }
    return yaml.safe_dump(cfg, sort_keys=False)


@dataclass(frozen=True)
class MemberTls:
    """PostgreSQL's certificate, key and trusted CAs, and Patroni's (its REST API's server
    certificate, its etcd client certificate), copied from the state's pki folder into the
    member's folder (#12 item 2): PostgreSQL and Patroni run as another user, who must own
    their keys (PostgreSQL refuses a key others can read) and cannot enter the 0700 pki
    folder."""

    folder: Path

    @classmethod
    def of(cls, member_dir: Path) -> MemberTls:
        return cls(member_dir / "tls")

    @property
    def cert(self) -> Path:
        return self.folder / "server.crt"

    @property
    def key(self) -> Path:
        return self.folder / "server.key"

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def rest_cert(self) -> Path:
        return self.folder / "rest.crt"

    @property
    def rest_key(self) -> Path:
        return self.folder / "rest.key"

    @property
    def etcd_cert(self) -> Path:
        return self.folder / "etcd-client.crt"

    @property
    def etcd_key(self) -> Path:
        return self.folder / "etcd-client.key"

    def copies(self, pki: PkiDir, site: str) -> tuple[tuple[Path, Path, int], ...]:
        """(file in the pki folder, its copy here, the copy's mode) for every file above."""
        return (
            (pki.cert(f"postgres-{site}"), self.cert, 0o644),
            (pki.key(f"postgres-{site}"), self.key, 0o600),
            (pki.bundle, self.ca, 0o644),
            (pki.cert(f"patroni-{site}"), self.rest_cert, 0o644),
            (pki.key(f"patroni-{site}"), self.rest_key, 0o600),
            (pki.cert("etcd-client-patroni"), self.etcd_cert, 0o644),
            (pki.key("etcd-client-patroni"), self.etcd_key, 0o600),
        )


def patroni_settings(topo: Topology) -> dict[str, Any]:
    """The cluster-wide Patroni settings the topology decides: the bootstrap's, and what
    `cluster up` sets on a running cluster whose topology changed (Patroni reads
    bootstrap.dcs only when it initialises the cluster)."""
    t = topo.patroni
    return {
        "ttl": t.ttl,
        "loop_wait": t.loop_wait,
        "retry_timeout": t.retry_timeout,
        "primary_start_timeout": t.primary_start_timeout,
        # Only a synchronous standby may be promoted: an acknowledged write is on both
        # members before the client hears "committed" (RPO 0, DESIGN.md I1).
        "synchronous_mode": True,
        # Not strict by default (deploy.topology.PatroniTiming says why).
        "synchronous_mode_strict": t.synchronous_mode_strict,
    }


def patroni_settings_changes(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The part of `wanted` that the cluster's current dynamic configuration (Patroni's
    GET /config) does not already hold: the body of a PATCH /config, empty when nothing
    differs."""
    return {k: v for k, v in wanted.items() if current.get(k) != v}


def _operator_hosts(topo: Topology) -> list[str]:
    """Where operator commands (migrations, drills' checks, reports) reach PostgreSQL from:
    the data sites' hosts, and the hub namespace when there is one."""
    hub = [topo.namespaces.hub_host] if topo.namespaces is not None else []
    return [*(topo.sites[n].host for n in topo.data_sites), *hub]


def patroni_config(
    topo: Topology, site: str, member_dir: Path, passwords: dict[str, str]
) -> dict[str, Any]:
    s = topo.sites[site]
    assert s.postgres is not None and s.patroni is not None
    data_hosts = [topo.sites[n].host for n in topo.data_sites]
    hba = hba_lines(data_hosts, _operator_hosts(topo))
    tls = MemberTls.of(member_dir)
    # Patroni's own connections (local checks, replication, pg_rewind) check the server's
    # certificate like every other client does.
    verify = {"sslmode": "verify-full", "sslrootcert": str(tls.ca)}
    return {
        "scope": topo.name,
        "namespace": PATRONI_NAMESPACE,
        "name": member_name(site),
        "log": {"level": "INFO", "format": "%(asctime)s %(levelname)s: %(message)s"},
        "restapi": {
            "listen": f"{s.host}:{s.patroni.port}",
            "connect_address": f"{s.host}:{s.patroni.port}",
            # #12 item 3: basic auth on the unsafe methods (switchover, failover, restart,
            # reinitialize, reload, PATCH/PUT /config); GETs (/metrics for Prometheus,
            # /cluster, /patroni, /primary for status and readiness) stay open.
            "authentication": {
                "username": PATRONI_REST_USER,
                "password": passwords["patroni-rest"],
            },
            # #12 item 2: HTTPS only, and every client shows a certificate from the system's
            # CA (the nodes, Prometheus, the operator commands and the other member all have
            # one); unsafe methods want the password above as well. Patroni rebuilds this
            # listener on SIGHUP when the certificate's serial changes (deploy/pki.py).
            "certfile": str(tls.rest_cert),
            "keyfile": str(tls.rest_key),
            "cafile": str(tls.ca),
            "verify_client": "required",
        },
        # Patroni's own requests to the other member's REST API (leader race, switchover
        # checks) and patronictl's: they present this member's certificate (server and client
        # usage) and check the other's against the CA.
        "ctl": {
            "certfile": str(tls.rest_cert),
            "keyfile": str(tls.rest_key),
            "cacert": str(tls.ca),
        },
        "etcd3": {
            "hosts": [chaos_links.hostport(topo, "patroni-etcd", site, n) for n in topo.sites],
            **chaos_links.patroni_etcd_options(topo),
            # #12 item 2: TLS with the client certificate etcd requires (client-cert-auth).
            "protocol": "https",
            "cacert": str(tls.ca),
            "cert": str(tls.etcd_cert),
            "key": str(tls.etcd_key),
            # #12 item 3: a user that may write Patroni's namespace and nothing else
            # (deploy.etcd_auth); this file is 0600.
            "username": etcd_auth.PATRONI_USER,
            "password": passwords["etcd-patroni"],
        },
        "bootstrap": {
            "dcs": {
                **patroni_settings(topo),
                "maximum_lag_on_failover": 1048576,
                "check_timeline": True,
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": {
                        "wal_level": "replica",
                        "hot_standby": "on",
                        "wal_log_hints": "on",
                        "max_wal_senders": 10,
                        "max_replication_slots": 10,
                        "wal_keep_size": "256MB",
                        "synchronous_commit": "on",
                        # A demotion waits for walsenders to flush to the standby; with the
                        # default 60 s it stalled Patroni's loop for up to 83 s when the
                        # standby was unreachable (DESIGN.md section 6).
                        "wal_sender_timeout": "5s",
                        "wal_receiver_timeout": "5s",
                        "max_connections": 100,
                    },
                },
            },
            "initdb": [{"encoding": "UTF8"}, "data-checksums"],
        },
        "postgresql": {
            "listen": f"{s.host}:{s.postgres.port}",
            "connect_address": chaos_links.replication_address(topo, site),
            "data_dir": str(member_dir / "data"),
            "bin_dir": PG_BIN_DIR,
            "pgpass": str(member_dir / "pgpass"),
            # A new replica's base backup must not wait for a spread checkpoint (measured: 93 s).
            "basebackup": [{"checkpoint": "fast"}, {"wal-method": "stream"}],
            "authentication": {
                # Patroni creates the replication and rewind roles with only what they need
                # (REPLICATION; EXECUTE on pg_rewind's file functions) on bootstrap.
                "superuser": {
                    "username": SUPERUSER,
                    "password": passwords["superuser"],
                    **verify,
                },
                "replication": {
                    "username": REPLICATION_USER,
                    "password": passwords["replication"],
                    **verify,
                },
                "rewind": {"username": REWIND_USER, "password": passwords["rewind"], **verify},
            },
            "parameters": {
                "unix_socket_directories": str(member_dir / "sock"),
                "logging_collector": "on",
                "log_directory": str(member_dir / "log"),
                "log_filename": "postgresql.log",
                "log_line_prefix": "%m [%p] %q%u@%d ",
                # PostgreSQL 15's default, named: pg_hba accepts only SCRAM (#12 item 4).
                "password_encryption": "scram-sha-256",
                # TLS only (#12 item 2): pg_hba has `hostssl` lines and no `host` ones, so the
                # synchronous stream to the DR site and every client session are encrypted.
                "ssl": "on",
                "ssl_cert_file": str(tls.cert),
                "ssl_key_file": str(tls.key),
                "ssl_ca_file": str(tls.ca),
                "ssl_min_protocol_version": "TLSv1.2",
                # No JIT: this system's statements are short, and a backend that once crossed
                # jit_above_cost (a report's scan) loaded LLVM and kept 20-30 MiB more for
                # its life (measured: 33 against 5 MiB PSS per pooled backend after a bench,
                # #11 target 5), and compiling costs a request tens of milliseconds.
                "jit": "off",
                # Memory and checkpoints as the topology sizes them (deploy.topology's
                # PostgresTuning says why); local parameters, so a changed topology reaches a
                # running cluster on `cluster up`'s reload (shared_buffers at its next restart).
                **topo.pg_tuning.parameters(),
                # WAL archiving to the backup repository, when the topology has backups (#17).
                **backup_config.archive_parameters(topo, member_dir),
            },
            "pg_hba": hba,
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
    }


def read_replica_patroni_config(
    topo: Topology, site: str, member_dir: Path, passwords: dict[str, str]
) -> dict[str, Any]:
    """The read replica of `site` (#17 item 5): the site's member's file with the replica's
    name, ports and folder, the read role admitted by its pg_hba, and tags that keep it out of
    every decision about writes. It runs on the site's host, so the site's certificates name
    its address too (the copies in its folder: `MemberTls.copies(pki, site)`)."""
    s = topo.sites[site]
    replica = topo.read_replica(site)
    cfg = patroni_config(topo, site, member_dir, passwords)
    cfg["name"] = member_name(read_replica_key(site))
    rest = f"{s.host}:{replica.patroni.port}"
    cfg["restapi"] |= {"listen": rest, "connect_address": rest}
    pg = f"{s.host}:{replica.postgres.port}"
    cfg["postgresql"] |= {"listen": pg, "connect_address": pg}
    readers = _operator_hosts(topo)  # reports come from where operator commands do
    cfg["postgresql"]["pg_hba"] = [*cfg["postgresql"]["pg_hba"], *reader_hba_lines(readers)]
    cfg["tags"] = {
        # Never promoted, never the synchronous standby: an acknowledged write still waits
        # for the other main member only (RPO 0), and failover still goes to it alone.
        "nofailover": True,
        "nosync": True,
        "noloadbalance": False,
        "clonefrom": False,
        # Cascading from the site's own member, so the link between sites carries the WAL
        # once; Patroni follows the leader instead while that member is not in the cluster.
        "replicatefrom": member_name(site),
    }
    return cfg


def redis_tls_lines(port: int, pki: PkiDir, cert: str) -> list[str]:
    """Redis's or Sentinel's TLS (#12 item 2): TLS only on `port` (`port 0`: no plain
    listener), its certificate `cert` from the system's CA, TLS for what it dials too (a
    replica to its primary, Sentinel to Redis and to the other Sentinels, presenting the same
    certificate: both usages), and a client certificate from the CA required of everyone.
    ACL passwords alone would gate the commands; the certificate also turns away, before any
    Redis command is parsed, whoever holds a stolen password but no certificate of ours. Redis
    rereads these files on `CONFIG SET tls-cert-file` (deploy/pki.py); Sentinel only on a
    restart."""
    return [
        "port 0",
        f"tls-port {port}",
        f"tls-cert-file {pki.cert(cert)}",
        f"tls-key-file {pki.key(cert)}",
        f"tls-ca-cert-file {pki.bundle}",
        "tls-auth-clients yes",
        "tls-replication yes",
        'tls-protocols "TLSv1.2 TLSv1.3"',
    ]


def redis_config(
    topo: Topology, site: str, data_dir: Path, passwords: Mapping[str, str], *, pki: PkiDir
) -> str:
    """Redis of `site`; its users by role (#12 item 3, deploy.redis_acl): the file holds the
    replica user's password in clear (`masterauth`), so it is written 0600. TLS only
    (`redis_tls_lines`), replication included."""
    s = topo.sites[site]
    assert s.redis is not None
    lines = [
        f"bind {s.host}",
        *redis_tls_lines(s.redis.port, pki, f"redis-{site}"),
        # Moot with the default user off (it has no password either), kept as a second lock.
        "protected-mode yes",
        "daemonize no",
        f"dir {data_dir}",
        'logfile ""',
        # Redis is a cache and a signal bus, never the truth (DESIGN.md section 2): no RDB
        # snapshots, an append-only file only so a restarted member warms up faster.
        'save ""',
        "appendonly yes",
        "appendfsync everysec",
        "maxmemory 64mb",
        "maxmemory-policy allkeys-lru",
        *redis_acl.redis_acl_lines(passwords),
        *chaos_links.redis_announce_lines(topo, site),
    ]
    if topo.sites[site].role != "primary":
        host, port = chaos_links.redis_address(topo, topo.primary_site)
        lines.append(f"replicaof {host} {port}")
    return "\n".join(lines) + "\n"


def sentinel_config(
    topo: Topology, site: str, data_dir: Path, passwords: Mapping[str, str], *, pki: PkiDir
) -> str:
    """Sentinel of `site`, with its users and the credentials it logs in to Redis and to the
    other Sentinels with (#12 item 3, deploy.redis_acl); 0600, like Redis's. TLS only, to its
    clients, to Redis and to the other Sentinels (`redis_tls_lines`)."""
    s = topo.sites[site]
    primary_host, primary_port = chaos_links.redis_address(topo, topo.primary_site)
    return (
        "\n".join(
            [
                f"bind {s.host}",
                *redis_tls_lines(s.sentinel.port, pki, f"sentinel-{site}"),
                "protected-mode yes",
                "daemonize no",
                f"dir {data_dir}",
                'logfile ""',
                # Quorum 2 of the 3 sentinels, one per site, like etcd.
                f"sentinel monitor {REDIS_MASTER_NAME} {primary_host} {primary_port} 2",
                f"sentinel down-after-milliseconds {REDIS_MASTER_NAME} 2000",
                f"sentinel failover-timeout {REDIS_MASTER_NAME} 10000",
                f"sentinel parallel-syncs {REDIS_MASTER_NAME} 1",
                *redis_acl.sentinel_acl_lines(REDIS_MASTER_NAME, passwords),
            ]
        )
        + "\n"
    )


# Every error HAProxy itself answers, as problem+json like the nodes' own (#10 item 6): status,
# title and what the client should do. 503 is rendered apart, with Retry-After: "no node is
# active" (with the manual-mode hint) and "no node could take the request in time" (overload,
# #11 target 3).
HAPROXY_ERRORS: dict[int, tuple[str, str]] = {
    400: ("Bad Request", "the request is malformed or its headers are too large or invalid"),
    403: ("Forbidden", "the request was refused by the entry point"),
    405: ("Method Not Allowed", "this method is not allowed here"),
    408: ("Request Timeout", "the request was not received in time; send it again"),
    413: ("Content Too Large", "the request body is too large"),
    425: ("Too Early", "the request was sent too early; send it again"),
    429: ("Too Many Requests", "too many requests from this address; slow down"),
    500: ("Internal Server Error", "the entry point failed to handle the request"),
    501: ("Not Implemented", "the entry point does not support this request"),
    502: ("Bad Gateway", "the API node gave an invalid answer or closed the connection"),
    504: ("Gateway Timeout", "the API node did not answer in time"),
}


def _problem(status: int, title: str, detail: str, **extra: object) -> str:
    """A problem+json document as an HAProxy double-quoted string argument."""
    doc = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    return json.dumps(doc, separators=(",", ":")).replace("\\", "\\\\").replace('"', '\\"')


def _problem_return(status: int, retry_after_s: int, title: str, detail: str) -> str:
    body = _problem(status, title, detail, retry_after_ms=retry_after_s * 1000)
    return (
        f'return status {status} content-type "application/problem+json" '
        f'hdr Retry-After {retry_after_s} string "{body}"'
    )


@dataclass(frozen=True)
class HaproxyTls:
    """HAProxy's TLS files (#12 item 2), from the state's pki folder: its server certificate
    and key in one PEM (clients' HTTPS, the stats port), the CA bundle it checks the nodes'
    certificates against, and its client certificate and key in one PEM (to the nodes)."""

    server_pem: Path
    ca_bundle: Path
    client_pem: Path

    def bind(self) -> str:
        return f"ssl crt {self.server_pem} ssl-min-ver TLSv1.2 alpn http/1.1"

    def to_node(self) -> str:
        """A backend server's TLS to a node: its certificate must chain to the system's CA.
        Not `verifyhost`: HAProxy matches it against DNS names only, and a node's certificate
        names its address; the private CA issues to this system's processes alone."""
        return f"ssl verify required ca-file {self.ca_bundle} crt {self.client_pem}"


def haproxy_config(
    topo: Topology,
    tls: HaproxyTls,
    *,
    stats_password: str | None = None,
    runtime: haproxy_state.ServerState | None = None,
) -> str:
    """HAProxy's file. `stats_password`: the stats page's password (user `rocars-admin`);
    without it the page is off (only /metrics is served on the stats port). `runtime`: the
    admin socket a reload reads the servers' state from and the file the next process starts
    from (deploy.haproxy_state); without it neither."""
    runtime_global, runtime_defaults = haproxy_state.config_lines(runtime) if runtime else ([], [])
    entry_host = topo.entry_host()
    limits = topo.entry.limits
    admission = topo.entry.admission
    servers = []
    for name in topo.data_sites:
        s = topo.sites[name]
        assert s.node is not None
        # Health checks go the same way (HAProxy checks over the server's TLS settings).
        to = chaos_links.hostport(topo, "haproxy-node", topo.entry.site, name)
        servers.append(f"    server node-{name} {to} check {tls.to_node()}")
    unavailable = (
        '{\\"type\\":\\"https://rocars.example/problems/not-writable\\",'
        '\\"title\\":\\"Service Unavailable\\",\\"status\\":503,\\"retry_after_ms\\":200,'
        '\\"detail\\":\\"no API node is active right now; retry shortly. If manual clearance'
        ' is in force, GET /v1/status says since when and what to do.\\"}'
    )
    busy = _problem(
        503,
        "Service Unavailable",
        "no API node could take this request in time (the active node is at capacity, or no"
        " node is up); retry after Retry-After",
        type="https://rocars.example/problems/busy",
        retry_after_ms=1000,
    )
    errors = [
        f'    http-error status {code} content-type "application/problem+json" '
        f'string "{_problem(code, title, detail)}"'
        for code, (title, detail) in HAPROXY_ERRORS.items()
    ]
    node_parse_errors = {
        400: _problem(400, "Bad Request", "a header or the request line is malformed"),
        413: _problem(413, "Content Too Large", "the request is too large"),
        431: _problem(
            431, "Request Header Fields Too Large", "a header or the headers are too large"
        ),
    }
    unauth_w, fail_w = limits.unauthenticated_window_s, limits.auth_failure_window_s
    too_many_unauth = _problem_return(
        429,
        unauth_w,
        "Too Many Requests",
        f"more than {limits.unauthenticated_requests} requests without credentials from this"
        f" address in {unauth_w} s; retry after {unauth_w} s",
    )
    too_many_failures = _problem_return(
        429,
        fail_w,
        "Too Many Requests",
        f"more than {limits.auth_failures} failed authentications from this address in"
        f" {fail_w} s; requests with credentials from it are refused for up to {fail_w} s",
    )
    return "\n".join(
        [
            "global",
            "    log stdout format raw local0 info",
            "    maxconn 4096",
            # An old process finishes its connections after a reload, but no longer than
            # this: HAProxy 2.6.12 can leave a request it cut while its connection to a node
            # was mid-handshake unfinished, and that kept an old process alive with nothing
            # to serve (measured: still there after 5 min). Longer than a phone call (its
            # timeouts are 20 min), and the dialplan calls again if one is cut.
            "    hard-stop-after 30m",
            *runtime_global,
            "",
            "defaults",
            "    mode http",
            *runtime_defaults,
            "    log global",
            "    option httplog",
            "    timeout connect 1s",
            "    timeout client 60s",
            "    timeout server 60s",
            "    timeout http-request 10s",
            # A health check answering later than this counts as failed (see `fall` below).
            "    timeout check 1s",
            # Only the active node answers /health/ready; a refused connection or a standby's
            # 503 is retried on the other server, which the node's idempotency keys make safe.
            "    retries 3",
            "    option redispatch 1",
            "    option http-buffer-request",
            "    retry-on conn-failure empty-response 503",
            # On a reload (`rocars certs rotate`) the old process keeps its idle client
            # connections until their next request, which it answers with Connection: close,
            # instead of closing them under a client that is sending one (#12 item 1).
            "    option idle-close-on-response",
            "",
            # HAProxy's own 503 when a node was ready: the request waited `timeout queue` for
            # one of the active node's `maxconn` slots (overload), or no node is up at all.
            f'    http-error status 503 content-type "application/problem+json" '
            f'hdr Retry-After 1 string "{busy}"',
            *errors,
            "",
            *(
                [
                    "frontend http_redirect",
                    f"    bind {entry_host}:{topo.entry.http_port}",
                    # Plain HTTP serves nothing, not even an error that echoes the request:
                    # every request is sent to the HTTPS entry (#12 item 2).
                    f"    http-request redirect prefix https://{entry_host}:{topo.entry.port}"
                    " code 308",
                    "",
                ]
                if topo.entry.http_port is not None
                else []
            ),
            "frontend api",
            f"    bind {entry_host}:{topo.entry.port} {tls.bind()}",
            # Browsers remember to use HTTPS only (a year; HAProxy's own answers too).
            '    http-after-response set-header Strict-Transport-Security "max-age=31536000"',
            # Every request carries an X-Request-Id (#13 item 5): the client's, else one made
            # here; the node keeps a sane one (and replaces the rest) and echoes it, and
            # HAProxy's own answers (limits, overload, replaced errors) echo it too.
            "    http-request set-header X-Request-Id %[uuid]"
            " unless { req.hdr(x-request-id) -m found }",
            "    http-request set-var(txn.request_id) req.hdr(x-request-id)",
            "    http-after-response set-header X-Request-Id %[var(txn.request_id)]"
            " if { var(txn.request_id) -m found } !{ res.hdr(x-request-id) -m found }",
            # The control plane's pages (metrics, the detailed health document, probes) only
            # to the monitoring networks (#12 item 3): the nodes see HAProxy's own address,
            # which is on them, so the client's is judged here. Clients get the API, the web
            # pages and /v1/status.
            f"    acl monitoring_network src {' '.join(topo.monitoring_networks())}",
            "    acl control_page path /metrics /health",
            "    acl control_page path_beg /health/",
            '    http-request return status 404 content-type "application/problem+json" string'
            f' "{_problem(404, "Not Found", "no such resource")}"'
            " if control_page !monitoring_network",
            # Abuse limits per client address (topology `entry.limits`): requests without
            # credentials are counted in one table, 401 answers to requests with credentials
            # in the other; a request with a good key adds to neither.
            "    acl has_credentials req.hdr(authorization) -m found",
            # A signed-in browser's pages carry the session cookie instead (#15).
            "    acl has_credentials req.cook(rocars_session) -m found",
            # The monitoring networks' own probes (control pages: others got 404 above) are
            # not counted: `rocars certs reload` checks the new HAProxy with one, and a flood
            # of unauthenticated requests from its address had it answered 429 (measured).
            "    http-request track-sc0 src table limit_unauthenticated"
            " if !has_credentials !control_page",
            "    http-request track-sc1 src table limit_auth_failures if has_credentials",
            f"    http-request {too_many_unauth} if !has_credentials"
            f" {{ sc0_http_req_rate(limit_unauthenticated) gt {limits.unauthenticated_requests} }}",
            f"    http-request {too_many_failures} if has_credentials"
            f" {{ sc1_gpc0_rate(limit_auth_failures) ge {limits.auth_failures} }}",
            "    http-response sc-inc-gpc0(1) if { status 401 }",
            # A node's error answer that is not problem+json (aiohttp's own text/plain answer
            # to a malformed request, which echoes the offending header, or to one too large)
            # is replaced, so clients always get problem+json and never their header back.
            "    acl problem_json res.hdr(content-type) -m beg application/problem+json",
            *(
                f'    http-response return status {code} content-type "application/problem+json"'
                f' string "{body}" if {{ status {code} }} !problem_json'
                for code, body in node_parse_errors.items()
            ),
            # The public notice and liveness must answer from any live node, also when no node
            # is active (manual clearance with the database down).
            "    acl public_read path /v1/status /status /health /health/live",
            # The web pages' stylesheet and script, for the public status page (#15 item 5).
            "    acl public_read path_beg /static/",
            # An old process that a reload (`-sf`) told to stop still answers the next request
            # on each of its kept-alive connections (option idle-close-on-response), but in it
            # `nbsrv` reads 0 for every backend while forwarding still works (measured, HAProxy
            # 2.6): without this, that request got "no API node is active" during a rotation.
            "    acl reloading stopping",
            # No node alive at all: the public status page is HAProxy's own, saying so.
            '    http-request return status 200 content-type "text/html; charset=utf-8"'
            f" file {STATUS_FALLBACK_PAGE} hdr Cache-Control no-store"
            " if { path /status } { nbsrv(any_live_node) eq 0 } !reloading",
            # With no node ready, answer every other request like a node would: problem+json,
            # Retry-After, and the manual-mode hint.
            "    acl no_active_node nbsrv(nodes) eq 0",
            # ... except manual clearance itself (#15 item 4): the officers' contingency API
            # and pages, and signing in to them, need no database (keys from the key cache,
            # clearances to the journal), so with no node active any live node serves them.
            # The sign-in page's language switch too (its stylesheet and script are public_read).
            "    acl manual_ops path_beg /v1/contingency /officer/contingency",
            "    acl manual_ops path /signin /signout /lang",
            '    http-request return status 503 content-type "application/problem+json" '
            f'hdr Retry-After 1 string "{unavailable}" '
            "if no_active_node !reloading !public_read !manual_ops"
            " || no_active_node !reloading !METH_GET !manual_ops",
            # Under overload the active node's queue serves manual clearance (I4) and the gates'
            # arrival decisions (a truck waits at the boundary) before anything else.
            "    http-request set-priority-class int(-1) if { path_beg /v1/contingency /v1/lbcp/ }",
            "    use_backend any_live_node if no_active_node !reloading manual_ops",
            "    use_backend any_live_node if public_read METH_GET",
            "    default_backend nodes",
            "",
            "backend limit_unauthenticated",
            "    stick-table type ipv6 size 100k expire"
            f" {2 * unauth_w}s store http_req_rate({unauth_w}s)",
            "",
            "backend limit_auth_failures",
            "    stick-table type ipv6 size 100k expire"
            f" {2 * fail_w}s store gpc0,gpc0_rate({fail_w}s)",
            "",
            "backend nodes",
            "    option httpchk GET /health/ready",
            "    http-check expect status 200",
            # Overload (#11 target 3, topology `entry.admission`): each node gets at most
            # `maxconn` requests at once (on default-server below); the rest wait in this
            # backend's queue at most `timeout queue`, then HAProxy answers the 503 above. A
            # queue timeout is HAProxy's own answer, never retried (`retry-on 503` retries only
            # a server's 503), so shed requests cost the nodes nothing and an accepted one has
            # waited at most this long. Health checks do not count against `maxconn`.
            f"    timeout queue {admission.queue_timeout_ms}ms",
            # Any request may use any idle connection to the node, not only the ones its own
            # client connection opened ("safe"): with many client connections each sending
            # now and then, "safe" made most requests open a node connection of their own,
            # which cost the node an accept and a protocol set-up each (#11 target 2). The
            # nodes speak plain HTTP/1.1 and keep no per-connection state.
            "    http-reuse always",
            # Checks every 250 ms; a node is marked down after 3 failed checks in a row (a
            # check fails when refused, answered with non-200, or not answered within `timeout
            # check`), so one late answer from a busy active node no longer takes it out and
            # cuts every session (#10 item 2). Failover and switchover stay fast anyway: a node
            # that stops being active answers /health/ready 503 at once (3 checks at fastinter:
            # under 1 s), a dead one refuses connections at once, and meanwhile writes it
            # refuses with 503 are retried on the other node (`retry-on ... 503` above). One
            # good check (rise 1) brings the new active node in: whether a node may write is
            # decided by the database, not by HAProxy (DESIGN.md I3). Sessions to a node marked
            # down are cut so clients reconnect to the new active node.
            "    default-server inter 250ms fastinter 250ms downinter 250ms rise 1 fall 3 "
            f"on-marked-down shutdown-sessions maxconn {admission.server_maxconn}",
            *servers,
            "",
            "backend any_live_node",
            # One client, one node while it lives: in manual clearance each node lists the
            # clearances its own journal holds, so an officer's form and the page after it
            # must come from the same node.
            "    balance source",
            "    option httpchk GET /health/live",
            "    http-check expect status 200",
            "    default-server inter 500ms fastinter 250ms rise 1 fall 3",
            *servers,
            "",
            *_phone_sections(topo),
            "frontend stats",
            f"    bind {entry_host}:{topo.entry.stats_port} {tls.bind()}",
            # Internal only (#12 item 3): the stats port answers the monitoring networks
            # (Prometheus reads /metrics here) and nobody else; the page wants a password too.
            "    http-request deny deny_status 403"
            f" unless {{ src {' '.join(topo.monitoring_networks())} }}",
            *(
                [
                    "    stats enable",
                    "    stats uri /stats",
                    "    stats refresh 2s",
                    "    stats hide-version",
                    f"    stats auth rocars-admin:{stats_password}",
                ]
                if stats_password
                else []
            ),
            # HAProxy's built-in Prometheus exporter (USE_PROMEX, Debian's build has it), for
            # the `haproxy` scrape job (#13 item 1).
            "    http-request use-service prometheus-exporter if { path /metrics }",
            "",
        ]
    )


def _phone_sections(topo: Topology) -> list[str]:
    """The phone channel's entry (issue 16): FastAGI in mode tcp to the active node's phone
    port, chosen by the API backend's own check (each phone server tracks the API backend's
    server of its node: the node answers one readiness check, not one per backend, #11).
    A call holds its connection for minutes, so the timeouts are a call's, not a request's."""
    if topo.entry.phone_port is None:
        return []
    servers = [
        # FastAGI itself is plain TCP (Asterisk has no TLS for AGI); the tracked check is HTTPS.
        f"    server phone-{name} {s.host}:{s.phone.port} track nodes/node-{name}"
        for name in topo.data_sites
        if (s := topo.sites[name]).phone is not None and s.node is not None
    ]
    return [
        "frontend phone",
        "    mode tcp",
        "    option tcplog",
        "    no option http-buffer-request",
        f"    bind {topo.entry_host()}:{topo.entry.phone_port}",
        "    timeout client 20m",
        "    default_backend phone_nodes",
        "",
        "backend phone_nodes",
        "    mode tcp",
        "    timeout server 20m",
        "    no option http-buffer-request",
        # As the API backend: a node that stops being active is out within about 1 s and its
        # calls are cut (the dialplan calls again; the bundle's key makes that safe). HAProxy
        # marks a tracking server down with the one it tracks, and applies its own
        # on-marked-down then (srv_set_stopped walks the trackers).
        "    default-server on-marked-down shutdown-sessions",
        *servers,
        "",
    ]


def node_config(topo: Topology, site: str, *, state_root: Path) -> dict[str, Any]:
    s = topo.sites[site]
    assert s.node is not None and s.postgres is not None and s.patroni is not None
    db_host, db_port = chaos_links.address(topo, "node-postgres", site, site)
    return {
        "site": site,
        "cluster": topo.name,
        "listen_host": s.host,
        "listen_port": s.node.port,
        "phone_port": None if s.phone is None else s.phone.port,
        "state_dir": str(state_root),
        # The node writes only through its own site's member (DESIGN.md section 2): a node
        # whose member is a replica cannot write, so the database fences the API tier.
        "database": {
            "host": db_host,
            "port": db_port,
            "dbname": APP_DATABASE,
            "user": APP_USER,
            # The password by libpq password file, never in this file (#12 item 4).
            "passfile": str(StateDir(state_root).pgpass("app")),
            "sslrootcert": str(StateDir(state_root).ca_bundle),
        },
        "patroni_url": topo.patroni_url(site),
        # Patroni's REST password by file, never in this file (#12 item 3).
        "patroni_auth_file": str(StateDir(state_root).secret_file("patroni-rest")),
        "patroni_member": member_name(site),
        "patroni_namespace": PATRONI_NAMESPACE,
        "etcd_urls": [
            f"https://{chaos_links.hostport(topo, 'node-etcd', site, n)}" for n in topo.sites
        ],
        # The node's etcd user and its password's file, never the password (#12 item 3).
        "etcd_user": etcd_auth.NODE_USER,
        "etcd_password_file": str(StateDir(state_root).secret_file("etcd-node")),
        "etcd_witness_url": (
            f"https://{chaos_links.hostport(topo, 'node-etcd', site, topo.witness_site)}"
        ),
        "redis_sentinels": [[x.host, x.sentinel.port] for x in topo.sites.values()],
        "redis_master_name": REDIS_MASTER_NAME,
        # The node's Redis and Sentinel user; its password by file, never here (#12 item 3).
        "redis_auth": {
            "username": redis_acl.NODE.name,
            "password_file": str(StateDir(state_root).secret_file(redis_acl.NODE.secret)),
            "sentinel_username": redis_acl.SENTINEL_NODE.name,
            "sentinel_password_file": str(
                StateDir(state_root).secret_file(redis_acl.SENTINEL_NODE.secret)
            ),
        },
        # TLS only to both, with the node's client certificate (#12 item 2).
        "redis_tls": redis_acl.node_tls_paths(StateDir(state_root)),
        "peers": {n: topo.node_url(n) for n in topo.data_sites},
        "tls": {
            "cert": str(StateDir(state_root).pki / f"node-{site}.crt"),
            "key": str(StateDir(state_root).pki / f"node-{site}.key"),
            "ca": str(StateDir(state_root).ca_bundle),
            "client_cert": str(StateDir(state_root).pki / "client-rocars-node.crt"),
            "client_key": str(StateDir(state_root).pki / "client-rocars-node.key"),
            # etcd's gateway refuses a certificate with a CN (deploy.pki.ETCD_CLIENT_ROLES).
            "etcd_client_cert": str(StateDir(state_root).pki / "etcd-client-rocars-node.crt"),
            "etcd_client_key": str(StateDir(state_root).pki / "etcd-client-rocars-node.key"),
        },
        "max_in_flight": topo.entry.admission.node_max_in_flight,
        "monitoring_networks": topo.monitoring_networks(),
        "monitoring_key_file": str(StateDir(state_root).secret_file("monitoring-key")),
        "web_session_key_file": str(StateDir(state_root).secret_file("web-session")),
    }
