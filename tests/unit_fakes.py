"""Stand-ins shared by the unit tests: a node configuration that points nowhere, and an etcd in
memory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deploy import pki
from deploy.configgen import HaproxyTls
from deploy.host_render import Sources
from deploy.pg_roles import PGPASS_ACCOUNTS
from deploy.state import CONTROL_SECRET_NAMES, REPO_ROOT, SECRET_NAMES
from deploy.topology import Topology, load_topology, parse_topology
from kernel.errors import EtcdUnavailable
from node.config import DatabaseSettings, NodeConfig
from replication.etcd_gateway import KeyValue


def node_config(state_dir: Path, **overrides: object) -> NodeConfig:
    """Site A's node configuration with every address unreachable; `overrides` replace fields."""
    values: dict[str, object] = {
        "site": "A",
        "cluster": "rocars",
        "listen_port": 0,
        "state_dir": state_dir,
        "database": DatabaseSettings(
            host="h",
            port=1,
            dbname="d",
            user="u",
            passfile=Path("/nonexistent"),
            sslrootcert=Path("/nonexistent"),
        ),
        "patroni_url": "http://127.0.0.1:1",
        "patroni_member": "pg-A",
        "etcd_urls": ["http://127.0.0.1:1"],
        "redis_sentinels": [("127.0.0.1", 1)],
    }
    return NodeConfig.model_validate({**values, **overrides})


class MemoryEtcd:
    """The calls the contingency runtime and the node make (get, get_many, put,
    compare-and-swap). `down` makes every call fail like an etcd with no member answering;
    `races` makes that many compare-and-swaps lose, as if another writer got there first."""

    def __init__(self) -> None:
        self.data: dict[str, KeyValue] = {}
        self.revision = 0
        self.down = False
        self.races = 0

    def _check(self) -> None:
        if self.down:
            raise EtcdUnavailable("no etcd member answered (the test's etcd is down)")

    async def get(self, key: str) -> KeyValue | None:
        self._check()
        return self.data.get(key)

    async def get_many(self, keys: Sequence[str]) -> list[KeyValue | None]:
        self._check()
        return [self.data.get(k) for k in keys]

    async def put(self, key: str, value: bytes | str) -> int:
        self._check()
        self.revision += 1
        raw = value.encode() if isinstance(value, str) else value
        self.data[key] = KeyValue(key, raw, self.revision)
        return self.revision

    async def put_if(self, key: str, value: bytes | str, *, mod_revision: int) -> bool:
        self._check()
        current = self.data.get(key)
        if self.races > 0:
            self.races -= 1
            return False
        if (current.mod_revision if current else 0) != mod_revision:
            return False
        await self.put(key, value)
        return True


# HAProxy's TLS files for configuration tests (deploy.configgen.haproxy_config): paths only.
HAPROXY_TLS = HaproxyTls(
    server_pem=Path("/pki/haproxy.pem"),
    ca_bundle=Path("/pki/ca-bundle.pem"),
    client_pem=Path("/pki/client-haproxy.pem"),
)


def haproxy_tls_files(folder: Path, topo: Topology) -> HaproxyTls:
    """Real certificates for `topo` under `folder` (a private CA of the test's own), for
    tests that make HAProxy itself read its configuration (`haproxy -c` opens the files)."""
    pki_dir = pki.PkiDir(folder / "pki")
    pki.issue_all(pki_dir, pki.plan(topo))
    return HaproxyTls(
        pki_dir.combined("haproxy"), pki_dir.bundle, pki_dir.combined("client-haproxy")
    )


# The secrets a Patroni member's configuration names (deploy.configgen.patroni_config), as
# short stand-ins.
MEMBER_PASSWORDS = {
    "superuser": "su",
    "replication": "rep",
    "rewind": "rw",
    "app": "app",
    "patroni-rest": "rest",
    "etcd-patroni": "etcd",
}


def fake_sources(topo: Topology) -> Sources:
    """Every file the state folder would hold for `topo`, with recognisable contents (what
    `deploy render --host` copies onto a host: tests/unit/test_host_render*.py)."""
    files: dict[str, bytes] = {"ca-bundle.pem": b"CA BUNDLE\n", "ca.crt": b"CA\n"}
    for spec in pki.plan(topo):
        files[f"{spec.name}.crt"] = f"CERT {spec.name}\n".encode()
        files[f"{spec.name}.key"] = f"KEY {spec.name}\n".encode()
        if spec.combined_pem:
            files[f"{spec.name}.pem"] = f"CERT+KEY {spec.name}\n".encode()
    secrets = {f"pgpass-{a}": f"pgpass {a}\n".encode() for a in PGPASS_ACCOUNTS}
    secrets["pg-monitor.password"] = b"pw-monitor"
    secrets |= {f"{n}.password": f"pw-{n}".encode() for n in CONTROL_SECRET_NAMES}
    return Sources(passwords={n: f"pw-{n}" for n in SECRET_NAMES}, pki=files, secrets=secrets)


def floating_production() -> Topology:
    """The production topology with both data sites on 192.0.2.0/24 (RFC 5737) and the
    floating address 192.0.2.100 on each host's ens3."""
    raw: dict[str, Any] = load_topology(
        REPO_ROOT / "deploy" / "topology.production.yaml"
    ).model_dump()
    raw["sites"]["B"]["host"] = "192.0.2.20"
    raw["entry"]["floating"] = {"address": "192.0.2.100", "interface": "ens3", "prefix_len": 24}
    return parse_topology(raw)
