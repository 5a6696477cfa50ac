"""The Grafana dashboards and the console page (#13 item 4): the committed files are exactly
what deploy/dashboards.py generates, and each is a Grafana model any Grafana can import."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import dashboards as dash

ROOT = Path(__file__).resolve().parents[2]
STEMS = ("overview", "nodes", "postgres", "etcd", "redis", "haproxy")


def _models() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(dash.DASHBOARDS_DIR.glob("*.json"))}


def test_committed_files_are_what_the_module_generates() -> None:
    """#13 item 4: deploy/dashboards/*.json and monitoring/consoles/rocars.html equal the
    output of `python -m deploy.dashboards` (run it after changing deploy/dashboards.py), and
    there is no stray dashboard file."""
    expected = dash.rendered()
    for path, text in expected.items():
        assert path.exists(), f"{path} missing: run python -m deploy.dashboards"
        assert path.read_text() == text, f"{path} is stale: run python -m deploy.dashboards"
    assert set(dash.DASHBOARDS_DIR.glob("*.json")) == {p for p in expected if p.suffix == ".json"}
    assert sorted(_models()) == sorted(STEMS)


def _datasources(node: Any) -> list[Any]:
    """Every `datasource` value anywhere in the model."""
    found: list[Any] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "datasource":
                found.append(v)
            found.extend(_datasources(v))
    elif isinstance(node, list):
        for v in node:
            found.extend(_datasources(v))
    return found


@pytest.mark.parametrize("stem", STEMS)
def test_dashboard_is_importable_anywhere(stem: str) -> None:
    """#13 item 4: schemaVersion 39, uid and title set, a `datasource` variable of type
    datasource (prometheus), and no panel, target or variable names a fixed data source uid;
    panels have unique ids and fit Grafana's 24-column grid."""
    model = _models()[stem]
    assert model["schemaVersion"] == 39
    assert model["uid"].startswith("rocars-")
    assert len(model["uid"]) <= 40
    assert model["title"].startswith("rocars / ")
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for ds in _datasources({"panels": model["panels"], "templating": model["templating"]}):
        assert ds == {"type": "prometheus", "uid": "${datasource}"}, ds
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids))
    for p in model["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0, (p["title"], g)
        assert g["x"] + g["w"] <= 24, (p["title"], g)
        assert g["h"] > 0, (p["title"], g)


@pytest.mark.parametrize("stem", STEMS)
def test_every_panel_has_queries(stem: str) -> None:
    """#13 item 4: each panel but the row headers has a title, a unit and at least one
    target, each with a non-empty expr and a unique refId; $site is used exactly where the
    dashboard has a site variable (and that variable reads the `site` label)."""
    model = _models()[stem]
    panels = [p for p in model["panels"] if p["type"] != "row"]
    assert len(panels) >= 6
    exprs = []
    for p in panels:
        assert p["type"] in ("stat", "timeseries")
        assert p["title"]
        assert p["fieldConfig"]["defaults"]["unit"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs))
        for t in p["targets"]:
            assert isinstance(t["expr"], str), p["title"]
            assert t["expr"].strip(), p["title"]
            exprs.append(t["expr"])
    variables = {v["name"]: v for v in model["templating"]["list"]}
    uses_site = any("$site" in e for e in exprs)
    assert uses_site == ("site" in variables), stem
    if uses_site:
        assert variables["site"]["query"]["query"].endswith(", site)")


def _declared_metric_text() -> str:
    return "\n".join(p.read_text() for p in (ROOT / "monitoring").glob("*.py"))


def test_rocars_metric_names_exist() -> None:
    """#13 item 4: every rocars_* metric a panel reads is declared in monitoring/ (counters
    without the _total prometheus_client adds, histograms without _bucket/_sum/_count), and
    every rocars:* series is a recording rule of monitoring/rules/recording.yml."""
    declared = _declared_metric_text()
    rules = yaml.safe_load((ROOT / "monitoring" / "rules" / "recording.yml").read_text())
    records = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    exprs = [
        t.expr for d in dash.dashboards().values() for p in dash.all_panels(d) for t in p.targets
    ]
    for expr in exprs:
        for name in re.findall(r"\brocars_[a-z0-9_]+", expr):
            base = re.sub(r"_(total|bucket|sum|count)$", "", name)
            assert f'"{base}"' in declared or f'"{name}"' in declared, (name, expr)
        for record in re.findall(r"\brocars:[a-z0-9_:]+", expr):
            assert record in records, (record, expr)


def test_console_page_runs_the_overview_queries() -> None:
    """#13 item 4: the console page carries every overview query (Grafana's variables
    replaced), stat panels in the table and graphs through PromConsole.Graph, and uses the
    console library's templates."""
    page = dash.CONSOLE_PAGE.read_text()
    overview = dash.overview()
    for p in dash.all_panels(overview):
        for t in p.targets:
            expr = dash.console_expr(t.expr)
            assert (f"`{expr}`" if p.kind == "stat" else json.dumps(expr)) in page, expr
    graphs = sum(1 for p in dash.all_panels(overview) if p.kind == "timeseries")
    assert page.count("new PromConsole.Graph(") == graphs
    assert '{{ template "head" . }}' in page
    assert '{{ template "tail" }}' in page
    assert 'id="active-site"' in page
    lib = (ROOT / "monitoring" / "consoles" / "libraries" / "prom.lib").read_text()
    for name in ("head", "prom_query_drilldown", "prom_right_table_head", "prom_content_head"):
        assert re.search(rf'{{{{ define "{name}" -?}}}}', lib), name


def test_console_expr_refuses_what_go_templates_would_misread() -> None:
    """#13 item 4: a query left with a Grafana variable, or with text Go's template parser
    would take as its own, is refused rather than written into the page."""
    assert dash.console_expr("rate(x[$__rate_interval])") == "rate(x[1m])"
    for bad in ('up{site=~"$site"}', "x{{", "`x`"):
        with pytest.raises(ValueError, match="cannot go into a console template"):
            dash.console_expr(bad)
