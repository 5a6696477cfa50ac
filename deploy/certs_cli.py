"""`rocars certs`: the private CA and every certificate (deploy/pki.py says what and why).

`issue` and `list` touch only files in the state folder. `rotate` then makes a running system
use the new files (deploy/cert_reload.py: reloads where the component allows, one-at-a-time
restarts where it does not), so a rotation is finished when the command returns; `--files-only`
leaves that to a later `rocars certs reload`. Applying is the default because a rotation whose
files are not loaded is a trap: the system runs on with the old certificates, and the next CA
rotation step is safe only once every component has loaded the previous one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from deploy.state import StateDir, default_state_dir

if TYPE_CHECKING:
    from deploy import cert_reload, pki
    from deploy.topology import Topology

_STATE_DIR = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="State folder (the CA lives in its pki/); default $ROCARS_STATE_DIR or ./var.",
)
_TOPOLOGY = click.option(
    "--topology",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Topology file; default: the state folder's own, else deploy/topology.yaml.",
)
_CA_CERT = click.option(
    "--ca-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Your own (production) CA's certificate, used instead of a generated CA.",
)
_CA_KEY = click.option(
    "--ca-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="That CA's unencrypted PEM key; it is used where it is, never copied.",
)


class CertsError(click.ClickException):
    """A PKI problem, said with what to do; exit status 2 like the other `rocars` errors."""

    exit_code = 2


def _setup(state_dir: Path | None, topology: Path | None) -> tuple[pki.PkiDir, Topology]:
    from deploy import pki
    from deploy.config_files import load_state_topology

    state = StateDir((state_dir or default_state_dir()).resolve())
    return pki.PkiDir(state.pki), load_state_topology(state, topology)


def _external(ca_cert: Path | None, ca_key: Path | None) -> pki.ExternalCa | None:
    from deploy import pki

    if (ca_cert is None) != (ca_key is None):
        raise click.UsageError("give both --ca-cert and --ca-key (your CA's certificate and key)")
    if ca_cert is None or ca_key is None:
        return None
    return pki.ExternalCa(ca_cert, ca_key)


@click.group()
def certs() -> None:
    """The private CA and the certificates of every process and client role."""


@certs.command("issue")
@_CA_CERT
@_CA_KEY
@_TOPOLOGY
@_STATE_DIR
def issue_cmd(
    ca_cert: Path | None, ca_key: Path | None, topology: Path | None, state_dir: Path | None
) -> None:
    """Create the CA (or adopt yours) and every certificate that is missing or no longer
    right; what is there and right is kept, keys included (safe to rerun)."""
    from deploy import pki

    folder, topo = _setup(state_dir, topology)
    try:
        report = pki.issue_all(
            folder, pki.plan(topo), external=_external(ca_cert, ca_key), label=topo.name
        )
    except pki.PkiError as exc:
        raise CertsError(str(exc)) from exc
    click.echo(f"issued: {', '.join(report.issued) or 'nothing (all present)'}")
    click.echo(f"kept:   {', '.join(report.kept) or 'nothing'}")
    click.echo(f"trust:  {folder.bundle}")


_FILES_ONLY = click.option(
    "--files-only",
    is_flag=True,
    help="Only write the files; do not tell the running components (run 'reload' later).",
)


def _apply(state_dir: Path | None, topo: Topology, change: cert_reload.Change) -> None:
    """Make the running system use the files, one line per component."""
    from deploy import cert_reload

    state = StateDir((state_dir or default_state_dir()).resolve())
    if not cert_reload.running(topo, state):
        click.echo("the system is not running: it uses the new files when it starts")
        return
    try:
        cert_reload.apply_sync(topo, state, change, click.echo)
    except cert_reload.ReloadError as exc:
        raise CertsError(
            f"{exc}\nThe new files are in place; the components listed above use them. Fix "
            "the cause, then run 'rocars certs reload"
            f"{' --trust' if change is cert_reload.Change.TRUST else ''}' to finish."
        ) from exc


@certs.command("reload")
@click.option("--trust", is_flag=True, help="The CA bundle changed (after --ca/--drop-old-ca).")
@_TOPOLOGY
@_STATE_DIR
def reload_cmd(trust: bool, topology: Path | None, state_dir: Path | None) -> None:
    """Make every running component use the certificate files as they are now (what
    'rotate' does after writing them); safe to rerun."""
    from deploy import cert_reload

    _, topo = _setup(state_dir, topology)
    _apply(state_dir, topo, cert_reload.Change.TRUST if trust else cert_reload.Change.LEAVES)


@certs.command("rotate")
@click.option("--ca", "new_ca", is_flag=True, help="Make a new CA; old and new both trusted.")
@click.option(
    "--drop-old-ca", is_flag=True, help="Trust only the current CA (the last rotation step)."
)
@_FILES_ONLY
@_CA_CERT
@_CA_KEY
@_TOPOLOGY
@_STATE_DIR
def rotate_cmd(
    new_ca: bool,
    drop_old_ca: bool,
    files_only: bool,
    ca_cert: Path | None,
    ca_key: Path | None,
    topology: Path | None,
    state_dir: Path | None,
) -> None:
    """Reissue every certificate with new keys from the current CA; with --ca, start a CA
    rotation instead (deploy/pki.py has the steps); then make the running system use them."""
    from deploy import cert_reload, pki

    if new_ca and drop_old_ca:
        raise click.UsageError("--ca starts a CA rotation and --drop-old-ca ends one: pick one")
    external = _external(ca_cert, ca_key)
    if external is not None and not new_ca:
        raise click.UsageError("--ca-cert/--ca-key go with --ca (a rotation to your new CA)")
    folder, topo = _setup(state_dir, topology)
    try:
        if new_ca:
            pki.rotate_ca(folder, external=external, label=topo.name)
            click.echo(f"new CA in {folder.ca_cert}; {folder.bundle} trusts the new and old CAs")
            nxt = (
                f"give API clients the new {folder.bundle.name} (their trust must include the "
                "new CA before any server presents it), then 'rocars certs rotate', then "
                "'rocars certs rotate --drop-old-ca'"
            )
        elif drop_old_ca:
            pki.drop_old_ca(folder)
            click.echo(f"{folder.bundle} trusts only {folder.ca_cert}")
            nxt = ""
        else:
            names = pki.rotate_leaves(folder, pki.plan(topo))
            click.echo(f"reissued {len(names)} certificates: {', '.join(names)}")
            nxt = ""
    except pki.PkiError as exc:
        raise CertsError(str(exc)) from exc
    change = cert_reload.Change.TRUST if new_ca or drop_old_ca else cert_reload.Change.LEAVES
    if files_only:
        trust = " --trust" if change is cert_reload.Change.TRUST else ""
        click.echo(f"next: 'rocars certs reload{trust}' makes the running system use them")
    else:
        _apply(state_dir, topo, change)
    if nxt:
        click.echo(f"next: {nxt}")


@certs.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@_TOPOLOGY
@_STATE_DIR
def list_cmd(as_json: bool, topology: Path | None, state_dir: Path | None) -> None:
    """Every certificate with its subject, names, expiry and days left."""
    from deploy import pki

    folder, topo = _setup(state_dir, topology)
    try:
        rows = pki.inventory(folder, pki.plan(topo))
    except pki.PkiError as exc:
        raise CertsError(str(exc)) from exc
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    table = [("NAME", "SUBJECT", "SANS", "EXPIRES", "DAYS LEFT")]
    table += [
        (
            r.name,
            r.subject or "-",
            ",".join(r.sans) or "-",
            r.not_after.strftime("%Y-%m-%d %H:%M") if r.not_after else "MISSING",
            str(r.days_left) if r.days_left is not None else "-",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if soon := pki.expiring(rows):
        click.echo(
            f"missing or expiring within {pki.RENEW_WITHIN_DAYS} days: {', '.join(soon)}; "
            "run 'rocars certs issue' (missing) or 'rocars certs rotate'",
            err=True,
        )
