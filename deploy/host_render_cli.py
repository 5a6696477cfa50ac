"""`rocars deploy`: what production hosts are installed from (#17 item 1).

`render --host SITE --out DIR` reads the state folder (its passwords and its pki, issuing what
is missing, as `rocars cluster up` does) and writes deploy.host_render's output: the host's
units, files and install.sh. The state folder is the operator's, bound to one topology: it
keeps the CA and the passwords every host's files must agree on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click
import yaml

from deploy.state import StateDir, default_state_dir

if TYPE_CHECKING:
    from deploy import host_render, launcher
    from deploy.topology import Topology

# The output holds private keys and passwords: the folder is the operator's alone.
OUT_DIR_MODE = 0o700
# Never copied to a host: the CA's key (and the record of an external CA's location).
NOT_FOR_HOSTS = frozenset({"ca.key", "ca-source.json"})


class RenderError(click.ClickException):
    exit_code = 2


TOPOLOGY_OPTION = click.option(
    "--topology",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Topology file; default: the state folder's own.",
)


@click.group()
def deploy() -> None:
    """Production hosts: units, configuration and install scripts."""


@deploy.command("render")
@click.option("--host", "site", required=True, help="The site whose host to render (e.g. A).")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (created 0700: it holds that host's keys and passwords).",
)
@TOPOLOGY_OPTION
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The operator's state folder for this topology (CA, passwords); default "
    "$ROCARS_STATE_DIR or ./var.",
)
def render_cmd(site: str, out: Path, topology: Path | None, state_dir: Path | None) -> None:
    """Write everything the host of SITE needs into OUT (then copy OUT there, run install.sh)."""
    from deploy import host_render
    from deploy.config_files import load_state_topology
    from deploy.topology import load_topology
    from kernel.errors import ConfigError

    state = StateDir((state_dir or default_state_dir()).resolve())
    topo = load_state_topology(state, topology)
    bound = state.topology_copy.exists()
    if topology is not None and bound and load_topology(state.topology_copy) != topo:
        raise RenderError(
            f"{state.root} belongs to another topology ({state.topology_copy}); its "
            "certificates and passwords are that system's: give this topology a state "
            "folder of its own (--state-dir)"
        )
    sources = read_sources(state, topo)
    try:
        files = host_render.render(topo, site, sources)
    except ConfigError as exc:
        raise RenderError(str(exc)) from exc
    write_tree(out, files)
    click.echo(f"rendered site {site} of {topo.name!r} into {out} ({len(files)} files)")
    click.echo(f"next: copy {out} to the host, then run {out.name}/install.sh there as root")


@deploy.command("bootstrap")
@TOPOLOGY_OPTION
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The state folder the hosts were rendered from; default $ROCARS_STATE_DIR or ./var.",
)
@click.option("--timeout", default=180.0, show_default=True, help="Seconds to wait per step.")
def bootstrap_cmd(topology: Path | None, state_dir: Path | None, timeout: float) -> None:
    """Once every host's rocars.target runs: etcd's users and authentication, the database's
    roles, schema and migrations, etcd's leader on the witness; then wait until the entry
    point routes to the active node. Safe to run again."""
    import asyncio

    from deploy import etcd_auth, http_client, launcher, netns
    from deploy.config_files import load_state_topology

    state = StateDir((state_dir or default_state_dir()).resolve())
    topo = load_state_topology(state, topology)
    etcd_auth.use_state(topo, state)
    netns.enter_hub(topo)

    async def run() -> None:
        async with http_client.session(topo, state) as session:
            launch = launcher.Launch(topo, state, session, click.echo)
            await launcher.run_steps(launch, bootstrap_steps(topo), {}, timeout=timeout)

    asyncio.run(run())
    click.echo("bootstrapped: check with `rocars cluster status`")


def bootstrap_steps(topo: Topology) -> list[launcher.Step]:
    """The steps of `rocars cluster up` that start nothing, in its order: on hosts, systemd
    starts the processes."""
    from deploy import launcher

    return [step for step in launcher.steps(topo, fresh=False) if not step.start]


def read_sources(state: StateDir, topo: Topology) -> host_render.Sources:
    """The state folder's passwords, pki and secrets files, made first where missing (as
    `rocars cluster up` makes them: deploy.config_files), the state folder bound to `topo`,
    with the nodes' configuration the operator's commands read."""
    from deploy import configgen, host_render, pki

    state.root.mkdir(parents=True, exist_ok=True)
    if not state.topology_copy.exists():
        state.topology_copy.write_text(yaml.safe_dump(topo.model_dump(), sort_keys=False))
    passwords = state.secrets()
    pki.issue_all(pki.PkiDir(state.pki), pki.plan(topo), label=topo.name)
    # The operator's commands (migrations, accounts, switchover) reach the database as the
    # nodes' configuration says (deploy.admin): write it here too, as `cluster up` does.
    for site in topo.data_sites:
        doc = configgen.node_config(topo, site, state_root=state.root)
        _write_private(state.node_config(site), yaml.safe_dump(doc, sort_keys=False))
    return host_render.Sources(
        passwords=passwords,
        pki={
            p.name: p.read_bytes()
            for p in state.pki.iterdir()
            if p.is_file() and p.name not in NOT_FOR_HOSTS
        },
        secrets={p.name: p.read_bytes() for p in state.secrets_dir.iterdir() if p.is_file()},
    )


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def write_tree(out: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """Write `files` under `out`, each with its mode from creation on."""
    out.mkdir(mode=OUT_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(out, OUT_DIR_MODE)
    for rel, (content, mode) in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        tmp.replace(path)
