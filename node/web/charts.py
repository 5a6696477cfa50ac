"""Charts for the SRE page (#15 item 6), drawn on the server as SVG: no script, no library, no
CDN, and they print. Pure: plain values in (a drill's timeline, the node's write buckets, the
page's translation function), markup out; every text is escaped.

Each chart is an `<svg role="img">` named by its `<title>` and described by its `<desc>` (a
sentence with the chart's facts, for screen readers); colours are presentation attributes,
which the pages' Content-Security-Policy allows where inline styles would not be. The viewBox
scales the chart to the page's width (a 360 px phone included).

- `drill_chart`: writes acknowledged per bucket (bars up), writes held up by errors (bars
  down), the write gap (the RTO) shaded, the fault as a dashed line, the drill's events as
  marks along the top.
- `write_history_chart`: write availability per bucket (bars, red below 100 %) above, the
  successful writes' latency (p95 and mean) below, over the last hour.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

from monitoring.drill_results import DrillTimeline
from monitoring.write_history import WriteBucket

Gettext = Callable[[str], str]

WIDTH = 640
INK = "#1a1a1a"
MUTED = "#4a4a4a"
GRID = "#d0d0d0"
OK = "#2e7d32"
BAD = "#a4161a"
FAULT = "#6b3a00"
EVENT = "#0b4f9c"
MEAN = "#0b4f9c"


@dataclass(frozen=True)
class Area:
    """A plot area in viewBox units: left, top, width, height."""

    x: float
    y: float
    w: float
    h: float

    @property
    def bottom(self) -> float:
        return self.y + self.h

    @property
    def right(self) -> float:
        return self.x + self.w


def num(v: float) -> str:
    """A coordinate as short as it can be written (two decimals at most)."""
    text = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def nice_ceiling(v: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is >= v (1 for v <= 0)."""
    if v <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(v))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= v - 1e-12:
            return float(step * power)
    return float(10 * power)  # pragma: no cover  (10 * power >= v always)


def seconds_text(v: float) -> str:
    """A duration for a label: 850 ms, 2.5 s."""
    if v < 1:
        return f"{v * 1000:.0f} ms"
    return f"{v:.1f} s" if v < 100 else f"{v:.0f} s"


def _attrs(**attrs: str | float) -> str:
    parts = []
    for name, value in attrs.items():
        text = num(value) if isinstance(value, int | float) else value
        parts.append(f'{name.rstrip("_").replace("_", "-")}="{escape(text)}"')
    return " ".join(parts)


def _el(tag: str, content: str = "", **attrs: str | float) -> str:
    if content:
        return f"<{tag} {_attrs(**attrs)}>{content}</{tag}>"
    return f"<{tag} {_attrs(**attrs)}/>"


def _text(x: float, y: float, text: str, *, anchor: str = "start", **attrs: str | float) -> str:
    return _el(
        "text",
        escape(text),
        x=x,
        y=y,
        text_anchor=anchor,
        font_size=attrs.pop("font_size", 12),
        fill=attrs.pop("fill", INK),
        **attrs,
    )


def _svg(height: float, title: str, desc: str, body: Iterable[str], cls: str, ident: str) -> Markup:
    n = escape(ident)
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {num(height)}"'
        f' width="100%" role="img" class="chart {escape(cls)}"'
        f' aria-labelledby="chart-{n}-title chart-{n}-desc" font-family="sans-serif">'
        f'<title id="chart-{n}-title">{escape(title)}</title>'
        f'<desc id="chart-{n}-desc">{escape(desc)}</desc>'
    )
    return Markup(head + "".join(body) + "</svg>")


def _legend(x: float, y: float, items: Sequence[tuple[str, str]]) -> list[str]:
    """Coloured squares with their names, in a row from (x, y); about 7 px per character."""
    out = []
    for colour, name in items:
        out.append(_el("rect", x=x, y=y - 10, width=10, height=10, fill=colour))
        out.append(_text(x + 14, y, name))
        x += 14 + 7 * len(name) + 16
    return out


def _bar(x: float, y: float, w: float, h: float, title: str, cls: str, fill: str) -> str:
    """A bar (rect) whose tooltip, its <title>, is `title`."""
    return _el(
        "rect", _el("title", escape(title)), class_=cls, x=x, y=y, width=w, height=h, fill=fill
    )


def _ticks(top: float) -> list[float]:
    """0, half and the top of a nice scale."""
    return [0.0, top / 2, top]


def drill_chart(t: DrillTimeline, _: Gettext, *, title: str, ident: str) -> Markup:
    """A drill's timeline (monitoring.drill_results.DrillTimeline) as one chart; `ident`
    makes its element ids unique on the page."""
    height = 260
    plot = Area(44, 40, WIDTH - 44 - 12, 170)
    up = Area(plot.x, plot.y, plot.w, plot.h * 0.7)  # acknowledged, upwards
    down = Area(plot.x, up.bottom, plot.w, plot.h - up.h)  # retrying, downwards
    end = t.end_s

    def x_of(s: float) -> float:
        return plot.x + plot.w * min(max(s, 0.0), end) / end

    bar_w = plot.w / len(t.ok)
    top_ok = nice_ceiling(max(t.ok))
    top_retry = nice_ceiling(max(t.retrying))
    acked, retried, fault, gap = (
        _("Writes acknowledged"),
        _("Writes retried"),
        _("Fault"),
        _("Write gap (RTO)"),
    )
    body: list[str] = []
    body += _legend(plot.x, 16, [(OK, acked), (BAD, retried), (FAULT, fault)])
    if t.gap is not None:
        gx0, gx1 = x_of(t.gap[0]), x_of(t.gap[1])
        body.append(
            _el(
                "rect",
                _el("title", escape(f"{gap}: {seconds_text(t.gap[1] - t.gap[0])}")),
                class_="gap",
                x=gx0,
                y=plot.y,
                width=max(gx1 - gx0, 1.0),
                height=plot.h,
                fill=BAD,
                fill_opacity=0.12,
            )
        )
    for v in _ticks(top_ok)[1:]:
        y = up.bottom - up.h * v / top_ok
        body.append(_el("line", x1=plot.x, x2=plot.right, y1=y, y2=y, stroke=GRID))
        body.append(_text(plot.x - 4, y + 4, f"{v:g}", anchor="end", fill=MUTED))
    body.append(_text(plot.x - 4, down.bottom, f"{top_retry:g}", anchor="end", fill=MUTED))
    for i, (ok, retrying) in enumerate(zip(t.ok, t.retrying, strict=True)):
        x = plot.x + i * bar_w
        span = f"{i * t.step_s}-{(i + 1) * t.step_s} s"
        w = max(bar_w - 1, 0.5)
        if ok:
            h = up.h * ok / top_ok
            body.append(_bar(x + 0.5, up.bottom - h, w, h, f"{span}: {ok} {acked}", "bar-ok", OK))
        if retrying:
            h = down.h * retrying / top_retry
            tip = f"{span}: {retrying} {retried}"
            body.append(_bar(x + 0.5, down.y, w, h, tip, "bar-retrying", BAD))
    body.append(_el("line", x1=plot.x, x2=plot.right, y1=up.bottom, y2=up.bottom, stroke=INK))
    body.append(_el("line", x1=plot.x, x2=plot.x, y1=plot.y, y2=plot.bottom, stroke=INK))
    if t.fault_s is not None:
        fx = x_of(t.fault_s)
        body.append(
            _el(
                "line",
                _el("title", escape(f"{fault}: {t.fault_s:.1f} s")),
                class_="fault",
                x1=fx,
                x2=fx,
                y1=plot.y - 6,
                y2=plot.bottom,
                stroke=FAULT,
                stroke_width=2,
                stroke_dasharray="5 3",
            )
        )
    for e in t.events:
        ex = x_of(e.t)
        body.append(
            _el(
                "circle",
                _el("title", escape(f"{e.t:.1f} s: {e.what}")),
                class_="event",
                cx=ex,
                cy=plot.y - 6,
                r=4,
                fill=EVENT,
            )
        )
    step = nice_ceiling(end / 8)
    s = 0.0
    while s <= end + 1e-9:
        x = x_of(s)
        body.append(_el("line", x1=x, x2=x, y1=plot.bottom, y2=plot.bottom + 4, stroke=INK))
        body.append(_text(x, plot.bottom + 17, f"{s:g}", anchor="middle"))
        s += step
    body.append(_text(plot.right, height - 8, _("Seconds since the drill started"), anchor="end"))
    return _svg(height, title, _drill_desc(t, _), body, "drill-chart", ident)


def _drill_desc(t: DrillTimeline, _: Gettext) -> str:
    acked, fault, gap = _("Writes acknowledged"), _("Fault"), _("Write gap (RTO)")
    parts = [f"{acked}: {sum(t.ok)}."]
    if t.fault_s is not None:
        parts.append(f"{fault}: {t.fault_s:.1f} s.")
    if t.gap is not None:
        g0, g1 = t.gap
        parts.append(f"{gap}: {g0:.1f}-{g1:.1f} s ({seconds_text(g1 - g0)}).")
    most = _("Most writes retried at once")
    parts.append(f"{most}: {max(t.retrying)}.")
    return " ".join(parts)


def _segments(points: Sequence[tuple[float, float] | None]) -> list[list[tuple[float, float]]]:
    """Runs of consecutive points (None breaks a line: no data there)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for p in points:
        if p is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append(p)
    return [r for r in runs if r]


def _polyline(points: Sequence[tuple[float, float] | None], colour: str, cls: str) -> list[str]:
    out = []
    for run in _segments(points):
        if len(run) == 1:
            x, y = run[0]
            out.append(_el("circle", class_=cls, cx=x, cy=y, r=2, fill=colour))
        else:
            coords = " ".join(f"{num(x)},{num(y)}" for x, y in run)
            out.append(
                _el(
                    "polyline",
                    class_=cls,
                    points=coords,
                    fill="none",
                    stroke=colour,
                    stroke_width=2,
                )
            )
    return out


def _runs(buckets: Sequence[WriteBucket]) -> list[tuple[int, int]]:
    """(first, last) index of each bar to draw: a bucket with failed writes alone, and each
    run of consecutive buckets whose writes all succeeded as one (one element for an hour of
    100 %, not 360)."""
    out: list[tuple[int, int]] = []
    for i, b in enumerate(buckets):
        if b.availability is None:
            continue
        clean = b.failed == 0
        if clean and out and out[-1][1] == i - 1 and buckets[out[-1][0]].failed == 0:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


def write_history_chart(
    buckets: Sequence[WriteBucket],
    _: Gettext,
    *,
    title: str,
    time_label: Callable[[float], str],
    ident: str,
) -> Markup:
    """The last hour of writes (monitoring.write_history): availability, then latency.
    `time_label` writes a bucket's start (Unix time) for the axis, e.g. 14:30 in HKT."""
    height = 330
    avail = Area(44, 34, WIDTH - 44 - 12, 110)
    lat = Area(44, 196, WIDTH - 44 - 12, 100)
    n = max(len(buckets), 1)
    bar_w = avail.w / n
    failed_text, no_writes = _("failed"), _("No writes in the last hour.")
    body: list[str] = []
    body.append(_text(avail.x, 18, _("Write availability (%)"), font_weight="bold"))
    body.append(_text(lat.x, lat.y - 18, _("Latency of successful writes"), font_weight="bold"))
    body += _legend(lat.x + 240, lat.y - 18, [(BAD, "p95"), (MEAN, _("mean"))])
    for pct in (0, 50, 100):
        y = avail.bottom - avail.h * pct / 100
        body.append(_el("line", x1=avail.x, x2=avail.right, y1=y, y2=y, stroke=GRID))
        body.append(_text(avail.x - 4, y + 4, str(pct), anchor="end", fill=MUTED))
    judged = [b for b in buckets if b.availability is not None]
    for first, last in _runs(buckets):
        b0, b1 = buckets[first], buckets[last]
        ok = sum(b.ok for b in buckets[first : last + 1])
        failed = sum(b.failed for b in buckets[first : last + 1])
        a = ok / (ok + failed)
        h = max(avail.h * a, 1.0)
        when = time_label(b0.start)
        if last > first:
            when += "-" + time_label(b1.start)
        body.append(
            _bar(
                avail.x + first * bar_w,
                avail.bottom - h,
                max(bar_w * (last - first + 1), 0.5),
                h,
                f"{when}: {a * 100:.1f} % ({ok} ok, {failed} {failed_text})",
                "bar-failed" if failed else "bar-ok",
                BAD if failed else OK,
            )
        )
    latencies = [v for b in buckets for v in (b.p95_s, b.mean_s) if v is not None]
    top = nice_ceiling(min(max(latencies, default=0.0), 10.0))
    for v in _ticks(top):
        y = lat.bottom - lat.h * v / top
        body.append(_el("line", x1=lat.x, x2=lat.right, y1=y, y2=y, stroke=GRID))
        body.append(
            _text(
                lat.x - 4,
                y + 4,
                seconds_text(v) if v else "0",
                anchor="end",
                fill=MUTED,
                font_size=10,
            )
        )

    def line_of(pick: Callable[[WriteBucket], float | None]) -> list[tuple[float, float] | None]:
        pts: list[tuple[float, float] | None] = []
        for i, b in enumerate(buckets):
            v = pick(b)
            if v is None:
                pts.append(None)
            else:
                pts.append((lat.x + (i + 0.5) * bar_w, lat.bottom - lat.h * min(v, top) / top))
        return pts

    body += _polyline(line_of(lambda b: b.p95_s), BAD, "line-p95")
    body += _polyline(line_of(lambda b: b.mean_s), MEAN, "line-mean")
    for area in (avail, lat):
        body.append(
            _el("line", x1=area.x, x2=area.right, y1=area.bottom, y2=area.bottom, stroke=INK)
        )
        body.append(_el("line", x1=area.x, x2=area.x, y1=area.y, y2=area.bottom, stroke=INK))
    # Six time labels (every 10 minutes over an hour).
    every = max(1, n // 6)
    for i in range(0, len(buckets), every):
        x = lat.x + i * bar_w
        body.append(_el("line", x1=x, x2=x, y1=lat.bottom, y2=lat.bottom + 4, stroke=INK))
        body.append(
            _text(x, lat.bottom + 17, time_label(buckets[i].start), anchor="middle", font_size=11)
        )
    if not judged:
        body.append(_text(avail.x + avail.w / 2, avail.y + avail.h / 2, no_writes, anchor="middle"))
    return _svg(height, title, _history_desc(buckets, _), body, "write-history-chart", ident)


def _history_desc(buckets: Sequence[WriteBucket], _: Gettext) -> str:
    ok = sum(b.ok for b in buckets)
    failed = sum(b.failed for b in buckets)
    if ok + failed == 0:
        return _("No writes in the last hour.")
    worst = min((b.availability for b in buckets if b.availability is not None), default=1.0)
    p95s = [b.p95_s for b in buckets if b.p95_s is not None]
    avail, failed_text, lowest = _("Write availability (%)"), _("failed"), _("lowest")
    text = (
        f"{avail}: {ok * 100 / (ok + failed):.2f} ({ok} ok, {failed} {failed_text};"
        f" {lowest} {worst * 100:.1f})."
    )
    if p95s:
        at_most = _("at most")
        text += f" p95 {at_most} {seconds_text(max(p95s))}."
    return text
