"""#12 item 4 on the real cluster: the API's application role owns nothing and may only read and
write the tables; migrations were applied by the owner role; the monitoring role sees
replication but not the application's data; no account logs in without its password; no
password in any process's argv or environment, in a log, or in a file anyone else may read."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from psycopg import errors

from deploy import pg_roles
from deploy.admin import leader_site
from deploy.harness import LocalCluster
from node import migrate

pytestmark = pytest.mark.integration

APP, OWNER, MONITOR = pg_roles.APP_USER, pg_roles.OWNER_USER, pg_roles.MONITOR_USER


@asynccontextmanager
async def connect(
    cluster: LocalCluster, account: str, dbname: str = pg_roles.APP_DATABASE, **kw: Any
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """An autocommit connection to the leader as `account` ("app", "owner", "superuser" by
    their password files, "monitor" by its password file)."""
    site = await leader_site(cluster.topo)
    s = cluster.topo.sites[site]
    assert s.postgres is not None
    if account == "monitor":
        auth = {"user": MONITOR, "password": cluster.state.pg_monitor_password.read_text()}
    else:
        auth = {
            "user": pg_roles.PGPASS_ACCOUNTS[account],
            "passfile": str(cluster.state.pgpass(account)),
        }
    conn = await psycopg.AsyncConnection.connect(
        host=s.host,
        port=s.postgres.port,
        dbname=dbname,
        connect_timeout=5,
        autocommit=True,
        **(cluster.state.pg_tls() | auth | kw),
    )
    async with conn:
        yield conn


REFUSED_TO_THE_APPLICATION = [
    "CREATE TABLE lp_probe (x int)",
    "CREATE TEMP TABLE lp_probe (x int)",
    "DROP TABLE consignments",
    "ALTER TABLE consignments ADD COLUMN lp_probe int",
    "CREATE INDEX lp_probe ON accounts (name)",
    "TRUNCATE audit_log",
    "CREATE ROLE lp_probe",
    "CREATE DATABASE lp_probe",
    "CREATE SCHEMA lp_probe",
    "INSERT INTO schema_migrations (version, name) VALUES (9999, 'lp_probe')",
    "SELECT setval('ccrn_seq', 1)",
]


@pytest.mark.parametrize("statement", REFUSED_TO_THE_APPLICATION)
async def test_the_application_role_may_not_change_the_schema_or_the_roles(
    cluster: LocalCluster, statement: str
) -> None:
    """#12 item 4: as the API's role, DDL on a rocars table, new tables, schemas, roles or
    databases, TRUNCATE, grants, writes to the migration ledger and moving a sequence are all
    refused with insufficient privilege (each tried in a transaction rolled back anyway)."""
    async with connect(cluster, "app") as conn:
        if statement.startswith("CREATE DATABASE"):  # not allowed in a transaction
            with pytest.raises(errors.InsufficientPrivilege):
                await conn.execute(statement.encode())
            return
        async with conn.transaction(force_rollback=True):
            with pytest.raises(errors.InsufficientPrivilege):
                await conn.execute(statement.encode())


async def test_the_application_role_reads_and_writes_and_owns_nothing(
    cluster: LocalCluster,
) -> None:
    """#12 item 4: the application role is no superuser and may not create databases or
    roles; it owns no relation, database or schema; it has exactly SELECT, INSERT, UPDATE and
    DELETE on every application table (SELECT only on the ledger) and uses the sequences."""
    async with connect(cluster, "owner") as conn:
        cur = await conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls"
            " FROM pg_roles WHERE rolname = %s",
            (APP,),
        )
        assert await cur.fetchone() == (False, False, False, False, False)
        cur = await conn.execute(
            "SELECT count(*) FROM pg_class WHERE relowner = %s::regrole", (APP,)
        )
        assert await cur.fetchone() == (0,)
        cur = await conn.execute(
            "SELECT datdba::regrole::text FROM pg_database WHERE datname = current_database()"
        )
        assert await cur.fetchone() == (OWNER,)
        cur = await conn.execute(
            "SELECT has_schema_privilege(%s, 'public', 'CREATE'),"
            " has_database_privilege(%s, current_database(), 'CREATE'),"
            " has_database_privilege(%s, current_database(), 'TEMP')",
            (APP, APP, APP),
        )
        assert await cur.fetchone() == (False, False, False)
        cur = await conn.execute(
            "SELECT c.relname, c.relkind, pg_get_userbyid(c.relowner),"
            " has_table_privilege(%(app)s, c.oid, 'SELECT'),"
            " has_table_privilege(%(app)s, c.oid, 'INSERT'),"
            " has_table_privilege(%(app)s, c.oid, 'UPDATE'),"
            " has_table_privilege(%(app)s, c.oid, 'DELETE'),"
            " has_table_privilege(%(app)s, c.oid, 'TRUNCATE')"
            " FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace"
            " AND c.relkind = 'r'",
            {"app": APP},
        )
        tables = {r[0]: r[1:] for r in await cur.fetchall()}
        cur = await conn.execute(
            "SELECT c.relname, has_sequence_privilege(%(app)s, c.oid, 'USAGE'),"
            " has_sequence_privilege(%(app)s, c.oid, 'UPDATE')"
            " FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace"
            " AND c.relkind = 'S'",
            {"app": APP},
        )
        sequences = {r[0]: r[1:] for r in await cur.fetchall()}
    assert {"consignments", "accounts", "audit_log", "schema_migrations"} <= set(tables)
    for name, (_kind, owner, *privileges) in tables.items():
        assert owner == OWNER, name
        expected = [True, False, False, False, False] if name == "schema_migrations" else None
        assert privileges == (expected or [True, True, True, True, False]), name
    assert "ccrn_seq" in sequences
    assert all(p == (True, False) for p in sequences.values()), sequences


async def test_the_owner_applied_every_migration_and_its_new_tables_serve_the_application(
    cluster: LocalCluster,
) -> None:
    """#12 item 4: the migration ledger lists every migration, applied by the owner role, and
    a table the owner creates later (as a future migration would) is readable and writable by
    the application at once, through the default privileges (rolled back afterwards)."""
    async with connect(cluster, "owner") as conn:
        cur = await conn.execute("SELECT name FROM schema_migrations ORDER BY version")
        assert [r[0] for r in await cur.fetchall()] == [m.name for m in migrate.available()]
        async with conn.transaction(force_rollback=True):
            await conn.execute("CREATE TABLE lp_future (id bigserial PRIMARY KEY, x int)")
            cur = await conn.execute(
                "SELECT has_table_privilege(%s, 'lp_future', 'INSERT'),"
                " has_table_privilege(%s, 'lp_future', 'TRUNCATE'),"
                " has_sequence_privilege(%s, 'lp_future_id_seq', 'USAGE')",
                (APP, APP, APP),
            )
            assert await cur.fetchone() == (True, False, True)
    # The nodes' check (node.background.check_schema_once) reads the ledger as the application.
    async with connect(cluster, "app") as conn:
        assert await migrate.pending(conn) == []


async def test_the_monitoring_role_sees_replication_but_not_the_application(
    cluster: LocalCluster,
) -> None:
    """#12 item 4: rocars_monitor (member of pg_monitor only) reads the walsenders' state in
    pg_stat_replication (hidden from unprivileged roles), may not connect to the application
    database, and holds no privilege on its tables."""
    async with connect(cluster, "monitor", dbname="postgres") as conn:
        cur = await conn.execute("SELECT state, sync_state FROM pg_stat_replication")
        rows = await cur.fetchall()
        assert rows, "the leader has a streaming standby"
        assert all(state is not None for state, _ in rows)
        cur = await conn.execute(
            "SELECT array_agg(b.rolname::text ORDER BY b.rolname) FROM pg_auth_members m"
            " JOIN pg_roles b ON b.oid = m.roleid WHERE m.member = %s::regrole",
            (MONITOR,),
        )
        assert await cur.fetchone() == (["pg_monitor"],)
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
        async with connect(cluster, "monitor"):
            pass
    async with connect(cluster, "owner") as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace"
            " AND c.relkind IN ('r', 'S') AND (has_table_privilege(%s, c.oid, 'SELECT')"
            " OR has_database_privilege(%s, current_database(), 'CONNECT'))",
            (MONITOR, MONITOR),
        )
        assert await cur.fetchone() == (0,)


async def test_no_account_logs_in_without_its_password(cluster: LocalCluster) -> None:
    """#12 item 4: the superuser over TCP and over the socket, without a password or with a
    wrong one, is refused; so is the application with the superuser's database."""
    site = await leader_site(cluster.topo)
    s = cluster.topo.sites[site]
    assert s.postgres is not None
    sock = str(cluster.state.member_dir(site) / "sock")
    for host in (s.host, sock):
        for password in ("", "wrong"):
            with pytest.raises(
                psycopg.OperationalError,
                match=r"no password supplied|password authentication failed",
            ):
                await psycopg.AsyncConnection.connect(
                    host=host,
                    port=s.postgres.port,
                    user="postgres",
                    dbname="postgres",
                    password=password,
                    passfile="/dev/null",
                    connect_timeout=5,
                )
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
        async with connect(cluster, "app", dbname="postgres"):
            pass


def _secrets(cluster: LocalCluster) -> list[str]:
    values = list(cluster.state.secrets().values())
    assert all(len(v) >= 16 for v in values)
    return values


# PostgreSQL's table and WAL files (they hold SCRAM verifiers, never passwords) and
# Prometheus' database: large, and written only by the server.
_SKIP_DIRS = {"base", "global", "pg_wal", "pg_xact", "pg_multixact", "pg_subtrans", "prometheus"}


def _files(*roots: Path) -> Iterator[Path]:
    """Every regular file under `roots`, but for _SKIP_DIRS; symbolic links not followed."""
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
            for name in filenames:
                path = Path(dirpath) / name
                if path.is_file() and not path.is_symlink():
                    yield path


def test_no_password_in_argv_environment_logs_or_readable_files(cluster: LocalCluster) -> None:
    """#12 item 4: no process on the machine has a password in its argv; none of the
    cluster's processes (PostgreSQL's included) has one in its environment; no log has one;
    the only files that hold one are the secrets folder (0700), Patroni's configuration and
    its password file, Redis's, Sentinel's and HAProxy's configuration (#12 item 3), each
    0600 and owned by the account that uses it."""
    secrets = _secrets(cluster)
    state = cluster.state
    roots = (str(state.root), str(state.runtime))
    ours = 0
    for proc in psutil.process_iter(["pid", "cmdline", "name"]):
        try:
            argv = " ".join(proc.info["cmdline"] or [])
            assert not any(s in argv for s in secrets), (proc.info["pid"], proc.info["name"])
            if any(r in argv for r in roots) or proc.info["name"] == "postgres":
                env = "\0".join(f"{k}={v}" for k, v in proc.environ().items())
                assert not any(s in env for s in secrets), (proc.info["pid"], argv)
                ours += 1
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    assert ours >= 10, "the cluster's processes were found"

    allowed = {state.secrets_dir}
    allowed_names = {"patroni.yaml", "pgpass"}
    holders = []
    for path in _files(state.root, state.runtime):
        try:
            text = path.read_bytes().decode(errors="replace")
        except OSError:
            continue
        if not any(s in text for s in secrets):
            continue
        holders.append(path)
        in_secrets = path.parent == state.secrets_dir
        patroni_own = path.name in allowed_names and path.parent.parent == state.runtime
        # Redis and Sentinel need the replication and Sentinel passwords in clear in their own
        # files (masterauth, auth-pass, sentinel-pass), HAProxy its stats password (#12 item 3).
        config_own = path.parent == state.config and (
            path.name == "haproxy.cfg" or path.name.startswith(("redis-", "sentinel-"))
        )
        # etcd 3.4 replicates a new user's password in clear through its raft log (3.5
        # hashes it first): the WAL holds it until purged, inside etcd's own 0700 folder.
        etcd_dir = next((p for p in path.parents if p.parent == state.data), None)
        etcd_own = etcd_dir is not None and etcd_dir.name.startswith("etcd-")
        if etcd_own:
            assert etcd_dir is not None
            assert stat.S_IMODE(etcd_dir.stat().st_mode) == 0o700, etcd_dir
        # Patroni's files belong to the account PostgreSQL runs as, which may be another.
        assert in_secrets or patroni_own or config_own or etcd_own, f"a password in {path}"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert state.pgpass("app") in holders
    assert all(stat.S_IMODE(d.stat().st_mode) == 0o700 for d in allowed)
    for site in cluster.topo.data_sites:
        member = state.member_dir(site)
        assert member / "patroni.yaml" in holders
        assert stat.S_IMODE(member.stat().st_mode) == 0o700


def test_private_keys_are_only_in_the_pki_folder_and_postgresqls_own_copy(
    cluster: LocalCluster,
) -> None:
    """#12 items 1 and 2: every TLS private key of the system is in the state's pki folder
    (0700), or in a member's tls folder (0700, PostgreSQL's and Patroni's own copy, owned by
    the account they run as); each key file (HAProxy's combined PEMs too) is 0600."""
    state = cluster.state
    keys = []
    for path in _files(state.root, state.runtime):
        try:
            text = path.read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "PRIVATE KEY-----" not in text:
            continue
        keys.append(path)
        member_copy = path.parent.name == "tls" and path.parent.parent.parent == state.runtime
        assert path.parent == state.pki or member_copy, f"a private key in {path}"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700, path.parent
        if member_copy:
            owner = path.parent.parent.stat().st_uid
            assert path.stat().st_uid == owner, path
    assert state.pki / "haproxy.pem" in keys
    assert len(keys) > len(cluster.topo.sites) * 3
