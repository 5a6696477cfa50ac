"""The database roles, the application database and their grants, brought to the shape of
deploy.pg_roles on the Patroni leader (#12 item 4): on a fresh cluster, and on one made before,
where the application role owned the database and its tables. Idempotent; `rocars cluster up`
runs it before the migrations."""

from __future__ import annotations

import secrets

import psycopg
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from deploy import pg_roles
from deploy.state import StateDir
from deploy.topology import Topology
from node.migrate import LEDGER_DDL

# Statements that carry a verifier must not be echoed to the server log, even on error.
_QUIET = (
    "SET log_statement = 'none'",
    "SET log_min_error_statement = 'panic'",
    "SET log_min_duration_statement = -1",
)


def bootstrap_database(topo: Topology, state: StateDir, leader_site: str) -> None:
    """Bring roles, database and grants to shape on the leader, retrying while the freshly
    promoted or restarted leader starts accepting connections."""
    for attempt in Retrying(
        stop=stop_after_delay(60),
        wait=wait_fixed(0.5),
        retry=retry_if_exception_type(psycopg.OperationalError),
        reraise=True,
    ):
        with attempt:
            _bootstrap_database(topo, state, leader_site)


def _connect(topo: Topology, state: StateDir, site: str, dbname: str) -> psycopg.Connection:
    s = topo.sites[site]
    assert s.postgres is not None
    state.secrets()  # the password files exist
    return psycopg.connect(
        host=s.host,
        port=s.postgres.port,
        user=pg_roles.SUPERUSER,
        passfile=str(state.pgpass("superuser")),
        dbname=dbname,
        connect_timeout=3,
        autocommit=True,
        sslmode="verify-full",  # #12 item 2, as StateDir.pg_tls says
        sslrootcert=str(state.ca_bundle),
    )


def _bootstrap_database(topo: Topology, state: StateDir, leader_site: str) -> None:
    pw = state.secrets()
    # The read role only where a read replica admits it (#17 item 5).
    reader = bool(topo.read_replica_sites)
    accounts = (
        "app",
        "owner",
        "monitor",
        "replication",
        "rewind",
        *(("reader",) if reader else ()),
    )
    verifiers = {k: pg_roles.scram_verifier(pw[k], secrets.token_bytes(16)) for k in accounts}
    with _connect(topo, state, leader_site, "postgres") as conn:
        for stmt in _QUIET:
            conn.execute(stmt)
        existing = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles").fetchall()}
        for stmt in pg_roles.role_statements(existing, verifiers):
            conn.execute(stmt.encode())
        found = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (pg_roles.APP_DATABASE,)
        ).fetchone()
        if found is None:
            conn.execute(pg_roles.create_database().encode())
        with conn.transaction():
            for stmt in pg_roles.database_statements(reader=reader):
                conn.execute(stmt.encode())
    with _connect(topo, state, leader_site, pg_roles.APP_DATABASE) as conn, conn.transaction():
        for stmt in pg_roles.schema_statements(LEDGER_DDL, reader=reader):
            conn.execute(stmt.encode())
