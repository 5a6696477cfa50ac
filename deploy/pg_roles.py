"""PostgreSQL roles, who may connect from where, and the grants (#12 item 4); pure: names and
addresses in, pg_hba lines and SQL text out. `deploy.database_bootstrap` applies the plan.

- `postgres` (superuser): used only by Patroni (locally, over TCP to its own member) and by the
  bootstrap; never by a node or a migration.
- `replicator` (REPLICATION) and `rewinder` (EXECUTE on the four file functions pg_rewind
  needs, in the `postgres` database): Patroni's, created by Patroni itself on bootstrap from
  `postgresql.authentication` (patroni/postgresql/bootstrap.py, post_bootstrap); the plan only
  makes sure of them on clusters bootstrapped otherwise.
- `rocars_owner`: owns the application database and every object in it; migrations run as it,
  and its default privileges let the application use what later migrations create.
- `rocars` (the application): the API nodes. Reads and writes the tables, uses the sequences,
  reads the migration ledger; owns nothing, no DDL, no CREATE on the schema, no TEMP.
- `rocars_monitor`: member of pg_monitor and nothing else, for the PostgreSQL exporter.
- `rocars_reader` (#17 item 5, only with a read replica): the officers' queries and reports;
  CONNECT to the application database and SELECT on its tables, nothing else, read-only by
  default too, and admitted by the read replica's pg_hba alone (`reader_hba_lines`), so its
  sessions never load the primary.

Every password is set as a SCRAM verifier computed here, so no statement that reaches the
server (or its log, if one fails) carries a password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

APP_DATABASE = "rocars"
APP_USER = "rocars"
OWNER_USER = "rocars_owner"
MONITOR_USER = "rocars_monitor"
READER_USER = "rocars_reader"
SUPERUSER = "postgres"
REPLICATION_USER = "replicator"
REWIND_USER = "rewinder"
# The accounts with a libpq password file in the state folder (StateDir.pgpass), by secret name.
PGPASS_ACCOUNTS = {
    "app": APP_USER,
    "owner": OWNER_USER,
    "superuser": SUPERUSER,
    "reader": READER_USER,
}

# pg_rewind's needs on the source server (Patroni grants exactly these to its rewind user).
REWIND_FUNCTIONS = (
    "pg_ls_dir(text, boolean, boolean)",
    "pg_stat_file(text, boolean)",
    "pg_read_binary_file(text)",
    "pg_read_binary_file(text, bigint, bigint, boolean)",
)
# Roles that log in and must hold no power beyond their grants.
_PLAIN = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
SCRAM_ITERATIONS = 4096

# The migration ledger (node.migrate creates it the same way when it is missing).
LEDGER_TABLE = "schema_migrations"


def hba_lines(data_hosts: Iterable[str], operator_hosts: Iterable[str]) -> list[str]:
    """pg_hba.conf: TLS (`hostssl`, #12 item 2) and SCRAM on every network line, each role only
    to its database and only from where it runs. `data_hosts`: the PostgreSQL, Patroni, node
    and exporter sites; `operator_hosts`: where
    `rocars` commands and tests run as well (the data hosts, plus the hub with namespaces)."""
    data = sorted(set(data_hosts))
    operators = sorted(set(operator_hosts) | set(data))
    # The socket: no peer or trust, so a local OS account is no database account by itself.
    # Patroni reaches its own member over TCP (use_unix_socket is off) with the password.
    lines = ["local all all scram-sha-256"]
    for host in data:
        lines += [
            f"hostssl replication {REPLICATION_USER} {host}/32 scram-sha-256",
            f"hostssl postgres {REWIND_USER} {host}/32 scram-sha-256",
            f"hostssl postgres {MONITOR_USER} {host}/32 scram-sha-256",
        ]
    for host in operators:
        lines += [
            f"hostssl all {SUPERUSER} {host}/32 scram-sha-256",
            f"hostssl {APP_DATABASE} {OWNER_USER},{APP_USER} {host}/32 scram-sha-256",
        ]
    return lines


def reader_hba_lines(hosts: Iterable[str]) -> list[str]:
    """The read role's lines, for the read replica's pg_hba only (#17 item 5): TLS and SCRAM,
    the application database, from `hosts` (where reports and operator commands run)."""
    return [
        f"hostssl {APP_DATABASE} {READER_USER} {h}/32 scram-sha-256" for h in sorted(set(hosts))
    ]


def scram_verifier(password: str, salt: bytes, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677; the same
    text `password_encryption = scram-sha-256` would produce). ASCII passwords only: PostgreSQL
    applies SASLprep, which leaves ASCII as it is, and the generated passwords are ASCII."""
    if not password.isascii():
        raise ValueError("generated passwords are ASCII")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _literal(verifier: str) -> str:
    # Verifiers hold only base64 characters, '$' and ':'; no quote can end the literal.
    assert "'" not in verifier and "\\" not in verifier
    return f"'{verifier}'"


def role_statements(existing: set[str], verifiers: dict[str, str]) -> list[str]:
    """Cluster-wide statements (run in the `postgres` database, autocommit): the roles and
    their attributes. `existing`: role names already present; `verifiers`: SCRAM verifiers by
    secret name (app, owner, monitor, replication, rewind, and reader when the topology has a
    read replica)."""
    out: list[str] = []

    def ensure(name: str, attrs: str, verifier: str, *, set_password: bool) -> None:
        if name not in existing:
            out.append(f"CREATE ROLE {name} {attrs} PASSWORD {_literal(verifier)}")
        elif set_password:
            out.append(f"ALTER ROLE {name} {attrs} PASSWORD {_literal(verifier)}")
        else:
            out.append(f"ALTER ROLE {name} {attrs}")

    # Ours: the password file is the truth, so it is set again every time.
    ensure(OWNER_USER, _PLAIN, verifiers["owner"], set_password=True)
    ensure(APP_USER, _PLAIN, verifiers["app"], set_password=True)
    ensure(MONITOR_USER, _PLAIN, verifiers["monitor"], set_password=True)
    # Patroni's: it sets their passwords on bootstrap; only their powers are checked here.
    repl = "LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS"
    ensure(REPLICATION_USER, repl, verifiers["replication"], set_password=False)
    ensure(REWIND_USER, _PLAIN, verifiers["rewind"], set_password=False)
    out += [f"GRANT EXECUTE ON FUNCTION pg_catalog.{f} TO {REWIND_USER}" for f in REWIND_FUNCTIONS]
    out.append(f"GRANT pg_monitor TO {MONITOR_USER}")
    if "reader" in verifiers:
        ensure(READER_USER, _PLAIN, verifiers["reader"], set_password=True)
        # A second lock beside the grants: its sessions start read-only.
        out.append(f"ALTER ROLE {READER_USER} SET default_transaction_read_only = on")
    return out


def create_database() -> str:
    """The application database for a fresh cluster (outside a transaction)."""
    return f"CREATE DATABASE {APP_DATABASE} OWNER {OWNER_USER}"


def database_statements(*, reader: bool = False) -> list[str]:
    """In one transaction: the application database belongs to the owner role and only the
    application (and the owner, as owner), and with `reader` the read role, may connect."""
    out = [
        f"ALTER DATABASE {APP_DATABASE} OWNER TO {OWNER_USER}",
        f"REVOKE ALL ON DATABASE {APP_DATABASE} FROM PUBLIC, {APP_USER}",
        f"GRANT CONNECT ON DATABASE {APP_DATABASE} TO {APP_USER}",
    ]
    if reader:
        out.append(f"GRANT CONNECT ON DATABASE {APP_DATABASE} TO {READER_USER}")
    return out


def schema_statements(ledger_ddl: str, *, reader: bool = False) -> list[str]:
    """Inside the application database, in one transaction: the owner owns everything (a
    cluster made before #12 item 4 had the application role own the tables), the application
    gets exactly DML on the tables and use of the sequences, now and for tables the owner's
    later migrations create, and only reads the migration ledger; with `reader`, the read role
    gets SELECT on the tables, now and later, and nothing else."""
    app, owner = APP_USER, OWNER_USER
    return [
        f"REASSIGN OWNED BY {app} TO {owner}",
        f"REVOKE ALL ON SCHEMA public FROM PUBLIC, {app}",
        f"GRANT USAGE ON SCHEMA public TO {app}",
        # The ledger exists before the grants below, owned by the owner role.
        f"SET LOCAL ROLE {owner}",
        ledger_ddl,
        "RESET ROLE",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public"
        f" GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public"
        f" GRANT USAGE, SELECT ON SEQUENCES TO {app}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app}",
        f"REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA public FROM {app}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {app}",
        f"REVOKE UPDATE ON ALL SEQUENCES IN SCHEMA public FROM {app}",
        f"REVOKE INSERT, UPDATE, DELETE ON {LEDGER_TABLE} FROM {app}",
        *(_reader_grants(owner) if reader else []),
    ]


def _reader_grants(owner: str) -> list[str]:
    r = READER_USER
    return [
        f"GRANT USAGE ON SCHEMA public TO {r}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT SELECT ON TABLES TO {r}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {r}",
    ]


# What the read role never reads (#17 item 5): reports need who did what, not how anyone logs
# in. Withheld per column, after every migration run (deploy.admin.run_migrations), since the
# default privileges above grant SELECT on each new table whole.
READER_WITHHELD: dict[str, tuple[str, ...]] = {
    "accounts": ("key_prefix", "key_hash"),
    "phone_pins": ("pin_hash",),
}


def reader_withheld_statements(table: str, columns: Iterable[str]) -> list[str]:
    """In one transaction, as the owner: the read role may select `table`'s `columns` except
    the withheld ones (READER_WITHHELD)."""
    shown = [c for c in columns if c not in READER_WITHHELD[table]]
    return [
        f"REVOKE SELECT ON {table} FROM {READER_USER}",
        f"GRANT SELECT ({', '.join(shown)}) ON {table} TO {READER_USER}",
    ]


def pgpass_line(user: str, password: str) -> str:
    """One libpq password file line for `user` on any host, port and database."""

    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace(":", "\\:")

    return f"*:*:*:{esc(user)}:{esc(password)}\n"
