"""Operator commands that talk to the database directly: migrations, bootstrap accounts and the
checkpoint before a planned switchover.

They find the writable member through a quorum read of Patroni's leader key in etcd, then use
that site's node configuration, so they work from any host that has the state folder.
"""

from __future__ import annotations

from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb

from deploy import etcd_auth, http_client, pg_roles
from deploy.state import StateDir
from deploy.topology import Topology
from kernel.errors import ComponentUnavailable, RocarsError
from kernel.names import leader_key, member_site
from node import migrate
from node.api.registrations import create_account
from node.config import load_node_config


async def leader_site(topo: Topology) -> str:
    async with http_client.session(topo) as session:
        gw = etcd_auth.operator_gateway(session, topo)
        kv = await gw.get(leader_key(topo.name))
    if kv is None:
        raise ComponentUnavailable(
            "no PostgreSQL leader right now (no leader key in etcd); check 'rocars cluster status'"
        )
    site = member_site(kv.value.decode())
    if site is None or site not in topo.data_sites:
        raise RocarsError(f"the leader key names {kv.value.decode()!r}, which is not a site member")
    return site


Account = Literal["app", "owner", "superuser"]


async def connect_leader(
    topo: Topology, state: StateDir, *, account: Account = "app"
) -> psycopg.AsyncConnection[Any]:
    """A connection to the leader's application database as `account` (#12 item 4): the
    application role by default, the owner role for migrations, the superuser only for
    CHECKPOINT and other maintenance (autocommit)."""
    site = await leader_site(topo)
    return await connect_member(topo, state, site, account=account, named="the leader")


async def connect_member(
    topo: Topology,
    state: StateDir,
    site: str,
    *,
    account: Account = "app",
    named: str = "the member",
) -> psycopg.AsyncConnection[Any]:
    """`connect_leader`, to the member of `site` whether it leads or not (a standby answers
    reads and SHOW); `named` is how an error calls it."""
    cfg = load_node_config(state.node_config(site))
    db = cfg.database
    if account != "app":
        user = pg_roles.PGPASS_ACCOUNTS[account]
        db = db.model_copy(update={"user": user, "passfile": state.pgpass(account)})
    try:
        return await psycopg.AsyncConnection.connect(
            db.conninfo(application_name="rocars-admin"), autocommit=account == "superuser"
        )
    except psycopg.OperationalError as exc:
        raise ComponentUnavailable(f"cannot connect to {named} on site {site}: {exc}") from exc


async def checkpoint_leader(topo: Topology, state: StateDir) -> None:
    """CHECKPOINT on the leader, just before a planned switchover."""
    conn = await connect_leader(topo, state, account="superuser")
    async with conn:
        await conn.execute("CHECKPOINT")


async def run_migrations(topo: Topology, state: StateDir) -> list[str]:
    """Apply pending migrations as the owner role, then withhold the credentials' columns from
    the read role where there is one (#17 item 5); the names applied."""
    conn = await connect_leader(topo, state, account="owner")
    async with conn:
        applied = await migrate.migrate(conn)
        await _withhold_from_reader(conn)
        return applied


async def _withhold_from_reader(conn: psycopg.AsyncConnection[Any]) -> None:
    reader = pg_roles.READER_USER
    found = await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (reader,))
    if await found.fetchone() is None:
        return
    async with conn.transaction():
        for table in pg_roles.READER_WITHHELD:
            rows = await conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
                (table,),
            )
            columns = [r[0] for r in await rows.fetchall()]
            for stmt in pg_roles.reader_withheld_statements(table, columns):
                await conn.execute(stmt.encode())


async def admin_create_account(
    topo: Topology, state: StateDir, *, kind: str, name: str, trader_kind: str | None
) -> dict[str, Any]:
    await run_migrations(topo, state)  # as the owner; the account as the application
    conn = await connect_leader(topo, state)
    async with conn, conn.transaction():
        account_id, key = await create_account(conn, kind=kind, name=name, trader_kind=trader_kind)
        await conn.execute(
            "INSERT INTO audit_log (actor, action, subject, after) VALUES"
            " ('cli:admin', 'account.create', %s, %s)",
            (f"account:{account_id}", Jsonb({"kind": kind, "name": name})),
        )
    return {"id": account_id, "kind": kind, "name": name, "api_key": key}
