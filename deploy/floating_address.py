"""A floating address for clients (#17 item 2): whichever site is active, clients use one
address (`entry.floating.address` in the topology, https://<it>:<entry.port>).

Each data site runs, in its own namespace:

- `haproxy-<site>`: the hub's HAProxy configuration (deploy.configgen.haproxy_config) with its
  client ports bound on every address of the site, so it answers on the floating address once
  the site holds it; its stats page on the site's own address;
- `keepalived-<site>`: holds the floating address on the site's interface (`eth0`, see
  deploy.netns) while the site's Patroni holds the leader key, and sends gratuitous ARP when it
  takes it. Its check asks the site's own Patroni `GET /leader`, which answers 200 only while
  that member holds the leader key in etcd and it has not expired (Patroni's `ha.is_leader()`):
  the key's value is this site's member name, the one source of truth for "who writes".
  A passing check raises the site's VRRP priority above the other's, so the leader's site
  takes the address (preempting) and keeps it; VRRP runs by unicast between the two sites.

Why the check weighs instead of failing the instance (FAULT drops the address at once): both
sites' HAProxy route to whichever node is active, so the address is useful on any live site,
and harmful on none. With FAULT there was a gap with no holder during every switchover (the
old leader's check fails before the new one's passes, and the new one then waits out VRRP's
master-down interval): measured drill RTO 2.7-5.7 s. With weights the old holder keeps it
until the new leader's site takes it over, and after a site loss the survivor takes it within
VRRP's master-down interval, before its database is even promoted.

Why keepalived and not Debian's vip-manager (1.0.2, the one Debian 12 ships): that version reads
etcd through the v2 API (`/v2/keys`), while Patroni here keeps its keys in the v3 store (and etcd
runs with `enable-v2: false`), so it can never see the leader key. vip-manager 2.x reads v3 but
is not packaged.
"""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

from deploy import configgen, haproxy_state, pki
from deploy.processes import ProcessSpec
from deploy.state import StateDir
from deploy.topology import Floating, Topology, TopologyError
from kernel.errors import LaunchError
from kernel.files import write_atomically

INTERFACE = "eth0"  # a site's end of its veth pair (deploy.netns.VETH_PEER)
VIRTUAL_ROUTER_ID = 17  # one VRRP instance per cluster; each cluster has a bridge of its own
CHECK_INTERVAL_S = 1
# Two failed checks in a row give the address up: one slow answer from a busy Patroni must not
# move the clients' address; one good check is enough to claim it.
CHECK_FALL = 2
BASE_PRIORITY = 100
LEADER_WEIGHT = 50  # a passing check: priority 150, above the other site's 100


def _floating(topo: Topology) -> Floating:
    if topo.entry.floating is None:
        raise TopologyError(f"topology {topo.name!r} has no entry.floating address")
    return topo.entry.floating


def link(topo: Topology) -> tuple[str, int]:
    """The interface that carries the address on each data site and its subnet's prefix
    length: the topology's for sites on their own hosts, else the namespaces' (eth0)."""
    floating = _floating(topo)
    if topo.namespaces is not None:
        return INTERFACE, topo.namespaces.prefix_len
    assert floating.interface is not None and floating.prefix_len is not None  # topology checks
    return floating.interface, floating.prefix_len


def replaces_hub(topo: Topology) -> bool:
    """Whether the data sites' HAProxies replace the hub's: with the sites on their own hosts
    there is no hub, and the entry site's own HAProxy would bind the hub's ports."""
    return topo.entry.floating is not None and topo.namespaces is None


def process_names(topo: Topology) -> tuple[str, ...]:
    """The processes a floating address adds (none without one), for `cluster up`."""
    if topo.entry.floating is None:
        return ()
    return (
        *(f"haproxy-{s}" for s in topo.data_sites),
        *(f"keepalived-{s}" for s in topo.data_sites),
    )


def holders(topo: Topology) -> tuple[str, ...] | None:
    """The data sites whose interface carries the floating address now (`ip -n <ns> addr`, the
    kernel's own answer, not keepalived's opinion of itself); a site whose link is down is not
    counted: what it carries reaches no one. None when the sites are on other hosts (no
    namespaces) or the topology has no floating address: nothing here can be asked."""
    if topo.entry.floating is None or topo.namespaces is None:
        return None
    address = topo.entry.floating.address
    out = []
    for site in topo.data_sites:
        ns = topo.namespaces.of(site)
        addrs = subprocess.run(
            ["ip", "-n", ns, "-4", "-o", "addr", "show", "dev", INTERFACE, "up"],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        if f" {address}/" in addrs:
            out.append(site)
    return tuple(out)


# -- configuration ---------------------------------------------------------------------------


def _replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise TopologyError(f"per-site HAProxy: expected one {old!r} in the hub's configuration")
    return text.replace(old, new)


def site_haproxy_config(hub_config: str, topo: Topology, site: str) -> str:
    """The hub's HAProxy file (`hub_config`, from configgen.haproxy_config) for `site`'s own
    HAProxy: client ports on every address of the site (the floating one when it is there),
    the HTTP redirect to the floating address, the stats page on the site's address."""
    _floating(topo)
    hub = topo.entry_host()
    e = topo.entry
    text = hub_config
    for port in (e.port, e.http_port, e.phone_port):
        if port is not None:
            text = _replace_once(text, f"    bind {hub}:{port}", f"    bind :{port}")
    text = _replace_once(
        text, f"    bind {hub}:{e.stats_port}", f"    bind {topo.sites[site].host}:{e.stats_port}"
    )
    if e.http_port is not None:
        text = _replace_once(text, f"prefix https://{hub}:{e.port}", f"prefix {topo.entry_url()}")
    return text


def check_script(topo: Topology, site: str, folder: pki.PkiDir) -> str:
    """keepalived's check: exit 0 only while `site`'s Patroni holds the leader key."""
    client = f"client-{pki.FLOATING_CLIENT_ROLE}"
    return "\n".join(
        [
            "#!/bin/sh",
            "# 200 only while this site's Patroni holds the leader key (#17 item 2)",
            "exec /usr/bin/curl --silent --fail --output /dev/null --max-time 1"
            f" --cacert {folder.bundle} --cert {folder.cert(client)} --key {folder.key(client)}"
            f" {topo.patroni_url(site)}/leader",
            "",
        ]
    )


def keepalived_config(topo: Topology, site: str, script: Path) -> str:
    """keepalived's file for `site`: one VRRP instance on the site's interface; the site where
    `script` passes holds the floating address."""
    floating = _floating(topo).address
    interface, prefix_len = link(topo)
    me = topo.sites[site].host
    peers = [topo.sites[s].host for s in topo.data_sites if s != site]
    return "\n".join(
        [
            "# Generated by rocars (deploy/floating_address.py): the floating address follows",
            "# the Patroni leader key.",
            "global_defs {",
            f"    router_id {topo.name}-{site}",
            # keepalived runs the check only if no one but root can change it or a folder
            # above it (checked by write_files); as root: it presents a key only root reads.
            "    enable_script_security",
            "    script_user root",
            "}",
            "vrrp_script patroni_leader {",
            f'    script "{script}"',
            f"    interval {CHECK_INTERVAL_S}",
            "    timeout 2",
            f"    fall {CHECK_FALL}",
            "    rise 1",
            f"    weight {LEADER_WEIGHT}",
            "}",
            "vrrp_instance entry {",
            # Both start as BACKUP with the same base priority: the check decides, and the
            # leader's site preempts whoever holds the address (see the module docstring).
            "    state BACKUP",
            f"    interface {interface}",
            f"    virtual_router_id {VIRTUAL_ROUTER_ID}",
            f"    priority {BASE_PRIORITY}",
            "    advert_int 1",
            f"    unicast_src_ip {me}",
            "    unicast_peer {",
            *(f"        {p}" for p in peers),
            "    }",
            "    virtual_ipaddress {",
            f"        {floating}/{prefix_len} dev {interface}",
            "    }",
            "    track_script {",
            "        patroni_leader",
            "    }",
            "}",
            "",
        ]
    )


def script_path_problem(path: Path) -> str | None:
    """Why keepalived (enable_script_security, script run as root) would refuse to run the
    check at `path`, None if it would not: the script and every folder above it must belong to
    root and be writable by no one else, a sticky folder (as /tmp) excepted. keepalived's own
    rule (check_script_secure); a refused check leaves the address where it happens to be."""
    for p in (path, *path.parents):
        st = p.stat()
        if st.st_uid != 0:
            return f"{p} belongs to uid {st.st_uid}, not root"
        sticky_folder = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
        others_write = (st.st_gid != 0 and st.st_mode & stat.S_IWGRP) or st.st_mode & stat.S_IWOTH
        if others_write and not sticky_folder:
            return f"{p} is writable by others than root (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _files(state: StateDir, site: str) -> tuple[Path, Path, Path]:
    return (
        state.config / f"haproxy-{site}.cfg",
        state.config / f"keepalived-{site}.conf",
        state.config / f"floating-check-{site}.sh",
    )


def haproxy_file(
    topo: Topology, state: StateDir, site: str, hub_haproxy: str
) -> tuple[Path, str, int]:
    """(path, text, mode) of `site`'s HAProxy file (0600: the stats password), from the hub's
    (`hub_haproxy`, whose TLS files it uses: its certificate names the floating address)."""
    return _files(state, site)[0], site_haproxy_config(hub_haproxy, topo, site), 0o600


def keepalived_files(topo: Topology, state: StateDir, site: str) -> list[tuple[Path, str, int]]:
    """(path, text, mode) of `site`'s check script (root's alone: see script_path_problem) and
    keepalived file; the launcher writes them, and `deploy render` for a production host."""
    _haproxy, keepalived, script = _files(state, site)
    return [
        (script, check_script(topo, site, pki.PkiDir(state.pki)), 0o700),
        (keepalived, keepalived_config(topo, site, script), 0o600),
    ]


def write_files(topo: Topology, state: StateDir) -> list[str]:
    """Each data site's HAProxy file, keepalived file and check script (refused, LaunchError,
    where keepalived would not run the check); the processes whose file changed
    (`haproxy-<site>`, `keepalived-<site>`: config_files.write_configs). The check script is
    run anew each time: a change to it needs nobody told."""
    folder = pki.PkiDir(state.pki)
    tls = configgen.HaproxyTls(
        server_pem=folder.combined("haproxy"),
        ca_bundle=folder.bundle,
        client_pem=folder.combined("client-haproxy"),
    )
    stats_password = state.secrets()["haproxy-stats"]
    changed: list[str] = []
    for site in topo.data_sites:
        haproxy, keepalived, script = _files(state, site)
        hub_haproxy = configgen.haproxy_config(
            topo,
            tls,
            stats_password=stats_password,
            runtime=haproxy_state.for_process(state, f"haproxy-{site}"),
        )
        readers = {haproxy: f"haproxy-{site}", keepalived: f"keepalived-{site}"}
        files = [haproxy_file(topo, state, site, hub_haproxy), *keepalived_files(topo, state, site)]
        for path, text, mode in files:
            data = text.encode()
            if path in readers and _differs(path, data):
                changed.append(readers[path])
            write_atomically(path, data, mode=mode)
        if (problem := script_path_problem(script)) is not None:
            raise LaunchError(
                f"keepalived would refuse to run its check {script}: {problem}; use a state"
                " folder that only root can change, all the way up"
            )
        (state.run / f"keepalived-{site}").mkdir(parents=True, exist_ok=True)
    return changed


def _differs(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() != data
    except OSError:  # not written yet
        return True


def specs(topo: Topology, state: StateDir) -> dict[str, ProcessSpec]:
    """`haproxy-<site>` and `keepalived-<site>` for each data site, in the site's namespace."""
    _floating(topo)
    out: dict[str, ProcessSpec] = {}
    for site in topo.data_sites:
        haproxy, keepalived, _script = _files(state, site)
        host = topo.sites[site].host
        out[f"haproxy-{site}"] = ProcessSpec(
            name=f"haproxy-{site}",
            site=site,
            netns=topo.netns(site),
            argv=("haproxy", "-db", "-f", str(haproxy)),
            marker=str(haproxy),
            takes_over=True,
            server_state=haproxy_state.for_process(state, f"haproxy-{site}"),
            ports=(
                ("HAProxy entry", host, topo.entry.port),
                ("HAProxy stats", host, topo.entry.stats_port),
            ),
        )
        run = state.run / f"keepalived-{site}"
        out[f"keepalived-{site}"] = ProcessSpec(
            name=f"keepalived-{site}",
            site=site,
            netns=topo.netns(site),
            argv=(
                "keepalived",
                "--dont-fork",
                "--vrrp",
                "--log-console",
                "--no-syslog",
                "--log-detail",
                f"--use-file={keepalived}",
                # Its own pid files: two sites' keepalived run on one machine here.
                f"--pid={run / 'keepalived.pid'}",
                f"--vrrp_pid={run / 'vrrp.pid'}",
                f"--checkers_pid={run / 'checkers.pid'}",
            ),
            marker=str(keepalived),
        )
    return out
