"""Redis and Sentinel users by role (#12 item 3): who may run which commands on which keys.

The users, their rules and the `user` lines of redis.conf and sentinel.conf that declare them
(deploy.configgen puts them in), and `login`, a user's credentials from the state folder.

The default user is off on both, so a connection that does not log in can run nothing
(NOAUTH). A `user` line holds the password's SHA-256 (`#<hex>`), not the password; the files
still hold passwords in clear where Redis must send one (`masterauth`, Sentinel's `auth-pass`
and `sentinel-pass`), so they are 0600, and Redis and Sentinel run with umask 077 (CONFIG
REWRITE, which Sentinel runs after every failover, makes the file anew with mode
0644 & ~umask).

Each user's password is the `deploy.state` secret named in `secret`, in its own 0600 file.

Both also require TLS with a client certificate from the system's CA (#12 item 2,
deploy.configgen.redis_tls_lines): `node_tls_paths` is what the nodes present, `operator_tls`
the operators' context (`connect`), and the exporter has its own role's (`EXPORTER_ROLE`).
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from redis.asyncio import Redis

from deploy.state import StateDir
from node.redis_client import (
    ACL_COMMANDS,
    ACL_KEYS,
    RATE_LIMIT_KEYS,
    SENTINEL_ACL_COMMANDS,
    tls_redis,
)

# The channel Sentinels announce themselves on, through Redis and to each other.
SENTINEL_HELLO = "__sentinel__:hello"


@dataclass(frozen=True)
class AclUser:
    name: str
    secret: str  # the deploy.state secret holding its password
    rules: tuple[str, ...]  # after `reset on <password>`: only what is listed here is allowed

    def line(self, passwords: Mapping[str, str]) -> str:
        digest = hashlib.sha256(passwords[self.secret].encode()).hexdigest()
        return " ".join(("user", self.name, "reset", "on", f"#{digest}", *self.rules))


def _allow(*commands: str) -> tuple[str, ...]:
    return tuple(f"+{c}" for c in commands)


# Nobody logs in without a user name: the default user is off and has no password. Redis 7.0
# replays its append-only file as the default user, and checks the commands of each MULTI/EXEC
# block in it against that user's rules (redis#14541, fixed after 7.0.15): the rate-limit
# script's effects are such a block (INCRBY, PEXPIRE as PEXPIREAT, and the DEL of a counter
# found expired as it ran), which a restarted Redis would drop with "CRITICAL ... NOPERM" unless
# the default user may run them. Being off, it lends them to no connection.
AOF_REPLAY = ("incrby", "pexpireat", "del")
DEFAULT_OFF = " ".join(("user default reset off", RATE_LIMIT_KEYS, *_allow(*AOF_REPLAY)))
SENTINEL_DEFAULT_OFF = "user default reset off"  # Sentinel keeps no data

# On Redis.
NODE = AclUser("node", "redis-node", (*ACL_KEYS, *_allow(*ACL_COMMANDS)))
# A replica of either site (each may be one after a failover) syncs from the primary with this.
REPLICA = AclUser("replica", "redis-replica", _allow("psync", "replconf", "ping"))
# What Sentinel runs on Redis (Redis's ACL documentation, "ACL rules for Sentinel"), its hello
# channel only instead of all channels.
SENTINEL = AclUser(
    "sentinel",
    "redis-sentinel",
    (
        f"&{SENTINEL_HELLO}",
        *_allow(
            "multi",
            "exec",
            "slaveof",
            "ping",
            "subscribe",
            "publish",
            "config|rewrite",
            "role",
            "info",
            "client|setname",
            "client|kill",
            "script|kill",
        ),
    ),
)
# prometheus-redis-exporter 1.45 (scrape: PING, CLIENT SETNAME, INFO ALL, LATENCY LATEST,
# SLOWLOG LEN/GET). Not CONFIG GET, although its documentation lists it: that would show
# `masterauth`, the replica user's password (and with it every key through PSYNC); without it
# the exporter assumes 16 databases and loses only the redis_config_* series, which no
# dashboard or alert uses. No key is readable: no key checks are configured.
MONITOR_COMMANDS = (
    "ping",
    "info",
    "client|setname",
    "latency|latest",
    "slowlog|len",
    "slowlog|get",
)
MONITOR = AclUser("monitor", "redis-monitor", _allow(*MONITOR_COMMANDS))
# Operators (`rocars cluster status` reads INFO replication with it; maintenance by hand).
ADMIN = AclUser("admin", "redis-admin", ("~*", "&*", "+@all"))
REDIS_USERS = (NODE, REPLICA, SENTINEL, MONITOR, ADMIN)

# On Sentinel: the other Sentinels (PING, hello messages, votes), the nodes (where is the
# primary), the exporter (state of the master, its replicas and Sentinels) and operators.
SENTINEL_PEER = AclUser(
    "sentinel-peer",
    "sentinel",
    (
        f"&{SENTINEL_HELLO}",
        *_allow("ping", "publish", "client|setname", "sentinel|is-master-down-by-addr"),
    ),
)
SENTINEL_NODE = AclUser("node", "redis-node", _allow(*SENTINEL_ACL_COMMANDS))
SENTINEL_MONITOR = AclUser(
    "monitor",
    "redis-monitor",
    _allow(
        "ping",
        "info",
        "client|setname",
        "sentinel|masters",
        "sentinel|ckquorum",
        "sentinel|sentinels",
        "sentinel|slaves",
    ),
)
SENTINEL_ADMIN = AclUser("admin", "redis-admin", ("&*", "+@all"))
SENTINEL_USERS = (SENTINEL_PEER, SENTINEL_NODE, SENTINEL_MONITOR, SENTINEL_ADMIN)


def redis_acl_lines(passwords: Mapping[str, str]) -> list[str]:
    """redis.conf's users, and how this Redis logs in to the primary when it is a replica."""
    return [
        DEFAULT_OFF,
        *(u.line(passwords) for u in REDIS_USERS),
        f"masteruser {REPLICA.name}",
        f"masterauth {passwords[REPLICA.secret]}",
    ]


def sentinel_acl_lines(master: str, passwords: Mapping[str, str]) -> list[str]:
    """sentinel.conf's users, and how this Sentinel logs in to Redis and to the other
    Sentinels (after `sentinel monitor <master>`, which these name)."""
    return [
        SENTINEL_DEFAULT_OFF,
        *(u.line(passwords) for u in SENTINEL_USERS),
        f"sentinel auth-user {master} {SENTINEL.name}",
        f"sentinel auth-pass {master} {passwords[SENTINEL.secret]}",
        f"sentinel sentinel-user {SENTINEL_PEER.name}",
        f"sentinel sentinel-pass {passwords[SENTINEL_PEER.secret]}",
    ]


def exporter_passwords(targets: list[str], passwords: Mapping[str, str]) -> dict[str, str]:
    """The exporter's `-redis.password-file`: the monitor user's password for each target
    address exactly as Prometheus passes it (`redis://host:port`); 1.45 looks it up by that
    string and logs in with `-redis.user` and it."""
    return {t: passwords[MONITOR.secret] for t in targets}


class Login(TypedDict):
    """redis-py's keyword arguments for logging in as a user."""

    username: str
    password: str


def login(state: StateDir, user: AclUser) -> Login:
    """`user`'s login (on Redis, or the Sentinel user of that name), the password read from
    its file in `state`'s secrets folder."""
    return {"username": user.name, "password": state.secret_file(user.secret).read_text().strip()}


# The client certificates (deploy.pki.CLIENT_ROLES) presented to Redis and Sentinel.
NODE_ROLE = "rocars-node"
OPERATOR_ROLE = "rocars-admin"
EXPORTER_ROLE = "redis-exporter"


def node_tls_paths(state: StateDir) -> dict[str, str]:
    """The node's `redis_tls` settings (node.config.RedisTlsSettings): the CA bundle and its
    client certificate and key, by path."""
    return {
        "ca_file": str(state.ca_bundle),
        "cert_file": str(state.pki / f"client-{NODE_ROLE}.crt"),
        "key_file": str(state.pki / f"client-{NODE_ROLE}.key"),
    }


def operator_tls(state: StateDir) -> ssl.SSLContext:
    """The operators' TLS context for Redis and Sentinel: the system's CA, their certificate."""
    return state.tls_client(OPERATOR_ROLE)


def connect(
    state: StateDir, host: str, port: int, *, user: AclUser | None = ADMIN, **kwargs: Any
) -> Redis:
    """A client of one Redis or Sentinel at host:port over TLS with the operators'
    certificate, logged in as `user` (None: as nobody); `kwargs` are the connection's."""
    if user is not None:
        kwargs = {**kwargs, **login(state, user)}
    return tls_redis(host, port, operator_tls(state), **kwargs)
