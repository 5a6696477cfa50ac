"""The programs the local system runs, and a check that they are installed (by `make run`)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from deploy import configgen
from kernel.errors import LaunchError

REQUIRED_BINARIES = {
    "etcd": "etcd-server",
    "redis-server": "redis-server",
    "haproxy": "haproxy",
    f"{configgen.PG_BIN_DIR}/postgres": "postgresql-15",
}


def patroni_bin() -> str:
    """Patroni from the venv the install step built for the database user (see install.sh)."""
    marker = Path(sys.prefix) / ".patroni-venv"
    if marker.exists():
        candidate = Path(marker.read_text().strip()) / "bin" / "patroni"
        if candidate.exists():
            return str(candidate)
    return str(Path(sys.prefix) / "bin" / "patroni")


def check_binaries() -> None:
    missing = []
    for binary, package in REQUIRED_BINARIES.items():
        if not (shutil.which(binary) or Path(binary).exists()):
            missing.append(f"{binary} (Debian package {package})")
    if not Path(patroni_bin()).exists():
        missing.append(f"{patroni_bin()} (pip package patroni[etcd3], installed by make run)")
    if missing:
        raise LaunchError(
            "missing binaries: " + ", ".join(missing) + "; run 'make run' as root to install them"
        )
