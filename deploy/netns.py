"""Network namespaces for the sites, and the nftables partition between them.

With `namespaces:` in the topology each site runs in a namespace of its own (`<prefix>-a`, ...),
joined by a bridge in a hub namespace (`<prefix>-hub`) that also holds HAProxy and the
operator's commands. Every address and every nftables rule lives inside those namespaces; the
machine's own namespace gets nothing (DESIGN.md section 5), and `destroy` removes it all.

The plans (`setup_commands`, `partition_ruleset`) are pure, so they are tested without root;
`create`, `partition` and `heal` run them with `ip` and `nft`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from deploy import perimeter
from deploy.topology import Namespaces, Topology
from kernel.errors import LaunchError

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
BRIDGE = "br0"
PARTITION_TABLE = "rocars_partition"
PERIMETER_TABLE = "rocars_perimeter"
VETH_PEER = ("type", "veth", "peer", "name", "eth0")  # the site's end is eth0 in its namespace

_libc = ctypes.CDLL(None, use_errno=True)


def _ns(topo: Topology) -> Namespaces:
    if topo.namespaces is None:
        raise LaunchError(
            f"topology {topo.name!r} runs every site in the machine's own network namespace; "
            "this needs a topology with a 'namespaces:' section (see deploy/topology.netns.yaml)"
        )
    return topo.namespaces


def all_namespaces(topo: Topology) -> list[str]:
    ns = _ns(topo)
    return [ns.hub(), *(ns.of(site) for site in topo.sites)]


def setup_commands(topo: Topology) -> list[list[str]]:
    """The `ip` commands that build the namespaces, the bridge and one veth pair per site."""
    ns = _ns(topo)
    hub = ns.hub()
    cmds = [
        ["ip", "netns", "add", hub],
        ["ip", "-n", hub, "link", "set", "lo", "up"],
        ["ip", "-n", hub, "link", "add", BRIDGE, "type", "bridge"],
        ["ip", "-n", hub, "addr", "add", f"{ns.hub_host}/{ns.prefix_len}", "dev", BRIDGE],
        ["ip", "-n", hub, "link", "set", BRIDGE, "up"],
    ]
    for name, site in topo.sites.items():
        sns = ns.of(name)
        port = f"v-{name.lower()}"  # the bridge port in the hub for this site
        cmds += [
            ["ip", "netns", "add", sns],
            ["ip", "-n", sns, "link", "set", "lo", "up"],
            ["ip", "-n", hub, "link", "add", port, *VETH_PEER, "netns", sns],
            ["ip", "-n", hub, "link", "set", port, "master", BRIDGE, "up"],
            ["ip", "-n", sns, "addr", "add", f"{site.host}/{ns.prefix_len}", "dev", "eth0"],
            ["ip", "-n", sns, "link", "set", "eth0", "up"],
        ]
    return cmds


def partition_ruleset(topo: Topology, site: str) -> str:
    """nftables rules for `site`'s namespace that drop all traffic to and from the other
    sites. The hub (HAProxy, clients) still reaches the site: the cut-off primary stays in
    front of clients and must refuse to acknowledge on its own."""
    others = sorted(s.host for n, s in topo.sites.items() if n != site)
    peers = ", ".join(others)
    return "\n".join(
        [
            f"table inet {PARTITION_TABLE} {{",
            "  chain input {",
            "    type filter hook input priority 0; policy accept;",
            f"    ip saddr {{ {peers} }} drop",
            "  }",
            "  chain output {",
            "    type filter hook output priority 0; policy accept;",
            f"    ip daddr {{ {peers} }} drop",
            "  }",
            "}",
            "",
        ]
    )


def perimeter_ruleset(topo: Topology, where: str | None) -> str:
    """nftables rules that make the sites' network private (#12 item 5, deploy.perimeter): a
    site's namespace (`where` = its name) takes new connections only from the system's own
    addresses (the sites and the hub); the hub (`where` None), which holds HAProxy, takes them
    from anyone only on the client ports (HTTPS, the HTTP redirect, the phone channel), the
    rest only from the system's own addresses. Replies to connections the namespace opened
    always pass."""
    _ns(topo)
    clients = perimeter.clients(topo, where)
    return perimeter.ruleset(PERIMETER_TABLE, perimeter.system_hosts(topo), clients, None)


def _run(argv: list[str], *, stdin: str | None = None) -> None:
    try:
        proc = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=30, check=False
        )
    except FileNotFoundError as exc:
        raise LaunchError(
            f"{argv[0]} not found: install the Debian packages iproute2 and nftables "
            "('make install' does)"
        ) from exc
    if proc.returncode != 0:
        raise LaunchError(
            f"'{' '.join(argv)}' failed ({proc.returncode}): {proc.stderr.strip()}; network "
            "namespaces need root (CAP_NET_ADMIN and CAP_SYS_ADMIN)"
        )


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create(topo: Topology) -> bool:
    """Build the namespaces unless they all exist already; True when something was built.
    A half-built set (an interrupted earlier run) is removed and built again."""
    names = all_namespaces(topo)
    if all(exists(n) for n in names):
        return False
    destroy(topo)
    try:
        for argv in setup_commands(topo):
            _run(argv)
        ns = _ns(topo)
        for name, site in [(ns.hub(), None), *((ns.of(n), n) for n in topo.sites)]:
            argv = ["ip", "netns", "exec", name, "nft", "-f", "-"]
            _run(argv, stdin=perimeter_ruleset(topo, site))
    except BaseException:
        destroy(topo)
        raise
    return True


def destroy(topo: Topology) -> list[str]:
    """Delete the namespaces (their veth pairs, addresses and rules go with them)."""
    removed = []
    for name in all_namespaces(topo):
        if exists(name):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
            removed.append(name)
    return removed


def _nft_argv(topo: Topology, site: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", _ns(topo).of(site), "nft", *args]


def partition(topo: Topology, site: str) -> None:
    """Cut `site` off from the other sites (nftables inside the site's own namespace)."""
    heal(topo, site)
    _run(_nft_argv(topo, site, "-f", "-"), stdin=partition_ruleset(topo, site))


def heal(topo: Topology, site: str) -> None:
    """Remove the partition rules of `site` (nothing happens if there are none)."""
    argv = _nft_argv(topo, site, "delete", "table", "inet", PARTITION_TABLE)
    subprocess.run(argv, capture_output=True, check=False)


# -- entering a namespace (this thread only) --------------------------------------------------


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise LaunchError(f"cannot enter network namespace: {os.strerror(err)} (needs root)")


def _open(name: str) -> int:
    try:
        return os.open(NETNS_DIR / name, os.O_RDONLY)
    except FileNotFoundError as exc:
        raise LaunchError(
            f"network namespace {name} does not exist: the cluster is not up; start it with "
            "'rocars cluster up --topology <its topology file> --state-dir <its state folder>'"
        ) from exc


@contextlib.contextmanager
def inside(name: str | None) -> Iterator[None]:
    """Run the block's socket calls and child processes in namespace `name` (None: stay).

    setns() moves only the calling thread, so other threads of the process are unaffected,
    and a process forked inside the block starts in that namespace."""
    if name is None:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = _open(name)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def in_namespace(name: str) -> bool:
    try:
        return os.stat("/proc/thread-self/ns/net").st_ino == os.stat(NETNS_DIR / name).st_ino
    except OSError:
        return False


def enter_hub(topo: Topology) -> None:
    """Move this thread (call it before any other thread starts: they inherit it) into the
    hub namespace, from where the operator reaches every site and HAProxy."""
    if topo.namespaces is None:
        return
    hub = topo.namespaces.hub()
    if in_namespace(hub):
        return
    fd = _open(hub)
    try:
        _setns(fd)
    finally:
        os.close(fd)
