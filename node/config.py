"""The node's settings, read from the file `rocars cluster up` generates from the topology."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kernel import names, tls
from kernel.errors import ConfigError


class DatabaseSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    port: int
    dbname: str
    user: str
    # A libpq password file (mode 0600) with this user's password: the password is read by
    # libpq when it connects and appears in no setting, DSN, argv or environment (#12 item 4).
    passfile: Path
    # The CA certificates the server's must chain to (#12 item 2): TLS with `verify-full`, so
    # the stream is encrypted and the node talks to its site's member and nobody posing as it.
    sslrootcert: Path

    def conninfo(self, *, application_name: str) -> str:
        from psycopg.conninfo import make_conninfo

        # Exactly one host: the node's own site member (never a multi-host DSN, which would
        # follow a zombie primary; DESIGN.md section 6).
        return make_conninfo(
            host=self.host,
            port=self.port,
            dbname=self.dbname,
            user=self.user,
            passfile=str(self.passfile),
            sslmode="verify-full",
            sslrootcert=str(self.sslrootcert),
            application_name=application_name,
            connect_timeout=2,
        )


class RedisAuthSettings(BaseModel):
    """Who the node is to Redis and to Sentinel (#12 item 3): an ACL user on each and the file
    (0600) holding its password; the paths are here, never the passwords."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str
    password_file: Path
    sentinel_username: str
    sentinel_password_file: Path


class NodeTls(BaseModel):
    """The node's TLS files (#12 item 2), paths into the state's pki folder: it serves HTTPS
    with `cert`/`key`, and every link it opens (etcd, Patroni, its peers) checks the server
    against `ca` and presents `client_cert`/`client_key` (its role, `rocars-node`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cert: Path
    key: Path
    ca: Path
    client_cert: Path
    client_key: Path
    # etcd's JSON gateway refuses a client certificate with a CN (deploy.pki.ETCD_CLIENT_ROLES):
    # the node shows etcd its CN-less one; None: the one above.
    etcd_client_cert: Path | None = None
    etcd_client_key: Path | None = None

    def server_context(self) -> ssl.SSLContext:
        return tls.server_context(self.cert, self.key)

    def client_context(self) -> ssl.SSLContext:
        return tls.client_context(self.ca, cert=self.client_cert, key=self.client_key)

    def etcd_context(self) -> ssl.SSLContext:
        if self.etcd_client_cert is None:
            return self.client_context()
        return tls.client_context(self.ca, cert=self.etcd_client_cert, key=self.etcd_client_key)


class RedisTlsSettings(BaseModel):
    """The node's TLS to Redis and to Sentinel (#12 item 2): the CA certificates theirs must
    chain to (and name the address dialled), and the node's client certificate and key, which
    both require."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path
    cert_file: Path
    key_file: Path


# Requests a node handles at once before it answers 503 at once (node.admission): its pool's 10
# connections plus room for requests in authentication, parsing and answering, which hold none.
# Through HAProxy a node sees fewer (the topology's entry.admission.server_maxconn).
DEFAULT_MAX_IN_FLIGHT = 24


class NodeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str
    cluster: str
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(ge=0, le=65535)
    # The FastAGI phone channel (node.phone.agi_server) on listen_host; None: no phone channel.
    phone_port: int | None = Field(default=None, ge=0, le=65535)
    state_dir: Path
    database: DatabaseSettings
    patroni_url: str
    # The file holding Patroni's REST password (0600), sent with the failover controller's
    # switchover request (#12 item 3); None: no credentials (a Patroni without authentication).
    patroni_auth_file: Path | None = None
    patroni_member: str
    patroni_namespace: str = "/service/"
    etcd_urls: list[str]
    # The node's etcd user and the file holding its password (0600), never the password itself
    # (#12 item 3, deploy.etcd_auth); None: no credentials (an etcd without authentication).
    etcd_user: str | None = None
    etcd_password_file: Path | None = None
    # The witness site's etcd member: the active node keeps etcd's raft leader there
    # (failover/etcd_placement.py). None: leave etcd's leader wherever it is.
    etcd_witness_url: str | None = None
    redis_sentinels: list[tuple[str, int]]
    redis_master_name: str = "rocars"
    # None: log in as nobody (a Redis and Sentinel without ACL users, e.g. the unit tests').
    redis_auth: RedisAuthSettings | None = None
    # None: plain TCP (only the unit tests' fakes; the generated configuration always has it).
    redis_tls: RedisTlsSettings | None = None
    # Redis socket connect/read timeout. A dead or frozen primary costs a request at most about
    # twice this; then the node skips Redis (fails open) until its probe reaches a primary.
    redis_timeout_s: float = Field(default=0.25, gt=0, le=5.0)
    # How often the node asks Sentinel for the primary and writes its heartbeat: a failover is
    # followed within this after Sentinel has promoted the replica.
    redis_probe_interval_s: float = Field(default=0.5, gt=0, le=10.0)
    # Requests per second per account (sliding window, counted in Redis); 0 switches it off.
    # Generous on purpose: it stops a runaway client, never normal traffic or the drills.
    rate_limit_per_s: int = Field(default=1000, ge=0)
    # uvloop's event loop (libuv, its own TLS transport) costs the node less CPU per request
    # than asyncio's (#11, measured by `make bench`); "asyncio" is the fallback should uvloop
    # misbehave with a driver.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    peers: dict[str, str] = {}
    # HTTPS and TLS clients (#12 item 2); None: plain HTTP (in-process tests only: the
    # generated configuration always has it).
    tls: NodeTls | None = None
    # Who may read /metrics and the detailed /health (node.control_access, #12 item 3): these
    # networks, or a caller with the key in this file (0600; the path, never the key, is here).
    monitoring_networks: list[str] = ["127.0.0.0/8"]
    monitoring_key_file: Path | None = None
    # The web pages' session secret (node.web.session), the same file content on every node so
    # a session survives a failover (0600; the path, never the secret, is here). None: a random
    # secret per process (sessions then end when the node restarts or the active site moves).
    web_session_key_file: Path | None = None
    # How often the role watcher looks at Patroni and etcd; a role change is seen within this.
    role_interval_s: float = Field(default=0.25, gt=0, le=1.0)
    # /health/live fails when the role loop has not completed for this long (frozen loop).
    liveness_stale_s: float = Field(default=5.0, gt=0)
    # Failover controller: switch the active site over when its API node stays down this long
    # (longer than the supervisor needs to restart a crashed node), at most once per interval.
    failover_grace_s: float = Field(default=6.0, gt=0)
    failover_min_interval_s: float = Field(default=300.0, gt=0)
    # Manual clearance: recommend it after this long without any successful write; switch it
    # on automatically only when the policy is enabled (off by default).
    manual_recommend_after_s: float = Field(default=60.0, gt=0)
    manual_auto_activate: bool = False
    keycache_refresh_s: float = Field(default=5.0, gt=0)
    # Overload (#11 target 3): past this many requests in progress the node answers 503 with
    # Retry-After at once; health, metrics, /v1/status and contingency are never refused.
    max_in_flight: int = Field(default=DEFAULT_MAX_IN_FLIGHT, ge=1)

    @property
    def leader_key(self) -> str:
        return names.leader_key(self.cluster, self.patroni_namespace)


def load_node_config(path: Path) -> NodeConfig:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(
            f"cannot read node configuration {path}: {exc.strerror}; "
            "run 'rocars cluster up' (or 'make run') to generate it"
        ) from exc
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
