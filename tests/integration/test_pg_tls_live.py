"""#12 item 2 on the real cluster: PostgreSQL speaks TLS only, to clients and to its standby."""

from __future__ import annotations

import psycopg
import pytest

from deploy import pg_roles, pki
from deploy.admin import connect_leader, leader_site
from deploy.harness import LocalCluster
from kernel.names import member_name

pytestmark = pytest.mark.integration


async def test_a_plain_connection_is_refused_even_with_the_right_password(
    cluster: LocalCluster,
) -> None:
    """#12 item 2: pg_hba has only `hostssl` lines, so a client that will not use TLS is turned
    away before authentication, whatever password it brings."""
    site = await leader_site(cluster.topo)
    s = cluster.topo.sites[site]
    assert s.postgres is not None
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry.*no encryption"):
        await psycopg.AsyncConnection.connect(
            host=s.host,
            port=s.postgres.port,
            dbname=pg_roles.APP_DATABASE,
            user=pg_roles.APP_USER,
            passfile=str(cluster.state.pgpass("app")),
            sslmode="disable",
            connect_timeout=5,
        )


async def test_a_server_certificate_from_another_ca_is_not_trusted(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """#12 item 2: clients check the server's certificate (`verify-full`), so a client given
    another CA (as it would be by anyone posing as the server) refuses to talk."""
    other = pki.PkiDir(tmp_path_factory.mktemp("other-ca") / "pki")
    pki.ensure_ca(other, label="somebody else")
    site = await leader_site(cluster.topo)
    s = cluster.topo.sites[site]
    assert s.postgres is not None
    with pytest.raises(psycopg.OperationalError, match=r"certificate verify failed"):
        await psycopg.AsyncConnection.connect(
            host=s.host,
            port=s.postgres.port,
            dbname=pg_roles.APP_DATABASE,
            user=pg_roles.APP_USER,
            passfile=str(cluster.state.pgpass("app")),
            sslmode="verify-full",
            sslrootcert=str(other.ca_cert),
            connect_timeout=5,
        )


async def test_replication_and_every_session_use_tls(cluster: LocalCluster) -> None:
    """#12 item 2: the synchronous stream to the DR site and the nodes' sessions are encrypted
    (pg_stat_ssl on the primary, read as the superuser: others see no one's address), with
    TLS 1.2 or later."""
    async with await connect_leader(cluster.topo, cluster.state, account="superuser") as db:
        rows = await (
            await db.execute(
                "SELECT a.backend_type, a.application_name, s.ssl, s.version"
                " FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)"
                " WHERE a.backend_type IN ('walsender', 'client backend')"
                " AND a.client_addr IS NOT NULL"
            )
        ).fetchall()
    walsenders = [r for r in rows if r[0] == "walsender"]
    assert walsenders, "no standby is streaming"
    assert any(r[1].startswith("rocars-node") for r in rows), rows
    plain = [r for r in rows if not r[2] or r[3] not in ("TLSv1.2", "TLSv1.3")]
    assert not plain, f"sessions without TLS 1.2+: {plain}"
    names = {r[1] for r in walsenders}
    assert names & {member_name(s) for s in ("A", "B")}, names
