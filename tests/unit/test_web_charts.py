"""The SRE page's charts (node.web.charts, #15 item 6): SVG drawn on the server from plain
values, well-formed, named and described for screen readers, with every element where the
values put it and every text escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from monitoring.drill_results import DrillTimeline, build_timeline
from monitoring.write_history import WriteBucket
from node.web import charts

NS = "{http://www.w3.org/2000/svg}"


def same(text: str) -> str:
    return text


def parse(markup: str) -> ET.Element:
    return ET.fromstring(markup)


def of_class(svg: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in svg.iter(f"{NS}{tag}") if e.get("class") == cls]


def timeline() -> DrillTimeline:
    return build_timeline(
        [0.5, 1.5, 1.6, 2.2, 6.1, 7.3, 9.9],
        [(2.4, 6.1, True), (2.6, 6.1, True)],
        end_s=10.0,
        fault_s=2.5,
        gap=(2.2, 6.1),
        events=[(2.5, "fault injected: <kill> & co"), (5.0, "leader key: pg-A -> pg-B")],
    )


def test_drill_chart_places_bars_gap_fault_and_events() -> None:
    """#15 item 6: one upward bar per second with acknowledged writes, its height in
    proportion; one downward bar per second with writes retried; the gap shaded from its
    start to its end; the fault a line at its second; a dot per event."""
    t = timeline()
    svg = parse(charts.drill_chart(t, same, title="Drill", ident="d1"))
    ok = of_class(svg, "rect", "bar-ok")
    assert len(ok) == sum(1 for n in t.ok if n)
    heights = sorted(float(r.get("height", "0")) for r in ok)
    assert heights[-1] == pytest.approx(2 * heights[0])  # 2 writes in second 1, 1 elsewhere
    assert len(of_class(svg, "rect", "bar-retrying")) == 5  # seconds 2-6
    (gap,) = of_class(svg, "rect", "gap")
    plot_x, plot_w = 44.0, charts.WIDTH - 44 - 12
    assert float(gap.get("x", "0")) == pytest.approx(plot_x + plot_w * 2.2 / 10, abs=0.01)
    assert float(gap.get("width", "0")) == pytest.approx(plot_w * 3.9 / 10, abs=0.02)
    (fault,) = of_class(svg, "line", "fault")
    assert float(fault.get("x1", "0")) == pytest.approx(plot_x + plot_w * 0.25, abs=0.01)
    events = of_class(svg, "circle", "event")
    assert len(events) == 2
    assert events[0].findtext(f"{NS}title") == "2.5 s: fault injected: <kill> & co"


def test_drill_chart_is_named_described_and_escaped() -> None:
    """#15 item 6: role=img, named by its <title> and described by a <desc> stating the
    writes, the fault and the gap; a title with markup stays text; the ids carry `ident`."""
    markup = charts.drill_chart(timeline(), same, title='Drill "x" <script>', ident="drill-x")
    assert "<script>" not in markup
    svg = parse(markup)
    assert svg.get("role") == "img"
    assert svg.get("aria-labelledby") == "chart-drill-x-title chart-drill-x-desc"
    assert svg.findtext(f"{NS}title") == 'Drill "x" <script>'
    desc = svg.findtext(f"{NS}desc") or ""
    assert "Writes acknowledged: 7." in desc
    assert "Fault: 2.5 s." in desc
    assert "2.2-6.1 s (3.9 s)" in desc


def test_drill_chart_texts_are_translated() -> None:
    """#15: the chart's own words come through the page's translation function."""
    svg = parse(charts.drill_chart(timeline(), lambda s: f"«{s}»", title="t", ident="z"))
    texts = [e.text for e in svg.iter(f"{NS}text")]
    assert "«Writes acknowledged»" in texts
    assert "«Seconds since the drill started»" in texts


def test_a_timeline_without_fault_or_gap_still_draws() -> None:
    """#15 item 6: a drill whose writes never stopped (or never started) has no gap and no
    fault mark, and no bars where there were no writes."""
    t = build_timeline([], [], end_s=3.0, fault_s=None, gap=None)
    svg = parse(charts.drill_chart(t, same, title="t", ident="e"))
    assert of_class(svg, "rect", "gap") == []
    assert of_class(svg, "line", "fault") == []
    assert of_class(svg, "rect", "bar-ok") == []


def bucket(start: float, ok: int, failed: int = 0, p95: float | None = 0.01) -> WriteBucket:
    if ok + failed == 0:
        return WriteBucket(start, 0, 0, 0, None, None, None)
    mean = None if ok == 0 else 0.005
    return WriteBucket(start, ok, 0, failed, mean, mean, p95 if ok else None)


def label(ts: float) -> str:
    return f"t{int(ts)}"


def test_history_merges_clean_buckets_and_marks_failed_ones() -> None:
    """#15 item 6: consecutive buckets where every write succeeded are one green bar (an hour
    at 100 % is one element, not 360); each bucket with failed writes is a red bar whose
    height is its availability; buckets without writes draw nothing."""
    buckets = [
        bucket(0, 10),
        bucket(10, 10),
        bucket(20, 5, failed=5),
        bucket(30, 0),
        bucket(40, 10),
        bucket(50, 0, failed=3),
        bucket(60, 10),
        bucket(70, 0),
        bucket(80, 10),
    ]
    svg = parse(charts.write_history_chart(buckets, same, title="w", time_label=label, ident="h"))
    ok = of_class(svg, "rect", "bar-ok")
    failed = of_class(svg, "rect", "bar-failed")
    assert len(ok) == 4  # 0-10, 40, 60, 80 (not joined across 70, which had no writes)
    assert len(failed) == 2
    assert float(failed[0].get("height", "0")) == pytest.approx(110 * 0.5)
    assert float(failed[1].get("height", "0")) == 1.0  # 0 %: still visible
    assert float(ok[0].get("width", "0")) == pytest.approx(2 * float(ok[1].get("width", "0")))
    assert "t0-t10: 100.0 % (20 ok, 0 failed)" in [r.findtext(f"{NS}title") for r in ok]


def test_history_latency_lines_break_where_there_were_no_writes() -> None:
    """#15 item 6: the p95 and mean lines join consecutive buckets with successful writes and
    break across a bucket without any (a lone bucket is a dot)."""
    buckets = [bucket(0, 1), bucket(10, 1), bucket(20, 0), bucket(30, 1)]
    svg = parse(charts.write_history_chart(buckets, same, title="w", time_label=label, ident="h"))
    lines = of_class(svg, "polyline", "line-p95")
    assert len(lines) == 1
    assert len((lines[0].get("points") or "").split()) == 2
    assert len(of_class(svg, "circle", "line-p95")) == 1
    assert len(of_class(svg, "polyline", "line-mean")) == 1


def test_an_hour_without_writes_says_so() -> None:
    """#15 item 6: no bars, no lines, and the words instead of an empty frame."""
    buckets = [bucket(i * 10, 0) for i in range(360)]
    svg = parse(charts.write_history_chart(buckets, same, title="w", time_label=label, ident="h"))
    assert of_class(svg, "rect", "bar-ok") == []
    assert list(svg.iter(f"{NS}polyline")) == []
    assert svg.findtext(f"{NS}desc") == "No writes in the last hour."
    assert "No writes in the last hour." in [e.text for e in svg.iter(f"{NS}text")]


@pytest.mark.parametrize(
    ("value", "nice"),
    [(0, 1), (-3, 1), (0.7, 1), (1, 1), (1.1, 2), (2.2, 2.5), (3, 5), (7, 10), (0.013, 0.02)],
)
def test_scales_end_on_round_numbers(value: float, nice: float) -> None:
    """The axes' top is the next of 1, 2, 2.5 and 5 times a power of ten."""
    assert charts.nice_ceiling(value) == pytest.approx(nice)


def test_numbers_are_written_short() -> None:
    """Coordinates keep two decimals at most and no trailing zeros (the SVG stays small)."""
    assert charts.num(12.0) == "12"
    assert charts.num(1.005) in ("1", "1.01")
    assert charts.num(-0.001) == "0"
    assert charts.seconds_text(0.25) == "250 ms"
    assert charts.seconds_text(2.54) == "2.5 s"
