"""#17 item 5: a read replica added from the topology file, on a cluster of its own (site B has
`read_replica`). It streams from its own site's member, the officers' read role reads what the
API wrote there and can write nothing, and a switchover leaves it a replica that follows the
new primary, never the leader nor a synchronous standby.

Each test runs on loopback and on the namespaced topology (each site in a network namespace of
its own, commands from the hub), one cluster per variant (about 45 s each): `slow`, run with the
drills."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from apikit import Api, submit, until

from deploy import netns, pg_roles
from deploy.harness import TEST_PORT_OFFSETS, LocalCluster
from kernel.names import member_name, read_replica_key

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPLICA = member_name(read_replica_key("B"))


@pytest.fixture(scope="module", params=["loopback", "netns"])
def replica_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    """A running cluster whose site B has a read replica, on loopback or with each site in a
    namespace of its own (namespaces rrepl-*); stopped and deleted afterwards."""
    root: Path = tmp_path_factory.mktemp(f"read-replica-{request.param}")
    prefix = "rrepl" if request.param == "netns" else None
    with LocalCluster.running(
        root,
        port_offset=TEST_PORT_OFFSETS["read-replica"],
        namespace_prefix=prefix,
        read_replica=True,
    ) as c:
        yield c


def _hub(c: LocalCluster) -> str | None:
    """Where clients and operators run: the hub namespace, if the topology has one."""
    return c.topo.namespaces.hub() if c.topo.namespaces is not None else None


def _connect(c: LocalCluster, account: str, port: int, site: str = "B") -> psycopg.Connection[Any]:
    """A TLS session from the hub to `site`'s host as `account` (its password file), to
    `port`."""
    with netns.inside(_hub(c)):
        return psycopg.connect(
            host=c.topo.sites[site].host,
            port=port,
            user=pg_roles.PGPASS_ACCOUNTS[account],
            passfile=str(c.state.pgpass(account)),
            dbname=pg_roles.APP_DATABASE,
            sslmode="verify-full",
            sslrootcert=str(c.state.ca_bundle),
            connect_timeout=3,
            autocommit=True,
        )


def _replica_port(c: LocalCluster) -> int:
    return c.topo.read_replica("B").postgres.port


async def _on_replica(c: LocalCluster, ccrn: str) -> bool | None:
    def probe() -> bool | None:
        with _connect(c, "reader", _replica_port(c)) as conn:
            row = conn.execute("SELECT 1 FROM consignments WHERE ccrn = %s", (ccrn,)).fetchone()
        return row is not None or None

    return await asyncio.to_thread(probe)


async def _submit_one(c: LocalCluster, key: str) -> str:
    """A consignment submitted through HAProxy; its CCRN. (setns moves this thread, so the
    connection opened while awaiting is the hub's.)"""
    with netns.inside(_hub(c)):
        async with c.session(timeout=aiohttp.ClientTimeout(total=30)) as session:
            doc = await submit(Api(session, c.topo.entry_url().rstrip("/")), key)
    return str(doc["ccrn"])


def _members(c: LocalCluster) -> dict[str, dict[str, Any]]:
    _code, doc = c.status()
    return {m["name"]: m for m in doc["postgres"]["members"]}


def _upstream_port(c: LocalCluster) -> int:
    """The port the replica's WAL receiver streams from (as the superuser: the receiver's
    address is visible to privileged roles only)."""
    with _connect(c, "superuser", _replica_port(c)) as conn:
        row = conn.execute("SELECT sender_port FROM pg_stat_wal_receiver").fetchone()
    assert row is not None, "the replica has no WAL receiver"
    return int(row[0])


def _sync_names(c: LocalCluster, site: str) -> str:
    port = c.topo.sites[site].postgres
    assert port is not None
    with _connect(c, "superuser", port.port, site) as conn:
        row = conn.execute("SHOW synchronous_standby_names").fetchone()
    assert row is not None
    return str(row[0])


async def test_replica_streams_reads_and_refuses_writes(replica_cluster: LocalCluster) -> None:
    """The replica is listed by `cluster status` as a streaming replica with a lag, streams
    from site B's member (cascading), shows a consignment written through the API, and the
    read role holds SELECT alone, on the replica alone."""
    c = replica_cluster
    members = _members(c)
    assert members[REPLICA]["role"] == "replica", members
    assert members[REPLICA]["state"] == "streaming", members
    assert isinstance(members[REPLICA]["lag_bytes"], int), members
    assert members[member_name("B")]["role"] == "sync_standby", members
    b_port = c.topo.sites["B"].postgres
    assert b_port is not None
    assert _upstream_port(c) == b_port.port

    _id, key = c.create_account("trader", f"replica trader {uuid.uuid4().hex[:8]}")
    ccrn = await _submit_one(c, key)
    await until(f"consignment {ccrn} on the read replica", lambda: _on_replica(c, ccrn), 30)

    with _connect(c, "reader", _replica_port(c)) as conn:
        granted = conn.execute(
            "SELECT DISTINCT privilege_type FROM information_schema.role_table_grants"
            " WHERE grantee = %s",
            (pg_roles.READER_USER,),
        ).fetchall()
        assert {r[0] for r in granted} == {"SELECT"}
        assert conn.execute("SELECT count(name) FROM accounts").fetchone() is not None
        for table, column in (("accounts", "key_hash"), ("phone_pins", "pin_hash")):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT {column} FROM {table}".encode())
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("DELETE FROM consignments WHERE ccrn = %s", (ccrn,))
    # Only the replica's pg_hba admits the read role: reports never load the primary.
    a_port = c.topo.sites["A"].postgres
    assert a_port is not None
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
        _connect(c, "reader", a_port.port, "A").close()


async def test_after_a_switchover_the_replica_follows_and_is_never_promoted(
    replica_cluster: LocalCluster,
) -> None:
    """`rocars failover switchover --to B` makes pg-B the leader with pg-A its synchronous
    standby; the replica stays a streaming replica, out of synchronous_standby_names, and
    shows what is written after the switchover."""
    c = replica_cluster
    c.rocars("failover", "switchover", "--to", "B", "--state-dir", str(c.state.root))

    async def settled() -> dict[str, dict[str, Any]] | None:
        members = await asyncio.to_thread(_members, c)
        replica = members.get(REPLICA, {})
        ok = (
            members.get(member_name("B"), {}).get("role") == "leader"
            and members.get(member_name("A"), {}).get("role") == "sync_standby"
            and replica.get("role") == "replica"
            and replica.get("state") == "streaming"
        )
        return members if ok else None

    await until("pg-B leading with pg-A in sync and the replica streaming", settled, 60)
    assert "replica" not in _sync_names(c, "B")
    _id, key = c.create_account("trader", f"replica trader {uuid.uuid4().hex[:8]}")
    ccrn = await _submit_one(c, key)
    await until(f"consignment {ccrn} on the read replica", lambda: _on_replica(c, ccrn), 30)
    _code, doc = c.status()
    assert doc["postgres"]["leader"] == member_name("B")


async def test_a_rolling_postgresql_upgrade_restarts_the_replica_too(
    replica_cluster: LocalCluster,
) -> None:
    """#17 items 4 and 5: `rocars upgrade --no-nodes` (a PostgreSQL minor upgrade) restarts
    the read replica as well, last (it runs the same binaries, and cascades from pg-B, whose
    own restart breaks its stream), waits until it streams again, and leaves it a streaming
    replica that sees new writes."""
    c = replica_cluster
    out = c.rocars("upgrade", "--no-nodes", "--state-dir", str(c.state.root), timeout=600)
    assert "restart the read replica pg-B-replica" in out, out
    assert "restarted the read replica pg-B-replica" in out, out
    members = await asyncio.to_thread(_members, c)
    assert members[REPLICA]["role"] == "replica", members
    assert members[REPLICA]["state"] == "streaming", members
    _id, key = c.create_account("trader", f"replica trader {uuid.uuid4().hex[:8]}")
    ccrn = await _submit_one(c, key)
    await until(f"consignment {ccrn} on the read replica", lambda: _on_replica(c, ccrn), 30)
