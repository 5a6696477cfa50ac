"""Everything one production host needs, rendered from the topology (#17 item 1): a systemd
unit per process the topology places on that host's site, the configuration files, the
certificates and passwords those processes read, and an idempotent install script.

Pure: `render` takes the topology, the site, the passwords and the state's pki and secret
files, and returns {path in the output folder: (content, mode)}; `deploy.host_render_cli`
reads the state folder and writes the result.

Nothing is said twice. Command lines, environments and working folders are
deploy.process_specs's (the launcher's own source), given a production layout; every file is
the launcher's generator's output (deploy.configgen, deploy.monitoring_config) for the same
paths. Which certificates, keys and passwords a host receives is read from those command
lines and files: whatever they name under the pki or secrets folder, and nothing else (never
the CA's key).

The layout on a host:
  /var/lib/rocars          the state folder (`--state-dir` of every command): config/ (files,
                           secrets/), pki/, data/, log/ (the nodes' JSON logs), contingency/,
                           pg/ (PostgreSQL and Patroni, one folder per member)
  /etc/rocars              a link to /var/lib/rocars/config, where administrators look
  /usr/lib/rocars/app      the release (this repository's tree); /usr/lib/rocars/venv its
                           Python, with the project installed and Patroni
  /etc/systemd/system      rocars-<process>.service and rocars.target
Configuration stays in the state folder, not under /etc: the node (`serve --state-dir`) and
the operator commands find every file from that one folder, and Redis and Sentinel rewrite
their own files (CONFIG REWRITE, and Sentinel after every failover), which ProtectSystem=strict
allows only under ReadWritePaths.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from deploy import (
    config_files,
    configgen,
    floating_address,
    host_firewall,
    host_install,
    monitoring_config,
    redis_acl,
    systemd_units,
)
from deploy.host_install import SHARED_GROUP, DirSpec, FileSpec, InstallPlan, file_key
from deploy.pki import PkiDir
from deploy.process_specs import Programs, specs
from deploy.processes import ProcessSpec
from deploy.state import REPO_ROOT, StateDir
from deploy.topology import Topology, TopologyError
from kernel.errors import ConfigError
from kernel.names import read_replica_key


@dataclass(frozen=True)
class Component:
    """How one kind of process runs on a host: its own user (and group of the same name)."""

    user: str
    limit_nofile: int | None = 65536
    kill_mode: str | None = None
    timeout_stop_s: int = 30
    # Local units it starts after, by kind (same site; HAProxy: the nodes on its host).
    after: tuple[str, ...] = ()


COMPONENTS: dict[str, Component] = {
    "etcd": Component("rocars-etcd"),
    # Patroni stops PostgreSQL itself (a fast shutdown, then a checkpoint): systemd must not
    # kill the postmaster from under it.
    "patroni": Component("postgres", kill_mode="process", timeout_stop_s=120, after=("etcd",)),
    # A read replica (#17 item 5) clones from and streams from the site's member.
    "patroni-replica": Component(
        "postgres", kill_mode="process", timeout_stop_s=120, after=("etcd", "patroni")
    ),
    "redis": Component("rocars-redis"),
    "sentinel": Component("rocars-redis", after=("redis",)),
    "node": Component("rocars", after=("etcd", "patroni", "redis", "sentinel")),
    "haproxy": Component("rocars-haproxy", after=("node",)),
    # The floating address (#17 item 2): root, as its check presents a key only root reads
    # (floating_address.keepalived_config); its unit keeps only the capabilities it uses.
    "keepalived": Component("root", limit_nofile=None, after=("patroni", "haproxy")),
    "prometheus": Component("rocars-prometheus", after=("alertmanager",)),
    "alertmanager": Component("rocars-alertmanager", limit_nofile=None),
    "redis-exporter": Component("rocars-exporter", limit_nofile=None),
    "postgres-exporter": Component("rocars-exporter", limit_nofile=None, after=("patroni",)),
}
# Debian packages per kind (the install script installs what is missing).
PACKAGES: dict[str, tuple[str, ...]] = {
    "etcd": ("etcd-server",),
    "patroni": ("postgresql-15",),
    "patroni-replica": ("postgresql-15",),
    "redis": ("redis-server",),
    "sentinel": ("redis-server",),
    "node": (),
    "haproxy": ("haproxy",),
    "keepalived": ("keepalived", "curl"),  # curl: its check
    "prometheus": ("prometheus",),
    "alertmanager": ("prometheus-alertmanager",),
    "redis-exporter": ("prometheus-redis-exporter",),
    "postgres-exporter": ("prometheus-postgres-exporter",),
}


class HostState(StateDir):
    """A production host's state folder: PostgreSQL's runtime folder is its `pg/` whoever
    renders (StateDir puts it elsewhere when the launcher runs as root)."""

    @property
    def runtime(self) -> Path:
        return self.root / "pg"


@dataclass(frozen=True)
class HostLayout:
    """Where things live on a host (the module docstring); tests move it under a folder."""

    state_root: Path = Path("/var/lib/rocars")
    code_root: Path = Path("/usr/lib/rocars/app")
    venv: Path = Path("/usr/lib/rocars/venv")
    unit_dir: Path = Path("/etc/systemd/system")
    etc_link: Path = Path("/etc/rocars")

    @property
    def state(self) -> HostState:
        return HostState(self.state_root)

    @property
    def programs(self) -> Programs:
        bin_dir = self.venv / "bin"
        return Programs(
            python=str(bin_dir / "python"), patroni=str(bin_dir / "patroni"), db_user=None
        )

    def relocate(self, text: str) -> str:
        """Files of the release named by the generators (HAProxy's fallback status page, the
        alert rules, the console templates) are at the render's checkout; on the host they
        are under code_root."""
        return text.replace(str(REPO_ROOT), str(self.code_root))


@dataclass(frozen=True)
class HostPlan:
    """What one host gets: its processes' specs and units, folders and files."""

    site: str
    processes: dict[str, ProcessSpec]
    units: dict[str, systemd_units.Unit]
    dirs: tuple[DirSpec, ...]
    files: tuple[FileSpec, ...]
    packages: tuple[str, ...]


@dataclass(frozen=True)
class Sources:
    """What the state folder (the operator's, where `rocars certs` keeps the CA) gives a
    host: the passwords, and the files of its pki and secrets folders by name."""

    passwords: Mapping[str, str]
    pki: Mapping[str, bytes]  # file name in pki/ -> content
    secrets: Mapping[str, bytes]  # file name in config/secrets/ -> content


def kind(spec: ProcessSpec) -> str:
    """etcd-A -> etcd, postgres-exporter-B -> postgres-exporter, haproxy -> haproxy."""
    return spec.name.removesuffix(f"-{spec.site}")


def _member_dir(spec: ProcessSpec, state: StateDir) -> Path | None:
    """The PostgreSQL member folder of a Patroni process (its site's, or its read replica's),
    None for any other process."""
    k = kind(spec)
    if k == "patroni":
        return state.member_dir(spec.site)
    if k == "patroni-replica":
        return state.member_dir(read_replica_key(spec.site))
    return None


def unit_name(process: str) -> str:
    return f"rocars-{process}.service"


def host_processes(topo: Topology, site: str, layout: HostLayout) -> dict[str, ProcessSpec]:
    """The processes deploy.process_specs places on `site`, with production paths."""
    if site not in topo.sites:
        raise TopologyError(
            f"no site {site!r} in topology {topo.name!r} (sites: {', '.join(topo.sites)})"
        )
    every = specs(topo, layout.state, layout.programs)
    return {name: spec for name, spec in every.items() if spec.site == site}


def _config_files(
    topo: Topology, spec: ProcessSpec, layout: HostLayout, passwords: Mapping[str, str]
) -> list[tuple[Path, str, int, bool]]:
    """(path, text, mode, seed) of the files `spec` reads, as deploy.config_files writes
    them for the launcher, with this layout's paths."""
    state, site = layout.state, spec.site
    folder = PkiDir(state.pki)
    k = kind(spec)
    if k == "etcd":
        text = configgen.etcd_config(topo, site, state.data / f"etcd-{site}", folder)
        return [(state.config / f"etcd-{site}.yaml", text, 0o644, False)]
    if k == "redis":
        text = configgen.redis_config(
            topo, site, state.data / f"redis-{site}", passwords, pki=folder
        )
        return [(state.config / f"redis-{site}.conf", text, 0o600, True)]
    if k == "sentinel":
        data = state.data / f"sentinel-{site}"
        text = configgen.sentinel_config(topo, site, data, passwords, pki=folder)
        return [(state.config / f"sentinel-{site}.conf", text, 0o600, True)]
    if k == "haproxy":
        tls = configgen.HaproxyTls(
            server_pem=folder.combined("haproxy"),
            ca_bundle=folder.bundle,
            client_pem=folder.combined("client-haproxy"),
        )
        text = configgen.haproxy_config(topo, tls, stats_password=passwords["haproxy-stats"])
        if spec.name != "haproxy":  # a data site's own, for the floating address
            path, text, mode = floating_address.haproxy_file(topo, state, site, text)
            return [(path, text, mode, False)]
        return [(state.config / "haproxy.cfg", text, 0o600, False)]
    if k == "keepalived":
        return [
            (p, t, m, False) for p, t, m in floating_address.keepalived_files(topo, state, site)
        ]
    if k == "patroni":
        cfg = configgen.patroni_config(topo, site, state.member_dir(site), dict(passwords))
        text = yaml.safe_dump(cfg, sort_keys=False)
        return [(state.member_dir(site) / "patroni.yaml", text, 0o600, False)]
    if k == "patroni-replica":
        member = state.member_dir(read_replica_key(site))
        cfg = configgen.read_replica_patroni_config(topo, site, member, dict(passwords))
        return [(member / "patroni.yaml", yaml.safe_dump(cfg, sort_keys=False), 0o600, False)]
    if k == "node":
        cfg = configgen.node_config(topo, site, state_root=state.root)
        return [(state.node_config(site), yaml.safe_dump(cfg, sort_keys=False), 0o600, False)]
    out: list[tuple[Path, str, int, bool]] = []
    web = monitoring_config.web_configs(topo)
    if spec.name in web:
        text = yaml.safe_dump(monitoring_config.web_config(folder, web[spec.name]), sort_keys=False)
        out.append((monitoring_config.web_config_file(state.config, spec.name), text, 0o644, False))
    if k == "prometheus":
        cfg = monitoring_config.prometheus_config(topo, pki=folder)
        out.append(
            (state.config / "prometheus.yml", yaml.safe_dump(cfg, sort_keys=False), 0o644, False)
        )
    elif k == "alertmanager":
        cfg = monitoring_config.alertmanager_config(topo)
        out.append(
            (state.config / "alertmanager.yml", yaml.safe_dump(cfg, sort_keys=False), 0o644, False)
        )
    elif k == "redis-exporter":
        targets = [t for _site, t in monitoring_config.scrape_targets(topo)["redis"]]
        text = json.dumps(redis_acl.exporter_passwords(targets, passwords), indent=2)
        out.append((config_files.redis_exporter_passwords(state), text, 0o600, False))
    elif k != "postgres-exporter":
        raise ConfigError(f"no configuration rule for process {spec.name}")
    return out


def _writable(spec: ProcessSpec, state: StateDir) -> tuple[Path, ...]:
    """The folders a process writes (its unit's ReadWritePaths; the install creates them)."""
    k, site = kind(spec), spec.site
    return {
        "etcd": (state.data / f"etcd-{site}",),
        "patroni": (state.member_dir(site),),
        "patroni-replica": (state.member_dir(read_replica_key(site)),),
        # Its own file in the config folder, rewritten in place (CONFIG REWRITE).
        "redis": (state.data / f"redis-{site}", state.config),
        "sentinel": (state.data / f"sentinel-{site}", state.config),
        "node": (state.logs, state.root / "contingency"),
        "keepalived": (state.run / f"keepalived-{site}",),  # its pid files
        "prometheus": (state.data / "prometheus",),
        "alertmanager": (state.data / "alertmanager",),
    }.get(k, ())


def _named_under(root: Path, texts: list[str]) -> set[str]:
    """File names directly under `root` that any of `texts` names."""
    pattern = re.compile(re.escape(str(root)) + r"/([A-Za-z0-9_.\-]+)")
    return {m.group(1) for text in texts for m in pattern.finditer(text)}


def plan(topo: Topology, site: str, sources: Sources, layout: HostLayout | None = None) -> HostPlan:
    """The host of `site`: a unit per process, the folders, and every file its processes
    read (configuration generated here; certificates, keys and passwords from `sources`)."""
    layout = layout or HostLayout()
    state = layout.state
    procs = host_processes(topo, site, layout)
    folder = PkiDir(state.pki)
    units: dict[str, systemd_units.Unit] = {}
    files: dict[Path, FileSpec] = {}
    # Who reads each private file (keys, passwords): exactly one user may own it.
    readers: dict[Path, set[str]] = {}
    kinds_here = {kind(s): name for name, s in procs.items()}

    def add(spec: FileSpec) -> None:
        old = files.get(spec.dest)
        if old is not None and old != spec:
            raise ConfigError(f"{spec.dest} is wanted with two different contents or owners")
        files[spec.dest] = spec

    for name, spec in procs.items():
        k = kind(spec)
        comp = COMPONENTS.get(k)
        if comp is None:
            raise ConfigError(f"no systemd rule for process {name} (kind {k})")
        argv = tuple(layout.relocate(a) for a in spec.argv)
        env = {key: layout.relocate(v) for key, v in spec.env.items()}
        configs = [
            (path, layout.relocate(text), mode, seed)
            for path, text, mode, seed in _config_files(topo, spec, layout, sources.passwords)
        ]
        for path, text, mode, seed in configs:
            private = mode & 0o077 == 0
            owner = comp.user if private else "root"
            add(FileSpec(path, text.encode(), owner, owner, mode, seed))
        texts = [" ".join(argv), *env.values(), *(text for _p, text, _m, _s in configs)]
        needed = [(state.pki / n, sources.pki, n) for n in _named_under(state.pki, texts)]
        needed += [
            (state.secrets_dir / n, sources.secrets, n)
            for n in _named_under(state.secrets_dir, texts)
            if state.secrets_dir / n not in files  # generated above (the exporter's file)
        ]
        if (member := _member_dir(spec, state)) is not None:
            # PostgreSQL's and Patroni's own copies (configgen.MemberTls), owned by postgres.
            for src, dst, mode in configgen.MemberTls.of(member).copies(folder, site):
                content = _source(sources.pki, src.name)
                owner = comp.user if mode & 0o077 == 0 else "root"
                add(FileSpec(dst, content, owner, owner, mode))
        for dest, table, fname in sorted(needed):
            public = fname.endswith(".crt") or dest == folder.bundle
            if public:
                add(FileSpec(dest, _source(table, fname), "root", "root", 0o644))
            else:
                readers.setdefault(dest, set()).add(comp.user)
                add(FileSpec(dest, _source(table, fname), comp.user, comp.user, 0o600))
        wants = tuple(unit_name(kinds_here[a]) for a in comp.after if a in kinds_here)
        units[name] = systemd_units.Unit(
            name=unit_name(name),
            description=f"rocars {name} (site {spec.site})",
            argv=argv,
            user=comp.user,
            group=comp.user,
            supplementary_groups=(SHARED_GROUP,),
            environment=env,
            working_directory=spec.cwd,
            umask=spec.umask,
            wants=wants,
            read_write=_writable(spec, state),
            limit_nofile=comp.limit_nofile,
            bind_below_1024=k == "haproxy" and min(p for _w, _h, p in _haproxy_ports(topo)) < 1024,
            # keepalived: addresses (NET_ADMIN), VRRP's raw socket and gratuitous ARP (NET_RAW)
            capabilities=("CAP_NET_ADMIN", "CAP_NET_RAW") if k == "keepalived" else (),
            address_families=("AF_NETLINK", "AF_PACKET") if k == "keepalived" else (),
            kill_mode=comp.kill_mode,
            timeout_stop_s=comp.timeout_stop_s,
        )
    shared = sorted(str(p) for p, users in readers.items() if len(users) > 1)
    if shared:
        raise ConfigError(f"private files read by more than one user: {', '.join(shared)}")
    return HostPlan(
        site=site,
        processes=procs,
        units=units,
        dirs=_dirs(procs, state),
        files=tuple(files[p] for p in sorted(files)),
        packages=tuple(
            sorted(
                {*host_firewall.PACKAGES, *(p for s in procs.values() for p in PACKAGES[kind(s)])}
            )
        ),
    )


def _haproxy_ports(topo: Topology) -> list[tuple[str, str, int]]:
    return [e for e in topo.endpoints() if e[0].startswith("entry.")]


def _source(table: Mapping[str, bytes], name: str) -> bytes:
    try:
        return table[name]
    except KeyError:
        raise ConfigError(
            f"{name} is not in the state folder: issue the certificates and passwords first "
            "(`rocars certs init`, or `rocars deploy render` with the state folder that has them)"
        ) from None


def _dirs(procs: Mapping[str, ProcessSpec], state: StateDir) -> tuple[DirSpec, ...]:
    """Every folder, parents first, with its owner and mode."""
    redis_user = COMPONENTS["redis"].user
    out = [
        DirSpec(state.root, "root", "root", 0o755),
        # Sticky and writable by Redis's group: Redis and Sentinel rewrite their own files
        # here (a temporary file renamed over the old one) but, sticky, cannot rename or
        # delete any file they do not own.
        DirSpec(state.config, "root", redis_user, 0o1775),
        DirSpec(state.secrets_dir, "root", SHARED_GROUP, 0o750),
        DirSpec(state.pki, "root", SHARED_GROUP, 0o750),
        DirSpec(state.data, "root", "root", 0o755),
    ]
    kinds = {kind(s): s for s in procs.values()}
    if "patroni" in kinds:
        out.append(DirSpec(state.runtime, "root", "root", 0o755))
    if "keepalived" in kinds:
        out += [
            DirSpec(state.run, "root", "root", 0o755),
            *(DirSpec(p, "root", "root", 0o700) for p in _writable(kinds["keepalived"], state)),
        ]
    if "node" in kinds:
        node = COMPONENTS["node"].user
        out += [
            DirSpec(state.logs, node, node, 0o750),
            DirSpec(state.root / "contingency", node, node, 0o750),
        ]
    for spec in procs.values():
        comp = COMPONENTS[kind(spec)]
        for path in _writable(spec, state):
            if path.parent == state.data:
                out.append(DirSpec(path, comp.user, comp.user, 0o700))
        if (member := _member_dir(spec, state)) is not None:
            out += [
                DirSpec(member / sub, comp.user, comp.user, 0o700)
                for sub in ("", "sock", "log", "tls")
            ]
    seen: dict[Path, DirSpec] = {}
    for d in out:
        seen.setdefault(d.path, d)
    return tuple(seen.values())


def users(host: HostPlan) -> tuple[str, ...]:
    """The users the install creates (root, keepalived's, exists)."""
    return tuple(sorted({u.user for u in host.units.values()} - {"root"}))


def render(
    topo: Topology, site: str, sources: Sources, layout: HostLayout | None = None
) -> dict[str, tuple[bytes, int]]:
    """{path in the output folder: (content, mode)}: `install.sh`, and under `files/` every
    file at its path on the host (units included)."""
    layout = layout or HostLayout()
    host = plan(topo, site, sources, layout)
    out: dict[str, tuple[bytes, int]] = {}
    installed: list[FileSpec] = list(host.files)
    unit_files = []
    for unit in host.units.values():
        text = systemd_units.render(unit)
        unit_files.append(unit.name)
        installed.append(
            FileSpec(layout.unit_dir / unit.name, text.encode(), "root", "root", 0o644)
        )
    # The firewall (#12 item 5) is loaded before any of them listens.
    services = tuple(u.name for u in host.units.values())
    installed += host_firewall.files(topo, site, layout.state.config, layout.unit_dir, services)
    unit_files.append(host_firewall.UNIT)
    target = systemd_units.render_target(
        f"rocars: every process of site {site}", (host_firewall.UNIT, *services)
    )
    installed.append(
        FileSpec(layout.unit_dir / systemd_units.TARGET, target.encode(), "root", "root", 0o644)
    )
    for f in installed:
        # Private files stay private in the output folder too.
        out[file_key(f.dest)] = (f.content, 0o600 if f.mode & 0o077 == 0 else 0o644)
    script = host_install.script(
        InstallPlan(
            site=site,
            topology=topo.name,
            packages=host.packages,
            users=users(host),
            dirs=host.dirs,
            files=tuple(installed),
            units=tuple(unit_files),
            code_root=layout.code_root,
            venv=layout.venv,
            unit_dir=layout.unit_dir,
            etc_link=layout.etc_link,
            config_dir=layout.state.config,
        )
    )
    out["install.sh"] = (script.encode(), 0o755)
    out["SHA256SUMS"] = (_checksums(out).encode(), 0o644)
    return out


def _checksums(out: Mapping[str, tuple[bytes, int]]) -> str:
    return "".join(f"{hashlib.sha256(c).hexdigest()}  {k}\n" for k, (c, _m) in sorted(out.items()))
