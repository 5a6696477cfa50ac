"""#17 item 3: `rocars backup` says what went wrong and what to do, and shows what
`pgbackrest info` holds (deploy/backup_cli.py, deploy/backups.py). No process is started:
pgBackRest's runs are replaced by recorded answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from deploy import backups, cli
from deploy.backup_config import BackupPaths
from deploy.backups import BackupError, Pgbackrest
from deploy.state import DEFAULT_TOPOLOGY, DbUser
from deploy.topology import Backups, load_topology

ME = DbUser("me", os.geteuid(), os.getegid())
POSTGRES = DbUser("postgres", os.geteuid() + 1, 999)

SEG3, SEG6 = "000000010000000000000003", "000000010000000000000006"
# `pgbackrest info --output=json` of a stanza with a full and an incremental backup (2.45).
INFO = [
    {
        "archive": [
            {
                "database": {"id": 1, "repo-key": 1},
                "id": "15-1",
                "max": "000000010000000000000007",
                "min": "000000010000000000000003",
            }
        ],
        "backup": [
            {
                "archive": {
                    "start": "000000010000000000000003",
                    "stop": "000000010000000000000003",
                },
                "info": {"delta": 100, "repository": {"delta": 40, "size": 40}, "size": 100},
                "label": "20261202-021000F",
                "prior": None,
                "timestamp": {"start": 1796177400, "stop": 1796177410},
                "type": "full",
            },
            {
                "archive": {
                    "start": "000000010000000000000006",
                    "stop": "000000010000000000000006",
                },
                "info": {"delta": 7, "repository": {"delta": 3, "size": 41}, "size": 101},
                "label": "20261202-021000F_20261202-022000I",
                "prior": "20261202-021000F",
                "timestamp": {"start": 1796178000, "stop": 1796178002},
                "type": "incr",
            },
        ],
        "name": "rocars",
        "status": {"code": 0, "lock": {"backup": {"held": False}}, "message": "ok"},
    }
]
NO_STANZA = [
    {
        "archive": [],
        "backup": [],
        "name": "rocars",
        "status": {
            "code": 1,
            "lock": {"backup": {"held": False}},
            "message": "missing stanza path",
        },
    }
]


def _pgb(tmp_path: Path, user: DbUser = ME) -> Pgbackrest:
    return Pgbackrest(BackupPaths(tmp_path, tmp_path / "repo"), "rocars", user)


def _answer(
    monkeypatch: pytest.MonkeyPatch, rc: int, stdout: str = "", stderr: str = ""
) -> list[list[str]]:
    """Make pgBackRest's runs answer `rc`/`stdout`/`stderr`; returns the argv lists run."""
    calls: list[list[str]] = []

    def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, rc, stdout, stderr)

    monkeypatch.setattr("deploy.backups.shutil.which", lambda _name: "/usr/bin/pgbackrest")
    monkeypatch.setattr("deploy.backups.subprocess.run", run)
    return calls


def test_pgbackrest_runs_as_the_postgres_user_with_this_systems_config(tmp_path: Path) -> None:
    """#17 item 3: every pgBackRest command names our configuration and stanza, and runs as
    the PostgreSQL user (it owns the repository) when we are someone else."""
    argv = _pgb(tmp_path, POSTGRES).argv("backup", ["--type=incr"])
    assert argv[:4] == ["runuser", "-u", "postgres", "--"]
    assert argv[4:] == [
        "pgbackrest",
        f"--config={tmp_path / 'pgbackrest.conf'}",
        "--stanza=rocars",
        "--type=incr",
        "backup",
    ]
    assert _pgb(tmp_path).argv("check")[0] == "pgbackrest"


def test_a_failed_command_says_what_pgbackrest_said_and_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#17 item 3: a pgBackRest failure raises BackupError with its own message and a hint."""
    _answer(
        monkeypatch,
        55,
        stderr="ERROR: [055]: unable to load info file '/r/archive/rocars/archive.info'",
    )
    with pytest.raises(BackupError) as err:
        _pgb(tmp_path).run("check")
    text = str(err.value)
    assert "pgbackrest check failed" in text
    assert "archive.info" in text
    assert "rocars backup run" in text


def test_archiving_off_in_postgresql_points_at_the_topology(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#17 item 3: when PostgreSQL does not archive, the error says how to turn it on."""
    _answer(monkeypatch, 87, stderr="ERROR: [087]: archive_mode must be enabled")
    with pytest.raises(BackupError, match="needs a `backups` section"):
        _pgb(tmp_path).run("backup")


def test_a_target_in_the_backups_own_second_says_to_name_a_later_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore target no backup stopped strictly before (in whole seconds) fails with a hint
    to name a target at least a second after a backup's stop time."""
    _answer(
        monkeypatch,
        75,
        stderr="ERROR: [075]: unable to find backup set with stop time less than"
        " '2026-12-02 02:30:00.5+00:00'",
    )
    with pytest.raises(BackupError, match="at least one second after a backup's stop"):
        backups.restore(_pgb(tmp_path), tmp_path / "copy", target="2026-12-02 02:30:00.5+00:00")


def test_missing_pgbackrest_names_the_install_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#17 item 3: without the pgbackrest program the error names how to install it."""
    monkeypatch.setattr("deploy.backups.shutil.which", lambda _name: None)
    with pytest.raises(BackupError, match=r"deploy/install\.sh"):
        _pgb(tmp_path).run("info")


def test_info_lists_each_backup_with_type_times_size_and_wal() -> None:
    """#17 item 3: `backup status` shows each backup's type, start and stop, sizes, WAL range,
    and the archive's WAL range."""
    st = backups.summarize(INFO, "rocars")
    assert st.exists
    assert st.message == "ok"
    full, incr = st.backups
    assert (full.type, incr.type, incr.prior) == ("full", "incr", full.label)
    assert full.duration_s == 10
    assert (full.size, full.repo_size) == (100, 40)
    assert full.wal_start == "000000010000000000000003"
    assert (st.wal_min, st.wal_max) == ("000000010000000000000003", "000000010000000000000007")
    text = st.text()
    assert "20261202-021000F_20261202-022000I incr" in text
    assert "000000010000000000000003 .. 000000010000000000000007" in text
    doc = json.loads(json.dumps(st.as_dict()))
    assert doc["backups"][1]["type"] == "incr"


def test_status_without_a_stanza_says_how_to_make_one() -> None:
    """#17 item 3: before the first backup, status says there is no stanza and what to run."""
    for doc in (NO_STANZA, []):
        st = backups.summarize(doc, "rocars")
        assert not st.exists
        assert "no stanza yet" in st.text()
        assert "rocars backup run" in st.text()


def _topology_file(tmp_path: Path, backups_section: Backups | None) -> Path:
    topo = load_topology(DEFAULT_TOPOLOGY).model_copy(update={"backups": backups_section})
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(topo.model_dump()))
    return path


def _main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["rocars", *args])
    with pytest.raises(SystemExit) as done:
        cli.main()
    return int(done.value.code or 0)


def test_backup_run_without_a_backups_section_exits_2_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """#17 item 3: `rocars backup run` on a topology without backups exits 2 saying what to
    add and what to run, and writes nothing."""
    topo = _topology_file(tmp_path, None)
    state = tmp_path / "var"
    code = _main(monkeypatch, "backup", "run", "--topology", str(topo), "--state-dir", str(state))
    assert code == 2
    err = capsys.readouterr().err
    assert "error: topology 'rocars' has no backups section" in err
    assert "rocars cluster up" in err
    assert not state.exists()


def test_backup_run_with_archiving_off_exits_2_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """#17 item 3: with `backups.archive: false` a backup is refused before pgBackRest runs:
    it could never be made consistent."""
    calls = _answer(monkeypatch, 0)
    topo = _topology_file(tmp_path, Backups(archive=False))
    state = tmp_path / "var"
    code = _main(monkeypatch, "backup", "run", "--topology", str(topo), "--state-dir", str(state))
    assert code == 2
    assert "WAL archiving is off" in capsys.readouterr().err
    assert calls == []


def test_backup_status_prints_the_no_stanza_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#17 item 3: `rocars backup status` before any backup prints the clear message."""
    _answer(monkeypatch, 0, stdout=json.dumps(NO_STANZA))
    monkeypatch.setattr(backups, "prepare", lambda _topo, _state: _pgb(tmp_path))
    topo = _topology_file(tmp_path, Backups())
    result = CliRunner().invoke(
        cli.cli, ["backup", "status", "--topology", str(topo), "--state-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "no stanza yet" in result.output
    result = CliRunner().invoke(
        cli.cli,
        ["backup", "status", "--json", "--topology", str(topo), "--state-dir", str(tmp_path)],
    )
    assert json.loads(result.output)["code"] == backups.NO_STANZA
