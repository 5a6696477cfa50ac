"""A hand-written SVG of line charts (no plotting dependency): one panel per figure, stacked."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

WIDTH = 720
PANEL_HEIGHT = 260
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 150, 36, 44
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")

Point = tuple[float, float]


@dataclass(frozen=True)
class Panel:
    title: str
    x_label: str
    y_label: str
    series: dict[str, list[Point]]


def nice_max(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `value` (axis top)."""
    if value <= 0:
        return 1.0
    scale = 10.0 ** math.floor(math.log10(value))
    return next(m * scale for m in (1, 2, 2.5, 5, 10) if m * scale >= value * (1 - 1e-12))


def _fmt(v: float) -> str:
    return f"{v:.0f}" if v >= 10 or v == int(v) else f"{v:.2g}"


def _panel(p: Panel, top: float) -> list[str]:
    pts = [pt for s in p.series.values() for pt in s]
    x0 = min((x for x, _ in pts), default=0.0)
    x1 = max((x for x, _ in pts), default=1.0)
    if x1 <= x0:
        x1 = x0 + 1
    y1 = nice_max(max((y for _, y in pts), default=1.0))
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    ptop, bottom = top + MARGIN_TOP, top + PANEL_HEIGHT - MARGIN_BOTTOM

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (right - left)

    def sy(y: float) -> float:
        return bottom - y / y1 * (bottom - ptop)

    out = [
        f'<text x="{left}" y="{top + 20}" font-size="14" font-weight="bold">{escape(p.title)}'
        "</text>",
        f'<rect x="{left}" y="{ptop}" width="{right - left}" height="{bottom - ptop}"'
        ' fill="none" stroke="#999"/>',
    ]
    for i in range(5):
        yv = y1 * i / 4
        y = sy(yv)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">'
            f"{_fmt(yv)}</text>"
        )
    for i in range(5):
        xv = x0 + (x1 - x0) * i / 4
        out.append(
            f'<text x="{sx(xv):.1f}" y="{bottom + 16}" font-size="11" text-anchor="middle">'
            f"{_fmt(xv)}</text>"
        )
    out.append(
        f'<text x="{(left + right) / 2}" y="{bottom + 34}" font-size="12" text-anchor="middle">'
        f"{escape(p.x_label)}</text>"
    )
    out.append(
        f'<text x="16" y="{(ptop + bottom) / 2}" font-size="12" text-anchor="middle"'
        f' transform="rotate(-90 16 {(ptop + bottom) / 2})">{escape(p.y_label)}</text>'
    )
    for i, (name, series) in enumerate(p.series.items()):
        colour = COLOURS[i % len(COLOURS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in series)
        if coords:
            out.append(
                f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
            out += [
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"/>'
                for x, y in series
            ]
        ly = ptop + 14 + 18 * i
        out.append(
            f'<line x1="{right + 10}" y1="{ly - 4}" x2="{right + 28}" y2="{ly - 4}"'
            f' stroke="{colour}" stroke-width="2"/>'
        )
        out.append(f'<text x="{right + 32}" y="{ly}" font-size="11">{escape(name)}</text>')
    return out


def render(title: str, panels: Sequence[Panel]) -> str:
    height = 40 + PANEL_HEIGHT * len(panels)
    body = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}"'
        f' viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="24" font-size="16" text-anchor="middle">{escape(title)}</text>',
    ]
    for i, p in enumerate(panels):
        body += _panel(p, 40 + i * PANEL_HEIGHT)
    body.append("</svg>")
    return "\n".join(body) + "\n"
