"""Server-side charts as inline SVG, written directly (no plotting library, no JavaScript).

matplotlib took 1.3-1.5 s for a card's two charts (figure, layout, SVG backend; measured at
load average 15); these charts are a few rectangles or one polyline, so they are built as SVG
text in about a millisecond. Every chart has ``role="img"`` and an ``aria-label`` saying what
it shows, and draws its axis labels as text, so it reads without colour.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from markupsafe import Markup, escape

BLUE = "#2f6fb3"
RED = "#c0504d"
GREEN = "#1f7a4d"
GREY = "#8795a5"
_FONT = 'font-size="11" fill="#5d6b7a"'


def _fmt_short(value: float) -> str:
    """1234567 -> '1.2M', 15300 -> '15.3k', 12.5 -> '12.5'."""
    a = abs(value)
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            return f"{value / div:.1f}{unit}"
    return f"{value:.0f}" if a >= 10 else f"{value:.1f}"


def _svg(width: int, height: int, label: str, body: list[str]) -> Markup:
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(label)}">'
        f"<title>{escape(label)}</title>{''.join(body)}</svg>"
    )


def column_chart(
    labels: Sequence[str], values: Sequence[float], *, label: str, colour: str = BLUE,
    width: int = 640, height: int = 220, every: int = 1,
) -> Markup:
    """Vertical bars from a zero line (negative values hang below it, in red); ``every``:
    label every n-th column."""
    v = np.asarray(values, dtype=float)
    left, right, top, bottom = 48, 8, 10, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    hi, lo = max(float(v.max(initial=0)), 0.0), min(float(v.min(initial=0)), 0.0)
    span = (hi - lo) or 1.0
    zero_y = top + plot_h * hi / span
    slot = plot_w / max(len(v), 1)
    bar = max(slot * 0.75, 1.0)
    body = [
        f'<line x1="{left}" y1="{zero_y:.1f}" x2="{width - right}" y2="{zero_y:.1f}" '
        f'stroke="{GREY}"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" {_FONT}>{_fmt_short(hi)}</text>',
    ]
    if lo < 0:
        body.append(f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" {_FONT}>'
                    f"{_fmt_short(lo)}</text>")
    for i, (name, value) in enumerate(zip(labels, v, strict=True)):
        x = left + i * slot + (slot - bar) / 2
        h = plot_h * abs(value) / span
        y = zero_y - h if value >= 0 else zero_y
        fill = colour if value >= 0 else RED
        body.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                    f'fill="{fill}"><title>{escape(name)}: {value:,.2f}</title></rect>')
        if i % every == 0:
            body.append(f'<text x="{x + bar / 2:.1f}" y="{height - bottom + 16}" '
                        f'text-anchor="middle" {_FONT}>{escape(name)}</text>')
    return _svg(width, height, label, body)


def bar_chart(
    labels: Sequence[str], values: Sequence[float], *, label: str, colour: str = BLUE,
    value_text: Callable[[float], str] = _fmt_short, width: int = 520,
) -> Markup:
    """Horizontal bars, first row at the top, each with its label above it (long labels
    stay readable at phone width) and its value at its end."""
    v = np.asarray(values, dtype=float)
    row, value_w = 36, 60
    height = row * len(v) + 4
    plot_w = width - value_w
    top = float(np.nanmax(np.abs(v), initial=0)) or 1.0
    body = []
    for i, (name, value) in enumerate(zip(labels, v, strict=True)):
        y = 2 + i * row
        w = max(plot_w * abs(value) / top, 1.0) if np.isfinite(value) else 0
        body += [
            f'<text x="0" y="{y + 12}" font-size="12" fill="#1d2733">{escape(name)}</text>',
            f'<rect x="0" y="{y + 17}" width="{w:.1f}" height="13" '
            f'fill="{colour if value >= 0 else RED}"/>',
            f'<text x="{w + 4:.1f}" y="{y + 28}" {_FONT}>{escape(value_text(value))}</text>',
        ]
    return _svg(width, height, label, body)


def line_chart(
    series: dict[str, tuple[np.ndarray, np.ndarray]], *, label: str, x_label: str,
    y_label: str, width: int = 520, height: int = 300, guide: float | None = None,
) -> Markup:
    """Lines on [0, 1] x [0, 1] (shares), one per series (name -> (x, y)), with a legend and
    an optional vertical guide at x = ``guide``."""
    left, right, top, bottom = 44, 22, 12, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    colours = (BLUE, GREEN, RED, GREY)

    def px(x: float) -> float:
        return left + plot_w * x

    def py(y: float) -> float:
        return top + plot_h * (1 - y)

    body = [f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
            f'stroke="#dde3ea"/>']
    for tick in (0, 0.2, 0.4, 0.6, 0.8, 1.0):
        body += [
            f'<text x="{px(tick):.1f}" y="{top + plot_h + 14}" text-anchor="middle" {_FONT}>'
            f"{tick:.0%}</text>",
            f'<text x="{left - 4}" y="{py(tick) + 4:.1f}" text-anchor="end" {_FONT}>'
            f"{tick:.0%}</text>",
        ]
    body.append(f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle" '
                f"{_FONT}>{escape(x_label)}</text>")
    body.append(f'<text x="{left + 6}" y="{top + 14}" {_FONT}>{escape(y_label)}</text>')
    if guide is not None:
        body.append(f'<line x1="{px(guide):.1f}" y1="{top}" x2="{px(guide):.1f}" '
                    f'y2="{top + plot_h}" stroke="{GREY}" stroke-dasharray="4 3"/>')
    for k, (name, (x, y)) in enumerate(series.items()):
        colour = colours[k % len(colours)]
        points = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in _thin(x, y))
        body += [
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>',
            f'<rect x="{left + 10}" y="{top + 24 + 16 * k}" width="10" height="10" '
            f'fill="{colour}"/>',
            f'<text x="{left + 24}" y="{top + 33 + 16 * k}" font-size="11" fill="#1d2733">'
            f"{escape(name)}</text>",
        ]
    return _svg(width, height, label, body)


def _thin(x: np.ndarray, y: np.ndarray, points: int = 200) -> list[tuple[float, float]]:
    """At most ``points`` points of a curve (evenly spaced in x; the ends kept), from (0, 0)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) > points:
        pick = np.unique(np.linspace(0, len(x) - 1, points).round().astype(int))
        x, y = x[pick], y[pick]
    return [(0.0, 0.0), *zip(x.tolist(), y.tolist(), strict=True)]


# --- the app's charts ---------------------------------------------------------------------------


def spend_chart(monthly: pd.DataFrame) -> Markup | None:
    """Net spend per month (returns subtracted); None when the customer never bought."""
    if monthly.empty:
        return None
    spend = monthly.set_index(pd.to_datetime(monthly["month"]))["spend"]
    months = pd.date_range(spend.index.min(), spend.index.max(), freq="MS")
    spend = spend.reindex(months, fill_value=0.0)  # months without a purchase show as 0
    labels = [m.strftime("%b %y") for m in months]
    return column_chart(labels, spend.to_numpy(), label="net spend per month",
                        every=max(1, -(-len(labels) // 8)))


def reasons_chart(reasons: list[str]) -> Markup | None:
    """The churn model's top reasons, strongest at the top. Bar length is the rank: the model
    returns its reasons ordered, not their weights."""
    if not reasons:
        return None
    n = len(reasons)
    return bar_chart([r.replace("_", " ") for r in reasons], list(range(n, 0, -1)),
                     label="churn reasons, strongest first", colour=RED,
                     value_text=lambda v: f"#{n - int(v) + 1}")


def interval_chart(
    labels: Sequence[str], values: Sequence[float], low: Sequence[float],
    high: Sequence[float], *, label: str, colour: str = BLUE, width: int = 640,
    height: int = 240,
) -> Markup:
    """Columns (non-negative values) each with a whisker from ``low`` to ``high``: an
    expected amount and its interval per period; every column's tooltip gives all three."""
    v, lo, hi = (np.asarray(a, dtype=float) for a in (values, low, high))
    left, right, top, bottom = 52, 8, 10, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = float(np.nanmax(np.concatenate([hi, v]), initial=0)) or 1.0
    slot = plot_w / max(len(v), 1)
    bar = max(slot * 0.6, 1.0)

    def py(value: float) -> float:
        return top + plot_h * (1 - max(value, 0.0) / peak)

    body = [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" '
        f'stroke="{GREY}"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" {_FONT}>{_fmt_short(peak)}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" {_FONT}>0</text>',
    ]
    for i, name in enumerate(labels):
        x = left + i * slot + (slot - bar) / 2
        mid = x + bar / 2
        tip = (f"{escape(name)}: {v[i]:,.0f} expected, interval {lo[i]:,.0f} to "
               f"{hi[i]:,.0f}")
        body += [
            f'<g><title>{tip}</title>'
            f'<rect x="{x:.1f}" y="{py(v[i]):.1f}" width="{bar:.1f}" '
            f'height="{top + plot_h - py(v[i]):.1f}" fill="{colour}"/>'
            f'<line x1="{mid:.1f}" y1="{py(lo[i]):.1f}" x2="{mid:.1f}" y2="{py(hi[i]):.1f}" '
            f'stroke="#1d2733" stroke-width="1.5"/>'
            f'<line x1="{mid - 6:.1f}" y1="{py(hi[i]):.1f}" x2="{mid + 6:.1f}" '
            f'y2="{py(hi[i]):.1f}" stroke="#1d2733"/>'
            f'<line x1="{mid - 6:.1f}" y1="{py(lo[i]):.1f}" x2="{mid + 6:.1f}" '
            f'y2="{py(lo[i]):.1f}" stroke="#1d2733"/></g>',
            f'<text x="{mid:.1f}" y="{height - bottom + 16}" text-anchor="middle" {_FONT}>'
            f"{escape(name)}</text>",
        ]
    return _svg(width, height, label, body)


def forecast_chart(forecast: pd.DataFrame | None, interval: float) -> Markup | None:
    """The pipeline forecast: expected won amount per month with its central interval."""
    if forecast is None or forecast.empty:
        return None
    labels = [pd.Timestamp(m).strftime("%b %Y") for m in forecast["month"]]
    return interval_chart(labels, forecast["expected_won"], forecast["low"], forecast["high"],
                          label=f"expected won amount per month with its {interval:.0%} "
                          "interval")
