"""SVG charts and the HTML helpers the report's sections share (the run page, the score, the sweep page)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def num(value: float | int | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


@dataclass(frozen=True)
class Series:
    css_class: str
    element_id: str
    xs: Sequence[float]
    ys: Sequence[float]


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi == lo:
        return [lo]
    return [lo + (hi - lo) * i / (count - 1) for i in range(count)]


def line_chart(
    series: Sequence[Series], *, svg_id: str, title: str, x_label: str, width: int = 900, height: int = 280
) -> str:
    """An SVG line chart; each series is one <polyline> with one point per finite value."""
    left, right, top, bottom = 64, 16, 16, 40
    points = [(x, y) for s in series for x, y in zip(s.xs, s.ys, strict=False) if math.isfinite(y)]
    if not points:
        return ""
    x_lo, x_hi = min(p[0] for p in points), max(p[0] for p in points)
    y_lo, y_hi = min(p[1] for p in points), max(p[1] for p in points)
    if x_hi == x_lo:
        x_hi = x_lo + 1
    pad = (y_hi - y_lo) * 0.05 or abs(y_hi) * 0.05 or 1.0
    y_lo, y_hi = y_lo - pad, y_hi + pad
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * plot_w

    def sy(y: float) -> float:
        return top + (1 - (y - y_lo) / (y_hi - y_lo)) * plot_h

    parts = [
        f'<svg id="{esc(svg_id)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">',
        f"<title>{esc(title)}</title>",
        f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}"/>',
        f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}"/>',
    ]
    for y in _ticks(y_lo, y_hi):
        parts.append(f'<text class="tick" x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{esc(num(y, 3))}</text>')
    for x in sorted({int(round(x)) for x in _ticks(x_lo, x_hi)}):
        parts.append(
            f'<text class="tick" x="{sx(x):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{int(round(x))}</text>'
        )
    parts.append(
        f'<text class="tick" x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">{esc(x_label)}</text>'
    )
    for s in series:
        coords = " ".join(f"{sx(x):.2f},{sy(y):.2f}" for x, y in zip(s.xs, s.ys, strict=False) if math.isfinite(y))
        count = sum(1 for y in s.ys if math.isfinite(y))
        parts.append(
            f'<polyline id="{esc(s.element_id)}" class="{esc(s.css_class)}" data-points="{count}" points="{coords}"/>'
        )
    parts.append("</svg>")
    return "".join(parts)
