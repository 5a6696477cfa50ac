"""How each process of the local system is started and recognised: one ProcessSpec per
process, named `etcd-A`, `patroni-A`, `redis-A`, `sentinel-A`, `node-A`, `haproxy`."""

from __future__ import annotations

import sys

from deploy import configgen
from deploy.binaries import patroni_bin
from deploy.processes import ProcessSpec
from deploy.state import DbUser, StateDir
from deploy.topology import Topology


def specs(topo: Topology, state: StateDir) -> dict[str, ProcessSpec]:
    user = DbUser.current()
    out: dict[str, ProcessSpec] = {}
    for name, site in topo.sites.items():
        cfg = str(state.config / f"etcd-{name}.yaml")
        out[f"etcd-{name}"] = ProcessSpec(
            name=f"etcd-{name}",
            site=name,
            netns=topo.netns(name),
            argv=("etcd", "--config-file", cfg),
            marker=cfg,
            # Go's collector lets the heap grow to twice what is live (GOGC=100); etcd's live
            # heap is a few tens of MiB of mostly raft log, so half that headroom saves about a
            # third of each member's memory for a little more collection (#11 target 5).
            env={"GOGC": "50"},
            ports=(
                ("etcd client", site.host, site.etcd.client_port),
                ("etcd peer", site.host, site.etcd.peer_port),
            ),
        )
    for name in topo.data_sites:
        site = topo.sites[name]
        assert site.patroni and site.postgres and site.redis and site.node
        member = state.member_dir(name)
        cfg = str(member / "patroni.yaml")
        out[f"patroni-{name}"] = ProcessSpec(
            name=f"patroni-{name}",
            site=name,
            netns=topo.netns(name),
            argv=(patroni_bin(), cfg),
            marker=cfg,
            ports=(
                ("Patroni REST", site.host, site.patroni.port),
                ("PostgreSQL", site.host, site.postgres.port),
            ),
            user=user,
            cwd=member,
            env={"HOME": str(member), "PATH": f"{configgen.PG_BIN_DIR}:/usr/bin:/bin"},
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
                sys.executable,
                "-m",
                "node.supervise",
                sys.executable,
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
    out["haproxy"] = ProcessSpec(
        name="haproxy",
        site=topo.entry.site,
        netns=topo.namespaces.hub() if topo.namespaces else None,
        argv=("haproxy", "-db", "-f", cfg),
        marker=cfg,
        ports=(
            ("HAProxy entry", entry_host, topo.entry.port),
            ("HAProxy stats", entry_host, topo.entry.stats_port),
        ),
    )
    return out
