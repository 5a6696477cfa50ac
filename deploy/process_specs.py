"""How each process of the local system is started and recognised: one ProcessSpec per
process, named `etcd-A`, `patroni-A`, `redis-A`, `sentinel-A`, `node-A`, `haproxy`, with
monitoring `prometheus`, `alertmanager`, `redis-exporter`, `postgres-exporter-A`, and with a read
replica `patroni-replica-B` (#17 item 5)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from deploy import (
    config_files,
    configgen,
    floating_address,
    haproxy_state,
    monitoring_config,
    pg_roles,
    redis_acl,
)
from deploy.binaries import patroni_bin
from deploy.processes import ProcessSpec, postmaster_pid, running_pid
from deploy.state import DbUser, StateDir
from deploy.topology import Port, Topology, read_replica_process
from kernel.names import read_replica_key

# Redis and Sentinel write their configuration file anew (CONFIG REWRITE; Sentinel after every
# failover) with mode 0644 & ~umask, and it holds passwords (#12 item 3): keep it 0600.
REWRITES_SECRETS = 0o077
# Go's collector lets the heap grow to twice what is live (GOGC=100). For the Go programs here
# (etcd, Prometheus, Alertmanager, the exporters) the live heap is a few tens of MiB, so half
# that headroom saves about a third of each one's memory for a little more collection (#11
# target 5: the idle system within 500 MiB PSS).
GO_HEAP = {"GOGC": "50"}


@dataclass(frozen=True)
class Programs:
    """What the command lines name besides the state folder's files: the Python the nodes run
    under, Patroni's program, and the user PostgreSQL and Patroni run as (None on a production
    host, where the service manager sets it: deploy.host_render)."""

    python: str
    patroni: str
    db_user: DbUser | None

    @classmethod
    def local(cls) -> Programs:
        """This machine's: the running interpreter, Patroni from the install step's venv."""
        return cls(sys.executable, patroni_bin(), DbUser.current())


def specs(
    topo: Topology, state: StateDir, programs: Programs | None = None
) -> dict[str, ProcessSpec]:
    prog = programs or Programs.local()
    out: dict[str, ProcessSpec] = {}
    for name, site in topo.sites.items():
        cfg = str(state.config / f"etcd-{name}.yaml")
        out[f"etcd-{name}"] = ProcessSpec(
            name=f"etcd-{name}",
            site=name,
            netns=topo.netns(name),
            argv=("etcd", "--config-file", cfg),
            marker=cfg,
            env=GO_HEAP,
            ports=(
                ("etcd client", site.host, site.etcd.client_port),
                ("etcd peer", site.host, site.etcd.peer_port),
            ),
        )
    for name in topo.data_sites:
        site = topo.sites[name]
        assert site.patroni and site.postgres and site.redis and site.node
        out[f"patroni-{name}"] = _patroni(
            topo, state, prog, name, name, f"patroni-{name}", site.patroni, site.postgres
        )
    for name in topo.read_replica_sites:
        replica = topo.read_replica(name)
        process = read_replica_process(name)
        out[process] = _patroni(
            topo,
            state,
            prog,
            name,
            read_replica_key(name),
            process,
            replica.patroni,
            replica.postgres,
        )
    for name, site in topo.sites.items():
        if site.redis is not None:
            cfg = str(state.config / f"redis-{name}.conf")
            out[f"redis-{name}"] = ProcessSpec(
                name=f"redis-{name}",
                site=name,
                netns=topo.netns(name),
                argv=("redis-server", cfg),
                marker=f"{site.host}:{site.redis.port}",
                ports=(("Redis", site.host, site.redis.port),),
                umask=REWRITES_SECRETS,
            )
    for name, site in topo.sites.items():
        cfg = str(state.config / f"sentinel-{name}.conf")
        out[f"sentinel-{name}"] = ProcessSpec(
            name=f"sentinel-{name}",
            site=name,
            netns=topo.netns(name),
            argv=("redis-server", cfg, "--sentinel"),
            marker=f"{site.host}:{site.sentinel.port}",
            ports=(("Sentinel", site.host, site.sentinel.port),),
            umask=REWRITES_SECRETS,
        )
    for name in topo.data_sites:
        site = topo.sites[name]
        assert site.node is not None
        out[f"node-{name}"] = ProcessSpec(
            name=f"node-{name}",
            site=name,
            netns=topo.netns(name),
            # The supervisor's own entry point, not `rocars serve --supervise`: it stays small.
            argv=(
                prog.python,
                "-m",
                "node.supervise",
                prog.python,
                "-m",
                "deploy",
                "serve",
                "--site",
                name,
                "--state-dir",
                str(state.root),
            ),
            marker=f"--state-dir {state.root}",
            ports=(("API node", site.host, site.node.port),),
            env={"PYTHONUNBUFFERED": "1"},
        )
    cfg = str(state.config / "haproxy.cfg")
    entry_host = topo.entry_host()
    if not floating_address.replaces_hub(topo):
        out["haproxy"] = ProcessSpec(
            name="haproxy",
            site=topo.entry.site,
            netns=topo.namespaces.hub() if topo.namespaces else None,
            argv=("haproxy", "-db", "-f", cfg),
            marker=cfg,
            takes_over=True,
            server_state=haproxy_state.for_process(state, "haproxy"),
            ports=(
                ("HAProxy entry", entry_host, topo.entry.port),
                ("HAProxy stats", entry_host, topo.entry.stats_port),
            ),
        )
    if topo.monitored:
        out |= monitoring_specs(topo, state)
    if topo.entry.floating is not None:  # each data site's HAProxy and keepalived (#17 item 2)
        out |= floating_address.specs(topo, state)
    return out


def patroni_names(topo: Topology) -> tuple[str, ...]:
    """Every Patroni process: each data site's member, then the read replicas."""
    return (
        *(f"patroni-{s}" for s in topo.data_sites),
        *(read_replica_process(s) for s in topo.read_replica_sites),
    )


def member_keys(topo: Topology) -> tuple[str, ...]:
    """Every PostgreSQL member by the key of its folder (`StateDir.member_dir`): each data
    site, then each read replica (`B-replica`)."""
    return (*topo.data_sites, *(read_replica_key(s) for s in topo.read_replica_sites))


def _patroni(
    topo: Topology,
    state: StateDir,
    prog: Programs,
    site: str,
    member_key: str,
    process: str,
    rest: Port,
    postgres: Port,
) -> ProcessSpec:
    host = topo.sites[site].host
    member = state.member_dir(member_key)
    cfg = str(member / "patroni.yaml")
    return ProcessSpec(
        name=process,
        site=site,
        netns=topo.netns(site),
        argv=(prog.patroni, cfg),
        marker=cfg,
        ports=(("Patroni REST", host, rest.port), ("PostgreSQL", host, postgres.port)),
        user=prog.db_user,
        cwd=member,
        env={"HOME": str(member), "PATH": f"{configgen.PG_BIN_DIR}:/usr/bin:/bin"},
    )


def monitoring_names(topo: Topology) -> tuple[str, ...]:
    """The monitoring processes' names (none when the topology runs no monitoring)."""
    if not topo.monitored:
        return ()
    return (
        "prometheus",
        "alertmanager",
        "redis-exporter",
        *(f"postgres-exporter-{s}" for s in topo.data_sites),
    )


def monitoring_specs(topo: Topology, state: StateDir) -> dict[str, ProcessSpec]:
    """Prometheus, Alertmanager and the Redis exporter on the witness site, a PostgreSQL
    exporter on each data site (#13 item 1). Each listens on its site's address only."""
    witness = topo.witness_site
    w = topo.sites[witness]
    assert w.prometheus and w.alertmanager and w.redis_exporter
    out: dict[str, ProcessSpec] = {}
    prom_cfg = str(state.config / "prometheus.yml")
    out["prometheus"] = ProcessSpec(
        name="prometheus",
        site=witness,
        netns=topo.netns(witness),
        argv=(
            "prometheus",
            f"--config.file={prom_cfg}",
            f"--storage.tsdb.path={state.data / 'prometheus'}",
            f"--storage.tsdb.retention.time={monitoring_config.RETENTION}",
            f"--web.listen-address={w.host}:{w.prometheus.port}",
            f"--web.config.file={monitoring_config.web_config_file(state.config, 'prometheus')}",
            # The overview without Grafana: /consoles/rocars.html (#13 item 4).
            f"--web.console.templates={monitoring_config.CONSOLES_DIR}",
            f"--web.console.libraries={monitoring_config.CONSOLE_LIBRARIES}",
        ),
        marker=prom_cfg,
        env=GO_HEAP,
        ports=(("Prometheus", w.host, w.prometheus.port),),
    )
    am_cfg = str(state.config / "alertmanager.yml")
    out["alertmanager"] = ProcessSpec(
        name="alertmanager",
        site=witness,
        netns=topo.netns(witness),
        argv=(
            "prometheus-alertmanager",
            f"--config.file={am_cfg}",
            f"--storage.path={state.data / 'alertmanager'}",
            f"--web.listen-address={w.host}:{w.alertmanager.port}",
            f"--web.config.file={monitoring_config.web_config_file(state.config, 'alertmanager')}",
            # One Alertmanager: no gossip port (it would listen on every address, 0.0.0.0:9094).
            "--cluster.listen-address=",
        ),
        marker=am_cfg,
        env=GO_HEAP,
        ports=(("Alertmanager", w.host, w.alertmanager.port),),
    )
    listen = f"{w.host}:{w.redis_exporter.port}"
    out["redis-exporter"] = ProcessSpec(
        name="redis-exporter",
        site=witness,
        netns=topo.netns(witness),
        # No address of its own to scrape: Prometheus names each Redis and Sentinel in turn.
        # It logs in to each as the monitor user, with the password its file gives for that
        # address (#12 item 3); the password is in no argument.
        argv=(
            "prometheus-redis-exporter",
            f"-web.listen-address={listen}",
            "-redis.addr=",
            f"-redis.user={redis_acl.MONITOR.name}",
            f"-redis.password-file={config_files.redis_exporter_passwords(state)}",
            # TLS only (#12 item 2): rediss:// targets, checked against the system's CA, with
            # its own client certificate (both Redis and Sentinel require one).
            f"-tls-ca-cert-file={state.ca_bundle}",
            f"-tls-client-cert-file={state.pki / f'client-{redis_acl.EXPORTER_ROLE}.crt'}",
            f"-tls-client-key-file={state.pki / f'client-{redis_acl.EXPORTER_ROLE}.key'}",
            # Its own page over HTTPS too.
            f"-tls-server-cert-file={state.pki / f'redis-exporter-{witness}.crt'}",
            f"-tls-server-key-file={state.pki / f'redis-exporter-{witness}.key'}",
            "-tls-server-min-version=TLS1.2",
        ),
        marker=f"-web.listen-address={listen}",
        env=GO_HEAP,
        ports=(("Redis exporter", w.host, w.redis_exporter.port),),
    )
    for name in topo.data_sites:
        site = topo.sites[name]
        assert site.postgres and site.postgres_exporter
        listen = f"{site.host}:{site.postgres_exporter.port}"
        out[f"postgres-exporter-{name}"] = ProcessSpec(
            name=f"postgres-exporter-{name}",
            site=name,
            netns=topo.netns(name),
            argv=(
                "prometheus-postgres-exporter",
                f"--web.listen-address={listen}",
                "--web.config.file="
                f"{monitoring_config.web_config_file(state.config, f'postgres-exporter-{name}')}",
            ),
            marker=f"--web.listen-address={listen}",
            ports=(("PostgreSQL exporter", site.host, site.postgres_exporter.port),),
            # The password by file, never in argv or the environment (#12 item 4).
            env={
                **GO_HEAP,
                "DATA_SOURCE_URI": f"{site.host}:{site.postgres.port}/postgres"
                f"?sslmode=verify-full&sslrootcert={state.ca_bundle}",
                "DATA_SOURCE_USER": pg_roles.MONITOR_USER,
                "DATA_SOURCE_PASS_FILE": str(state.pg_monitor_password),
            },
        )
    return out


def running_pids(topo: Topology, state: StateDir) -> dict[str, int]:
    """The pid of each running process of the system by its name (a node: its supervisor's),
    and of each data member's postmaster as `postgres-<site>`: Patroni double-forks
    PostgreSQL, so the postmaster is not in Patroni's process tree."""
    out: dict[str, int] = {}
    for name, spec in specs(topo, state).items():
        if (pid := running_pid(state, spec)) is not None:
            out[name] = pid
    for site in topo.data_sites:
        if (pid := postmaster_pid(state.member_dir(site) / "data")) is not None:
            out[f"postgres-{site}"] = pid
    return out
