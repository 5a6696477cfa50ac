"""The install script of one host (#17 item 1), rendered beside its files by deploy.host_render.

It is idempotent: each step looks before it acts (a package, user, folder, file, link or
enabled unit that is already right is left alone), so a second run changes nothing and says
so. It starts nothing: the rollout (README, "Rollout on three hosts") starts rocars.target
host by host.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from deploy import systemd_units

# Every component user is in this group: it may enter the pki and secrets folders (each key
# and password in them is 0600 and owned by the one user that reads it).
SHARED_GROUP = "rocars"
# The packaged services of the Debian packages, kept disabled (they would take the default
# ports).
PACKAGED_SERVICES = (
    "etcd",
    "redis-server",
    "redis-sentinel",
    "haproxy",
    "keepalived",
    "postgresql",
    "prometheus",
    "prometheus-alertmanager",
    "prometheus-redis-exporter",
    "prometheus-postgres-exporter",
)


@dataclass(frozen=True)
class FileSpec:
    """One file to install: its path on the host, content, owner, group and mode."""

    dest: Path
    content: bytes
    owner: str
    group: str
    mode: int
    # Rewritten by its own process (Redis, Sentinel): replaced only when the rendered version
    # changed since the last install, so a restart does not undo Sentinel's failover.
    seed: bool = False


@dataclass(frozen=True)
class DirSpec:
    path: Path
    owner: str
    group: str
    mode: int


@dataclass(frozen=True)
class InstallPlan:
    """What install.sh does on one host (deploy.host_render builds it)."""

    site: str
    topology: str
    packages: tuple[str, ...]
    users: tuple[str, ...]
    dirs: tuple[DirSpec, ...]
    files: tuple[FileSpec, ...]  # units included
    units: tuple[str, ...]  # unit file names to enable (rocars.target added)
    code_root: Path
    venv: Path
    unit_dir: Path
    etc_link: Path
    config_dir: Path


def file_key(dest: Path) -> str:
    """Where a host file sits in the output folder: files/<its absolute path>."""
    return f"files/{str(dest).lstrip('/')}"


_FUNCTIONS = r"""
changed=()
note() { changed+=("$1"); }

# ensure_user NAME: a system user with a group of its own, no login, no home.
ensure_user() {
  if ! getent group "$1" >/dev/null; then groupadd --system "$1"; note "group $1"; fi
  if ! getent passwd "$1" >/dev/null; then
    useradd --system --gid "$1" --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin "$1"
    note "user $1"
  fi
}

# ensure_dir PATH OWNER GROUP MODE (octal, as stat prints it)
ensure_dir() {
  if [[ ! -d $1 ]]; then mkdir -p "$1"; note "folder $1"; fi
  if [[ $(stat -c '%U:%G %a' "$1") != "$2:$3 $4" ]]; then
    chown "$2:$3" "$1"
    chmod "$4" "$1"
    note "owner/mode of $1"
  fi
}

# install_file KEY DEST OWNER GROUP MODE: the rendered KEY at DEST, unless it is there already.
install_file() {
  if ! cmp -s "$HERE/$1" "$2"; then
    install -o "$3" -g "$4" -m "$5" "$HERE/$1" "$2"
    note "$2"
  elif [[ $(stat -c '%U:%G %a' "$2") != "$3:$4 $5" ]]; then
    chown "$3:$4" "$2"
    chmod "$5" "$2"
    note "owner/mode of $2"
  fi
}

# seed_file KEY DEST OWNER GROUP MODE: a file its own process rewrites (Redis, Sentinel after
# a failover): installed when missing or when the render changed since the last install (the
# last rendered version is kept beside it), never merely because the process rewrote it.
seed_file() {
  local last
  last="$(dirname "$2")/.$(basename "$2").rendered"
  if [[ ! -e $2 ]] || ! cmp -s "$HERE/$1" "$last"; then
    install -o "$3" -g "$4" -m "$5" "$HERE/$1" "$2"
    install -o root -g root -m 600 "$HERE/$1" "$last"
    note "$2"
  fi
}

# ensure_link LINK TARGET
ensure_link() {
  if [[ $(readlink "$1" 2>/dev/null) != "$2" ]]; then
    if [[ -e $1 && ! -L $1 ]]; then
      echo "install.sh: $1 exists and is not a link; move it away" >&2
      exit 1
    fi
    ln -sfn "$2" "$1"
    note "link $1"
  fi
}
"""


def _q(value: object) -> str:
    return shlex.quote(str(value))


def script(plan: InstallPlan) -> str:
    site = plan.site
    venv, app = plan.venv, plan.code_root
    lines = [
        "#!/usr/bin/env bash",
        f"# Installs site {site} of rocars (topology {plan.topology!r}) on this host. Rendered by",
        f"# `rocars deploy render --host {site}`: do not edit, render again. Idempotent: run it",
        "# after every render; a run with nothing new changes nothing. Starts nothing: see",
        '# README, "Rollout on three hosts" (systemctl start rocars.target).',
        "set -euo pipefail",
        # Every file is created private; install(1) then sets each one's mode.
        "umask 077",
        'HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)',
        'if [[ $EUID -ne 0 ]]; then echo "install.sh: run as root" >&2; exit 1; fi',
        '(cd "$HERE" && grep -v "  install.sh$" SHA256SUMS | sha256sum --quiet -c -) || {',
        '  echo "install.sh: the rendered files are damaged or incomplete (SHA256SUMS)" >&2',
        "  exit 1",
        "}",
        _FUNCTIONS,
        "# Debian packages; their own services must not start on the default ports.",
        f"packages=({' '.join(_q(p) for p in plan.packages)} python3-venv)",
        "need=()",
        'for p in "${packages[@]}"; do',
        "  dpkg-query -W -f='${Status}' \"$p\" 2>/dev/null | grep -q 'install ok installed' "
        '|| need+=("$p")',
        "done",
        "if ((${#need[@]})); then",
        "  added_policy=0",
        "  if [[ ! -e /usr/sbin/policy-rc.d ]]; then",
        "    printf '#!/bin/sh\\nexit 101\\n' >/usr/sbin/policy-rc.d",
        "    chmod 755 /usr/sbin/policy-rc.d",
        "    added_policy=1",
        "  fi",
        "  apt-get update -qq",
        "  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
        '"${need[@]}"',
        "  if ((added_policy)); then rm -f /usr/sbin/policy-rc.d; fi",
        '  note "packages ${need[*]}"',
        "fi",
        f"for svc in {' '.join(PACKAGED_SERVICES)}; do",
        '  if systemctl is-enabled --quiet "$svc" 2>/dev/null; then',
        '    systemctl disable --now "$svc"',
        '    note "disabled $svc"',
        '  elif systemctl is-active --quiet "$svc" 2>/dev/null; then',
        '    systemctl stop "$svc"',
        '    note "stopped $svc"',
        "  fi",
        "done",
        # Debian's postgresql-15 creates and starts a cluster of its own on 5432.
        "if command -v pg_lsclusters >/dev/null; then",
        "  while read -r ver name _port status _rest; do",
        '    if [[ $status == online* ]]; then pg_ctlcluster "$ver" "$name" stop; '
        'note "stopped PostgreSQL cluster $ver/$name"; fi',
        "  done < <(pg_lsclusters -h 2>/dev/null)",
        "fi",
        "",
        "# Users: one per component; all in the shared group that may enter pki/ and secrets/.",
        f"if ! getent group {SHARED_GROUP} >/dev/null; then groupadd --system {SHARED_GROUP}; "
        f'note "group {SHARED_GROUP}"; fi',
        *(f"ensure_user {_q(u)}" for u in plan.users),
        "",
        f"# The release: copy this repository's tree to {app} first (README).",
        f"if [[ ! -f {_q(app / 'pyproject.toml')} ]]; then",
        f'  echo "install.sh: no release in {app}: copy it there first" >&2',
        "  exit 1",
        "fi",
        f"stamp=$(cat {_q(app / 'requirements.lock')} {_q(app / 'pyproject.toml')} "
        "| sha256sum | cut -c1-16)",
        f'if [[ $(cat {_q(venv / ".rocars-stamp")} 2>/dev/null) != "$stamp" ]]; then',
        "  umask 022",
        f"  [[ -x {_q(venv / 'bin' / 'python')} ]] || /usr/bin/python3 -m venv {_q(venv)}",
        f"  {_q(venv / 'bin' / 'pip')} install -q --disable-pip-version-check "
        f"-r {_q(app / 'requirements.lock')}",
        f"  {_q(venv / 'bin' / 'pip')} install -q --disable-pip-version-check --no-deps "
        f"-e {_q(app)}",
        f"  {_q(venv / 'bin' / 'python')} -m compileall -q {_q(app)} >/dev/null",
        f'  echo "$stamp" >{_q(venv / ".rocars-stamp")}',
        "  umask 077",
        f'  note "Python environment {venv}"',
        "fi",
        "",
        "# Folders, parents first.",
        *(f"ensure_dir {_q(d.path)} {d.owner} {d.group} {d.mode:o}" for d in plan.dirs),
        f"ensure_link {_q(plan.etc_link)} {_q(plan.config_dir)}",
        "",
        "# Files: configuration, this host's certificates, keys and passwords, the units.",
    ]
    unit_dir = str(plan.unit_dir)
    ordinary = [f for f in plan.files if not str(f.dest).startswith(unit_dir + "/")]
    units = [f for f in plan.files if str(f.dest).startswith(unit_dir + "/")]
    for f in ordinary:
        verb = "seed_file" if f.seed else "install_file"
        lines.append(f"{verb} {_q(file_key(f.dest))} {_q(f.dest)} {f.owner} {f.group} {f.mode:o}")
    lines.append("units_before=${#changed[@]}")
    for f in units:
        lines.append(
            f"install_file {_q(file_key(f.dest))} {_q(f.dest)} {f.owner} {f.group} {f.mode:o}"
        )
    enabled = [systemd_units.TARGET, *plan.units]
    lines += [
        "if ((${#changed[@]} > units_before)); then systemctl daemon-reload; fi",
        f"for unit in {' '.join(enabled)}; do",
        '  if ! systemctl is-enabled --quiet "$unit" 2>/dev/null; then',
        '    systemctl enable --quiet "$unit"',
        '    note "enabled $unit"',
        "  fi",
        "done",
        "",
        "if ((${#changed[@]})); then",
        '  printf "install.sh: changed: %s\\n" "${changed[@]}"',
        "else",
        '  echo "install.sh: nothing to change"',
        "fi",
        "",
    ]
    return "\n".join(lines)
