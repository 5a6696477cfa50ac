"""#17 item 3: the restore drill's cut of a history at the recorded time T, and the restored
copy's server settings (deploy/drills/restore.py); pure, no process."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

from deploy.drills import restore
from deploy.drills.history import History
from deploy.drills.restore import Mark, Scratch


def _history() -> tuple[History, dict[str, int]]:
    """Four operations around a mark bracketed by t=10 (sent) and t=11 (answered):
    acknowledged before, in flight across it, invoked inside the bracket, invoked after."""
    times = iter([1.0, 2.0, 9.0, 12.0, 10.5, 13.0, 14.0, 15.0])
    h = History(clock=lambda: next(times), wall=itertools.count(1000).__next__)
    ids = {}
    ids["before"] = h.invoke(1, 7, "submit", "k-before", {})
    h.complete(ids["before"], "ok", result={"ccrn": "X"})
    ids["across"] = h.invoke(2, 7, "submit", "k-across", {})
    h.complete(ids["across"], "ok", result={"ccrn": "Y"})
    ids["inside"] = h.invoke(3, 7, "submit", "k-inside", {})
    ids["after"] = h.invoke(4, 7, "submit", "k-after", {})
    h.complete(ids["inside"], "ok", result={"ccrn": "Z"})
    h.complete(ids["after"], "ok", result={"ccrn": "W"})
    return h, ids


MARK = Mark(10.0, 11.0, datetime(2026, 12, 2, 2, 30, 0, 5, tzinfo=UTC))


def test_only_writes_acknowledged_before_t_must_be_present() -> None:
    """#17 item 3: an operation acknowledged before the mark's send time is required in the
    copy; ones in flight across the bracket stay open (either way, at most once)."""
    h, ids = _history()
    cut = restore.split(h, MARK)
    ops = {op.id: op for op in cut.before.operations()}
    assert ops[ids["before"]].type == "ok"
    assert ops[ids["across"]].type == "info"  # acknowledged after T was read
    assert ops[ids["inside"]].type == "info"  # invoked while T was being read
    assert ids["after"] not in ops
    assert cut.acknowledged == 1
    assert cut.in_flight == 2


def test_writes_invoked_after_t_must_be_absent() -> None:
    """#17 item 3: an operation invoked after the mark's answer must not be in the copy."""
    h, ids = _history()
    assert [op.id for op in restore.split(h, MARK).after] == [ids["after"]]


def test_the_target_is_the_primarys_clock_with_microseconds_and_offset() -> None:
    """#17 item 3: recovery_target_time gets the primary's reading to the microsecond, in UTC."""
    assert MARK.target_text == "2026-12-02 02:30:00.000005+00:00"


def test_the_restored_copy_never_archives_and_uses_its_own_access_rules() -> None:
    """#17 item 3: the copy's settings override the restored member's: archiving off (it must
    not push its timeline into the system's archive), its own port, socket, pg_hba, no
    synchronous standby to wait for."""
    scratch = Scratch(Path("/scratch/restore"))
    opts = dict(o.split("=", 1) for o in restore.server_options(scratch, 40123))
    assert opts["archive_mode"] == "off"
    assert opts["port"] == "40123"
    assert opts["listen_addresses"] == "127.0.0.1"
    assert opts["unix_socket_directories"] == "/scratch/restore/sock"
    assert opts["hba_file"] == "/scratch/restore/pg_hba.conf"
    assert opts["synchronous_standby_names"] == ""
    assert "scram-sha-256" in restore.RESTORE_HBA
    assert "trust" not in restore.RESTORE_HBA


def test_t_must_fall_in_a_later_whole_second_than_the_backups_stop() -> None:
    """pgBackRest picks a backup whose stop time is strictly earlier than T in whole seconds:
    a backup that stopped at 02:30:00.9 serves a T from 02:30:01 on, not one at 02:30:00.95
    (CI once failed "unable to find backup set with stop time less than T" that way)."""
    stop = datetime(2026, 12, 2, 2, 30, 0, 900_000, tzinfo=UTC)
    assert restore.earliest_target(stop) == datetime(2026, 12, 2, 2, 30, 1, tzinfo=UTC)
    assert restore.earliest_target(stop.replace(microsecond=0)) == restore.earliest_target(stop)


def test_the_mark_is_read_again_until_the_primarys_clock_reaches_the_earliest_t() -> None:
    """The drill reads T again while the primary's clock is still in the backup's second, and
    keeps the first reading at or past the earliest T."""
    earliest = datetime(2026, 12, 2, 2, 30, 1, tzinfo=UTC)
    readings = [earliest - timedelta(milliseconds=30), earliest, earliest + timedelta(seconds=1)]
    reads: list[Mark] = []

    async def read() -> Mark:
        mark = Mark(float(len(reads)), float(len(reads)), readings[len(reads)])
        reads.append(mark)
        return mark

    mark = asyncio.run(restore.mark_after(read, earliest))
    assert mark.target == earliest
    assert len(reads) == 2
