"""#17 item 1 on three namespaced "hosts": each site's host is rendered with `rocars deploy
render`'s code, installed by its own install.sh (only the commands that would create users,
install packages or talk to systemd are stand-ins; files, folders, owners and modes are real),
and each host's units are started as `systemctl start rocars.target` would start them: every
unit the target wants, from its ExecStart argv, Environment=, WorkingDirectory=, UMask= and
User= (where that user exists on this machine: postgres; the others run as root here), in the
network namespace the launcher's spec names (the site's; HAProxy's entry address is the hub's).
Each host's firewall unit (#12 item 5) is loaded first, in place of the namespaces' own
perimeter, so the system runs behind the rendered rules alone and an outsider on the sites'
network is shown to reach none of their ports.

The README's order: the witness, then A (its Patroni initialises the database and leads), then
B; then `rocars deploy bootstrap`'s steps; then `rocars cluster status`'s view is healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from deploy import (
    etcd_auth,
    host_firewall,
    host_render,
    http_client,
    launcher,
    netns,
    processes,
    readiness,
    status,
    systemd_units,
)
from deploy.binaries import patroni_bin
from deploy.host_render import HostLayout
from deploy.host_render_cli import bootstrap_steps, read_sources, write_tree
from deploy.state import NETNS_TOPOLOGY, REPO_ROOT, StateDir
from deploy.topology import Topology, load_topology

pytestmark = pytest.mark.integration

PREFIX = "rhr"  # namespaces rhr-hub, rhr-a, ...: apart from a running `rnet` cluster's
OUTSIDER_HOST_NUMBER = 201  # an address on the sites' network that is not the system's
CONNECT_WAIT_S = 2.0
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
WAIT_S = 120.0

# Stand-ins for install.sh's system-changing commands. Users that do not exist here are
# mapped to root for chown and install; everything else is the real command.
_MAP_USER = (
    'map() { u=$1; /usr/bin/getent passwd "$u" >/dev/null || u=root; echo "$u"; }\n'
    'mapg() { g=$1; /usr/bin/getent group "$g" >/dev/null || g=root; echo "$g"; }\n'
)
STUBS = {
    "getent": "exit 0",
    "groupadd": "exit 0",
    "useradd": "exit 0",
    "dpkg-query": "echo 'install ok installed'",
    "apt-get": "exit 1",
    "pg_lsclusters": "exit 0",  # never this machine's own clusters
    "systemctl": "case $1 in is-enabled|is-active) exit 1;; *) exit 0;; esac",
    "chown": _MAP_USER + 'exec /bin/chown "$(map "${1%%:*}"):$(mapg "${1##*:}")" "$2"',
    "install": _MAP_USER
    + (
        "while getopts o:g:m: f; do case $f in o) o=$OPTARG;; g) g=$OPTARG;; m) m=$OPTARG;; "
        'esac; done; shift $((OPTIND-1)); exec /usr/bin/install -o "$(map "$o")" '
        '-g "$(mapg "$g")" -m "$m" "$1" "$2"'
    ),
}


def _need(*programs: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    missing = [p for p in programs if shutil.which(p) is None and not Path(p).exists()]
    if missing:
        pytest.skip(f"missing {', '.join(missing)}")


def _layout(root: Path, site: str) -> HostLayout:
    host = root / f"host-{site}"
    return HostLayout(
        state_root=host / "var/lib/rocars",
        code_root=root / "usr/lib/rocars/app",
        venv=root / "usr/lib/rocars/venv",
        unit_dir=host / "etc/systemd/system",
        etc_link=host / "etc/rocars",
    )


def _release(root: Path) -> None:
    """A stand-in release and venv: the stamp install.sh looks for, Patroni linked in."""
    app, venv = root / "usr/lib/rocars/app", root / "usr/lib/rocars/venv"
    (app).mkdir(parents=True)
    (app / "pyproject.toml").write_text("[project]\n")
    (app / "requirements.lock").write_text("patroni\n")
    (venv / "bin").mkdir(parents=True)
    stamp = hashlib.sha256(b"patroni\n[project]\n").hexdigest()[:16]
    (venv / ".rocars-stamp").write_text(stamp + "\n")
    (venv / "bin" / "patroni").symlink_to(patroni_bin())
    # This checkout's venv (the project is installed in it) under the release's name.
    wrapper = venv / "bin" / "python"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    # HAProxy reads its fallback status page from the release at start.
    shutil.copytree(REPO_ROOT / "deploy" / "pages", app / "deploy" / "pages")


def _install(out: Path, stubs: Path) -> None:
    env = {**os.environ, "PATH": f"{stubs}:/usr/sbin:/usr/bin:/sbin:/bin"}
    proc = subprocess.run(
        ["bash", str(out / "install.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout


def _start_unit(unit_file: Path, namespace: str, log: Path) -> subprocess.Popen[bytes]:
    """Run a unit's service as systemd would (without its sandboxing) in `namespace`."""
    service = systemd_units.entries(unit_file.read_text(), "Service")
    last = dict(service)
    argv = systemd_units.split_command_line(last["ExecStart"])
    env = {"PATH": SYSTEMD_PATH}
    for key, value in service:
        if key == "Environment":
            name, _, val = systemd_units.split_command_line(value)[0].partition("=")
            env[name] = val
    try:
        account: pwd.struct_passwd | None = pwd.getpwnam(last["User"])
    except KeyError:
        account = None  # rocars-etcd and the like do not exist on this machine
    umask = int(last.get("UMask", "0022"), 8)
    with log.open("ab") as out, netns.inside(namespace):
        return subprocess.Popen(
            argv,
            env=env,
            cwd=last.get("WorkingDirectory", "/"),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=umask,
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            extra_groups=[] if account else None,
        )


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


@pytest.fixture
def hosts() -> Iterator[tuple[Topology, StateDir, Path]]:
    """Three rendered and installed hosts in fresh namespaces; everything removed after."""
    _need(
        "ip",
        "nft",
        "etcd",
        "redis-server",
        "haproxy",
        "/usr/lib/postgresql/15/bin/postgres",
        patroni_bin(),
    )
    topo = load_topology(NETNS_TOPOLOGY).with_namespace_prefix(PREFIX).without_monitoring()
    # Under /tmp and world-traversable: PostgreSQL runs as postgres (DESIGN.md section 6).
    root = Path(tempfile.mkdtemp(prefix="rocars-hostrender-", dir="/tmp"))
    root.chmod(0o755)
    try:
        netns.create(topo)
        central = StateDir(root / "operator")
        sources = read_sources(central, topo)
        _release(root)
        stubs = root / "stubs"
        stubs.mkdir()
        for name, body in STUBS.items():
            (stubs / name).write_text(f"#!/bin/bash\n{body}\n")
            (stubs / name).chmod(0o755)
        for site in topo.sites:
            layout = _layout(root, site)
            layout.unit_dir.mkdir(parents=True)
            layout.state_root.parent.mkdir(parents=True, mode=0o755)
            for d in (root / f"host-{site}", *layout.state_root.parents):
                if str(d).startswith(str(root)):
                    d.chmod(0o755)
            out = root / f"out-{site}"
            write_tree(out, host_render.render(topo, site, sources, layout))
            _install(out, stubs)
            _load_firewall(topo, layout, site)
        yield topo, central, root
    finally:
        # Anything still running from these hosts' folders (a PostgreSQL whose Patroni was
        # killed) goes before its folders do.
        processes.stop_pids([p.pid for p in processes.leftovers([str(root)])])
        netns.destroy(topo)
        shutil.rmtree(root, ignore_errors=True)


def _load_firewall(topo: Topology, layout: HostLayout, site: str) -> None:
    """What systemd does first for rocars.target: the firewall unit's ExecStart in the site's
    namespace, after the namespace's own perimeter is removed (the rendered rules alone)."""
    assert topo.namespaces is not None
    ns = topo.namespaces.of(site)
    subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", netns.PERIMETER_TABLE],
        check=True,
        capture_output=True,
        timeout=30,
    )
    unit = dict(
        systemd_units.entries((layout.unit_dir / host_firewall.UNIT).read_text(), "Service")
    )
    argv = systemd_units.split_command_line(unit["ExecStart"])
    subprocess.run(["ip", "netns", "exec", ns, *argv], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def _outsider(topo: Topology) -> Iterator[str]:
    """A namespace plugged into the sites' bridge with an address that is not the system's."""
    ns = topo.namespaces
    assert ns is not None
    name, hub = f"{ns.prefix}-out", ns.hub()
    address = f"{ns.hub_host.rsplit('.', 1)[0]}.{OUTSIDER_HOST_NUMBER}/{ns.prefix_len}"
    steps = [
        ["netns", "add", name],
        ["-n", name, "link", "set", "lo", "up"],
        ["-n", hub, "link", "add", "v-out", *netns.VETH_PEER, "netns", name],
        ["-n", hub, "link", "set", "v-out", "master", netns.BRIDGE, "up"],
        ["-n", name, "addr", "add", address, "dev", "eth0"],
        ["-n", name, "link", "set", "eth0", "up"],
    ]
    try:
        for step in steps:
            subprocess.run(["ip", *step], check=True, capture_output=True, timeout=30)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30, check=False)


async def _connects(targets: list[tuple[str, str, int]]) -> list[str]:
    """Which of `targets` (what, host, port) accept a TCP connection within CONNECT_WAIT_S."""

    async def one(host: str, port: int) -> bool:
        try:
            _r, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_WAIT_S)
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True

    answers = await asyncio.gather(*(one(h, p) for _w, h, p in targets))
    return sorted(what for (what, _h, _p), ok in zip(targets, answers, strict=True) if ok)


def _tails(root: Path) -> str:
    parts = []
    for log in sorted(root.glob("*.log")):
        parts.append(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-15:]))
    return "\n".join(parts)


async def _wait(
    what: str, check: Callable[[], Awaitable[bool]], central: StateDir, root: Path
) -> None:
    try:
        await readiness.wait_until(what, check, timeout=WAIT_S, state=central, logs=())
    except Exception as exc:
        raise AssertionError(f"{exc}\n{_tails(root)}") from exc


def _start_units(
    topo: Topology, root: Path, site: str, started: set[str], only: str | None = None
) -> list[subprocess.Popen[bytes]]:
    """`systemctl start rocars.target` on the host of `site` (or only its unit `only`): every
    unit the target wants that is not running yet."""
    layout = _layout(root, site)
    target = systemd_units.entries((layout.unit_dir / systemd_units.TARGET).read_text(), "Unit")
    loaded = (systemd_units.NETWORK, host_firewall.UNIT)  # the firewall: `_load_firewall`
    wants = [u for u in dict(target)["Wants"].split() if u not in loaded]
    procs = host_render.host_processes(topo, site, layout)
    by_unit = {host_render.unit_name(name): spec for name, spec in procs.items()}
    assert set(wants) == set(by_unit)
    out = []
    for unit in wants:
        if unit in started or (only is not None and unit != host_render.unit_name(only)):
            continue
        spec = by_unit[unit]
        assert spec.netns is not None
        out.append(_start_unit(layout.unit_dir / unit, spec.netns, root / f"{spec.name}.log"))
        started.add(unit)
    return out


def test_rendered_hosts_run_the_system(hosts: tuple[Topology, StateDir, Path]) -> None:
    """#17 item 1: the installed units' command lines, started host by host in the README's
    order in each site's namespace, make the whole system: etcd's quorum, Patroni leading on
    the primary site with the DR site as synchronous standby, Redis and Sentinels, both nodes
    and HAProxy; after `rocars deploy bootstrap`'s steps `rocars cluster status` is healthy.
    All of it behind each host's rendered firewall (#12 item 5), which then lets an outsider
    reach none of the sites' ports, only the host's other ports and HAProxy's HTTPS port."""
    topo, central, root = hosts
    procs: list[subprocess.Popen[bytes]] = []
    started: set[str] = set()
    primary, dr = topo.data_sites
    witness = topo.witness_site

    async def scenario() -> None:
        etcd_auth.use_state(topo, central)
        async with http_client.session(topo, central) as session:

            async def quorum() -> bool:
                return await readiness.etcd_quorum(session, topo)

            async def every_member_healthy() -> bool:
                urls = [f"{topo.etcd_url(s)}/health" for s in topo.sites]
                return all([await readiness.http_ok(session, u) for u in urls])

            async def primary_leads() -> bool:
                return await readiness.leader_site(session, topo) == primary

            await _wait("etcd quorum", quorum, central, root)
            await _wait("every etcd member healthy", every_member_healthy, central, root)
            procs.extend(_start_units(topo, root, witness, started))
            procs.extend(_start_units(topo, root, primary, started))
            await _wait(f"Patroni leader on {primary}", primary_leads, central, root)
            procs.extend(_start_units(topo, root, dr, started))
            # `rocars deploy bootstrap`: the launcher's steps that start nothing.
            launch = launcher.Launch(topo, central, session, lambda _m: None)
            try:
                await launcher.run_steps(launch, bootstrap_steps(topo), {}, timeout=WAIT_S)
            except Exception as exc:
                raise AssertionError(f"{exc}\n{_tails(root)}") from exc
        view = await status.wait_healthy(topo, 60, state=central)
        assert view.is_healthy, f"{view.problems()}\n{_tails(root)}"

    def outsider_view() -> None:
        """#12 item 5: behind the rendered firewalls alone, an outsider reaches no port of
        any site (every one listens: the system is healthy), but a port of the host's own
        (ssh's stand-in) still answers it; HAProxy's HTTPS port on the hub answers it too."""
        ours = [(w, h, p) for w, h, p in topo.endpoints() if h != topo.entry_host()]
        a = topo.sites[primary]
        with contextlib.ExitStack() as stack:
            with netns.inside(topo.namespaces.of(primary) if topo.namespaces else None):
                other = stack.enter_context(socket.create_server((a.host, 0)))
            admins = ("administrator's port", a.host, other.getsockname()[1])
            https = ("entry.port", topo.entry_host(), topo.entry.port)
            with _outsider(topo) as name, netns.inside(name):
                reached = asyncio.run(_connects([*ours, admins, https]))
        assert reached == sorted([admins[0], https[0]])

    try:
        # README's order: etcd on every host (its cluster version is decided only once all
        # three members have met, and Patroni cannot use it before), the witness, then A
        # (its Patroni initialises the database), B once A leads.
        for site in topo.sites:
            procs.extend(_start_units(topo, root, site, started, only=f"etcd-{site}"))
        with netns.inside(topo.namespaces.hub() if topo.namespaces else None):
            asyncio.run(scenario())
        outsider_view()
        # PostgreSQL ran as the unit's user, from the member folder install.sh made for it.
        data = _layout(root, primary).state.member_dir(primary) / "data"
        assert data.stat().st_uid == pwd.getpwnam("postgres").pw_uid
    finally:
        _stop(procs)
