"""Line charts drawn as inline SVG: no script, no font or network fetch, readable as text.

The report inlines these charts, so it renders offline in any browser, and a test can read the
plotted values back from the markup (each point carries ``data-x`` and ``data-y``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

WIDTH, HEIGHT = 680, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 150, 34, 46
PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
    "#7f7f7f", "#bcbd22",
)  # fmt: skip

Series = Mapping[str, Sequence[tuple[float, float]]]


def _ticks(lo: float, hi: float, count: int = 5, *, integer: bool = False) -> list[float]:
    """About ``count`` round tick values covering ``[lo, hi]`` (whole numbers if ``integer``)."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 2.5, 5, 10):
        if raw <= step * mult:
            step *= mult
            break
    if integer:
        step = max(1.0, math.ceil(step))
    first = math.floor(lo / step) * step
    out = [round(first, 10)]
    while out[-1] < hi - step * 1e-9:  # the last tick is at or above hi
        out.append(round(first + len(out) * step, 10))
    return out


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def line_chart(series: Series, *, title: str, x_label: str, y_label: str) -> str:
    """An SVG line chart of ``series`` (name -> (x, y) points), or a note when it is empty.

    Args:
        series: the lines; non-finite points are left out.
        title: drawn above the plot.
        x_label: the horizontal axis.
        y_label: the vertical axis.
    """
    clean = {
        name: [(float(x), float(y)) for x, y in pts if math.isfinite(x) and math.isfinite(y)]
        for name, pts in series.items()
    }
    clean = {name: pts for name, pts in clean.items() if pts}
    if not clean:
        return f'<p class="empty">{escape(title)}: nothing was measured in this run.</p>'
    xs = [x for pts in clean.values() for x, _ in pts]
    ys = [y for pts in clean.values() for _, y in pts]
    whole = all(x == int(x) for x in xs)
    x_ticks = _ticks(min(xs), max(xs), integer=whole) if max(xs) > min(xs) else [min(xs)]
    y_ticks = _ticks(min(0.0, min(ys)), max(ys) if max(ys) > 0 else 1.0)
    x0, x1 = x_ticks[0], x_ticks[-1] if len(x_ticks) > 1 else x_ticks[0] + 1
    y0, y1 = y_ticks[0], y_ticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return TOP + plot_h - (y - y0) / (y1 - y0) * plot_h

    parts = [
        f'<svg role="img" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" class="chart">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT}" y="20" class="chart-title">{escape(title)}</text>',
    ]
    for t in y_ticks:
        y = py(t)
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>'
        )
    for t in x_ticks:
        x = px(t)
        parts.append(
            f'<line x1="{x:.1f}" y1="{TOP + plot_h}" x2="{x:.1f}" y2="{TOP + plot_h + 4}" '
            f'class="axis"/><text x="{x:.1f}" y="{TOP + plot_h + 18}" text-anchor="middle">'
            f"{_fmt(t)}</text>"
        )
    parts.append(
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" '
        f'class="axis"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" '
        f'class="axis"/>'
        f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
        f'<text x="14" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {TOP + plot_h / 2:.1f})">{escape(y_label)}</text>'
    )
    for i, (name, pts) in enumerate(sorted(clean.items())):
        color = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sorted(pts))
        parts.append(
            f'<g class="series" data-name="{escape(name)}">'
            f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>'
        )
        for x, y in sorted(pts):
            parts.append(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}" '
                f'data-x="{x:g}" data-y="{y!r}"><title>{escape(name)}: {_fmt(y)} at '
                f"{escape(x_label)} {x:g}</title></circle>"
            )
        ly = TOP + 14 + 16 * i
        parts.append(
            f'<rect x="{LEFT + plot_w + 14}" y="{ly - 9}" width="10" height="10" '
            f'fill="{color}"/><text x="{LEFT + plot_w + 30}" y="{ly}">{escape(name[:18])}</text>'
            "</g>"
        )
    parts.append("</svg>")
    return "".join(parts)
