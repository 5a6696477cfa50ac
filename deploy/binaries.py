"""The programs the local system runs, and a check that they are installed (by `make run`)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from deploy import configgen
from deploy.topology import Topology
from kernel.errors import LaunchError

REQUIRED_BINARIES = {
    "etcd": "etcd-server",
    "redis-server": "redis-server",
    "haproxy": "haproxy",
    f"{configgen.PG_BIN_DIR}/postgres": "postgresql-15",
}
# Only a topology with a floating address runs keepalived, whose check script runs curl
# (deploy/floating_address.py); deploy/install.sh installs both.
FLOATING_BINARIES = {
    "keepalived": "keepalived",
    "/usr/bin/curl": "curl",
}


def required_binaries(topo: Topology) -> dict[str, str]:
    """The programs `topo` runs (path or name on PATH) and the Debian package of each."""
    if topo.entry.floating is None:
        return dict(REQUIRED_BINARIES)
    return {**REQUIRED_BINARIES, **FLOATING_BINARIES}


def patroni_bin() -> str:
    """Patroni from the venv the install step built for the database user (see install.sh)."""
    marker = Path(sys.prefix) / ".patroni-venv"
    if marker.exists():
        candidate = Path(marker.read_text().strip()) / "bin" / "patroni"
        if candidate.exists():
            return str(candidate)
    return str(Path(sys.prefix) / "bin" / "patroni")


def check_binaries(topo: Topology) -> None:
    missing = []
    for binary, package in required_binaries(topo).items():
        if not (shutil.which(binary) or Path(binary).exists()):
            missing.append(f"{binary} (Debian package {package})")
    if not Path(patroni_bin()).exists():
        missing.append(
            f"{patroni_bin()} (pip package patroni[etcd3,psycopg2-binary], installed by make run)"
        )
    if missing:
        raise LaunchError(
            "missing binaries: " + ", ".join(missing) + "; run 'make run' as root to install them"
        )
