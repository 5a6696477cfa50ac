"""#17 item 2 on production hosts: `rocars deploy render --host SITE` for a topology with a
floating address gives each data site its own HAProxy and keepalived (units from the
launcher's process specs, files from deploy.floating_address), and no hub HAProxy."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from unit_fakes import fake_sources, floating_production

from deploy import floating_address, host_install, host_render, systemd_units
from deploy.host_render import HostLayout
from deploy.process_specs import specs
from deploy.state import REPO_ROOT
from deploy.topology import Topology

PRODUCTION = REPO_ROOT / "deploy" / "topology.production.yaml"
CONFIG = "files/var/lib/rocars/config"
UNITS = "files/etc/systemd/system"


@pytest.fixture(scope="module")
def topo() -> Topology:
    return floating_production()


def _unit(out: dict[str, tuple[bytes, int]], name: str) -> configparser.SectionProxy:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(out[f"{UNITS}/{name}"][0].decode())
    return cp["Service"]


def _keepalived(text: str) -> dict[str, list[str]]:
    """keepalived's file as {block name: its lines} (one level of nesting is enough here)."""
    blocks: dict[str, list[str]] = {}
    stack: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("{"):
            stack.append(line[:-1].strip())
            blocks.setdefault(stack[-1], [])
        elif line == "}":
            stack.pop()
        else:
            blocks[stack[-1]].append(line)
    assert not stack
    return blocks


@pytest.mark.parametrize("site", ["A", "B"])
def test_each_data_host_gets_its_haproxy_and_keepalived(topo: Topology, site: str) -> None:
    """Each data site's host runs haproxy-<site> and keepalived-<site> with the launcher's
    command lines, and the hub HAProxy runs nowhere (it would take the site HAProxy's ports on
    the entry site's host); keepalived and curl are installed."""
    out = host_render.render(topo, site, fake_sources(topo))
    units = {k.rsplit("/", 1)[1] for k in out if k.startswith(f"{UNITS}/rocars-")}
    assert f"rocars-haproxy-{site}.service" in units
    assert f"rocars-keepalived-{site}.service" in units
    assert "rocars-haproxy.service" not in units
    layout = HostLayout()
    want = specs(topo, layout.state, layout.programs)
    for name in (f"haproxy-{site}", f"keepalived-{site}"):
        argv = systemd_units.split_command_line(_unit(out, f"rocars-{name}.service")["ExecStart"])
        assert argv == want[name].argv
    plan = host_render.plan(topo, site, fake_sources(topo))
    assert {"keepalived", "curl", "haproxy"} <= set(plan.packages)
    assert "keepalived" in host_install.PACKAGED_SERVICES
    assert "root" not in host_render.users(plan)
    witness = host_render.render(topo, "C", fake_sources(topo))
    assert not [k for k in witness if "keepalived" in k or "haproxy" in k]


def test_keepalived_config_carries_the_address_on_the_named_interface(topo: Topology) -> None:
    """keepalived's file (parsed): the address with the topology's prefix on its interface,
    VRRP by unicast to the other data host, script security on with the check as root, the
    check script root's alone (0700) asking this site's Patroni with the floating-address
    client certificate, which the host receives 0600 for root."""
    out = host_render.render(topo, "B", fake_sources(topo))
    conf = _keepalived(out[f"{CONFIG}/keepalived-B.conf"][0].decode())
    assert "enable_script_security" in conf["global_defs"]
    assert "script_user root" in conf["global_defs"]
    assert conf["virtual_ipaddress"] == ["192.0.2.100/24 dev ens3"]
    assert "interface ens3" in conf["vrrp_instance entry"]
    assert "unicast_src_ip 192.0.2.20" in conf["vrrp_instance entry"]
    assert conf["unicast_peer"] == ["192.0.2.10"]
    script_line = next(x for x in conf["vrrp_script patroni_leader"] if x.startswith("script "))
    assert script_line == 'script "/var/lib/rocars/config/floating-check-B.sh"'
    script, mode = out[f"{CONFIG}/floating-check-B.sh"]
    assert mode == 0o600  # private in the output folder, like every private file
    assert "https://192.0.2.20:8008/leader" in script.decode()
    files = {str(f.dest): f for f in host_render.plan(topo, "B", fake_sources(topo)).files}
    check = files["/var/lib/rocars/config/floating-check-B.sh"]
    assert (check.owner, check.mode) == ("root", 0o700)
    key = files["/var/lib/rocars/pki/client-floating-address.key"]
    assert (key.owner, key.mode) == ("root", 0o600)


def test_site_haproxy_serves_every_address_of_its_host(topo: Topology) -> None:
    """The site's HAProxy file (parsed for its bind lines): client ports on every address of
    the host (the floating one when it holds it), stats on the host's own address, the HTTP
    redirect to the floating address."""
    out = host_render.render(topo, "A", fake_sources(topo))
    text = out[f"{CONFIG}/haproxy-A.cfg"][0].decode()
    binds = sorted(m.group(1) for m in re.finditer(r"^\s*bind (\S+)", text, re.M))
    assert binds == ["192.0.2.10:8404", ":443", ":4573", ":80"]
    assert "redirect prefix https://192.0.2.100:443" in text
    assert f"{CONFIG}/haproxy.cfg" not in out


def test_keepalived_unit_keeps_only_the_privileges_it_uses(topo: Topology) -> None:
    """keepalived's unit runs as root (its check presents a key only root reads) but keeps
    only CAP_NET_ADMIN (the address) and CAP_NET_RAW (VRRP, gratuitous ARP), adds only the
    netlink and packet socket families, and writes only its pid folder; the site HAProxy
    keeps CAP_NET_BIND_SERVICE alone, as the hub's does."""
    out = host_render.render(topo, "A", fake_sources(topo))
    ka = _unit(out, "rocars-keepalived-A.service")
    assert ka["User"] == "root"
    assert ka["CapabilityBoundingSet"] == "CAP_NET_ADMIN CAP_NET_RAW"
    assert ka["AmbientCapabilities"] == "CAP_NET_ADMIN CAP_NET_RAW"
    assert ka["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET"
    assert ka["ReadWritePaths"] == "/var/lib/rocars/run/keepalived-A"
    assert ka["NoNewPrivileges"] == "yes"
    ha = _unit(out, "rocars-haproxy-A.service")
    assert ha["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert ha["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6"
    dirs = {str(d.path): d for d in host_render.plan(topo, "A", fake_sources(topo)).dirs}
    assert (dirs["/var/lib/rocars/run/keepalived-A"].owner, dirs["/var/lib/rocars/run"].mode) == (
        "root",
        0o755,
    )


def test_rendered_check_script_folders_satisfy_keepalived(topo: Topology) -> None:
    """keepalived runs the check only if no one but root can change it or any folder above
    it (a sticky folder excepted): the folders the install creates for it qualify (the config
    folder is sticky, group-writable for Redis's rewrites)."""
    plan = host_render.plan(topo, "A", fake_sources(topo))
    dirs = {d.path: d for d in plan.dirs}
    script = Path("/var/lib/rocars/config/floating-check-A.sh")
    for folder in (script.parent, script.parent.parent):
        d = dirs[folder]
        assert d.owner == "root", folder
        assert not d.mode & 0o002 or d.mode & 0o1000, folder
        assert not d.mode & 0o020 or d.mode & 0o1000 or d.group == "root", folder


def test_script_path_problem_is_keepalived_rule(tmp_path: Path) -> None:
    """The launcher refuses a state folder where keepalived would silently disable the
    check (then the address would stop following the leader): a folder writable by others
    (not sticky) or owned by another user is named; a sticky one (as /tmp) is not."""
    folder = tmp_path / "cfg"
    folder.mkdir(mode=0o755)
    script = folder / "check.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o700)
    assert floating_address.script_path_problem(script) is None
    folder.chmod(0o777)
    assert floating_address.script_path_problem(script) == (
        f"{folder} is writable by others than root (mode 0777)"
    )
    folder.chmod(0o1777)
    assert floating_address.script_path_problem(script) is None
    folder.chmod(0o755)
    shutil.chown(script, user=65534)
    assert "belongs to uid 65534" in str(floating_address.script_path_problem(script))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
def test_systemd_analyze_verify_accepts_the_floating_units(tmp_path: Path, topo: Topology) -> None:
    """systemd's own parser accepts the site HAProxy's and keepalived's units."""
    layout = HostLayout(venv=Path(sys.prefix), code_root=REPO_ROOT)
    out = host_render.render(topo, "A", fake_sources(topo), layout)
    for key, (content, _mode) in out.items():
        if key.startswith(f"{UNITS}/"):
            (tmp_path / key.rsplit("/", 1)[1]).write_bytes(content)
    names = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr
