"""#11 target 6 / `make bench`: the hand-written SVG plot and the report's table."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from deploy.bench import report, svg

NS = "{http://www.w3.org/2000/svg}"


def test_nice_axis_tops() -> None:
    """#11 bench: axis tops are 1, 2, 2.5 or 5 times a power of ten at or above the data."""
    assert svg.nice_max(0) == 1
    assert svg.nice_max(1) == 1
    assert svg.nice_max(1.2) == 2
    assert svg.nice_max(2.2) == 2.5
    assert svg.nice_max(340) == 500
    assert svg.nice_max(0.07) == pytest.approx(0.1)
    assert svg.nice_max(1917) == 2000


def test_render_is_valid_svg_with_one_polyline_per_series() -> None:
    """#11 bench: the plot parses as XML, has a line and a legend entry per series, and text
    is escaped."""
    panels = [
        svg.Panel("A & B", "x", "y", {"one": [(0, 1), (1, 3), (2, 2)], "two": [(0, 0), (2, 5)]}),
        svg.Panel("second", "x", "y", {"p99 <ms>": [(0, 10.0)]}),
    ]
    root = ET.fromstring(svg.render("title", panels))
    assert root.tag == f"{NS}svg"
    lines = root.findall(f"{NS}polyline")
    assert len(lines) == 3
    assert len(lines[0].attrib["points"].split()) == 3
    texts = [t.text for t in root.iter(f"{NS}text")]
    assert "A & B" in texts
    assert "p99 <ms>" in texts
    # every point inside the drawing
    for line in lines:
        for pair in line.attrib["points"].split():
            x, y = map(float, pair.split(","))
            assert 0 <= x <= svg.WIDTH
            assert 0 <= y <= float(root.attrib["height"])


def _doc() -> dict[str, object]:
    return {
        "started_at": "2026-12-01T15:00:00+00:00",
        "closed_loop": {"api": {"rps": 364.0}, "pgbench": {"tps": 1917.0}, "ratio": 0.19},
        "open_loop": {
            "kinds": {
                "submission": {"latency": {"p50": 38, "p90": 90, "p99": 251, "max": 400}},
                "arrival": {"latency": {"p50": 10, "p90": 20, "p99": 174, "max": 960}},
            },
            "errors": 0,
        },
        "overload": {
            "accepted_latency": {"p99": 26000},
            "lost": 0,
            "timeline": [
                {"t": 0, "offered": 900, "ok": 350, "shed": 0, "p99_ms": 9000},
                {"t": 1, "offered": 900, "ok": 350, "shed": 0, "p99_ms": 14000},
            ],
        },
        "batch": {"seconds": 12.1},
        "memory": {
            "node_rss_max_mb": 113,
            "idle_pss_mib": 534,
            "idle_pss_youngest_process_age_s": 65,
        },
        "distance": {
            "delays": [
                {"delay_ms": 0, "p50_ms": 40, "rps": 360},
                {"delay_ms": 20, "p50_ms": 90, "rps": 170},
            ],
            "by_delay": {"0": {"p50_ms": 40, "rps": 360}, "20": {"p50_ms": 90, "rps": 170}},
        },
    }


def test_targets_are_judged_by_direction() -> None:
    """#11 targets 1-5: each is met or not by its limit and direction; absent ones are None."""
    rows = {r["what"]: r for r in report.target_rows(_doc())}
    assert rows["closed loop API / pgbench"]["met"] is False
    assert rows["open loop errors"]["met"] is True
    assert rows["overload acknowledged but not stored"]["met"] is True
    assert rows["batch of 10,000 s"]["met"] is False
    assert rows["idle PSS of the system MiB"]["met"] is False
    doc = _doc()
    doc["closed_loop"] = {"ratio": 0.5}
    assert {r["what"]: r for r in report.target_rows(doc)}["closed loop API / pgbench"]["met"]
    del doc["batch"]
    assert {r["what"]: r for r in report.target_rows(doc)}["batch of 10,000 s"]["met"] is None


def test_table_shows_this_run_the_previous_and_the_target() -> None:
    """#11 bench: one table with this run's figure beside the previous run's and the target."""
    prev = _doc()
    prev["closed_loop"] = {"ratio": 0.1}
    text = report.table(_doc(), prev)
    line = next(ln for ln in text.splitlines() if ln.startswith("closed loop: API / pgbench"))
    assert "0.190" in line
    assert "0.100" in line
    assert ">= 0.5" in line
    assert "DR distance 20 ms: submission p50 ms" in text
    # The idle PSS says how settled the system was when it was read.
    alone = report.table(_doc(), None).splitlines()
    age = next(ln for ln in alone if ln.startswith("idle PSS read with"))
    assert age.split()[-2:] == ["65", "-"]
    assert "-" in next(ln for ln in report.table(_doc(), None).splitlines() if "pgbench tx" in ln)


def test_plot_has_overload_latency_and_distance_panels() -> None:
    """#11 targets 3 and 6: the run's plot draws the overload timeline, the open-loop
    percentiles and the distance figures."""
    root = ET.fromstring(report.plot(_doc()))
    titles = [t.text or "" for t in root.iter(f"{NS}text")]
    assert any(t.startswith("Overload") for t in titles)
    assert "Open loop latency (from scheduled send time)" in titles
    assert "Distance to the DR site" in titles


def test_table_says_the_database_size_the_calm_windows_and_the_generator_lag() -> None:
    """#11 targets 1-3 read in context: the table shows how big the database was at the start,
    what the calm offer got alone and after the drop, and how late the generator sent during
    the overload (a late send counts in the accepted latency)."""
    doc = _doc()
    doc["database"] = {"size_mib": 673, "consignments": 220836}
    overload = doc["overload"]
    assert isinstance(overload, dict)
    overload.update(
        first_clean_s=1.0,
        calm_rate=575.0,
        calm_before={"unclean_seconds": 6, "shed": 552},
        calm_after={"unclean_seconds": 1, "shed": 6},
        generator={"cpu_share": 0.39, "send_lag_p99_ms": 285.7},
    )
    lines = {ln.split("  ")[0]: ln for ln in report.table(doc, None).splitlines()}
    assert lines["database at the start: MiB"].split()[-2:] == ["673", "-"]
    assert "220,836" in lines["database at the start: consignments (estimate)"]
    assert lines["calm before: shed"].split()[-2:] == ["552", "-"]
    assert lines["calm after the drop: unclean seconds"].split()[-2:] == ["1", "-"]
    assert lines["overload: first clean second after the drop s"].split()[-2:] == ["1.0", "-"]
    assert "285.70" in lines["overload: generator send lag p99 ms"]
