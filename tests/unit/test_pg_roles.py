"""Least-privilege PostgreSQL roles (#12 item 4), pure: the pg_hba every topology generates, the
role and grant plan the bootstrap applies, the SCRAM verifiers it sets, and the secret files the
state folder keeps."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import stat
from pathlib import Path

import pytest

from deploy import configgen, pg_roles
from deploy.pg_roles import APP_USER, MONITOR_USER, OWNER_USER, REPLICATION_USER, REWIND_USER
from deploy.state import (
    CONTROL_SECRET_NAMES,
    DEFAULT_TOPOLOGY,
    NETNS_TOPOLOGY,
    REPO_ROOT,
    SECRET_NAMES,
    StateDir,
)
from deploy.topology import Topology, load_topology
from node.config import NodeConfig
from node.migrate import LEDGER_DDL

TOPOLOGIES = {
    "local": load_topology(DEFAULT_TOPOLOGY),
    "netns": load_topology(NETNS_TOPOLOGY),
    "production": load_topology(REPO_ROOT / "deploy" / "topology.production.yaml"),
}
PASSWORDS = {k: f"pw-{k}" for k in SECRET_NAMES}
VERIFIERS = {k: pg_roles.scram_verifier(v, b"0123456789abcdef") for k, v in PASSWORDS.items()}


def _hba(topo: Topology) -> list[str]:
    site = topo.data_sites[0]
    cfg = configgen.patroni_config(topo, site, Path("/rt/pg"), PASSWORDS)
    return list(cfg["postgresql"]["pg_hba"])


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_every_pg_hba_line_asks_for_a_scram_password(name: str) -> None:
    """#12 item 4: no trust, peer, ident, md5 or plain password line, on the socket or over
    TCP, in any topology; TCP lines name one /32 address each, never a network or `all`."""
    hba = _hba(TOPOLOGIES[name])
    assert hba, "pg_hba must be generated, or PostgreSQL's default (trust) would stay"
    for line in hba:
        fields = line.split()
        assert fields[-1] == "scram-sha-256", line
        assert not {"trust", "peer", "ident", "md5", "password"} & set(fields), line
        # #12 item 2: TLS on every network line, no plain `host` line at all.
        assert fields[0] in ("local", "hostssl"), line
        if fields[0] == "hostssl":
            assert fields[3].endswith("/32"), line
            assert not fields[3].startswith("0.0.0.0"), line
    assert "local all all scram-sha-256" in hba


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_each_role_may_connect_only_to_its_own_database(name: str) -> None:
    """#12 item 4: replication only to `replication`, rewind and monitoring only to
    `postgres`, the application and the owner only to the application database; only the
    superuser (Patroni, the bootstrap) may reach any database."""
    topo = TOPOLOGIES[name]
    allowed: dict[str, set[str]] = {}
    for line in _hba(topo):
        kind, database, users = line.split()[:3]
        if kind == "hostssl":
            for user in users.split(","):
                allowed.setdefault(user, set()).add(database)
    assert allowed == {
        REPLICATION_USER: {"replication"},
        REWIND_USER: {"postgres"},
        MONITOR_USER: {"postgres"},
        APP_USER: {pg_roles.APP_DATABASE},
        OWNER_USER: {pg_roles.APP_DATABASE},
        pg_roles.SUPERUSER: {"all"},
    }
    data_hosts = {f"{topo.sites[s].host}/32" for s in topo.data_sites}
    replication_from = {ln.split()[3] for ln in _hba(topo) if " replication " in ln}
    assert replication_from == data_hosts


def test_the_hub_may_run_operator_commands_but_not_replicate() -> None:
    """#12 item 4: with namespaces the hub (HAProxy, `rocars` commands) may connect as the
    superuser, owner and application, never as the replication or monitoring role."""
    topo = TOPOLOGIES["netns"]
    assert topo.namespaces is not None
    hub = f"{topo.namespaces.hub_host}/32"
    from_hub = {ln.split()[2] for ln in _hba(topo) if ln.split()[3:4] == [hub]}
    assert from_hub == {pg_roles.SUPERUSER, f"{OWNER_USER},{APP_USER}"}


def test_patroni_gets_dedicated_replication_and_rewind_users_and_scram() -> None:
    """#12 item 4: Patroni's authentication names three different users (so pg_rewind and
    replication never use the superuser), and PostgreSQL stores SCRAM verifiers."""
    cfg = configgen.patroni_config(TOPOLOGIES["local"], "A", Path("/rt/pg"), PASSWORDS)
    auth = cfg["postgresql"]["authentication"]
    users = {k: v["username"] for k, v in auth.items()}
    assert users == {
        "superuser": "postgres",
        "replication": REPLICATION_USER,
        "rewind": REWIND_USER,
    }
    assert cfg["postgresql"]["parameters"]["password_encryption"] == "scram-sha-256"


def _statements(existing: set[str]) -> list[str]:
    return [
        *pg_roles.role_statements(existing, VERIFIERS),
        pg_roles.create_database(),
        *pg_roles.database_statements(),
        *pg_roles.schema_statements(LEDGER_DDL),
    ]


@pytest.mark.parametrize("existing", [set(), {APP_USER, OWNER_USER, MONITOR_USER, REWIND_USER}])
def test_no_plan_statement_carries_a_password(existing: set[str]) -> None:
    """#12 item 4: every password reaches the server as a SCRAM verifier, so neither the
    statement nor a log line of it holds a password."""
    text = "\n".join(_statements(existing))
    for pw in PASSWORDS.values():
        assert pw not in text
    assert "PASSWORD 'SCRAM-SHA-256$4096:" in text


def test_the_roles_we_create_have_no_power_of_their_own() -> None:
    """#12 item 4: the owner, application and monitoring roles log in and are not superuser,
    may not create databases or roles, replicate or bypass row security, whether created now
    or found from an older cluster."""
    for existing in (set(), {APP_USER, OWNER_USER, MONITOR_USER}):
        for role in (APP_USER, OWNER_USER, MONITOR_USER):
            (stmt,) = [
                s
                for s in pg_roles.role_statements(existing, VERIFIERS)
                if re.match(rf"(CREATE|ALTER) ROLE {role} ", s)
            ]
            for attr in ("LOGIN", "NOSUPERUSER", "NOCREATEDB", "NOCREATEROLE", "NOREPLICATION"):
                assert f" {attr} " in stmt, (role, stmt)
            assert " NOBYPASSRLS " in stmt


def test_only_the_monitoring_role_joins_a_role_and_only_pg_monitor() -> None:
    """#12 item 4: role memberships granted are exactly pg_monitor to rocars_monitor."""
    grants = [
        s
        for s in _statements(set())
        if s.startswith("GRANT ") and " ON " not in s and not s.startswith("GRANT EXECUTE")
    ]
    assert grants == [f"GRANT pg_monitor TO {MONITOR_USER}"]


def test_the_rewind_user_gets_exactly_what_patroni_grants() -> None:
    """#12 item 4: EXECUTE on pg_ls_dir, pg_stat_file and pg_read_binary_file (both forms
    Patroni 4 grants), nothing else, and no superuser."""
    grants = [s for s in _statements(set()) if f"TO {REWIND_USER}" in s]
    assert sorted(grants) == sorted(
        f"GRANT EXECUTE ON FUNCTION pg_catalog.{f} TO {REWIND_USER}"
        for f in (
            "pg_ls_dir(text, boolean, boolean)",
            "pg_stat_file(text, boolean)",
            "pg_read_binary_file(text)",
            "pg_read_binary_file(text, bigint, bigint, boolean)",
        )
    )


def test_the_application_gets_dml_and_sequences_only_and_owns_nothing() -> None:
    """#12 item 4: everything granted to the application role is CONNECT, USAGE on the
    schema, SELECT/INSERT/UPDATE/DELETE on tables (also by default on the owner's future
    tables) and USAGE/SELECT on sequences; the database is the owner's, and whatever the
    application owned (an older cluster) is reassigned to the owner before anything else."""
    stmts = _statements(set())
    to_app = [s for s in stmts if s.endswith(f" TO {APP_USER}")]
    assert sorted(to_app) == sorted(
        [
            f"GRANT CONNECT ON DATABASE {pg_roles.APP_DATABASE} TO {APP_USER}",
            f"GRANT USAGE ON SCHEMA public TO {APP_USER}",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER_USER} IN SCHEMA public"
            f" GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {APP_USER}",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER_USER} IN SCHEMA public"
            f" GRANT USAGE, SELECT ON SEQUENCES TO {APP_USER}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_USER}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {APP_USER}",
        ]
    )
    schema = pg_roles.schema_statements(LEDGER_DDL)
    assert schema[0] == f"REASSIGN OWNED BY {APP_USER} TO {OWNER_USER}"
    assert f"REVOKE ALL ON SCHEMA public FROM PUBLIC, {APP_USER}" in schema
    assert f"REVOKE INSERT, UPDATE, DELETE ON schema_migrations FROM {APP_USER}" in schema
    assert pg_roles.create_database().endswith(f"OWNER {OWNER_USER}")
    assert f"ALTER DATABASE rocars OWNER TO {OWNER_USER}" in pg_roles.database_statements()
    assert f"REVOKE ALL ON DATABASE rocars FROM PUBLIC, {APP_USER}" in stmts


def test_the_ledger_is_created_as_the_owner_before_the_grants() -> None:
    """#12 item 4: the bootstrap creates the migration ledger as the owner role (between SET
    LOCAL ROLE and RESET ROLE) before granting on all tables, so the application can read it
    and the revoke of its writes finds it."""
    schema = pg_roles.schema_statements(LEDGER_DDL)
    i = schema.index(LEDGER_DDL)
    assert schema[i - 1] == f"SET LOCAL ROLE {OWNER_USER}"
    assert schema[i + 1] == "RESET ROLE"
    assert i < schema.index(
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_USER}"
    )


def test_the_scram_verifier_proves_the_rfc_7677_exchange() -> None:
    """#12 item 4: the verifier computed client-side is PostgreSQL's: with RFC 7677's salt
    and password its server key signs the RFC's exchange into the RFC's server signature, and
    its stored key is the hash of the client key the RFC's proof reveals."""
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    verifier = pg_roles.scram_verifier("pencil", salt)
    m = re.fullmatch(r"SCRAM-SHA-256\$4096:([^$]+)\$([^:]+):(.+)", verifier)
    assert m is not None
    assert base64.b64decode(m.group(1)) == salt
    stored_key, server_key = base64.b64decode(m.group(2)), base64.b64decode(m.group(3))
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth = (
        f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
        f"c=biws,r={nonce}"
    ).encode()
    server_sig = hmac.new(server_key, auth, "sha256").digest()
    assert base64.b64encode(server_sig).decode() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_sig = hmac.new(stored_key, auth, "sha256").digest()
    client_key = bytes(a ^ b for a, b in zip(proof, client_sig, strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_live_0600_in_a_0700_folder_with_one_password_file_per_account(
    tmp_path: Path,
) -> None:
    """#12 item 4: generated passwords and the password files (the application's, the
    owner's, the superuser's pgpass; the monitoring password alone) are 0600 in a 0700
    folder whatever the umask, and each file holds its own account's password only."""
    state = StateDir(tmp_path)
    pw = state.secrets()
    assert set(pw) == set(SECRET_NAMES)
    assert _mode(state.secrets_dir) == 0o700
    files = sorted(state.secrets_dir.iterdir())
    assert [f.name for f in files] == sorted(
        [
            "pg-monitor.password",
            "pgpass-app",
            "pgpass-owner",
            "pgpass-reader",  # #17 item 5: the read replica's read role
            "pgpass-superuser",
            "secrets.json",
            *(f"{name}.password" for name in CONTROL_SECRET_NAMES),
        ]
    )
    assert all(_mode(f) == 0o600 for f in files)
    for name in CONTROL_SECRET_NAMES:  # #12 item 3: one password per file
        assert state.secret_file(name).read_text() == pw[name]
    assert state.pg_monitor_password.read_text() == pw["monitor"]
    for account, user in pg_roles.PGPASS_ACCOUNTS.items():
        text = state.pgpass(account).read_text()
        assert text == f"*:*:*:{user}:{pw[account]}\n"
        others = [v for k, v in pw.items() if k != account]
        assert not any(o in text for o in others)
    assert state.secrets() == pw  # kept, not regenerated


def test_an_older_state_folder_keeps_its_passwords_and_gains_the_new_ones(
    tmp_path: Path,
) -> None:
    """#12 item 4: secrets.json from before (config/, four passwords, mode 0644) is moved
    into the secrets folder with its passwords unchanged (the cluster was made with them);
    the owner and monitoring passwords are added; no readable copy is left behind."""
    state = StateDir(tmp_path)
    old = {"superuser": "s", "replication": "r", "rewind": "w", "app": "a"}
    legacy = state.config / "secrets.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps(old))
    legacy.chmod(0o644)
    pw = state.secrets()
    assert {k: pw[k] for k in old} == old
    assert pw["owner"]
    assert pw["monitor"]
    assert pw["owner"] != pw["monitor"]
    assert not legacy.exists()
    assert json.loads((state.secrets_dir / "secrets.json").read_text()) == pw


def test_a_widened_secret_file_is_narrowed_again(tmp_path: Path) -> None:
    """#12 item 4: a secret file or the folder made readable by someone is put back to
    0600/0700 the next time the secrets are read (every `cluster up`)."""
    state = StateDir(tmp_path)
    state.secrets()
    state.pgpass("app").chmod(0o644)
    state.secrets_dir.chmod(0o755)
    state.secrets()
    assert _mode(state.pgpass("app")) == 0o600
    assert _mode(state.secrets_dir) == 0o700


def test_the_node_configuration_names_a_password_file_not_a_password(tmp_path: Path) -> None:
    """#12 item 4: the node's settings hold the application's password file, its DSN passes
    it as `passfile`, and no password appears in either."""
    topo = TOPOLOGIES["local"]
    state = StateDir(tmp_path)
    pw = state.secrets()
    raw = configgen.node_config(topo, "A", state_root=tmp_path)
    assert "password" not in raw["database"]
    cfg = NodeConfig.model_validate(raw)
    assert cfg.database.passfile == state.pgpass("app")
    dsn = cfg.database.conninfo(application_name="t")
    assert f"passfile={state.pgpass('app')}" in dsn
    assert not any(v in dsn or v in json.dumps(raw) for v in pw.values())
