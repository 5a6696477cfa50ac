"""`rocars backup`: take a backup, show what the repository holds, check WAL archiving (#17
item 3; deploy/backups.py does the work, deploy/backup_config.py says where everything is).

Schedule (production, systemd timers from the topology's `backups` section): a full backup
weekly (`full_schedule`) and an incremental one daily between (`incr_schedule`), each one
`rocars backup run --type full|incr` on the witness host; `repo1-retention-full` full backups
are kept with their incrementals and the WAL needed to restore to any moment since the oldest.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import cast

import click

from deploy.state import StateDir, default_state_dir
from deploy.topology import Topology

_STATE_DIR = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="State folder; default $ROCARS_STATE_DIR or ./var.",
)
_TOPOLOGY = click.option(
    "--topology",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Topology file; default: the state folder's own, else deploy/topology.yaml.",
)


def _system(state_dir: Path | None, topology: Path | None) -> tuple[StateDir, Topology]:
    from deploy import etcd_auth
    from deploy.config_files import load_state_topology

    state = StateDir((state_dir or default_state_dir()).resolve())
    topo = load_state_topology(state, topology)
    etcd_auth.use_state(topo, state)
    return state, topo


@click.group()
def backup() -> None:
    """Backups with pgBackRest: repository on the witness site, WAL archived from the primary."""
    logging.getLogger().setLevel(logging.WARNING)


@backup.command("run")
@click.option(
    "--type",
    "kind",
    type=click.Choice(["full", "incr", "diff"]),
    default="incr",
    show_default=True,
    help="full: everything; incr: what changed since the last backup; diff: since the last full."
    " With no full backup yet an incremental one is taken as full.",
)
@_TOPOLOGY
@_STATE_DIR
def backup_run(kind: str, topology: Path | None, state_dir: Path | None) -> None:
    """Take a backup of the primary now (creates the stanza first if there is none)."""
    from deploy import backups

    state, topo = _system(state_dir, topology)
    done = backups.run_backup(topo, state, cast(backups.BackupType, kind))
    b = done.backup
    click.echo(
        f"backup {b.label} ({b.type}) done in {done.seconds:.1f} s: database {b.size / 2**20:.1f}"
        f" MiB, {b.repo_size / 2**20:.1f} MiB in the repository, WAL {b.wal_start} .. {b.wal_stop}"
    )


@backup.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_TOPOLOGY
@_STATE_DIR
def backup_status(as_json: bool, topology: Path | None, state_dir: Path | None) -> None:
    """The backups in the repository (type, start and stop, size, WAL range) and the WAL
    archive's range."""
    from deploy import backups

    state, topo = _system(state_dir, topology)
    st = backups.status(topo, state)
    click.echo(json.dumps(st.as_dict(), indent=2) if as_json else st.text())


@backup.command("check")
@_TOPOLOGY
@_STATE_DIR
def backup_check(topology: Path | None, state_dir: Path | None) -> None:
    """Check the configuration, the primary, and that WAL reaches the repository now."""
    from deploy import backups

    state, topo = _system(state_dir, topology)
    click.echo(backups.check(topo, state))
