"""Generate every component's configuration from the topology (pure: values in, text out).

Each function returns the file content for one process; `deploy.launcher` writes them into the
state folder. Keeping generation pure lets the unit tests check the invariants that matter
(timings, synchronous mode, ports, who replicates from whom) without starting anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from deploy.topology import Topology
from kernel.names import PATRONI_NAMESPACE, member_name

REDIS_MASTER_NAME = "rocars"
PG_BIN_DIR = "/usr/lib/postgresql/15/bin"
APP_DATABASE = "rocars"
APP_USER = "rocars"


def etcd_config(topo: Topology, site: str, data_dir: Path) -> str:
    s = topo.sites[site]
    initial = ",".join(
        f"etcd-{n}=http://{x.host}:{x.etcd.peer_port}" for n, x in topo.sites.items()
    )
    cfg = {
        "name": f"etcd-{site}",
        "data-dir": str(data_dir),
        "listen-client-urls": f"http://{s.host}:{s.etcd.client_port}",
        "advertise-client-urls": f"http://{s.host}:{s.etcd.client_port}",
        "listen-peer-urls": f"http://{s.host}:{s.etcd.peer_port}",
        "initial-advertise-peer-urls": f"http://{s.host}:{s.etcd.peer_port}",
        "initial-cluster": initial,
        "initial-cluster-token": topo.name,
        "initial-cluster-state": "new",
        # etcd's defaults (100 ms heartbeat, 1 s election) already suit loopback and LAN; named
        # here because Patroni's retry_timeout is chosen against the election timeout.
        "heartbeat-interval": 100,
        "election-timeout": 1000,
        "logger": "zap",
        "log-outputs": ["stderr"],
        "log-level": "warn",
        "enable-v2": False,
        # With --config-file, etcd 3.4 leaves the JSON gateway off unless asked; the nodes
        # and the operator commands use it (/v3/kv, /v3/maintenance).
        "enable-grpc-gateway": True,
        "quota-backend-bytes": 256 * 1024 * 1024,
    }
    return yaml.safe_dump(cfg, sort_keys=False)


def patroni_config(
    topo: Topology, site: str, member_dir: Path, passwords: dict[str, str]
) -> dict[str, Any]:
    s = topo.sites[site]
    assert s.postgres is not None and s.patroni is not None
    t = topo.patroni
    data_hosts = sorted({topo.sites[n].host for n in topo.data_sites})
    hba = ["local all all trust"]
    for host in data_hosts:
        hba.append(f"host replication replicator {host}/32 scram-sha-256")
        hba.append(f"host all all {host}/32 scram-sha-256")
    if topo.namespaces is not None:
        # Operator commands (migrations, drills' checks) run in the hub namespace.
        hba.append(f"host all all {topo.namespaces.hub_host}/32 scram-sha-256")
    return {
        "scope": topo.name,
        "namespace": PATRONI_NAMESPACE,
        "name": member_name(site),
        "log": {"level": "INFO", "format": "%(asctime)s %(levelname)s: %(message)s"},
        "restapi": {
            "listen": f"{s.host}:{s.patroni.port}",
            "connect_address": f"{s.host}:{s.patroni.port}",
        },
        "etcd3": {
            "hosts": [f"{x.host}:{x.etcd.client_port}" for x in topo.sites.values()],
            "protocol": "http",
        },
        "bootstrap": {
            "dcs": {
                "ttl": t.ttl,
                "loop_wait": t.loop_wait,
                "retry_timeout": t.retry_timeout,
                "primary_start_timeout": t.primary_start_timeout,
                "maximum_lag_on_failover": 1048576,
                # Only a synchronous standby may be promoted: an acknowledged write is on both
                # members before the client hears "committed" (RPO 0, DESIGN.md I1).
                "synchronous_mode": True,
                # Not strict: with the standby gone the primary keeps accepting writes alone
                # rather than stopping trade; Patroni will not promote a non-sync member.
                "synchronous_mode_strict": False,
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
                        "shared_buffers": "32MB",
                        "checkpoint_timeout": "5min",
                    },
                },
            },
            "initdb": [{"encoding": "UTF8"}, "data-checksums"],
        },
        "postgresql": {
            "listen": f"{s.host}:{s.postgres.port}",
            "connect_address": f"{s.host}:{s.postgres.port}",
            "data_dir": str(member_dir / "data"),
            "bin_dir": PG_BIN_DIR,
            "pgpass": str(member_dir / "pgpass"),
            # A new replica's base backup must not wait for a spread checkpoint (measured: 93 s).
            "basebackup": [{"checkpoint": "fast"}, {"wal-method": "stream"}],
            "authentication": {
                "superuser": {"username": "postgres", "password": passwords["superuser"]},
                "replication": {"username": "replicator", "password": passwords["replication"]},
                "rewind": {"username": "rewinder", "password": passwords["rewind"]},
            },
            "parameters": {
                "unix_socket_directories": str(member_dir / "sock"),
                "logging_collector": "on",
                "log_directory": str(member_dir / "log"),
                "log_filename": "postgresql.log",
                "log_line_prefix": "%m [%p] %q%u@%d ",
            },
            "pg_hba": hba,
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
    }


def redis_config(topo: Topology, site: str, data_dir: Path) -> str:
    s = topo.sites[site]
    assert s.redis is not None
    lines = [
        f"bind {s.host}",
        f"port {s.redis.port}",
        "protected-mode no",
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
    ]
    if topo.sites[site].role != "primary":
        p = topo.sites[topo.primary_site]
        assert p.redis is not None
        lines.append(f"replicaof {p.host} {p.redis.port}")
    return "\n".join(lines) + "\n"


def sentinel_config(topo: Topology, site: str, data_dir: Path) -> str:
    s = topo.sites[site]
    p = topo.sites[topo.primary_site]
    assert p.redis is not None
    return (
        "\n".join(
            [
                f"bind {s.host}",
                f"port {s.sentinel.port}",
                "protected-mode no",
                "daemonize no",
                f"dir {data_dir}",
                'logfile ""',
                # Quorum 2 of the 3 sentinels, one per site, like etcd.
                f"sentinel monitor {REDIS_MASTER_NAME} {p.host} {p.redis.port} 2",
                f"sentinel down-after-milliseconds {REDIS_MASTER_NAME} 2000",
                f"sentinel failover-timeout {REDIS_MASTER_NAME} 10000",
                f"sentinel parallel-syncs {REDIS_MASTER_NAME} 1",
            ]
        )
        + "\n"
    )


def haproxy_config(topo: Topology) -> str:
    entry_host = topo.entry_host()
    servers = []
    for name in topo.data_sites:
        s = topo.sites[name]
        assert s.node is not None
        servers.append(f"    server node-{name} {s.host}:{s.node.port} check")
    problem = (
        '{\\"type\\":\\"https://rocars.example/problems/not-writable\\",'
        '\\"title\\":\\"Service Unavailable\\",\\"status\\":503,\\"retry_after_ms\\":200,'
        '\\"detail\\":\\"no API node is active right now; retry shortly. If manual clearance'
        ' is in force, GET /v1/status says since when and what to do.\\"}'
    )
    return "\n".join(
        [
            "global",
            "    log stdout format raw local0 info",
            "    maxconn 4096",
            "",
            "defaults",
            "    mode http",
            "    log global",
            "    option httplog",
            "    timeout connect 1s",
            "    timeout client 60s",
            "    timeout server 60s",
            "    timeout http-request 10s",
            # Only the active node answers /health/ready; a refused connection or a standby's
            # 503 is retried on the other server, which the node's idempotency keys make safe.
            "    retries 3",
            "    option redispatch 1",
            "    option http-buffer-request",
            "    retry-on conn-failure empty-response 503",
            "",
            # With no node ready, answer like a node would: problem+json and Retry-After.
            f'    http-error status 503 content-type "application/problem+json" '
            f'hdr Retry-After 1 string "{problem}"',
            "",
            "frontend api",
            f"    bind {entry_host}:{topo.entry.port}",
            # The public notice and liveness must answer from any live node, also when no node
            # is active (manual clearance with the database down).
            "    acl public_read path /v1/status /health /health/live",
            "    use_backend any_live_node if public_read METH_GET",
            "    default_backend nodes",
            "",
            "backend nodes",
            "    option httpchk GET /health/ready",
            "    http-check expect status 200",
            # Check every 250 ms, one failure marks a node down and one success up, and sessions
            # to a node marked down are cut so clients reconnect to the new active node.
            "    default-server inter 250ms fastinter 250ms downinter 250ms rise 1 fall 1 "
            "on-marked-down shutdown-sessions",
            *servers,
            "",
            "backend any_live_node",
            "    option httpchk GET /health/live",
            "    http-check expect status 200",
            "    default-server inter 500ms rise 1 fall 1",
            *servers,
            "",
            "frontend stats",
            f"    bind {entry_host}:{topo.entry.stats_port}",
            "    stats enable",
            "    stats uri /stats",
            "    stats refresh 2s",
            "",
        ]
    )


def node_config(
    topo: Topology, site: str, *, state_root: Path, passwords: dict[str, str]
) -> dict[str, Any]:
    s = topo.sites[site]
    assert s.node is not None and s.postgres is not None and s.patroni is not None
    return {
        "site": site,
        "cluster": topo.name,
        "listen_host": s.host,
        "listen_port": s.node.port,
        "state_dir": str(state_root),
        # The node writes only through its own site's member (DESIGN.md section 2): a node
        # whose member is a replica cannot write, so the database fences the API tier.
        "database": {
            "host": s.host,
            "port": s.postgres.port,
            "dbname": APP_DATABASE,
            "user": APP_USER,
            "password": passwords["app"],
        },
        "patroni_url": topo.patroni_url(site),
        "patroni_member": member_name(site),
        "patroni_namespace": PATRONI_NAMESPACE,
        "etcd_urls": topo.etcd_urls(),
        "etcd_witness_url": topo.etcd_url(topo.witness_site),
        "redis_sentinels": [[x.host, x.sentinel.port] for x in topo.sites.values()],
        "redis_master_name": REDIS_MASTER_NAME,
        "peers": {n: topo.node_url(n) for n in topo.data_sites},
    }
