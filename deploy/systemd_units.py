"""systemd unit files for one host's processes (pure: values in, text out).

deploy.host_render decides what each unit holds (its command line comes from
deploy.process_specs, the launcher's own source); this module only writes it in systemd's
syntax, so the quoting rules live in one place.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

TARGET = "rocars.target"
NETWORK = "network-online.target"
# What every unit gets (systemd.exec(5)): a read-only /usr, /boot and /etc, no home folders,
# its own /tmp, no way to gain privileges, no capabilities at all (HAProxy's bind below 1024
# and keepalived's, `Unit.capabilities`, are the exceptions), and only the socket families
# these programs use (keepalived adds its own, `Unit.address_families`).
HARDENING = (
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("ProtectClock", "yes"),
    ("ProtectHostname", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("RestrictRealtime", "yes"),
    ("RestrictNamespaces", "yes"),
    ("LockPersonality", "yes"),
    ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
)
_SAFE = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


def quote(arg: str) -> str:
    """One command-line argument as ExecStart= reads it back (systemd.service(5), "Command
    lines"): `%` (specifiers) and `$` (variables) doubled, double quotes around anything but
    plain words."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if _SAFE.fullmatch(arg):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def command_line(argv: tuple[str, ...]) -> str:
    return " ".join(quote(a) for a in argv)


def split_command_line(line: str) -> tuple[str, ...]:
    """An ExecStart= (or Environment=) value back to its words: the inverse of `command_line`,
    for running a unit's command without systemd (the namespaced rehearsal, the tests)."""
    return tuple(w.replace("%%", "%").replace("$$", "$") for w in shlex.split(line))


def entries(text: str, section: str) -> list[tuple[str, str]]:
    """A unit file's `key=value` lines of one section, in order, repeated keys kept."""
    out: list[tuple[str, str]] = []
    current = None
    for line in text.splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif current == section and "=" in line and not line.startswith(("#", ";")):
            key, value = line.split("=", 1)
            out.append((key, value))
    return out


def _assignment(key: str, value: str) -> str:
    """An Environment= entry: specifiers escaped; quoted, so spaces stay in the value."""
    text = f"{key}={value}".replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


@dataclass(frozen=True)
class Unit:
    """One service: a process of deploy.process_specs on this host."""

    name: str  # file name, e.g. rocars-etcd-A.service
    description: str
    argv: tuple[str, ...]
    user: str
    group: str
    supplementary_groups: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
    working_directory: Path | None = None
    umask: int = -1  # -1: systemd's default (0022)
    wants: tuple[str, ...] = ()  # units on this host it starts after (and pulls in)
    read_write: tuple[Path, ...] = ()  # the only paths it may write
    limit_nofile: int | None = None
    bind_below_1024: bool = False  # HAProxy on 443/80: CAP_NET_BIND_SERVICE, nothing else
    capabilities: tuple[str, ...] = ()  # keepalived: it sets addresses and sends VRRP and ARP
    address_families: tuple[str, ...] = ()  # beyond HARDENING's (keepalived: netlink, packet)
    kill_mode: str | None = None  # "process": Patroni stops PostgreSQL itself
    timeout_stop_s: int = 30


def render(unit: Unit) -> str:
    after = (NETWORK, *unit.wants)
    lines = [
        "# Rendered by `rocars deploy render`; edit the topology and render again instead.",
        "[Unit]",
        f"Description={unit.description}",
        f"Wants={' '.join(after)}",
        f"After={' '.join(after)}",
        f"PartOf={TARGET}",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={command_line(unit.argv)}",
        f"User={unit.user}",
        f"Group={unit.group}",
    ]
    if unit.supplementary_groups:
        lines.append(f"SupplementaryGroups={' '.join(unit.supplementary_groups)}")
    lines += [f"Environment={_assignment(k, v)}" for k, v in sorted(unit.environment.items())]
    if unit.working_directory is not None:
        lines.append(f"WorkingDirectory={unit.working_directory}")
    if unit.umask >= 0:
        lines.append(f"UMask={unit.umask:04o}")
    lines += [
        "Restart=on-failure",
        "RestartSec=2s",
        f"TimeoutStopSec={unit.timeout_stop_s}s",
    ]
    if unit.kill_mode is not None:
        lines.append(f"KillMode={unit.kill_mode}")
    if unit.limit_nofile is not None:
        lines.append(f"LimitNOFILE={unit.limit_nofile}")
    lines += [
        f"{k}={' '.join((v, *unit.address_families))}"
        if k == "RestrictAddressFamilies"
        else f"{k}={v}"
        for k, v in HARDENING
    ]
    if unit.read_write:
        lines.append(f"ReadWritePaths={' '.join(str(p) for p in unit.read_write)}")
    caps = " ".join(
        (*(["CAP_NET_BIND_SERVICE"] if unit.bind_below_1024 else []), *unit.capabilities)
    )
    lines += [f"CapabilityBoundingSet={caps}", f"AmbientCapabilities={caps}"]
    lines += ["", "[Install]", f"WantedBy={TARGET}", ""]
    return "\n".join(lines)


def render_target(description: str, units: tuple[str, ...]) -> str:
    """rocars.target: every unit of the host; `systemctl start rocars.target` starts them in
    their After= order."""
    return "\n".join(
        [
            "# Rendered by `rocars deploy render`.",
            "[Unit]",
            f"Description={description}",
            f"Wants={NETWORK} {' '.join(units)}",
            f"After={NETWORK}",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )
