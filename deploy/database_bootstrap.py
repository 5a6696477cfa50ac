"""The application's role and database, created on the Patroni leader when missing."""

from __future__ import annotations

import psycopg
from psycopg import sql
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from deploy import configgen
from deploy.state import StateDir
from deploy.topology import Topology


def bootstrap_database(topo: Topology, state: StateDir, leader_site: str) -> None:
    """Create the application role and database on the leader (idempotent), retrying while
    the freshly promoted or restarted leader starts accepting connections."""
    for attempt in Retrying(
        stop=stop_after_delay(60),
        wait=wait_fixed(0.5),
        retry=retry_if_exception_type(psycopg.OperationalError),
        reraise=True,
    ):
        with attempt:
            _bootstrap_database(topo, state, leader_site)


def _bootstrap_database(topo: Topology, state: StateDir, leader_site: str) -> None:
    site = topo.sites[leader_site]
    assert site.postgres is not None
    pw = state.secrets()
    with psycopg.connect(
        host=site.host,
        port=site.postgres.port,
        user="postgres",
        password=pw["superuser"],
        dbname="postgres",
        connect_timeout=3,
        autocommit=True,
    ) as conn:
        role = conn.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (configgen.APP_USER,)
        ).fetchone()
        if role is None:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(configgen.APP_USER), sql.Literal(pw["app"])
                )
            )
        db = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (configgen.APP_DATABASE,)
        ).fetchone()
        if db is None:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(configgen.APP_DATABASE), sql.Identifier(configgen.APP_USER)
                )
            )
