"""Redis ACL users per role and Sentinel authentication (#12 item 3), without processes: the
generated redis.conf and sentinel.conf, the node's settings, the exporter's password file and
command line, and the modes of every file that holds a password. The same users against real
Redis and Sentinel: tests/integration/test_redis_acl.py."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

import pytest
import yaml

from deploy import config_files, configgen, monitoring_config, redis_acl
from deploy.pki import PkiDir
from deploy.process_specs import REWRITES_SECRETS, specs
from deploy.state import DEFAULT_TOPOLOGY, NETNS_TOPOLOGY, REPO_ROOT, SECRET_NAMES, DbUser, StateDir
from deploy.topology import Topology, load_topology
from node import ratelimit, redis_client
from node.config import NodeConfig

TOPOLOGIES = {
    "local": load_topology(DEFAULT_TOPOLOGY),
    "netns": load_topology(NETNS_TOPOLOGY),
    "production": load_topology(REPO_ROOT / "deploy" / "topology.production.yaml"),
}
PASSWORDS = {k: f"pw-{k}-{'x' * 8}" for k in SECRET_NAMES}
PKI = PkiDir(Path("/state/pki"))
REDIS_SECRETS = {u.secret for u in redis_acl.REDIS_USERS + redis_acl.SENTINEL_USERS}


def _users(text: str) -> dict[str, list[str]]:
    """The `user` lines of a generated file: name -> its rules, in order."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("user "):
            _, name, *rules = line.split()
            assert name not in out, f"user {name} declared twice"
            out[name] = rules
    return out


def _sha(secret: str) -> str:
    return "#" + hashlib.sha256(PASSWORDS[secret].encode()).hexdigest()


def _configs(topo: Topology) -> dict[str, str]:
    out = {}
    for site, s in topo.sites.items():
        out[f"sentinel-{site}"] = configgen.sentinel_config(
            topo, site, Path("/d"), PASSWORDS, pki=PKI
        )
        if s.redis is not None:
            out[f"redis-{site}"] = configgen.redis_config(
                topo, site, Path("/d"), PASSWORDS, pki=PKI
            )
    return out


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_the_default_user_is_off_with_no_password_everywhere(name: str) -> None:
    """#12 item 3: on every Redis and Sentinel of every topology the default user is off and
    has no password (a connection that does not log in can run nothing), and no user anywhere
    is `nopass` or has a password in clear."""
    for process, text in _configs(TOPOLOGIES[name]).items():
        users = _users(text)
        default = users["default"]
        assert default[:2] == ["reset", "off"], (process, default)
        assert "on" not in default, process
        assert not any(r[0] in "#>" for r in default), process
        assert "protected-mode yes" in text.splitlines(), process
        for user, rules in users.items():
            assert "nopass" not in rules, (process, user)
            assert not any(r.startswith(">") for r in rules), (process, user)
            assert not any(p in " ".join(rules) for p in PASSWORDS.values()), (process, user)


def test_each_redis_user_has_only_its_rules() -> None:
    """#12 item 3: each role's Redis user, with its own password (by SHA-256) and exactly its
    commands, keys and channels: the node its script's commands on the rate-limit counters and
    a write-only heartbeat; the replica user PSYNC/REPLCONF/PING; Sentinel what Redis's ACL
    documentation lists, on its hello channel only; the exporter read-only commands without
    CONFIG GET (it would show `masterauth`); operators everything."""
    text = configgen.redis_config(TOPOLOGIES["local"], "A", Path("/d"), PASSWORDS, pki=PKI)
    users = _users(text)
    expected = {
        "node": (
            "redis-node",
            [
                "%RW~rocars:rl:*",
                "%W~rocars:heartbeat:*",
                *["+evalsha", "+script|load", "+incrby", "+pexpire", "+get", "+set"],
            ],
        ),
        "replica": ("redis-replica", ["+psync", "+replconf", "+ping"]),
        "sentinel": (
            "redis-sentinel",
            [
                "&__sentinel__:hello",
                *[
                    "+multi",
                    "+exec",
                    "+slaveof",
                    "+ping",
                    "+subscribe",
                    "+publish",
                    "+config|rewrite",
                    "+role",
                    "+info",
                    "+client|setname",
                    "+client|kill",
                    "+script|kill",
                ],
            ],
        ),
        "monitor": (
            "redis-monitor",
            [
                "+ping",
                "+info",
                "+client|setname",
                "+latency|latest",
                "+slowlog|len",
                "+slowlog|get",
            ],
        ),
        "admin": ("redis-admin", ["~*", "&*", "+@all"]),
    }
    assert set(users) == {"default", *expected}
    for name, (secret, rules) in expected.items():
        assert users[name] == ["reset", "on", _sha(secret), *rules], name
    # Replication logs in as the replica user, on both sites (either may be a replica).
    for site in ("A", "B"):
        lines = configgen.redis_config(TOPOLOGIES["local"], site, Path("/d"), PASSWORDS, pki=PKI)
        assert "masteruser replica" in lines.splitlines()
        assert f"masterauth {PASSWORDS['redis-replica']}" in lines.splitlines()


def test_the_default_user_may_replay_only_the_rate_limit_scripts_effects() -> None:
    """Redis 7.0 replays MULTI/EXEC blocks of its append-only file as the default user (redis
    #14541): off and without a password, it may run only INCRBY, PEXPIREAT and DEL (the
    counting script's effects) on the rate-limit counters, so a restarted Redis keeps them."""
    text = configgen.redis_config(TOPOLOGIES["local"], "A", Path("/d"), PASSWORDS, pki=PKI)
    default = _users(text)["default"]
    assert default == ["reset", "off", "%RW~rocars:rl:*", "+incrby", "+pexpireat", "+del"]


def test_the_node_user_allows_every_command_its_script_calls() -> None:
    """ACL checks the commands a script runs: every `redis.call` of the node's counting script
    is among the node user's commands, and its key patterns cover the keys the node uses."""
    called = {c.lower() for c in re.findall(r"redis\.call\('(\w+)'", redis_client._COUNT_LUA)}
    assert called == {"incrby", "pexpire", "get"}
    assert called <= set(redis_client.ACL_COMMANDS)
    counter = ratelimit.counter_key(42, 7)
    assert counter.startswith(ratelimit.KEY_PREFIX + ":")
    assert f"%RW~{ratelimit.KEY_PREFIX}:*" == redis_client.RATE_LIMIT_KEYS
    assert f"%W~{redis_client.HEARTBEAT_KEY_PREFIX}*" in redis_client.ACL_KEYS


def test_sentinel_logs_in_to_redis_and_to_its_peers_and_serves_users_by_role() -> None:
    """#12 item 3: each Sentinel logs in to Redis as the sentinel user and to the other
    Sentinels as the peer user; on it the nodes may only ask where the primary is, the
    exporter only read the state, peers only what Sentinels send each other."""
    topo = TOPOLOGIES["local"]
    for site in topo.sites:
        text = configgen.sentinel_config(topo, site, Path("/d"), PASSWORDS, pki=PKI)
        lines = text.splitlines()
        monitor = lines.index("sentinel monitor rocars 127.0.0.1 16379 2")
        for line in (
            "sentinel auth-user rocars sentinel",
            f"sentinel auth-pass rocars {PASSWORDS['redis-sentinel']}",
            "sentinel sentinel-user sentinel-peer",
            f"sentinel sentinel-pass {PASSWORDS['sentinel']}",
        ):
            assert lines.index(line) > monitor, line  # they name the monitored master
        users = _users(text)
        assert set(users) == {"default", "sentinel-peer", "node", "monitor", "admin"}
        assert users["default"] == ["reset", "off"]
        assert users["sentinel-peer"][2] == _sha("sentinel")
        assert users["sentinel-peer"][3:] == [
            "&__sentinel__:hello",
            "+ping",
            "+publish",
            "+client|setname",
            "+sentinel|is-master-down-by-addr",
        ]
        assert users["node"][2:] == [
            _sha("redis-node"),
            "+sentinel|masters",
            "+sentinel|get-master-addr-by-name",
        ]
        assert users["monitor"][2] == _sha("redis-monitor")
        assert not any("failover" in r or r in ("+@all", "+sentinel") for r in users["monitor"])
        assert users["admin"][2:] == [_sha("redis-admin"), "&*", "+@all"]


def test_the_node_configuration_names_password_files_not_passwords(tmp_path: Path) -> None:
    """#12 item 3: the node's settings give its Redis and Sentinel user and the path of the
    file holding the password (0600 in the secrets folder), never the password."""
    state = StateDir(tmp_path)
    pw = state.secrets()
    for site in TOPOLOGIES["local"].data_sites:
        raw = configgen.node_config(TOPOLOGIES["local"], site, state_root=tmp_path)
        cfg = NodeConfig.model_validate(raw)
        auth = cfg.redis_auth
        assert auth is not None
        assert (auth.username, auth.sentinel_username) == ("node", "node")
        assert auth.password_file == auth.sentinel_password_file == state.secret_file("redis-node")
        assert auth.password_file.read_text() == pw["redis-node"]
        assert stat.S_IMODE(auth.password_file.stat().st_mode) == 0o600
        assert not any(v in yaml.safe_dump(raw) for v in pw.values())


def test_the_node_reads_its_password_at_each_connection(tmp_path: Path) -> None:
    """The node's credentials come from the file when a connection logs in, so a rotated
    password is used without a restart; and both its Sentinel and its Redis connections get
    them."""
    secret = tmp_path / "pw"
    secret.write_text("one\n")
    provider = redis_client.FilePassword("node", secret)
    assert provider.get_credentials() == ("node", "one")
    secret.write_text("two")
    assert provider.get_credentials() == ("node", "two")
    raw = configgen.node_config(TOPOLOGIES["local"], "A", state_root=tmp_path)
    auth = NodeConfig.model_validate(raw).redis_auth
    bus = redis_client.RedisClient([("127.0.0.1", 1)], "rocars", name="t", auth=auth)
    sentinel_login = bus._sentinel.sentinel_kwargs["credential_provider"]
    redis_login = bus._client.connection_pool.connection_kwargs["credential_provider"]
    assert isinstance(sentinel_login, redis_client.FilePassword)
    assert isinstance(redis_login, redis_client.FilePassword)
    assert (sentinel_login.username, redis_login.username) == ("node", "node")


def test_the_exporter_logs_in_as_monitor_with_a_password_file(tmp_path: Path) -> None:
    """#12 item 3: the Redis exporter runs as the monitor user with `-redis.password-file`, a
    0600 JSON map from every address Prometheus asks it to scrape (exactly as Prometheus
    sends it) to the monitor password; no password in its argv or environment."""
    topo, state = TOPOLOGIES["local"], StateDir(tmp_path)
    pw = state.secrets()
    spec = specs(topo, state)["redis-exporter"]
    path = config_files.redis_exporter_passwords(state)
    assert "-redis.user=monitor" in spec.argv
    assert f"-redis.password-file={path}" in spec.argv
    assert not any(v in " ".join(spec.argv) + json.dumps(spec.env) for v in pw.values())
    targets = [t for _s, t in monitoring_config.scrape_targets(topo)["redis"]]
    assert len(targets) == 5
    assert redis_acl.exporter_passwords(targets, pw) == dict.fromkeys(targets, pw["redis-monitor"])


def test_redis_and_sentinel_run_with_a_umask_that_keeps_rewrites_private() -> None:
    """CONFIG REWRITE (Sentinel's, after every failover) makes the file anew with mode
    0644 & ~umask: Redis and Sentinel run with umask 077, so their files stay 0600."""
    topo = TOPOLOGIES["local"]
    all_specs = specs(topo, StateDir(Path("/s")))
    for name, spec in all_specs.items():
        if name.startswith(("redis-", "sentinel-")) and name != "redis-exporter":
            assert spec.umask == REWRITES_SECRETS == 0o077, name


def test_no_redis_or_sentinel_password_in_a_file_others_can_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#12 item 3: after generating a whole state folder, Redis's and Sentinel's configuration
    and the exporter's password file are 0600, and no Redis or Sentinel password appears in
    any file its group or others can read (the topology, the node settings, Prometheus...)."""
    me = DbUser("me", os.getuid(), os.getgid())
    monkeypatch.setattr(config_files.DbUser, "current", classmethod(lambda cls: me))
    monkeypatch.setattr(StateDir, "runtime", property(lambda self: self.root / "pg"))
    state = StateDir(tmp_path / "state")
    topo = TOPOLOGIES["local"]
    config_files.write_configs(topo, state)
    pw = state.secrets()
    private = [state.config / f"sentinel-{s}.conf" for s in topo.sites]
    private += [state.config / f"redis-{s}.conf" for s in topo.data_sites]
    private.append(config_files.redis_exporter_passwords(state))
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert pw["redis-replica"] in (state.config / "redis-A.conf").read_text()
    readable = [
        p
        for p in tmp_path.rglob("*")
        if p.is_file() and not p.is_symlink() and p.stat().st_mode & 0o044
    ]
    assert readable, "the check would pass on an empty folder"
    for path in readable:
        text = path.read_text(errors="replace")
        leaked = [k for k in REDIS_SECRETS if pw[k] in text]
        assert not leaked, (path, leaked)
