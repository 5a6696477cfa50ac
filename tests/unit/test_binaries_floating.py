"""#17 item 2: `cluster up` requires keepalived (and curl, its check's client) only for a
topology with a floating address (deploy/binaries.py)."""

from __future__ import annotations

import sys

import pytest

from deploy import binaries
from deploy.state import NETNS_TOPOLOGY, REPO_ROOT
from deploy.topology import load_topology
from kernel.errors import LaunchError

VIP = REPO_ROOT / "deploy" / "topology.netns-vip.yaml"


def test_keepalived_is_required_only_with_a_floating_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without keepalived on the machine a floating topology is refused, naming the Debian
    package; a topology without the option does not ask for it."""
    monkeypatch.setattr(
        binaries.shutil, "which", lambda name: None if name == "keepalived" else f"/bin/{name}"
    )
    monkeypatch.setattr(binaries, "patroni_bin", lambda: sys.executable)
    assert "keepalived" not in binaries.required_binaries(load_topology(NETNS_TOPOLOGY))
    binaries.check_binaries(load_topology(NETNS_TOPOLOGY))
    assert binaries.required_binaries(load_topology(VIP))["keepalived"] == "keepalived"
    with pytest.raises(LaunchError, match=r"keepalived \(Debian package keepalived\)"):
        binaries.check_binaries(load_topology(VIP))


def test_the_install_script_installs_every_required_package() -> None:
    """`make install` (deploy/install.sh) installs the package of every binary the launcher
    may require, keepalived and curl included."""
    script = (REPO_ROOT / "deploy" / "install.sh").read_text()
    pkgs = script.split("PKGS=(", 1)[1].split(")", 1)[0].split()
    required = binaries.required_binaries(load_topology(VIP))
    assert set(required.values()) <= set(pkgs)
