"""#17 item 1: what `rocars deploy render --host SITE` writes for one production host (units,
configuration, keys, install.sh), checked without starting anything; the install script is run
once against stand-ins for the system's commands to show that a second run changes nothing."""

from __future__ import annotations

import configparser
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from unit_fakes import fake_sources

from deploy import host_firewall, host_install, host_render, systemd_units
from deploy.host_render import HostLayout, Sources
from deploy.process_specs import specs
from deploy.processes import ProcessSpec
from deploy.state import NETNS_TOPOLOGY, REPO_ROOT
from deploy.topology import Topology, load_topology
from kernel.errors import ConfigError

PRODUCTION = REPO_ROOT / "deploy" / "topology.production.yaml"
HARDENED = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "Restart": "on-failure",
}


@pytest.fixture(scope="module")
def production() -> Topology:
    return load_topology(PRODUCTION)


def _units(out: dict[str, tuple[bytes, int]]) -> dict[str, configparser.ConfigParser]:
    """The processes' units and the target (the firewall's: tests/unit/test_host_firewall.py)."""
    parsed = {}
    for key, (content, _mode) in out.items():
        if key.startswith("files/etc/systemd/system/") and not key.endswith(host_firewall.UNIT):
            cp = configparser.ConfigParser(strict=False, interpolation=None)
            cp.optionxform = str  # type: ignore[assignment,method-assign]
            cp.read_string(content.decode())
            parsed[key.rsplit("/", 1)[1]] = cp
    return parsed


def unquote(line: str) -> list[str]:
    return list(systemd_units.split_command_line(line))


def _expected(topo: Topology, site: str, layout: HostLayout) -> dict[str, ProcessSpec]:
    every = specs(topo, layout.state, layout.programs)
    return {n: s for n, s in every.items() if s.site == site}


@pytest.mark.parametrize("site", ["A", "B", "C"])
def test_every_process_of_the_host_has_a_unit_and_no_other(production: Topology, site: str) -> None:
    """#17 item 1: one unit per process the launcher's specs place on the site (and the
    target); none for another site's process."""
    out = host_render.render(production, site, fake_sources(production))
    units = _units(out)
    expected = {f"rocars-{n}.service" for n in _expected(production, site, HostLayout())}
    assert set(units) == expected | {"rocars.target"}
    wanted = units["rocars.target"]["Unit"]["Wants"].split()
    assert set(wanted) == expected | {systemd_units.NETWORK, host_firewall.UNIT}


def test_the_witness_gets_etcd_sentinel_and_monitoring_only(production: Topology) -> None:
    """#17 item 1: the witness site runs what the topology puts there: etcd, Sentinel and
    the monitoring processes; no database, Redis, node or HAProxy."""
    units = set(_units(host_render.render(production, "C", fake_sources(production))))
    assert units == {
        "rocars.target",
        "rocars-etcd-C.service",
        "rocars-sentinel-C.service",
        "rocars-prometheus.service",
        "rocars-alertmanager.service",
        "rocars-redis-exporter.service",
    }


@pytest.mark.parametrize("site", ["A", "B", "C"])
def test_exec_start_is_the_launchers_command_line(production: Topology, site: str) -> None:
    """#17 item 1: each unit's ExecStart, Environment and WorkingDirectory are the launcher's
    ProcessSpec for the same process, given the production layout."""
    layout = HostLayout()
    units = _units(host_render.render(production, site, fake_sources(production)))
    for name, spec in _expected(production, site, layout).items():
        service = units[f"rocars-{name}.service"]["Service"]
        assert unquote(service["ExecStart"]) == [layout.relocate(a) for a in spec.argv], name
        assert service.get("WorkingDirectory") == (str(spec.cwd) if spec.cwd else None)


def test_units_follow_the_process_specs(
    production: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#17 item 1: the command line is read from deploy.process_specs, not written again: a
    changed spec changes the unit."""
    real = specs

    def changed(*args: object, **kwargs: object) -> dict[str, ProcessSpec]:
        out = real(*args, **kwargs)  # type: ignore[arg-type]
        spec = out["etcd-A"]
        out["etcd-A"] = ProcessSpec(**{**spec.__dict__, "argv": (*spec.argv, "--x=1")})
        return out

    monkeypatch.setattr("deploy.host_render.specs", changed)
    units = _units(host_render.render(production, "A", fake_sources(production)))
    assert unquote(units["rocars-etcd-A.service"]["Service"]["ExecStart"])[-1] == "--x=1"


def test_environment_is_the_specs(production: Topology) -> None:
    """#17 item 1: Environment= holds exactly the spec's environment (etcd's GOGC, Patroni's
    HOME and PATH, the exporter's password file by path)."""
    out = host_render.render(production, "A", fake_sources(production))
    for name, spec in _expected(production, "A", HostLayout()).items():
        content = out[f"files/etc/systemd/system/rocars-{name}.service"][0].decode()
        raw = [v for k, v in systemd_units.entries(content, "Service") if k == "Environment"]
        env = dict(unquote(v)[0].split("=", 1) for v in raw)
        assert env == spec.env, name


@pytest.mark.parametrize("site", ["A", "B", "C"])
def test_units_are_hardened(production: Topology, site: str) -> None:
    """#17 item 1: every unit restarts on failure, runs as a dedicated non-root user, with a
    read-only system, no home folders, a private /tmp, no new privileges, no capabilities
    (HAProxy keeps only CAP_NET_BIND_SERVICE, for 443 and 80), and may write only its own
    folders."""
    units = _units(host_render.render(production, site, fake_sources(production)))
    for name, cp in units.items():
        if name == "rocars.target":
            continue
        service = cp["Service"]
        for key, value in HARDENED.items():
            assert service.get(key) == value, (name, key)
        assert service["User"] not in ("", "root")
        assert service.get("SupplementaryGroups") == host_install.SHARED_GROUP
        if name == "rocars-haproxy.service":
            assert service["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
            assert service["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
        else:
            assert service["CapabilityBoundingSet"] == ""
            assert service["AmbientCapabilities"] == ""
        assert cp["Unit"]["PartOf"] == "rocars.target"
        assert cp["Install"]["WantedBy"] == "rocars.target"
    if site == "A":
        kinds = ("etcd-A", "patroni-A", "redis-A", "node-A", "haproxy", "postgres-exporter-A")
        users = [units[f"rocars-{k}.service"]["Service"]["User"] for k in kinds]
        assert len(set(users)) == len(users), users


def test_haproxy_gets_no_capability_above_1024() -> None:
    """#17 item 1: on the namespaced topology HAProxy binds 18080 and the like: no
    capability at all."""
    topo = load_topology(NETNS_TOPOLOGY)
    units = _units(host_render.render(topo, "A", fake_sources(topo)))
    service = units["rocars-haproxy.service"]["Service"]
    assert service["CapabilityBoundingSet"] == ""
    assert service["AmbientCapabilities"] == ""


def test_writable_paths_are_the_processes_own(production: Topology) -> None:
    """#17 item 1: ReadWritePaths names each process's data folder (etcd's, PostgreSQL's
    member folder, Redis's), and only those; HAProxy and the exporters write nothing."""
    units = _units(host_render.render(production, "A", fake_sources(production)))
    rw = {
        n: units[n]["Service"].get("ReadWritePaths", "").split()
        for n in units
        if n != "rocars.target"
    }
    assert rw["rocars-etcd-A.service"] == ["/var/lib/rocars/data/etcd-A"]
    assert rw["rocars-patroni-A.service"] == ["/var/lib/rocars/pg/pg-A"]
    assert rw["rocars-redis-A.service"] == [
        "/var/lib/rocars/data/redis-A",
        "/var/lib/rocars/config",
    ]
    assert rw["rocars-haproxy.service"] == []
    assert rw["rocars-postgres-exporter-A.service"] == []
    assert rw["rocars-node-A.service"] == ["/var/lib/rocars/log", "/var/lib/rocars/contingency"]


def test_local_ordering(production: Topology) -> None:
    """#17 item 1: Patroni starts after its site's etcd, Sentinel after Redis, the node after
    the network and its site's database, HAProxy after the node; never on another host's
    unit."""
    units = _units(host_render.render(production, "A", fake_sources(production)))

    def after(name: str) -> set[str]:
        return set(units[name]["Unit"]["After"].split())

    assert after("rocars-patroni-A.service") == {"network-online.target", "rocars-etcd-A.service"}
    assert "rocars-redis-A.service" in after("rocars-sentinel-A.service")
    assert {"network-online.target", "rocars-patroni-A.service"} <= after("rocars-node-A.service")
    assert after("rocars-haproxy.service") == {"network-online.target", "rocars-node-A.service"}
    for name, cp in units.items():
        if name != "rocars.target":
            assert cp["Unit"]["Wants"] == cp["Unit"]["After"], name
            assert set(cp["Unit"]["After"].split()) - {"network-online.target"} <= set(units)


def test_patroni_is_not_killed_under_its_postgresql(production: Topology) -> None:
    """#17 item 1: Patroni stops PostgreSQL itself; systemd signals only Patroni."""
    units = _units(host_render.render(production, "B", fake_sources(production)))
    assert units["rocars-patroni-B.service"]["Service"]["KillMode"] == "process"
    assert units["rocars-patroni-B.service"]["Service"]["User"] == "postgres"


@pytest.mark.parametrize("site", ["A", "B", "C"])
def test_rendering_twice_gives_the_same_output(production: Topology, site: str) -> None:
    """#17 item 1: rendering is deterministic (an unchanged render installs nothing new)."""
    sources = fake_sources(production)
    assert host_render.render(production, site, sources) == host_render.render(
        production, site, sources
    )


def test_a_host_gets_its_own_keys_and_passwords_only(production: Topology) -> None:
    """#17 item 1: private keys and passwords are in the output only for the processes of
    that host, 0600 in the output and installed 0600 for the one user that reads them; the
    CA's key never leaves the state folder."""
    sources = fake_sources(production)
    sources = Sources(sources.passwords, {**sources.pki, "ca.key": b"CA KEY"}, sources.secrets)
    out_c = host_render.render(production, "C", sources)
    out_a = host_render.render(production, "A", sources)
    assert "files/var/lib/rocars/pki/ca.key" not in out_a | out_c
    assert not any(b"CA KEY" in content for content, _m in (out_a | out_c).values())
    assert "files/var/lib/rocars/pki/etcd-C.key" in out_c
    assert "files/var/lib/rocars/pki/etcd-A.key" not in out_c
    assert "files/var/lib/rocars/pki/node-A.key" in out_a
    assert "files/var/lib/rocars/pki/node-A.key" not in out_c
    assert "files/var/lib/rocars/config/secrets/pgpass-app" in out_a
    assert "files/var/lib/rocars/config/secrets/pgpass-app" not in out_c
    for out in (out_a, out_c):
        for key, (content, mode) in out.items():
            if key.endswith((".key", ".password")) or "/secrets/" in key or b"pw-" in content:
                assert mode == 0o600, key
    plan = host_render.plan(production, "A", sources, HostLayout())
    by_dest = {str(f.dest): f for f in plan.files}
    etcd_key = by_dest["/var/lib/rocars/pki/etcd-A.key"]
    assert (etcd_key.owner, etcd_key.mode) == ("rocars-etcd", 0o600)
    assert by_dest["/var/lib/rocars/pki/etcd-A.crt"].mode == 0o644
    assert by_dest["/var/lib/rocars/pg/pg-A/tls/server.key"].owner == "postgres"
    assert by_dest["/var/lib/rocars/config/haproxy.cfg"].mode == 0o600


def test_configuration_is_the_launchers_generators(production: Topology) -> None:
    """#17 item 1: the host's files are deploy.configgen's output with the production paths
    (etcd's file names its data folder and keys there); release files (HAProxy's fallback
    status page) are named where the release is installed."""
    out = host_render.render(production, "A", fake_sources(production))
    etcd = out["files/var/lib/rocars/config/etcd-A.yaml"][0].decode()
    assert "data-dir: /var/lib/rocars/data/etcd-A" in etcd
    assert "/var/lib/rocars/pki/etcd-A.key" in etcd
    haproxy = out["files/var/lib/rocars/config/haproxy.cfg"][0].decode()
    assert "/usr/lib/rocars/app/deploy/pages/status-unreachable.html" in haproxy
    assert str(REPO_ROOT) not in "".join(c.decode() for c, _m in out.values() if b"\0" not in c)


def test_a_missing_certificate_is_named(production: Topology) -> None:
    """#17 item 1: a state folder without a certificate the host needs is an error naming it."""
    sources = fake_sources(production)
    pki_files = {k: v for k, v in sources.pki.items() if k != "etcd-B.key"}
    with pytest.raises(ConfigError, match=r"etcd-B\.key"):
        host_render.render(production, "B", Sources(sources.passwords, pki_files, sources.secrets))


def test_unknown_site_is_refused(production: Topology) -> None:
    """#17 item 1: `--host` must name a site of the topology."""
    with pytest.raises(ConfigError, match="no site 'D'"):
        host_render.render(production, "D", fake_sources(production))


@pytest.mark.parametrize(
    "arg", ["plain", "with space", 'quo"te', "back\\slash", "100%", "$HOME", "--x=", ""]
)
def test_quoting_round_trips(arg: str) -> None:
    """#17 item 1: an argument systemd would read differently (spaces, quotes, %, $) is
    quoted and escaped so that ExecStart= gives it back unchanged."""
    line = systemd_units.command_line(("prog", arg, "last"))
    assert unquote(line) == ["prog", arg, "last"]


def test_specifiers_and_variables_are_escaped() -> None:
    """#17 item 1: systemd.service(5): "%" starts a specifier and "$" a variable in
    ExecStart=; a literal one is written doubled (a path or password with either must reach the
    program unchanged)."""
    assert systemd_units.command_line(("prog", "$HOME", "50%", "a b")) == (
        'prog "$$HOME" "50%%" "a b"'
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
@pytest.mark.parametrize("topology", [PRODUCTION, NETNS_TOPOLOGY], ids=["production", "netns"])
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path, topology: Path) -> None:
    """#17 item 1: systemd's own parser accepts every unit (with the release's Python at
    this checkout's venv, so the programs it checks for exist)."""
    topo = load_topology(topology)
    layout = HostLayout(venv=Path(sys.prefix), code_root=REPO_ROOT)
    for site in topo.sites:
        out = host_render.render(topo, site, fake_sources(topo), layout)
        folder = tmp_path / site
        folder.mkdir()
        for key, (content, _mode) in out.items():
            if key.startswith("files/etc/systemd/system/"):
                (folder / key.rsplit("/", 1)[1]).write_bytes(content)
        names = sorted(p.name for p in folder.iterdir())
        proc = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", *names],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.strip() == "", proc.stderr


def _install_stubs(bin_dir: Path, record: Path) -> None:
    """Stand-ins for the commands install.sh changes the system with: users exist, packages
    are installed, owners are recorded in `record` instead of set, systemctl keeps its
    enabled units in files."""
    bin_dir.mkdir()
    record.mkdir()
    stubs = {
        "getent": "exit 0",
        "groupadd": 'echo "groupadd $*" >>"$REC/calls"',
        "useradd": 'echo "useradd $*" >>"$REC/calls"',
        "dpkg-query": "echo 'install ok installed'",
        "apt-get": 'echo "apt-get $*" >>"$REC/calls"; exit 1',
        "pg_lsclusters": "exit 0",
        "chown": 'echo "${1}" >"$REC/owner$(echo "$2" | tr / _)"',
        "install": (
            "while getopts o:g:m: f; do case $f in o) o=$OPTARG;; g) g=$OPTARG;; m) m=$OPTARG;; "
            'esac; done; shift $((OPTIND-1)); cp "$1" "$2"; chmod "$m" "$2"; '
            'echo "$o:$g" >"$REC/owner$(echo "$2" | tr / _)"'
        ),
        "stat": (
            'p="$3"; f="$REC/owner$(echo "$p" | tr / _)"; '
            'o=$([ -f "$f" ] && cat "$f" || echo root:root); echo "$o $(/usr/bin/stat -c %a "$p")"'
        ),
        "systemctl": (
            'echo "systemctl $*" >>"$REC/calls"; case $1 in '
            'is-enabled) [ -f "$REC/enabled-$3" ];; enable) touch "$REC/enabled-$3";; '
            "is-active) exit 1;; *) exit 0;; esac"
        ),
    }
    for name, body in stubs.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)


def _run_install(out_dir: Path, bin_dir: Path, record: Path) -> str:
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "REC": str(record)}
    proc = subprocess.run(
        ["bash", str(out_dir / "install.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout


def _write(out_dir: Path, files: dict[str, tuple[bytes, int]]) -> None:
    from deploy.host_render_cli import write_tree

    write_tree(out_dir, files)


@pytest.mark.skipif(os.geteuid() != 0, reason="install.sh refuses to run without root")
def test_install_script_is_idempotent(tmp_path: Path, production: Topology) -> None:
    """#17 item 1: install.sh (against stand-ins for useradd, chown, systemctl...) installs
    every file with its owner and mode and enables the units; run again it changes nothing;
    after a new render only what changed is installed; and Sentinel's own rewrite of its file
    survives a rerun."""
    app = tmp_path / "usr/lib/rocars/app"
    app.mkdir(parents=True)
    (app / "pyproject.toml").write_text("[project]\n")
    (app / "requirements.lock").write_text("x==1\n")
    venv = tmp_path / "usr/lib/rocars/venv"
    venv.mkdir(parents=True)
    stamp = hashlib.sha256(b"x==1\n[project]\n").hexdigest()[:16]
    (venv / ".rocars-stamp").write_text(stamp + "\n")
    layout = HostLayout(
        state_root=tmp_path / "var/lib/rocars",
        code_root=app,
        venv=venv,
        unit_dir=tmp_path / "etc/systemd/system",
        etc_link=tmp_path / "etc/rocars",
    )
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    _install_stubs(bin_dir, record)
    sources = fake_sources(production)
    out_dir = tmp_path / "out"
    _write(out_dir, host_render.render(production, "A", sources, layout))

    first = _run_install(out_dir, bin_dir, record)
    assert "changed:" in first
    key = layout.state.pki / "etcd-A.key"
    assert key.read_bytes() == b"KEY etcd-A\n"
    assert oct(key.stat().st_mode & 0o777) == oct(0o600)
    assert (record / f"owner{str(key).replace('/', '_')}").read_text().strip() == (
        "rocars-etcd:rocars-etcd"
    )
    assert (layout.unit_dir / "rocars-etcd-A.service").exists()
    assert (record / "enabled-rocars.target").exists()
    assert os.readlink(layout.etc_link) == str(layout.state.config)
    assert "systemctl daemon-reload" in (record / "calls").read_text()
    assert oct(layout.state.config.stat().st_mode & 0o7777) == oct(0o1775)

    calls_before = (record / "calls").read_text()
    assert _run_install(out_dir, bin_dir, record).strip() == "install.sh: nothing to change"
    assert "daemon-reload" not in (record / "calls").read_text().removeprefix(calls_before)

    # Sentinel rewrites its file after a failover: a rerun keeps its version.
    sentinel = layout.state.config / "sentinel-A.conf"
    sentinel.write_text(sentinel.read_text() + "sentinel known-replica rocars 1.2.3.4 1\n")
    assert _run_install(out_dir, bin_dir, record).strip() == "install.sh: nothing to change"
    assert "known-replica" in sentinel.read_text()

    # A new render (another HAProxy stats password) installs that file and nothing else.
    changed = Sources({**sources.passwords, "haproxy-stats": "new"}, sources.pki, sources.secrets)
    _write(out_dir, host_render.render(production, "A", changed, layout))
    third = _run_install(out_dir, bin_dir, record)
    assert re.findall(r"changed: (\S+)", third) == [str(layout.state.config / "haproxy.cfg")]


def test_bootstrap_runs_the_launchers_steps_that_start_nothing(production: Topology) -> None:
    """#17 item 1: `rocars deploy bootstrap` is `cluster up` without starting processes (systemd
    starts them on the hosts): etcd authentication, the database, the nodes' and the entry's
    readiness, the synchronous standby, in the launcher's order."""
    from deploy import launcher
    from deploy.host_render_cli import bootstrap_steps

    plan = bootstrap_steps(production)
    assert all(not step.start for step in plan)
    whats = [step.what for step in plan]
    assert whats == [s.what for s in launcher.steps(production, fresh=False) if not s.start]
    assert whats[0] == "etcd authentication"
    assert "a Patroni leader" in whats
    assert whats[-1] == "a streaming synchronous standby"


def test_render_command_writes_a_private_folder(tmp_path: Path) -> None:
    """#17 item 1: `rocars deploy render` binds the state folder to its topology, writes the
    output folder 0700 with keys 0600 and install.sh executable, and refuses another topology
    for the same state folder (its CA and passwords belong to the first)."""
    from click.testing import CliRunner

    from deploy.cli import cli

    state, out = tmp_path / "state", tmp_path / "out"
    args = ["deploy", "render", "--host", "C", "--state-dir", str(state), "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--topology", str(PRODUCTION)])
    assert result.exit_code == 0, result.output
    assert oct(out.stat().st_mode & 0o777) == oct(0o700)
    assert oct((out / "files/var/lib/rocars/pki/etcd-C.key").stat().st_mode & 0o777) == oct(0o600)
    assert (out / "install.sh").stat().st_mode & 0o100
    assert (state / "config" / "node-A.yaml").exists()  # for the operator's own commands
    other = CliRunner().invoke(cli, [*args, "--topology", str(NETNS_TOPOLOGY)])
    assert other.exit_code == 2
    assert "belongs to another topology" in other.output
