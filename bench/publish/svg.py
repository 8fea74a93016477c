"""Small static SVG charts (line charts with optional error bars) for studies and the site.

Written by hand: none of our dependencies plots, and a self-contained SVG (no fonts, scripts
or CDN) is a few dozen lines; every text node is XML-escaped.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f")


@dataclass
class Series:
    """One line: points (x, y) and optional (low, high) error bars per point."""

    label: str
    points: Sequence[tuple[float, float]]
    errors: Sequence[tuple[float, float]] | None = None
    dashed: bool = False
    meta: dict[str, str] = field(default_factory=dict)
    ordered: bool = False  # draw the points in the given order (a trajectory), not sorted by x


CHAR_WIDTH = {11: 6.4, 13: 7.6}  # an upper bound of sans-serif glyph widths per font size (px), for layout


def text_width(text: str, size: int = 11) -> float:
    return len(text) * CHAR_WIDTH[size]


def wrap(text: str, width: float, size: int = 13) -> list[str]:
    """``text`` in lines that fit ``width`` px (breaking at spaces)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and text_width(lines[-1] + " " + word, size) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def _title(title: str, width: float) -> tuple[list[str], int]:
    """SVG text lines of a centred title wrapped to ``width``, and the height they take."""
    lines = wrap(title, width - 16)
    out = [f'<text x="{width / 2:.0f}" y="{18 + 16 * i}" text-anchor="middle" font-size="13">{escape(line)}</text>'
           for i, line in enumerate(lines)]
    return out, 16 * len(lines)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    step = (high - low) / (count - 1)
    return [low + i * step for i in range(count)]


@dataclass(frozen=True)
class _Frame:
    """A line chart's frame: its SVG up to the data (title, box, grid, ticks, axis labels) and
    the geometry the data is placed by."""

    head: tuple[str, ...]
    left: int
    top: int
    plot_w: int
    plot_h: int
    x_low: float
    x_span: float
    y_low: float
    y_span: float


def line_chart(series: Sequence[Series], *, title: str, x_label: str, y_label: str, log_x: bool = False,
               y_range: tuple[float, float] | None = None, width: int = 560, height: int = 340) -> str:
    """An SVG document with one polyline (plus markers and error bars) per series; the legend's
    column and the title's lines are sized to their text, so nothing overflows the viewBox."""
    legend = max((text_width(s.label) for s in series), default=0.0)
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points] + [v for s in series for e in (s.errors or []) for v in e]
    if not xs:
        xs, ys = [0.0, 1.0], [0.0, 1.0]
    fx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    x_low, x_high = min(fx(x) for x in xs), max(fx(x) for x in xs)
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    y_low, y_high = y_range or (min(ys), max(ys))
    if y_high == y_low:
        y_low, y_high = y_low - 0.5, y_high + 0.5
    frame_inputs = (title, x_label, y_label, log_x, int(legend), width, height, x_low, x_high, y_low, y_high,
                    tuple(sorted(set(xs))))
    # the cache treats -0.0 as 0.0, which a tick label would print as "-0": such frames are not cached
    signed_zero = any(v == 0 and math.copysign(1.0, v) < 0 for v in (x_low, x_high, y_low, y_high, *frame_inputs[-1]))
    frame = (_line_frame.__wrapped__ if signed_zero else _line_frame)(*frame_inputs)
    left, top, plot_w, plot_h = frame.left, frame.top, frame.plot_w, frame.plot_h
    x_span, y_span = frame.x_span, frame.y_span
    out = list(frame.head)
    # Each x's pixel and label formatted once per chart, each y's pixel once per point, the arithmetic
    # inline (px / py's exact expressions): a site build draws a few thousand charts of a few dozen
    # points, and the per-point function calls were most of their cost.
    x_text = {x: (f"{left + (fx(x) - x_low) / x_span * plot_w:.1f}", f"{x:.4g}") for x in set(xs)}
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        label = escape(s.label)
        at = {(x, y): (x_text[x][0], f"{top + (1 - (y - y_low) / y_span) * plot_h:.1f}") for x, y in s.points}
        points = list(s.points) if s.ordered else sorted(s.points)
        path = " ".join([f"{at[point][0]},{at[point][1]}" for point in points])
        dash = ' stroke-dasharray="5,3"' if s.dashed else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        circle = f'" r="3" fill="{color}"><title>{label}: '
        if s.errors:
            whisker = f'" stroke="{color}" stroke-width="1"/>'
            out += [f'<line x1="{at[x, y][0]}" x2="{at[x, y][0]}" y1="{top + (1 - (low - y_low) / y_span) * plot_h:.1f}" '
                    f'y2="{top + (1 - (high - y_low) / y_span) * plot_h:.1f}{whisker}\n'
                    f'<circle cx="{at[x, y][0]}" cy="{at[x, y][1]}{circle}{x_text[x][1]}, {y:.4g}</title></circle>'
                    for (x, y), (low, high) in zip(s.points, s.errors)]
        else:
            out += [f'<circle cx="{at[x, y][0]}" cy="{at[x, y][1]}{circle}{x_text[x][1]}, {y:.4g}</title></circle>'
                    for x, y in s.points]
        legend_y = top + 14 + 16 * i
        out.append(f'<line x1="{left + plot_w + 10}" x2="{left + plot_w + 28}" y1="{legend_y - 4}" y2="{legend_y - 4}" '
                   f'stroke="{color}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{left + plot_w + 32}" y="{legend_y}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out)


@functools.lru_cache(maxsize=4096, typed=True)
def _line_frame(title: str, x_label: str, y_label: str, log_x: bool, legend: int, width: int, height: int,
                x_low: float, x_high: float, y_low: float, y_high: float, x_values: tuple[float, ...]) -> _Frame:
    """The frame of :func:`line_chart` (cached: a site build draws thousands of charts on a few
    hundred frames, e.g. every entry's worst-case curve on its track's)."""
    left, right, bottom = 60, legend + 44, 46
    width = max(width, left + 280 + right)
    title_lines, title_height = _title(title, width)
    top = title_height + 16
    plot_w, plot_h = width - left - right, height - top - bottom
    x_span, y_span = x_high - x_low, y_high - y_low

    def px(x: float) -> float:
        return left + ((math.log10(x) if log_x else x) - x_low) / x_span * plot_w

    def py(y: float) -> float:
        return top + (1 - (y - y_low) / y_span) * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'font-family="sans-serif" font-size="11" role="img" aria-label="{escape(title, {chr(34): "&quot;"})}">',
        f'<title>{escape(title)}</title>',
        *title_lines,
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>',
    ]
    for tick in _ticks(y_low, y_high):
        out.append(f'<line x1="{left - 4}" x2="{left + plot_w}" y1="{py(tick):.1f}" y2="{py(tick):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{py(tick) + 4:.1f}" text-anchor="end">{tick:.3g}</text>')
    x_ticks = list(x_values)
    if len(x_ticks) > 10:
        x_ticks = [10 ** t for t in _ticks(x_low, x_high)] if log_x else _ticks(x_low, x_high)
    for tick in x_ticks:
        out.append(f'<text x="{px(tick):.1f}" y="{top + plot_h + 15}" text-anchor="middle">{tick:.4g}</text>')
    out.append(f'<text x="{left + plot_w / 2:.0f}" y="{height - 8}" text-anchor="middle">{escape(x_label)}</text>')
    out.append(f'<text x="14" y="{top + plot_h / 2:.0f}" text-anchor="middle" '
               f'transform="rotate(-90 14 {top + plot_h / 2:.0f})">{escape(y_label)}</text>')
    return _Frame(tuple(out), left, top, plot_w, plot_h, x_low, x_span, y_low, y_span)


def bar_chart(bars: Sequence[tuple[str, float, float | None, float | None]], *, title: str, x_label: str,
              width: int = 560, bar_height: int = 18) -> str:
    """Horizontal bars in [0, 1]: (label, value, ci_low, ci_high); whiskers show the CI. The label
    column and the title's lines are sized to their text, so nothing overflows the viewBox."""
    left, right = int(max((text_width(b[0]) for b in bars), default=0.0)) + 16, 20
    width = max(width, left + 260 + right)
    title_lines, title_height = _title(title, width)
    top = title_height + 16
    plot_w = width - left - right
    height = top + bar_height * 1.5 * len(bars) + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height:.0f}" viewBox="0 0 {width} {height:.0f}" '
        f'font-family="sans-serif" font-size="11" role="img" aria-label="{escape(title, {chr(34): "&quot;"})}">',
        f'<title>{escape(title)}</title>',
        *title_lines,
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + tick * plot_w
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{height - 34:.0f}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 20:.0f}" text-anchor="middle">{tick:g}</text>')
    for i, (label, value, low, high) in enumerate(bars):
        y = top + i * bar_height * 1.5
        color = PALETTE[i % len(PALETTE)]
        out.append(f'<text x="{left - 6}" y="{y + bar_height * 0.7:.1f}" text-anchor="end">{escape(label)}</text>')
        out.append(f'<rect x="{left}" y="{y:.1f}" width="{max(value, 0) * plot_w:.1f}" height="{bar_height}" '
                   f'fill="{color}" fill-opacity="0.75"><title>{escape(label)}: {value:.4f}</title></rect>')
        if low is not None and high is not None:
            mid = y + bar_height / 2
            out.append(f'<line x1="{left + low * plot_w:.1f}" x2="{left + high * plot_w:.1f}" y1="{mid:.1f}" '
                       f'y2="{mid:.1f}" stroke="#000" stroke-width="1.5"/>')
    out.append(f'<text x="{left + plot_w / 2:.0f}" y="{height - 6:.0f}" text-anchor="middle">{escape(x_label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


@dataclass
class Point:
    """One labelled point with (low, high) intervals on both axes."""

    label: str
    x: float
    y: float
    x_interval: tuple[float, float]
    y_interval: tuple[float, float]
    highlight: bool = False


def scatter_chart(points: Sequence[Point], *, title: str, x_label: str, y_label: str, width: int = 720,
                  height: int = 420) -> str:
    """Labelled points with 95% interval whiskers on both axes (the front page's clean vs robust)."""
    left, right, bottom = 60, 20, 46
    title_lines, title_height = _title(title, width)
    top = title_height + 16
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [v for p in points for v in (*p.x_interval, p.x)] or [0.0, 1.0]
    ys = [v for p in points for v in (*p.y_interval, p.y)] or [0.0, 1.0]
    x_low, x_high = min(xs) - 0.01, max(xs) + 0.01
    y_low, y_high = max(min(ys) - 0.02, 0.0), min(max(ys) + 0.02, 1.0)
    if y_high <= y_low:
        y_high = y_low + 0.1

    def px(x: float) -> float:
        return left + (x - x_low) / (x_high - x_low) * plot_w

    def py(y: float) -> float:
        return top + (1 - (y - y_low) / (y_high - y_low)) * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'font-family="sans-serif" font-size="11" role="img" aria-label="{escape(title, {chr(34): "&quot;"})}">',
        f'<title>{escape(title)}</title>', *title_lines,
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>',
    ]
    for tick in _ticks(y_low, y_high):
        out.append(f'<line x1="{left - 4}" x2="{left + plot_w}" y1="{py(tick):.1f}" y2="{py(tick):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{py(tick) + 4:.1f}" text-anchor="end">{tick:.2f}</text>')
    for tick in _ticks(x_low, x_high):
        out.append(f'<text x="{px(tick):.1f}" y="{top + plot_h + 15}" text-anchor="middle">{tick:.3f}</text>')
    out.append(f'<text x="{left + plot_w / 2:.0f}" y="{height - 8}" text-anchor="middle">{escape(x_label)}</text>')
    out.append(f'<text x="14" y="{top + plot_h / 2:.0f}" text-anchor="middle" '
               f'transform="rotate(-90 14 {top + plot_h / 2:.0f})">{escape(y_label)}</text>')
    placed: list[tuple[float, float, float, float]] = []
    omitted = 0
    for p in points:
        color = PALETTE[0] if not p.highlight else PALETTE[1]
        out.append(f'<line x1="{px(p.x_interval[0]):.1f}" x2="{px(p.x_interval[1]):.1f}" y1="{py(p.y):.1f}" '
                   f'y2="{py(p.y):.1f}" stroke="{color}" stroke-opacity="0.5"/>')
        out.append(f'<line x1="{px(p.x):.1f}" x2="{px(p.x):.1f}" y1="{py(p.y_interval[0]):.1f}" '
                   f'y2="{py(p.y_interval[1]):.1f}" stroke="{color}" stroke-opacity="0.5"/>')
        out.append(f'<circle cx="{px(p.x):.1f}" cy="{py(p.y):.1f}" r="4" fill="{color}"><title>{escape(p.label)}: clean '
                   f'{p.x:.3f}, robust {p.y:.3f}</title></circle>')
        spot = _free_label_spot(px(p.x), py(p.y), text_width(p.label), placed, (left, top, left + plot_w, top + plot_h))
        if spot is None:
            omitted += 1
            continue
        x_text, y_text, anchor = spot
        out.append(f'<text x="{x_text:.1f}" y="{y_text:.1f}" text-anchor="{anchor}" fill="#333">{escape(p.label)}</text>')
    if omitted:  # one more line below the axis label, inside a taller viewBox
        note = f"{omitted} label(s) left off where they would overlap; hover a point for its entry"
        out[0] = out[0].replace(f'height="{height}" viewBox="0 0 {width} {height}"',
                                f'height="{height + 16}" viewBox="0 0 {width} {height + 16}"')
        out.append(f'<text x="{left}" y="{height + 8}" fill="#555">{escape(note)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _free_label_spot(x: float, y: float, text_w: float, placed: list[tuple[float, float, float, float]],
                     plot: tuple[float, float, float, float]) -> tuple[float, float, str] | None:
    """Where a point's label fits: right of the point, else left, at a few heights, without
    overlapping an earlier label or leaving the plot; None when nowhere (greedy, in point order).
    Appends the chosen box (x0, y0, x1, y1) to ``placed``."""
    for dy in (-5.0, 13.0, -16.0, 24.0):
        for anchor in ("start", "end"):
            x0 = x + 6 if anchor == "start" else x - 6 - text_w
            box = (x0, y + dy - 10, x0 + text_w, y + dy + 2)
            inside = plot[0] <= box[0] and box[2] <= plot[2] and plot[1] <= box[1] and box[3] <= plot[3]
            if inside and not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                placed.append(box)
                return (x + 6 if anchor == "start" else x - 6), y + dy, anchor
    return None


def heatmap(values: Sequence[Sequence[float]], xs: Sequence[float], ys: Sequence[float], *, title: str,
            x_label: str, y_label: str, paths: Sequence[Series] = (), size: int = 360) -> str:
    """A grid of values (rows = ys, columns = xs) as coloured cells (light = low, dark = high),
    with optional paths drawn over it in data coordinates; a colour bar gives the scale."""
    legend = max((text_width(p.label) for p in paths), default=0.0)
    left, right, bottom = 60, int(max(legend + 44, text_width("loss 0.0000 (light) to 0.0000 (dark)") + 16)), 46
    width = left + size + right
    title_lines, title_height = _title(title, width)
    top = title_height + 16
    height = top + size + bottom
    flat = [v for row in values for v in row]
    low, high = (min(flat), max(flat)) if flat else (0.0, 1.0)
    span = (high - low) or 1.0
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)

    def px(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1.0) * size

    def py(y: float) -> float:
        return top + (1 - (y - y0) / ((y1 - y0) or 1.0)) * size

    def shade(v: float) -> str:
        t = (v - low) / span
        return f"rgb({int(255 - 200 * t)},{int(255 - 170 * t)},{int(255 - 60 * t)})"

    cell_w, cell_h = size / max(len(xs), 1), size / max(len(ys), 1)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'font-family="sans-serif" font-size="11" role="img" aria-label="{escape(title, {chr(34): "&quot;"})}">',
        f'<title>{escape(title)}</title>', *title_lines,
    ]
    for j, row in enumerate(values):
        for i, v in enumerate(row):
            out.append(f'<rect x="{left + i * cell_w:.1f}" y="{top + size - (j + 1) * cell_h:.1f}" width="{cell_w + 0.5:.1f}" '
                       f'height="{cell_h + 0.5:.1f}" fill="{shade(v)}"><title>{v:.4g}</title></rect>')
    out.append(f'<rect x="{left}" y="{top}" width="{size}" height="{size}" fill="none" stroke="#999"/>')
    for tick in _ticks(x0, x1):
        out.append(f'<text x="{px(tick):.1f}" y="{top + size + 15}" text-anchor="middle">{tick:.3g}</text>')
    for tick in _ticks(y0, y1):
        out.append(f'<text x="{left - 6}" y="{py(tick) + 4:.1f}" text-anchor="end">{tick:.3g}</text>')
    out.append(f'<text x="{left + size / 2:.0f}" y="{height - 8}" text-anchor="middle">{escape(x_label)}</text>')
    out.append(f'<text x="14" y="{top + size / 2:.0f}" text-anchor="middle" '
               f'transform="rotate(-90 14 {top + size / 2:.0f})">{escape(y_label)}</text>')
    for k, series in enumerate(paths):
        color = PALETTE[(k + 1) % len(PALETTE)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in series.points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        if series.points:
            x, y = series.points[-1]
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{color}"/>')
        legend_y = top + 14 + 16 * k
        out.append(f'<line x1="{left + size + 10}" x2="{left + size + 28}" y1="{legend_y - 4}" y2="{legend_y - 4}" '
                   f'stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{left + size + 32}" y="{legend_y}">{escape(series.label)}</text>')
    bar_y = top + 16 * (len(paths) + 1) + 10
    out.append(f'<text x="{left + size + 10}" y="{bar_y}">loss {low:.3g} (light) to {high:.3g} (dark)</text>')
    out.append("</svg>")
    return "\n".join(out)
