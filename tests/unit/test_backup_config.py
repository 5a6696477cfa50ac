"""#17 item 3: pgBackRest's configuration and the members' WAL archiving, generated from the
topology (deploy/backup_config.py)."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
from unit_fakes import MEMBER_PASSWORDS

from deploy import backup_config, configgen
from deploy.backup_config import BackupPaths
from deploy.state import DEFAULT_TOPOLOGY, REPO_ROOT
from deploy.topology import Backups, Topology, load_topology
from kernel.errors import ConfigError

LOCAL = load_topology(DEFAULT_TOPOLOGY)
WITH_BACKUPS = LOCAL.model_copy(update={"backups": Backups(retention_full=3)})
RUNTIME = Path("/rt")


def _conf(topo: Topology) -> configparser.ConfigParser:
    paths = BackupPaths.of(RUNTIME, topo)
    pgs = backup_config.members(topo, {s: RUNTIME / f"pg-{s}" for s in topo.data_sites})
    parser = configparser.ConfigParser()
    parser.read_string(backup_config.pgbackrest_conf(topo, paths, pgs))
    return parser


def test_the_repository_is_on_the_witness_site_not_a_database_member() -> None:
    """#17 item 3: the repository, logs and locks live in the witness site's backup folder,
    outside both members' folders."""
    g = _conf(WITH_BACKUPS)["global"]
    witness = WITH_BACKUPS.witness_site
    assert g["repo1-path"] == f"/rt/backup-{witness}/repo"
    for key in ("log-path", "lock-path", "spool-path"):
        assert g[key].startswith(f"/rt/backup-{witness}/")
    for site in WITH_BACKUPS.data_sites:
        assert not g["repo1-path"].startswith(f"/rt/pg-{site}")


def test_a_topology_can_name_the_repository_folder() -> None:
    """#17 item 3: `backups.repo_path` (production: the witness host's disk) is used as is."""
    topo = LOCAL.model_copy(update={"backups": Backups(repo_path="/srv/backups")})
    assert _conf(topo)["global"]["repo1-path"] == "/srv/backups"


def test_the_stanza_lists_both_members_primary_site_first() -> None:
    """#17 item 3: one stanza named after the cluster with both members as pg1/pg2 (data
    folder, port, socket), so a backup finds whichever is primary."""
    conf = _conf(WITH_BACKUPS)
    st = conf[WITH_BACKUPS.name]
    a, b = WITH_BACKUPS.data_sites
    for i, site in ((1, a), (2, b)):
        s = WITH_BACKUPS.sites[site]
        assert s.postgres is not None
        assert st[f"pg{i}-path"] == f"/rt/pg-{site}/data"
        assert st[f"pg{i}-socket-path"] == f"/rt/pg-{site}/sock"
        assert st[f"pg{i}-port"] == str(s.postgres.port)
        assert st[f"pg{i}-user"] == "postgres"


def test_retention_and_the_archive_queue_limit_are_set() -> None:
    """#17 item 3: full backups kept by count from the topology; WAL stops piling up in pg_wal
    past a limit when the repository is unreachable (the cluster never stops for backups)."""
    g = _conf(WITH_BACKUPS)["global"]
    assert g["repo1-retention-full"] == "3"
    assert g["repo1-retention-full-type"] == "count"
    assert g["archive-push-queue-max"] == backup_config.ARCHIVE_QUEUE_MAX


def test_each_member_archives_its_own_wal_through_pgbackrest() -> None:
    """#17 item 3: with backups, each member's Patroni config sets archive_mode on and an
    archive_command naming that member's own data folder (WAL is archived from whichever
    member is primary)."""
    for site in WITH_BACKUPS.data_sites:
        member = RUNTIME / f"pg-{site}"
        cfg = configgen.patroni_config(WITH_BACKUPS, site, member, MEMBER_PASSWORDS)
        params = cfg["postgresql"]["parameters"]
        assert params["archive_mode"] == "on"
        cmd = params["archive_command"]
        assert cmd.startswith("pgbackrest ")
        assert cmd.endswith(" archive-push %p")
        assert f"--pg1-path={member / 'data'}" in cmd
        assert f"--stanza={WITH_BACKUPS.name}" in cmd
        assert f"--config=/rt/backup-{WITH_BACKUPS.witness_site}/pgbackrest.conf" in cmd
        assert params["archive_timeout"] == "60s"


def test_without_backups_nothing_is_archived_and_nothing_changes() -> None:
    """#17 item 3: the local topology has no backups section: no archive settings at all, so
    the generated Patroni file is what it was before backups existed."""
    assert LOCAL.backups is None
    params = configgen.patroni_config(LOCAL, "A", RUNTIME / "pg-A", MEMBER_PASSWORDS)["postgresql"][
        "parameters"
    ]
    assert not {k for k in params if k.startswith("archive")}
    off = LOCAL.model_copy(update={"backups": Backups(archive=False)})
    assert backup_config.archive_parameters(off, RUNTIME / "pg-A") == {}


def test_archive_command_quotes_paths() -> None:
    """#17 item 3: a folder with a space stays one argument in the shell PostgreSQL uses."""
    paths = BackupPaths(Path("/x y/backup"), Path("/x y/backup/repo"))
    cmd = backup_config.archive_command(WITH_BACKUPS, paths, Path("/x y/pg-A/data"))
    assert "'--pg1-path=/x y/pg-A/data'" in cmd
    assert "'--config=/x y/backup/pgbackrest.conf'" in cmd


def test_a_topology_without_backups_is_refused_with_the_fix() -> None:
    """#17 item 3: asking for backup settings of a topology without them names the fix."""
    with pytest.raises(ConfigError, match=r"no backups section.*rocars cluster up"):
        backup_config.settings(LOCAL)


def test_topology_dump_is_unchanged_without_backups_and_round_trips_with_them() -> None:
    """#17 item 3: no `backups` key in the dump of a topology without it (the state copy's
    hash stays the same); with it, the section survives a dump and a parse."""
    assert "backups" not in LOCAL.model_dump()
    again = Topology.model_validate(WITH_BACKUPS.model_dump())
    assert again.backups == WITH_BACKUPS.backups


def test_production_topology_archives_and_schedules_full_and_incremental_backups() -> None:
    """#17 item 3: the production topology has backups on, a weekly full and daily
    incrementals (systemd OnCalendar expressions)."""
    prod = load_topology(REPO_ROOT / "deploy" / "topology.production.yaml")
    assert prod.backups is not None
    assert prod.backups.archive
    assert prod.backups.repo_path is not None
    plan = dict(backup_config.schedule(prod))
    assert set(plan) == {"full", "incr"}
    assert plan["full"].startswith("Sun")
    assert plan["incr"].startswith("Mon..Sat")


def test_bad_backup_settings_are_refused() -> None:
    """#17 item 3: a relative repository path or a retention of 0 is rejected by the
    topology's validation."""
    raw = LOCAL.model_dump()
    for bad, key in (
        ({"repo_path": "relative/repo"}, "repo_path"),
        ({"retention_full": 0}, "retention_full"),
    ):
        with pytest.raises(ValueError, match=key):
            Topology.model_validate({**raw, "backups": bad})
