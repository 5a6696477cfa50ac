"""The state folder's generated files: each process's configuration (from deploy.configgen) and
the copy of the topology they were generated from, which later commands read back."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml

from deploy import configgen, haproxy_state, monitoring_config, pki, redis_acl
from deploy.state import DEFAULT_TOPOLOGY, DbUser, StateDir
from deploy.topology import Topology, load_topology, read_replica_process
from kernel.names import read_replica_key


def _write(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write `path` atomically; whether its content changed."""
    try:
        changed = path.read_text() != text
    except OSError:
        changed = True
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    # Created with `mode` (narrowed first if left over): a 0600 file is never briefly wider.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    tmp.replace(path)
    return changed


def redis_exporter_passwords(state: StateDir) -> Path:
    """The Redis exporter's `-redis.password-file` (JSON: target address -> password), 0600."""
    return state.secrets_dir / "redis-exporter.json"


def _chown(path: Path, user: DbUser) -> None:
    if user.is_other:
        os.chown(path, user.uid, user.gid)


def write_configs(topo: Topology, state: StateDir) -> list[str]:
    """Generate every file; returns the processes whose configuration changed and that reread
    it on SIGHUP (Patroni, and through it PostgreSQL's pg_hba and parameters; Prometheus;
    Alertmanager), or, HAProxy, are taken over by a new process, so `up` on a running system
    applies a new configuration without a restart."""
    reload: list[str] = []
    state.ensure()
    user = DbUser.current()
    passwords = state.secrets()
    # The CA and every certificate the topology needs (#12 items 1 and 2); what is there and
    # still right is kept, so this is a no-op on a running system.
    folder = pki.PkiDir(state.pki)
    pki.issue_all(folder, pki.plan(topo), label=topo.name)
    _write(state.topology_copy, yaml.safe_dump(topo.model_dump(), sort_keys=False))
    topo_hash = hashlib.sha256(state.topology_copy.read_bytes()).hexdigest()

    runtime = state.runtime
    if user.is_other:
        runtime.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(runtime.parent, 0o755)
    runtime.mkdir(parents=True, exist_ok=True)
    os.chmod(runtime, 0o700)
    _chown(runtime, user)
    link = state.root / "pg"
    if runtime != link and not link.is_symlink():
        link.symlink_to(runtime)

    for name in topo.sites:
        _write(
            state.config / f"etcd-{name}.yaml",
            configgen.etcd_config(topo, name, state.data / f"etcd-{name}", folder),
        )
    # Redis and Sentinel rewrite their own files after a failover; regenerate them only when
    # the topology, their users (#12 item 3: new passwords, new rules) or their TLS settings
    # (#12 item 2) changed, or a restart would undo Sentinel's choice of primary. They hold
    # passwords: 0600.
    stamp = state.config / ".redis-topology"
    users = "\n".join(
        redis_acl.redis_acl_lines(passwords)
        + redis_acl.sentinel_acl_lines("", passwords)
        + configgen.redis_tls_lines(0, folder, "")
    )
    redis_stamp = f"{topo_hash} {hashlib.sha256(users.encode()).hexdigest()}"
    fresh = not stamp.exists() or stamp.read_text() != redis_stamp
    for name, site in topo.sites.items():
        sentinel = state.config / f"sentinel-{name}.conf"
        if fresh or not sentinel.exists():
            data = state.data / f"sentinel-{name}"
            data.mkdir(parents=True, exist_ok=True)
            _write(
                sentinel, configgen.sentinel_config(topo, name, data, passwords, pki=folder), 0o600
            )
        if site.redis is not None:
            redis = state.config / f"redis-{name}.conf"
            if fresh or not redis.exists():
                data = state.data / f"redis-{name}"
                data.mkdir(parents=True, exist_ok=True)
                _write(
                    redis, configgen.redis_config(topo, name, data, passwords, pki=folder), 0o600
                )
    stamp.write_text(redis_stamp)

    # 0600: it holds the stats page's password. HAProxy has no reread: `up` starts a new one
    # that takes over (deploy.processes.take_over).
    if _write(
        state.config / "haproxy.cfg",
        configgen.haproxy_config(
            topo,
            configgen.HaproxyTls(
                server_pem=folder.combined("haproxy"),
                ca_bundle=folder.bundle,
                client_pem=folder.combined("client-haproxy"),
            ),
            stats_password=passwords["haproxy-stats"],
            runtime=haproxy_state.for_process(state, "haproxy"),
        ),
        0o600,
    ):
        reload.append("haproxy")
    if topo.monitored:
        for name in ("prometheus", "alertmanager"):
            (state.data / name).mkdir(parents=True, exist_ok=True)
        # Their pages over HTTPS (#12 item 2); the toolkit rereads this file per connection.
        for process, cert in monitoring_config.web_configs(topo).items():
            _write(
                monitoring_config.web_config_file(state.config, process),
                yaml.safe_dump(monitoring_config.web_config(folder, cert), sort_keys=False),
            )
        if _write(
            state.config / "prometheus.yml",
            yaml.safe_dump(monitoring_config.prometheus_config(topo, pki=folder), sort_keys=False),
        ):
            reload.append("prometheus")
        if _write(
            state.config / "alertmanager.yml",
            yaml.safe_dump(monitoring_config.alertmanager_config(topo), sort_keys=False),
        ):
            reload.append("alertmanager")
        # The Redis exporter's password for each Redis and Sentinel it scrapes (#12 item 3).
        redis_targets = [t for _site, t in monitoring_config.scrape_targets(topo)["redis"]]
        _write(
            redis_exporter_passwords(state),
            json.dumps(redis_acl.exporter_passwords(redis_targets, passwords), indent=2),
            0o600,
        )
    for name in topo.data_sites:
        member = state.member_dir(name)
        cfg = configgen.patroni_config(topo, name, member, passwords)
        if _write_member(state, folder, user, name, name, cfg):
            reload.append(f"patroni-{name}")
        _write(
            state.node_config(name),
            yaml.safe_dump(
                configgen.node_config(topo, name, state_root=state.root),
                sort_keys=False,
            ),
            0o600,
        )
    for name in topo.read_replica_sites:  # #17 item 5
        key = read_replica_key(name)
        cfg = configgen.read_replica_patroni_config(topo, name, state.member_dir(key), passwords)
        if _write_member(state, folder, user, name, key, cfg):
            reload.append(read_replica_process(name))
    if topo.backups is not None:  # pgBackRest's files, before PostgreSQL archives (#17 item 3)
        from deploy import backups

        backups.write_files(topo, state)
    if topo.entry.floating is not None:  # each data site's HAProxy and keepalived (#17 item 2)
        from deploy import floating_address

        reload += floating_address.write_files(topo, state)
    return reload


def _write_member(
    state: StateDir, folder: pki.PkiDir, user: DbUser, site: str, key: str, cfg: dict[str, Any]
) -> bool:
    """A PostgreSQL member's folder (`key`: its site, or `B-replica`), its TLS files (the
    site's) and its Patroni file `cfg`; whether Patroni must reread them."""
    member = state.member_dir(key)
    for sub in ("", "sock", "log", "tls"):
        d = member / sub
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        _chown(d, user)
    # PostgreSQL's own log folder lives with its data (it may run as another user); the
    # link puts it beside every other process's log (#13 item 5).
    pg_logs = state.logs / f"postgresql-{key}"
    if not pg_logs.is_symlink():
        pg_logs.symlink_to(member / "log")
    tls = configgen.MemberTls.of(member)
    tls_changed = False
    for src, dst, mode in tls.copies(folder, site):
        tls_changed |= _write(dst, src.read_text(), mode)
        _chown(dst, user)
    _chown(tls.folder, user)
    path = member / "patroni.yaml"
    # A SIGHUP makes Patroni reload PostgreSQL, which rereads its certificate files.
    changed = _write(path, yaml.safe_dump(cfg, sort_keys=False), 0o600) or tls_changed
    _chown(path, user)
    return changed


def load_state_topology(state: StateDir, topology: Path | None) -> Topology:
    """The topology a state folder was generated from, unless one is named explicitly."""
    if topology is not None:
        return load_topology(topology)
    if state.topology_copy.exists():
        return load_topology(state.topology_copy)
    return load_topology(DEFAULT_TOPOLOGY)
