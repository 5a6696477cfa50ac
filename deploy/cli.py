"""The `rocars` command line. Errors say what went wrong and what to do, and exit non-zero."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
import time
from pathlib import Path

import click

from deploy.backup_cli import backup
from deploy.certs_cli import certs
from deploy.host_render_cli import deploy
from deploy.state import StateDir, default_state_dir
from deploy.topology import Topology
from kernel import redact
from kernel.errors import RocarsError

STATE_DIR_OPTION = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="State folder (generated config, logs, pids); default $ROCARS_STATE_DIR or ./var.",
)
TOPOLOGY_OPTION = click.option(
    "--topology",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Topology file; default: the state folder's own, else deploy/topology.yaml.",
)


def _state(state_dir: Path | None) -> StateDir:
    return StateDir((state_dir or default_state_dir()).resolve())


def _system(
    state_dir: Path | None, topology: Path | None, *, enter: bool = True
) -> tuple[StateDir, Topology]:
    """The state folder and the topology it was generated from (or the one named).

    When the sites run in network namespaces the command moves into the hub namespace first
    (before any thread starts), from where it reaches every site like HAProxy does."""
    from deploy import etcd_auth, netns
    from deploy.config_files import load_state_topology

    state = _state(state_dir)
    topo = load_state_topology(state, topology)
    etcd_auth.use_state(topo, state)  # the commands log in to etcd as the operator (#12 item 3)
    if enter:
        netns.enter_hub(topo)
    return state, topo


def _setup_logging(level: int = logging.INFO) -> None:
    """The CLI's human-readable lines on standard error."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    redact.install()  # no credential in clear in any log line (#10)


def _setup_node_logging(state: StateDir, site: str) -> None:
    """The node's JSON lines (monitoring.logs) in `<state>/log/node-<site>.jsonl`, rotated by
    size, 0640 like the launcher's logs; nothing more on standard error, which keeps what
    came before this (a crash while importing or starting) in `node-<site>.log`."""
    from deploy.state import LOG_MODE
    from monitoring import log_files, logs

    path = logs.json_log_path(state.logs, f"node-{site}")
    logs.configure(site, log_files.JsonLinesFile(path, mode=LOG_MODE))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """rocars: road-cargo e-ACI service, cluster and contingency tooling."""


@cli.command()
@click.option("--site", required=True, help="Which site's node to run (A or B).")
@STATE_DIR_OPTION
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Node configuration file; default <state-dir>/config/node-<site>.yaml.",
)
@click.option(
    "--supervise",
    is_flag=True,
    help="Run the node under a supervisor that restarts it whenever it exits.",
)
def serve(site: str, state_dir: Path | None, config_path: Path | None, supervise: bool) -> None:
    """Run one API node in the foreground."""
    if supervise:
        from node import supervise as sup

        child = [sys.executable, "-m", "deploy", "serve", "--site", site]
        if state_dir is not None:
            child += ["--state-dir", str(state_dir)]
        if config_path is not None:
            child += ["--config", str(config_path)]
        sup.main(child)
        return
    from aiohttp import web

    from node import memory_tuning, tls_reload
    from node.app import create_app
    from node.config import load_node_config

    memory_tuning.limit_arenas()  # before any thread starts
    memory_tuning.fix_mmap_threshold()
    state = _state(state_dir)
    _setup_node_logging(state, site)
    cfg = load_node_config(config_path or state.node_config(site))
    if cfg.site != site:
        raise click.UsageError(f"{config_path} is the configuration of site {cfg.site}, not {site}")
    app = create_app(cfg)
    server_tls = None
    if cfg.tls is not None:  # HTTPS, reloaded on SIGHUP (#12 item 1, node/tls_reload.py)
        server_tls = tls_reload.server_context(cfg.tls)
        app.on_startup.append(tls_reload.on_startup)
    # Everything imported and built so far lives as long as the process: out of the collector's
    # reach, a full collection (triggered by whichever request allocates) scans only what
    # requests made, instead of holding the interpreter lock for 70-100 ms (#10 item 2).
    gc.freeze()
    web.run_app(
        app,
        host=cfg.listen_host,
        port=cfg.listen_port,
        ssl_context=server_tls,
        access_log=None,
        print=None,
        shutdown_timeout=5.0,
        loop=_event_loop(cfg.event_loop),
    )


def _event_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


@cli.group()
def cluster() -> None:
    """Start, stop and inspect the local two-site system."""


@cluster.command()
@TOPOLOGY_OPTION
@STATE_DIR_OPTION
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait per step.")
def up(topology: Path | None, state_dir: Path | None, timeout: float) -> None:
    """Start whatever is not running and wait until the system is ready."""
    from deploy import endpoints, launcher, status

    state, topo = _system(state_dir, topology, enter=False)  # `up` creates the namespaces
    t0 = time.monotonic()
    asyncio.run(launcher.up(topo, state, click.echo, timeout=timeout))
    elapsed = time.monotonic() - t0
    view = asyncio.run(status.collect(topo, state))
    click.echo(f"ready in {elapsed:.1f}s\n")
    click.echo(status.render_table(view))
    s = endpoints.summary(topo, state)
    click.echo("")
    click.echo(f"API (HAProxy):   {s['api']}")
    for site, url in topo_nodes(s):
        click.echo(f"node {site}:          {url}   metrics {url}/metrics")
    patroni = s["patroni"]
    assert isinstance(patroni, dict)
    for site, url in patroni.items():
        click.echo(f"Patroni {site}:       {url}")
    click.echo(f"HAProxy stats:   {s['haproxy_stats']}")
    if s["prometheus"]:
        click.echo(
            f"Prometheus:      {s['prometheus']}   overview {s['prometheus']}/consoles/rocars.html"
        )
        click.echo(f"Alertmanager:    {s['alertmanager']}")
    click.echo(f"logs:            {s['logs']}")


def topo_nodes(summary: dict[str, object]) -> list[tuple[str, str]]:
    nodes = summary["nodes"]
    assert isinstance(nodes, dict)
    return sorted(nodes.items())


@cluster.command()
@TOPOLOGY_OPTION
@STATE_DIR_OPTION
@click.option("--purge", is_flag=True, help="Also delete all data, logs and configuration.")
def down(topology: Path | None, state_dir: Path | None, purge: bool) -> None:
    """Stop every process the local system started."""
    from deploy import teardown

    state, topo = _system(state_dir, topology, enter=False)
    teardown.down(topo, state, click.echo)
    if purge:
        teardown.purge(state)
        click.echo(f"deleted {state.root} and {state.runtime}")
    click.echo("stopped")


@cluster.command("status")
@TOPOLOGY_OPTION
@STATE_DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status_cmd(topology: Path | None, state_dir: Path | None, as_json: bool) -> None:
    """Show nodes, PostgreSQL, etcd, Redis and contingency mode; exit 0 only when healthy."""
    from deploy import status

    state, topo = _system(state_dir, topology)
    view = asyncio.run(status.collect(topo, state))
    click.echo(json.dumps(view.to_dict(), indent=2) if as_json else status.render_table(view))
    sys.exit(0 if view.is_healthy else 1)


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("migrate")
@TOPOLOGY_OPTION
@STATE_DIR_OPTION
def db_migrate(topology: Path | None, state_dir: Path | None) -> None:
    """Apply pending schema migrations on the current leader."""
    from deploy import admin

    state, topo = _system(state_dir, topology)
    applied = asyncio.run(admin.run_migrations(topo, state))
    click.echo("applied: " + ", ".join(applied) if applied else "schema is up to date")


@cli.group()
def admin() -> None:
    """Accounts and other bootstrap tasks."""


@admin.command("create-account")
@click.option("--kind", required=True, type=click.Choice(["officer", "sre", "trader", "trucker"]))
@click.option("--name", required=True, help="Account holder's name.")
@click.option(
    "--trader-kind",
    type=click.Choice(["shipper", "forwarder", "agent"]),
    default=None,
    help="For traders: shipper, forwarder or agent (default shipper).",
)
@TOPOLOGY_OPTION
@STATE_DIR_OPTION
def create_account_cmd(
    kind: str,
    name: str,
    trader_kind: str | None,
    topology: Path | None,
    state_dir: Path | None,
) -> None:
    """Create an approved account directly and print JSON with its api_key (shown once)."""
    from deploy import admin as admin_ops

    if not name.strip():
        raise click.BadParameter("must not be blank", param_hint="--name")
    if kind == "trader" and trader_kind is None:
        trader_kind = "shipper"
    if kind != "trader" and trader_kind is not None:
        raise click.BadParameter("only for --kind trader", param_hint="--trader-kind")
    state, topo = _system(state_dir, topology)
    out = asyncio.run(
        admin_ops.admin_create_account(
            topo, state, kind=kind, name=name.strip(), trader_kind=trader_kind
        )
    )
    click.echo(json.dumps(out))


@cli.group()
def failover() -> None:
    """Planned switchover and failback, and the failover picture."""


@failover.command("status")
@TOPOLOGY_OPTION
@STATE_DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def failover_status(topology: Path | None, state_dir: Path | None, as_json: bool) -> None:
    """Leader, members with lag, node roles and each controller's latest decision."""
    from deploy import failover_ops as switch
    from deploy import status

    state, topo = _system(state_dir, topology)
    view = asyncio.run(status.collect(topo, state))
    click.echo(
        json.dumps(switch.failover_document(view), indent=2) if as_json else switch.render(view)
    )


@failover.command("switchover")
@click.option("--to", "target", required=True, help="Site to make active (A or B).")
@TOPOLOGY_OPTION
@STATE_DIR_OPTION
def failover_switchover(target: str, topology: Path | None, state_dir: Path | None) -> None:
    """Move the active site: checks the candidate first (streaming, in sync, lag zero)."""
    from deploy import failover_ops as switch

    state, topo = _system(state_dir, topology)
    if target not in topo.data_sites:
        raise click.BadParameter(f"must be one of {', '.join(topo.data_sites)}", param_hint="--to")
    took = asyncio.run(switch.run_switchover(topo, state, target, click.echo))
    click.echo(f"site {target} is active ({took:.1f}s)")


@cli.command()
@click.option("--nodes/--no-nodes", default=True, show_default=True, help="Roll the API nodes.")
@click.option(
    "--postgres/--no-postgres", default=True, show_default=True, help="Roll the PostgreSQL members."
)
@click.option("--timeout", default=90.0, show_default=True, help="Seconds to wait per step.")
@TOPOLOGY_OPTION
@STATE_DIR_OPTION
def upgrade(
    nodes: bool, postgres: bool, timeout: float, topology: Path | None, state_dir: Path | None
) -> None:
    """Rolling upgrade without downtime (#17 item 4): install the new version first, then run
    this. API nodes: the standby site's node restarts on the installed code and must report its
    version in /health, a planned switchover makes that site active, then the old active's node
    restarts. PostgreSQL: each replica member restarts through Patroni (POST /restart) and must
    stream as the synchronous standby again, a switchover, then the old primary restarts.
    Restarting each member is exactly what a PostgreSQL minor upgrade takes once the new
    binaries are installed (here the same binaries restart). Stops at the first failed step and
    says what to do; rerunning is safe."""
    from deploy import upgrade as rolling
    from monitoring.health import code_version

    if not nodes and not postgres:
        raise click.UsageError("nothing to upgrade: drop --no-nodes or --no-postgres")
    state, topo = _system(state_dir, topology)
    version = code_version()
    p, took = asyncio.run(
        rolling.run_upgrade(
            topo,
            state,
            nodes=nodes,
            postgres=postgres,
            version=version,
            progress=click.echo,
            timeout_s=timeout,
        )
    )
    parts = " and ".join(x for x, on in (("API nodes", nodes), ("PostgreSQL", postgres)) if on)
    click.echo(
        f"upgraded {parts} in {took:.1f}s without downtime; site {p.ends_on} is active"
        + (f", nodes run version {version}" if nodes else "")
    )


@cli.group()
def contingency() -> None:
    """Manual clearance mode: activate, deactivate, status, reconcile."""


LBCP_OPTION = click.option(
    "--lbcp", "lbcps", multiple=True, help="Affected LBCP code (repeat); default: all LBCPs."
)


@contingency.command("activate")
@click.option("--reason", required=True, help="Why manual clearance is needed (required).")
@LBCP_OPTION
@click.option("--message", default="Manual customs clearance is in force.", show_default=True)
@click.option("--officer", default=None, help="Officer name for the audit (default: $USER).")
@click.option(
    "--local",
    is_flag=True,
    help="etcd unreachable: force manual mode on the nodes of this host only (override file).",
)
@click.option("--site", "sites", multiple=True, help="With --local: only these sites' nodes.")
@TOPOLOGY_OPTION
@STATE_DIR_OPTION
def contingency_activate(
    reason: str,
    lbcps: tuple[str, ...],
    message: str,
    officer: str | None,
    local: bool,
    sites: tuple[str, ...],
    topology: Path | None,
    state_dir: Path | None,
) -> None:
    """Switch manual clearance mode on (cluster-wide through etcd, or --local)."""
    from deploy import contingency_ops as cli_ops

    if not reason.strip():
        raise click.BadParameter("must not be blank", param_hint="--reason")
    state, topo = _system(state_dir, topology)
    scope = frozenset(lbcps) if lbcps else None
    who = cli_ops.actor(officer)
    if local:
        chosen = list(sites) or topo.data_sites
        paths = cli_ops.set_local(state, chosen, who=who, reason=reason, lbcps=scope)
        click.echo(f"local override written: {', '.join(paths)}")
        doc = asyncio.run(cli_ops.await_local(topo, chosen, on=True))
        click.echo(cli_ops.dumps(doc))
        if warning := cli_ops.not_applied_warning(doc):
            click.echo(warning, err=True)
        return
    doc = asyncio.run(
        cli_ops.change(topo, on=True, who=who, reason=reason, lbcps=scope, message=message)
    )
    click.echo(cli_ops.dumps(doc))
    if warning := cli_ops.not_applied_warning(doc):
        click.echo(warning, err=True)


@contingency.command("deactivate")
@click.option(
    "--reason", default=None, help="Why normal operation resumes (required unless --local)."
)
@LBCP_OPTION
@click.option("--officer", default=None, help="Officer name for the audit (default: $USER).")
@click.option("--local", is_flag=True, help="Remove this host's local override files.")
@click.option("--site", "sites", multiple=True, help="With --local: only these sites' nodes.")
@TOPOLOGY_OPTION
@STATE_DIR_OPTION
def contingency_deactivate(
    reason: str,
    lbcps: tuple[str, ...],
    officer: str | None,
    local: bool,
    sites: tuple[str, ...],
    topology: Path | None,
    state_dir: Path | None,
) -> None:
    """Reconcile every journal first, then switch manual mode off."""
    from deploy import contingency_ops as cli_ops

    state, topo = _system(state_dir, topology)
    if local:
        chosen = list(sites) or topo.data_sites
        removed = cli_ops.clear_local(state, chosen)
        click.echo(f"removed: {', '.join(removed) or 'no override was set'}")
        doc = asyncio.run(cli_ops.await_local(topo, chosen, on=False))
        click.echo(cli_ops.dumps(doc))
        if warning := cli_ops.not_applied_warning(doc):
            click.echo(warning, err=True)
        return
    if reason is None or not reason.strip():
        raise click.BadParameter("a reason is required", param_hint="--reason")
    report = asyncio.run(cli_ops.run_reconcile(topo, state))
    click.echo("reconciliation: " + cli_ops.dumps(report))
    doc = asyncio.run(
        cli_ops.change(
            topo,
            on=False,
            who=cli_ops.actor(officer),
            reason=reason,
            lbcps=frozenset(lbcps) if lbcps else None,
            message="",
        )
    )
    click.echo(cli_ops.dumps(doc))
    if warning := cli_ops.not_applied_warning(doc):
        click.echo(warning, err=True)


@contingency.command("status")
@TOPOLOGY_OPTION
@STATE_DIR_OPTION
def contingency_status(topology: Path | None, state_dir: Path | None) -> None:
    """Mode, scope, who/why, local overrides and the recommendation, as JSON."""
    from deploy import contingency_ops as cli_ops

    state, topo = _system(state_dir, topology)
    click.echo(cli_ops.dumps(asyncio.run(cli_ops.status(topo, state))))


@contingency.command("reconcile")
@TOPOLOGY_OPTION
@STATE_DIR_OPTION
def contingency_reconcile(topology: Path | None, state_dir: Path | None) -> None:
    """Import every node's journal exactly once and link records to bundles (safe to rerun)."""
    from deploy import contingency_ops as cli_ops

    state, topo = _system(state_dir, topology)
    click.echo(cli_ops.dumps(asyncio.run(cli_ops.run_reconcile(topo, state))))


@cli.command()
@click.argument(
    "scenario",
    type=click.Choice(
        [
            "switchover",
            "kill-postgres",
            "kill-patroni-and-postgres",
            "freeze-patroni",
            "kill-node",
            "hang-node",
            "kill-site",
            "isolate-site",
            "kill-redis-primary",
            "restore",
            "upgrade",
        ]
    ),
)
@click.option("--runs", default=1, show_default=True, help="Round trips (each one A->B then back).")
@click.option("--one-way", is_flag=True, help="Only fail away from the current leader once.")
@click.option("--writers", default=4, show_default=True, help="Concurrent writers.")
@TOPOLOGY_OPTION
@STATE_DIR_OPTION
def drill(
    scenario: str,
    runs: int,
    one_way: bool,
    writers: int,
    topology: Path | None,
    state_dir: Path | None,
) -> None:
    """Run a failover drill under write load; exit 1 when RPO > 0 or RTO is over budget."""
    from deploy import admin as admin_ops
    from deploy.drills import runner, scenarios
    from deploy.drills.drill import DrillResult

    _setup_logging(logging.WARNING)
    state, topo = _system(state_dir, topology)
    if scenario == "restore":  # #17 item 3: backup, writes, point-in-time restore, check
        from deploy.drills import restore

        report = asyncio.run(restore.run_drill(topo, state, progress=click.echo))
        click.echo(report.text())
        sys.exit(0 if report.passed else 1)
    scenarios.check_runnable(topo, scenario)
    # A rolling upgrade switches over and back by itself: one run covers both directions.
    one_way = one_way or scenario == "upgrade"

    async def go() -> list[DrillResult]:
        account = await admin_ops.admin_create_account(
            topo, state, kind="trader", name=f"drill {scenario}", trader_kind="shipper"
        )
        return await runner.run_round_trips(
            topo,
            state,
            scenario,
            api_key=account["api_key"],
            runs=runs,
            one_way=one_way,
            writers=writers,
            on_result=lambda r: click.echo(runner.describe(r)),
        )

    results = asyncio.run(go())
    click.echo(f"reports in {state.reports}")
    sys.exit(0 if all(r.passed for r in results) else 1)


@cli.command()
@click.option("--quick", is_flag=True, help="One short round of everything, no DR distance.")
@click.option(
    "--duration",
    type=click.FloatRange(min=1),
    default=None,
    help="Seconds per load phase (default 10 closed loop and overload, 30 open loop; 5 quick).",
)
@TOPOLOGY_OPTION
@STATE_DIR_OPTION
def bench(
    quick: bool, duration: float | None, topology: Path | None, state_dir: Path | None
) -> None:
    """Measure the running system (#11): closed loop against pgbench, open loop, overload, the
    10,000 batch, memory; one table, JSON and SVG under <state>/bench/. Starts the system first
    when it is not running. Run it alone on the machine (make bench takes the cluster lock)."""
    from deploy import launcher
    from deploy.bench import report, runner

    _setup_logging(logging.WARNING)
    state, topo = _system(state_dir, topology, enter=False)  # `up` may create the namespaces
    asyncio.run(launcher.up(topo, state, click.echo))
    settings = runner.Settings.quick(duration) if quick else runner.Settings.full(duration)
    doc = runner.run_bench(topo, state, settings, click.echo)
    path, prev, changes = runner.save(state, doc)
    click.echo("")
    click.echo(report.table(doc, prev))
    if prev is not None:
        click.echo(f"compared with {doc['previous']}:")
        click.echo(report.changes_text(changes))
    m = doc["machine"]
    click.echo(
        f"machine: {m['cpus']} CPUs, load average before {m['loadavg_before']}, busy before:"
        f" {', '.join(m['busy_before']) or 'nothing'}"
    )
    click.echo(f"written: {path} and {path.with_suffix('.svg')}")


cli.add_command(backup)
cli.add_command(certs)
cli.add_command(deploy)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except RocarsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:  # includes psycopg's and aiohttp's connection failures
        click.echo(f"error: {exc}; check 'rocars cluster status'", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
