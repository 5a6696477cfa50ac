"""etcd's users, roles and grants (#12 item 3), and how the operations get their credentials.

Without authentication anyone who reaches etcd can write Patroni's leader key or
`/rocars/contingency/state` (switch manual mode without an officer). With it:

- `root`: only to switch authentication on and to repair grants (the launcher's bootstrap step);
  its password lives only in the secrets folder and no process is configured with it.
- `patroni`: read-write on Patroni's namespace and nothing else.
- `rocars-node`: reads Patroni's namespace (the leader key) and the drill results it exports;
  writes only the keys the node writes (contingency state, write heartbeat, last switchover).
- `operator`: the officers' and SREs' commands: reads Patroni's namespace and the heartbeat,
  writes the contingency state (`rocars contingency`), the drill results and the last
  switchover (drills); never Patroni's keys (switchovers go through Patroni's REST API).

`plan()` is the pure part (names in, roles and grants out); `apply()` makes a cluster match it,
idempotently: what is missing is added, what is extra is revoked, a user whose password is not
the one in the secrets folder gets it, and then authentication is switched on (a no-op when on).

Operations (status, contingency, drills, readiness) run as `operator`: `use_state` tells this
module where the cluster's secrets folder is (the CLI, the launcher and the test harness call it),
and `operator_gateway` builds their gateways.

TLS (#12 item 2): etcd requires a client certificate from the system's CA on every connection
(`client-cert-auth`). Each user dials with its own role's certificate (`CERT_ROLE_OF`); the
password login still decides what the connection may do.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from deploy import control_tls
from deploy.state import DEFAULT_STATE_DIR, StateDir
from deploy.topology import Topology
from kernel.errors import LaunchError
from kernel.names import (
    CONTINGENCY_STATE_KEY,
    DRILL_RESULTS_KEY,
    LAST_SWITCHOVER_KEY,
    PATRONI_NAMESPACE,
    QUORUM_PROBE_KEY,
    WRITE_HEARTBEAT_KEY,
)
from replication.etcd_gateway import EtcdCredentials, EtcdGateway, EtcdRefused, TokenCache

log = logging.getLogger("rocars.etcd_auth")

ROOT_USER = "root"
PATRONI_USER = "patroni"
NODE_USER = "rocars-node"
OPERATOR_USER = "operator"
# The secret (deploy.state CONTROL_SECRET_NAMES) holding each user's password.
SECRET_OF = {
    ROOT_USER: "etcd-root",
    PATRONI_USER: "etcd-patroni",
    NODE_USER: "etcd-node",
    OPERATOR_USER: "etcd-operator",
}

# The client certificate (deploy.pki.ETCD_CLIENT_ROLES: without CN, which etcd's gateway
# refuses) each user's connections present.
CERT_ROLE_OF = {
    ROOT_USER: "etcd-root",
    PATRONI_USER: "patroni",
    NODE_USER: "rocars-node",
    OPERATOR_USER: control_tls.OPERATOR_ROLE,
}


def cert_of(user: str) -> str:
    """The pki file stem of `user`'s etcd client certificate."""
    return f"etcd-client-{CERT_ROLE_OF[user]}"


Perm = Literal["READ", "WRITE", "READWRITE"]


def prefix_end(prefix: str) -> str:
    """etcd's range end for "every key starting with `prefix`" (clientv3.GetPrefixRangeEnd)."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return "\0"
    raw[-1] += 1
    return raw.decode()


@dataclass(frozen=True, order=True)
class Grant:
    """`perm` on `key` alone (range_end ""), or on [key, range_end)."""

    key: str
    range_end: str
    perm: Perm

    @classmethod
    def on_key(cls, key: str, perm: Perm) -> Grant:
        return cls(key, "", perm)

    @classmethod
    def on_prefix(cls, prefix: str, perm: Perm) -> Grant:
        return cls(prefix, prefix_end(prefix), perm)


@dataclass(frozen=True)
class Role:
    name: str
    grants: frozenset[Grant]


@dataclass(frozen=True)
class AuthPlan:
    roles: tuple[Role, ...]
    users: dict[str, tuple[str, ...]]  # user -> its roles ("root" is etcd's built-in)


def plan(namespace: str = PATRONI_NAMESPACE) -> AuthPlan:
    """The roles and users the cluster must have (each role is named after its user)."""
    patroni_keys = Grant.on_prefix(namespace, "READWRITE")
    read_patroni = Grant.on_prefix(namespace, "READ")
    roles = (
        Role(PATRONI_USER, frozenset({patroni_keys})),
        Role(
            NODE_USER,
            frozenset(
                {
                    read_patroni,
                    Grant.on_key(CONTINGENCY_STATE_KEY, "READWRITE"),  # put_if (officers' calls)
                    Grant.on_key(WRITE_HEARTBEAT_KEY, "READWRITE"),  # contingency.runtime
                    Grant.on_key(LAST_SWITCHOVER_KEY, "READWRITE"),  # failover.controller
                    Grant.on_key(DRILL_RESULTS_KEY, "READ"),  # exported by node.background
                }
            ),
        ),
        Role(
            OPERATOR_USER,
            frozenset(
                {
                    read_patroni,
                    Grant.on_key(CONTINGENCY_STATE_KEY, "READWRITE"),  # rocars contingency
                    Grant.on_key(WRITE_HEARTBEAT_KEY, "READ"),  # contingency status
                    Grant.on_key(DRILL_RESULTS_KEY, "READWRITE"),  # deploy.drills.publish
                    Grant.on_key(LAST_SWITCHOVER_KEY, "READWRITE"),  # drills clear it
                    Grant.on_key(QUORUM_PROBE_KEY, "READ"),  # deploy.readiness
                }
            ),
        ),
    )
    users: dict[str, tuple[str, ...]] = {ROOT_USER: ("root",), **{r.name: (r.name,) for r in roles}}
    return AuthPlan(roles, users)


# -- credentials ------------------------------------------------------------------------------


def credentials(state: StateDir, user: str) -> EtcdCredentials | None:
    """`user`'s credentials from the secrets folder; None before the folder has them."""
    path = state.secret_file(SECRET_OF[user])
    return EtcdCredentials.from_file(user, path) if path.exists() else None


_STATES: dict[tuple[str, ...], StateDir] = {}
_TOKENS: dict[tuple[str, str], TokenCache] = {}


def use_state(topo: Topology, state: StateDir) -> None:
    """The operations on the cluster `topo` find the operator's password in `state`."""
    _STATES[tuple(topo.etcd_urls())] = state


def state_of(topo: Topology) -> StateDir | None:
    """The state folder `use_state` registered for `topo`, if any."""
    return _STATES.get(tuple(topo.etcd_urls()))


def gateway(
    session: aiohttp.ClientSession, topo: Topology, state: StateDir, user: str
) -> EtcdGateway:
    """A gateway to `topo`'s etcd as `user`; gateways of one user share their tokens, so the
    short-lived ones of status and readiness checks do not log in each time."""
    urls = topo.etcd_urls()
    tokens = _TOKENS.setdefault((",".join(urls), user), {})
    return EtcdGateway(
        session,
        urls,
        credentials=credentials(state, user),
        tokens=tokens,
        ssl=control_tls.context(state, cert_of(user)),
    )


def operator_gateway(session: aiohttp.ClientSession, topo: Topology) -> EtcdGateway:
    """A gateway as `operator` (see `use_state`); without a known state folder, the default
    one's (`var/`) credentials and certificate."""
    state = _STATES.get(tuple(topo.etcd_urls()))
    if state is None:
        log.warning("no state folder known for this cluster: using %s", DEFAULT_STATE_DIR)
        state = StateDir(DEFAULT_STATE_DIR)
    return gateway(session, topo, state, OPERATOR_USER)


# -- making a cluster match the plan ------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str | None) -> str:
    return base64.b64decode(text or "").decode()


def _perm_name(value: object) -> Perm:
    # READ is enum value 0, which the JSON gateway leaves out.
    names: dict[object, Perm] = {
        None: "READ", 0: "READ", 1: "WRITE", 2: "READWRITE",
        "READ": "READ", "WRITE": "WRITE", "READWRITE": "READWRITE",
    }  # fmt: skip
    return names[value]


def grants_of(role_get: dict[str, Any]) -> frozenset[Grant]:
    """The grants in a `/v3/auth/role/get` answer."""
    return frozenset(
        Grant(_unb64(p.get("key")), _unb64(p.get("range_end")), _perm_name(p.get("permType")))
        for p in role_get.get("perm") or []
    )


async def _exists(etcd: EtcdGateway, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return await etcd.call(path, body)
    except EtcdRefused as exc:
        if "not found" in exc.error:
            return None
        raise


async def _password_ok(etcd: EtcdGateway, user: str, password: str) -> bool:
    try:
        await etcd.call("/v3/auth/authenticate", {"name": user, "password": password})
    except EtcdRefused as exc:
        if "authentication failed" in exc.error:
            return False
        if "authentication is not enabled" in exc.error:
            return False  # cannot be checked before it is on: set it (cheap, no token churn)
        raise
    return True


async def apply(
    etcd: EtcdGateway, passwords: dict[str, str], progress: Callable[[str], None]
) -> list[str]:
    """Make the cluster match `plan()`, then switch authentication on. `etcd` logs in as root
    (while authentication is off it sends no token). Returns what it changed."""
    want = plan()
    done: list[str] = []
    for role in want.roles:
        found = await _exists(etcd, "/v3/auth/role/get", {"role": role.name})
        if found is None:
            await etcd.call("/v3/auth/role/add", {"name": role.name})
            done.append(f"added role {role.name}")
        have = grants_of(found or {})
        for g in sorted(have - role.grants):
            body = {"role": role.name, "key": _b64(g.key), "range_end": _b64(g.range_end)}
            await etcd.call("/v3/auth/role/revoke", body)
            done.append(f"revoked {g.perm} {g.key!r} from role {role.name}")
        for g in sorted(role.grants - have):
            perm = {"permType": g.perm, "key": _b64(g.key), "range_end": _b64(g.range_end)}
            await etcd.call("/v3/auth/role/grant", {"name": role.name, "perm": perm})
            done.append(f"granted {g.perm} {g.key!r} to role {role.name}")
    for user, roles in want.users.items():
        password = passwords[SECRET_OF[user]]
        found = await _exists(etcd, "/v3/auth/user/get", {"name": user})
        if found is None:
            await etcd.call("/v3/auth/user/add", {"name": user, "password": password})
            done.append(f"added user {user}")
        elif not await _password_ok(etcd, user, password):
            await etcd.call("/v3/auth/user/changepw", {"name": user, "password": password})
            done.append(f"set the password of user {user} from the secrets folder")
        have_roles = set((found or {}).get("roles") or [])
        for r in sorted(have_roles - set(roles)):
            await etcd.call("/v3/auth/user/revoke", {"name": user, "role": r})
            done.append(f"revoked role {r} from user {user}")
        for r in sorted(set(roles) - have_roles):
            await etcd.call("/v3/auth/user/grant", {"user": user, "role": r})
            done.append(f"granted role {r} to user {user}")
    await etcd.call("/v3/auth/enable", {})
    for line in done:
        progress(f"etcd auth: {line}")
    return done


async def ensure(
    session: aiohttp.ClientSession, topo: Topology, state: StateDir, progress: Callable[[str], None]
) -> list[str]:
    """The launcher's step: `apply` as root with the passwords of the secrets folder."""
    root = gateway(session, topo, state, ROOT_USER)
    try:
        return await apply(root, state.secrets(), progress)
    except EtcdRefused as exc:
        if "authentication failed" in exc.error:
            raise LaunchError(
                "etcd refuses the root password of the secrets folder "
                f"({state.secret_file(SECRET_OF[ROOT_USER])}): the cluster was set up with "
                "another one. Restore that folder, or wipe etcd's data with 'rocars cluster "
                "down --purge' (losing its state)"
            ) from exc
        raise
