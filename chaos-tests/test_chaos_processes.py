"""#14 item 3: process and disk faults on the PostgreSQL members of a chaos cluster, each under
the recorded history workload and checked afterwards by the history checker: PostgreSQL frozen
(SIGSTOP, then SIGCONT) on the primary, and the standby's disk full.

Each test first proves its fault took effect (a fact seen from outside: a primary that no
longer answers, a standby that stopped confirming), so none can pass by breaking nothing. The
cluster is the chaos suite's (chaos_cluster.py), with each member's folder on a small
loop-mounted file system of its own (chaos_proc_volume.py) so a test can fill it. The
scenario runner (`Run`, `_check`) is test_chaos_links.py's, imported: that module defines only
fixtures, helpers and tests, nothing runs when it is imported. A clock jump on one node is not
tested: README_SCENARIOS.md says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chaos_cluster
import chaos_proc_volume
import chaos_report
import psutil
import psycopg
import pytest
import yaml
from chaos_proc_volume import Volume
from test_chaos_links import QUIET_S, Run, _check, _leaders, _other, _sync_streams

from deploy import processes, readiness
from deploy.drills import scenarios
from deploy.drills.checker import CheckReport
from deploy.drills.fault_context import Context
from deploy.drills.workload import WorkloadAccounts, make_accounts, recording
from deploy.harness import LocalCluster
from kernel.names import member_name

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
VOLUME_MB = 1024  # each member's folder: its data and WAL (about 130 MB in these tests)
FREEZE_S = 8.0  # well below Patroni's ttl (20 s)
FULL_S = 8.0  # the standby's disk stays full this long once the fault is seen


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalCluster, dict[str, Volume]]]:
    """A chaos cluster whose members' folders are each on a volume of their own, mounted
    before `up` (the launcher then chowns and chmods them); the cluster stopped and deleted,
    the volumes unmounted and their images deleted afterwards, also when anything fails.
    chaos_cluster.running with a hook between `create` and `up`."""
    root = tmp_path_factory.mktemp("chaos-processes")
    c = chaos_cluster.create(root)
    with contextlib.ExitStack() as stack:
        # Last out: the runtime folder, whose mount points the cluster's purge cannot remove.
        stack.callback(shutil.rmtree, c.state.runtime, ignore_errors=True)
        volumes = {
            site: stack.enter_context(
                chaos_proc_volume.mounted(
                    root / f"volume-{site}.img", c.state.member_dir(site), size_mb=VOLUME_MB
                )
            )
            for site in c.topo.data_sites
        }
        try:
            c.up()
            yield c, volumes
        finally:
            c.close()


@pytest.fixture(scope="module")
def chaos(cluster: tuple[LocalCluster, dict[str, Volume]]) -> LocalCluster:
    return cluster[0]


@pytest.fixture
def volumes(cluster: tuple[LocalCluster, dict[str, Volume]]) -> Iterator[dict[str, Volume]]:
    """Each data site's volume, emptied of any filler after the test, also when it fails."""
    try:
        yield cluster[1]
    finally:
        for v in cluster[1].values():
            v.free()


@pytest.fixture
def accounts(chaos: LocalCluster) -> WorkloadAccounts:
    """Fresh accounts for each scenario: the checker counts every record of its accounts."""
    return asyncio.run(make_accounts(chaos.topo, chaos.state))


@pytest.fixture
def settled(chaos: LocalCluster) -> str:
    """The cluster settled before the test (a serving leader, a streaming synchronous
    standby); the leader's site."""
    return asyncio.run(chaos_cluster.settled(chaos))


async def _sql(c: LocalCluster, site: str, query: str, *, timeout: float = 3.0) -> list[Any]:
    """`query`'s rows on `site`'s PostgreSQL, as the superuser; TimeoutError past `timeout`."""
    pg = c.topo.sites[site].postgres
    assert pg is not None

    async def rows() -> list[Any]:
        async with await psycopg.AsyncConnection.connect(
            host=c.topo.sites[site].host,
            port=pg.port,
            user="postgres",
            password=c.state.secrets()["superuser"],
            dbname="postgres",
            connect_timeout=2,
            autocommit=True,
            sslmode="verify-full",  # as StateDir.pg_tls says
            sslrootcert=str(c.state.ca_bundle),
        ) as conn:
            return await (await conn.execute(query)).fetchall()

    return await asyncio.wait_for(rows(), timeout)


def _thaw(ctx: Context) -> None:
    for pid in ctx.frozen:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).resume()


@pytest.mark.slow
async def test_postgres_frozen_on_the_primary_stalls_writes_and_loses_nothing(
    chaos: LocalCluster, accounts: WorkloadAccounts, settled: str, tmp_path: Path
) -> None:
    """#14 item 3 (SIGSTOP/SIGCONT of PostgreSQL): the primary's postmaster and every one of
    its processes frozen for 8 s (below ttl): the primary answers nothing, no write is
    acknowledged meanwhile, and after SIGCONT the same postmaster (Patroni neither restarted
    nor demoted it: its loop waits on its own query to PostgreSQL, the leader key it renewed
    before the freeze outlives it) takes writes again, the standby (whose WAL receiver timed
    out meanwhile) streams as synchronous standby again, the leader never changed, and nothing
    acknowledged is lost or doubled."""
    run = Run("freeze-postgres")
    primary = settled
    ctx = Context(chaos.topo, chaos.state, primary, _other(chaos, primary), frozen=[])
    postmaster = scenarios._postmaster(ctx, primary)
    assert postmaster is not None

    async def writable() -> bool:
        return await readiness.accepts_writes(chaos.topo, chaos.state, primary)

    async with recording(chaos.topo, accounts, run.history, settings=run.settings):
        await asyncio.sleep(QUIET_S)
        start = time.monotonic()
        try:
            scenarios._freeze_tree(ctx, postmaster)
            run.measured["frozen_processes"] = len(ctx.frozen)
            assert postmaster in ctx.frozen
            assert len(ctx.frozen) > 5  # the postmaster, its auxiliaries and backends

            async def all_stopped() -> bool:  # SIGSTOP lands when each is next scheduled
                states = {psutil.Process(p).status() for p in ctx.frozen}
                return states == {psutil.STATUS_STOPPED}

            await chaos_cluster.poll("every PostgreSQL process stopped", all_stopped, timeout=3)
            # From outside: the primary answers no query.
            with pytest.raises((TimeoutError, psycopg.OperationalError)):
                await _sql(chaos, primary, "SELECT 1", timeout=3.0)
            await asyncio.sleep(max(0.0, start + FREEZE_S - time.monotonic()))
        finally:
            _thaw(ctx)
        run.fault = (start, time.monotonic())
        run.measured["writable_again_s"] = round(
            await chaos_cluster.poll("the primary taking writes again", writable, timeout=30), 2
        )
        run.measured["sync_streams_again_s"] = round(
            await chaos_cluster.poll(
                "the standby streaming as synchronous standby again",
                lambda: _sync_streams(chaos, primary),
                timeout=60,
            ),
            2,
        )
        await asyncio.sleep(QUIET_S)
    report = await _check(chaos, run, tmp_path)
    chaos_report.record(run.name, report, notes=run.measured)
    print(f"[measure] chaos {run.name}: {run.measured}")
    # Nothing can commit on a frozen primary: no write acknowledged during the freeze (after
    # the answers already on their way at its start).
    a, b = run.fault
    assert [
        op.kind for op in run.history.operations() if op.type == "ok" and a + 1 < op.end < b
    ] == []
    assert report.worst_gap() >= FREEZE_S - 2
    assert _leaders(run) == {member_name(primary)}
    assert scenarios._postmaster(ctx, primary) == postmaster, "PostgreSQL was restarted"
    assert await chaos_cluster.leader(chaos) == primary


async def _replication(c: LocalCluster, primary: str) -> dict[str, Any]:
    """The primary's view of its standbys: synchronous_standby_names, and each walsender's
    state, sync state and flush lag in bytes."""
    rows = await _sql(
        c,
        primary,
        "SELECT current_setting('synchronous_standby_names'), application_name, state,"
        " sync_state, pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn)::bigint"
        " FROM (SELECT 1) one LEFT JOIN pg_stat_replication ON true",
    )
    return {
        "sync_names": rows[0][0] if rows else None,
        "senders": [tuple(r[1:]) for r in rows if r[1] is not None],
    }


async def _streams_to(c: LocalCluster, primary: str, standby: str) -> bool:
    """The primary has a walsender streaming to `standby` (the primary's own view: the
    standby on a full disk refuses new connections, "could not write init file")."""
    senders = (await _replication(c, primary))["senders"]
    return any(name == member_name(standby) and state == "streaming" for name, state, *_ in senders)


def _pg_log(c: LocalCluster, site: str) -> str:
    """`site`'s PostgreSQL log files (the state folder's link to them), concatenated."""
    folder = c.state.logs / f"postgresql-{site}"
    return "".join(p.read_text(errors="replace") for p in sorted(folder.glob("*.log")))


async def _lsn(c: LocalCluster, site: str, function: str) -> int:
    """`function()`'s WAL position on `site`, in bytes."""
    rows = await _sql(c, site, f"SELECT pg_wal_lsn_diff({function}(), '0/0')::bigint")
    return int(rows[0][0])


@dataclass
class DiskFull:
    """What the disk-full fault left: when the primary had lost its stream to the standby,
    when the volume was freed again, and the primary's view of its standbys polled meanwhile."""

    stream_lost: float = 0.0
    freed: float = 0.0
    trace: list[tuple[float, dict[str, Any]]] = field(default_factory=list)


async def _standby_disk_full(
    chaos: LocalCluster,
    vol: Volume,
    accounts: WorkloadAccounts,
    run: Run,
    primary: str,
    *,
    settled_view: Callable[[dict[str, Any]], bool],
) -> DiskFull:
    """The standby's volume filled by its database user under the recorded workload, kept
    full for FULL_S once the primary has lost its stream and its view of the standbys
    satisfies `settled_view`, then freed; returns once the standby has replayed past the
    primary's position at that moment and streams as synchronous standby again."""
    standby = _other(chaos, primary)
    out = DiskFull()

    async def stream_lost() -> bool:
        return not await _streams_to(chaos, primary, standby)

    async def view_settled() -> bool:
        facts = await _replication(chaos, primary)
        out.trace.append((round(time.monotonic() - run.fault[0], 1), facts))
        return settled_view(facts)

    async with recording(chaos.topo, accounts, run.history, settings=run.settings):
        await asyncio.sleep(QUIET_S)
        start = time.monotonic()
        run.fault = (start, start)
        try:
            run.measured["filled_mb"] = vol.fill() >> 20
            assert vol.free_bytes() < 1 << 20
            # The standby's next WAL segment cannot be created: switch segments now rather
            # than after up to 16 MB of the workload's WAL.
            await _sql(chaos, primary, "SELECT pg_switch_wal()")
            run.measured["stream_lost_s"] = round(
                await chaos_cluster.poll(
                    "the primary losing its stream to the standby", stream_lost, timeout=30
                ),
                2,
            )
            out.stream_lost = time.monotonic()
            run.measured["sync_view_s"] = round(
                await chaos_cluster.poll(
                    "the primary's view of its standbys settling", view_settled, timeout=30
                ),
                2,
            )
            full_until = time.monotonic() + FULL_S
            while time.monotonic() < full_until:  # the fault's length; its view traced
                await view_settled()
                await asyncio.sleep(0.5)
            assert vol.free_bytes() < 1 << 20, "the volume is no longer full"
            assert not await _streams_to(chaos, primary, standby), "streaming on a full disk"
        finally:
            vol.free()
        out.freed = time.monotonic()
        run.fault = (start, out.freed)
        healed_at = await _lsn(chaos, primary, "pg_current_wal_lsn")

        async def caught_up() -> bool:
            return await _lsn(chaos, standby, "pg_last_wal_replay_lsn") >= healed_at

        run.measured["caught_up_s"] = round(
            await chaos_cluster.poll("the standby catching up", caught_up, timeout=120), 2
        )
        run.measured["sync_back_s"] = round(
            await chaos_cluster.poll(
                "the standby streaming as synchronous standby again",
                lambda: _sync_streams(chaos, primary),
                timeout=120,
            ),
            2,
        )
        await asyncio.sleep(QUIET_S)
    for t, facts in out.trace:
        print(f"[trace] {t:6.1f}s {facts}")
    # The cause, in the standby's own words: its WAL receiver could not create a segment.
    run.measured["enospc_log_lines"] = _pg_log(chaos, standby).count("No space left on device")
    assert run.measured["enospc_log_lines"] > 0, "the standby never logged a full disk"
    return out


async def _checked_same_leader(
    chaos: LocalCluster, run: Run, tmp_path: Path, primary: str
) -> CheckReport:
    """The checker's report on `run` (recorded for `make chaos`'s summary with what was
    measured), after asserting that the leader stayed `primary` throughout and after."""
    report = await _check(chaos, run, tmp_path)
    chaos_report.record(run.name, report, notes=run.measured)
    print(f"[measure] chaos {run.name}: {run.measured}")
    assert _leaders(run) == {member_name(primary)}
    assert await chaos_cluster.leader(chaos) == primary
    return report


@pytest.mark.slow
async def test_standby_disk_full_drops_it_from_sync_and_it_catches_up_when_freed(
    chaos: LocalCluster,
    volumes: dict[str, Volume],
    accounts: WorkloadAccounts,
    settled: str,
    tmp_path: Path,
) -> None:
    """#14 item 3 (disk full on the standby's data directory), with the default
    `synchronous_mode_strict: false`: the synchronous standby's volume filled by its database
    user. Its WAL receiver fails on the next WAL segment it must create and stops; the
    primary's commits wait for it only until Patroni (1 s loop) takes it off
    synchronous_standby_names, after which the primary acknowledges writes alone (the standby,
    no longer the synchronous one, cannot be promoted, so a failover cannot lose them: README,
    "Synchronous replication: strict or not"). The leader never changes; once the space is
    freed the standby replays past the primary's position at that moment and is the
    streaming synchronous standby again; nothing acknowledged is lost or doubled."""
    run = Run("standby-disk-full")
    primary = settled
    standby = _other(chaos, primary)
    standby_pm = processes.postmaster_pid(chaos.state.member_dir(standby) / "data")
    fault = await _standby_disk_full(
        chaos,
        volumes[standby],
        accounts,
        run,
        primary,
        settled_view=lambda facts: facts["sync_names"] == "",
    )
    dropped = fault.stream_lost + run.measured["sync_view_s"]
    alone = [op for op in run.history.operations() if dropped < op.start and op.end < fault.freed]
    assert all(facts["sync_names"] == "" for _, facts in fault.trace[-3:])
    run.measured["acked_without_sync"] = sum(op.type == "ok" for op in alone)
    run.measured["standby_restarted"] = (
        processes.postmaster_pid(chaos.state.member_dir(standby) / "data") != standby_pm
    )
    await _checked_same_leader(chaos, run, tmp_path, primary)
    assert run.measured["acked_without_sync"] > 0, "the primary stopped taking writes"


@pytest.mark.slow
async def test_standby_disk_full_under_strict_mode_acknowledges_nothing_until_it_is_back(
    chaos: LocalCluster,
    volumes: dict[str, Volume],
    accounts: WorkloadAccounts,
    settled: str,
    tmp_path: Path,
) -> None:
    """#14 item 3, the issue's own wording ("the primary must not acknowledge writes it cannot
    replicate") as a topology choice: `patroni.synchronous_mode_strict: true` set on the
    running cluster by `rocars cluster up` with the changed topology file (Patroni's
    PATCH /config). The same disk-full fault: Patroni keeps a standby required
    (synchronous_standby_names never empty), so no write is acknowledged from shortly after
    the stream is lost until the space is freed (the clients time out: info, never ok); then
    the waiting commits complete, writes flow again, and the checker finds every acknowledged
    write and no duplicate. `cluster up` with the original file sets strict off again."""
    run = Run("standby-disk-full-strict")
    primary = settled
    standby = _other(chaos, primary)
    doc = yaml.safe_load(chaos.topology_file.read_text())
    doc["patroni"]["synchronous_mode_strict"] = True
    strict_file = tmp_path / "topology-strict.yaml"
    strict_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        said = chaos.rocars(
            "cluster", "up", "--topology", str(strict_file), "--state-dir", str(chaos.state.root)
        )
        assert "set Patroni's synchronous_mode_strict as the topology says" in said, said
        fault = await _standby_disk_full(
            chaos,
            volumes[standby],
            accounts,
            run,
            primary,
            settled_view=lambda facts: bool(facts["sync_names"]),
        )
    finally:
        said = chaos.up()
    assert "set Patroni's synchronous_mode_strict as the topology says" in said, said
    blocked = [
        op
        for op in run.history.operations()
        if fault.stream_lost + 1.0 < op.end < fault.freed and op.type == "ok"
    ]
    report = await _checked_same_leader(chaos, run, tmp_path, primary)
    assert [(op.kind, op.end - fault.stream_lost) for op in blocked] == []
    assert report.worst_gap() >= FULL_S - 2
    assert all(facts["sync_names"] for _, facts in fault.trace), "no standby was required"
