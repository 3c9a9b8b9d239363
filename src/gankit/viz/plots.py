"""Line charts of a run's curves, drawn two ways from one description: inline SVG for the HTML
report (no JavaScript library, nothing fetched) and PNG files via matplotlib for papers."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

# Colour-blind-safe palette (Okabe and Ito, 2008).
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
WIDTH, HEIGHT = 640, 260
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 62, 16, 12, 38
MAX_MARKERS = 60  # draw a dot at every point only when there are few enough to tell apart


@dataclass
class Series:
    label: str
    steps: list[float]
    values: list[float]
    better: str | None = None  # "lower", "higher" or None (no best point is marked)

    def best(self) -> tuple[float, float] | None:
        """(step, value) of the best point, the earliest one on ties; None without a direction."""
        if self.better is None or not self.values:
            return None
        sign = 1.0 if self.better == "lower" else -1.0
        index = min(range(len(self.values)), key=lambda i: (sign * self.values[i], i))
        return self.steps[index], self.values[index]


@dataclass
class Chart:
    key: str  # file-safe name: plots/<key>.png, data-chart in the HTML
    title: str
    y_label: str
    series: list[Series] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not any(s.values for s in self.series)


def format_number(value: float) -> str:
    """Short, readable tick and table numbers: 1500 -> 1.5k, 0.000123 -> 0.000123."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 10_000:
        for divisor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if magnitude >= divisor:
                return f"{value / divisor:.4g}{suffix}"
    return f"{value:.4g}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    span = high - low
    if span <= 0 or not math.isfinite(span):
        return [low]
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value = first + len(ticks) * step
    return ticks


def _padded_range(values: list[float], pad: float = 0.05) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high == low:
        spread = abs(low) * 0.1 or 1.0
        return low - spread, high + spread
    margin = (high - low) * pad
    return low - margin, high + margin


def svg_chart(chart: Chart) -> str:
    """The chart as an inline <svg> (one polyline per series, the best point ringed)."""
    drawn = [(s, PALETTE[i % len(PALETTE)]) for i, s in enumerate(chart.series) if s.values]
    all_steps = [x for s, _ in drawn for x in s.steps]
    all_values = [y for s, _ in drawn for y in s.values]
    x_low, x_high = (min(all_steps), max(all_steps)) if all_steps else (0.0, 1.0)
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    y_low, y_high = _padded_range(all_values) if all_values else (0.0, 1.0)
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    def px(x: float) -> float:
        return MARGIN_LEFT + (x - x_low) / (x_high - x_low) * plot_w

    def py(y: float) -> float:
        return MARGIN_TOP + (y_high - y) / (y_high - y_low) * plot_h

    parts = [f'<svg class="chart" data-chart="{html.escape(chart.key)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'role="img" aria-label="{html.escape(chart.title)}">',
             f'<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{plot_w}" height="{plot_h}" class="plot-area"/>']
    for tick in nice_ticks(y_low, y_high):
        y = py(tick)
        parts.append(f'<line class="grid" x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f"{format_number(tick)}</text>")
    for tick in [t for t in nice_ticks(x_low, x_high, 6) if float(t).is_integer()]:  # steps are whole
        x = px(tick)
        parts.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{MARGIN_TOP}" y2="{MARGIN_TOP + plot_h}"/>')
        parts.append(f'<text class="tick" x="{x:.1f}" y="{MARGIN_TOP + plot_h + 16}" text-anchor="middle">'
                     f"{format_number(tick)}</text>")
    parts.append(f'<text class="axis-label" x="{MARGIN_LEFT + plot_w / 2}" y="{HEIGHT - 4}" '
                 f'text-anchor="middle">step</text>')
    parts.append(f'<text class="axis-label" transform="translate(13 {MARGIN_TOP + plot_h / 2}) rotate(-90)" '
                 f'text-anchor="middle">{html.escape(chart.y_label)}</text>')
    for series, colour in drawn:
        label = html.escape(series.label)
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(series.steps, series.values))
        parts.append(f'<polyline class="series" data-label="{label}" fill="none" stroke="{colour}" '
                     f'stroke-width="1.6" points="{points}"><title>{label}</title></polyline>')
        if len(series.values) <= MAX_MARKERS:
            for x, y in zip(series.steps, series.values):
                parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.4" fill="{colour}">'
                             f"<title>{label} = {y:.6g} at step {x:g}</title></circle>")
        best = series.best()
        if best is not None:
            parts.append(f'<circle class="best" cx="{px(best[0]):.1f}" cy="{py(best[1]):.1f}" r="6" fill="none" '
                         f'stroke="{colour}" stroke-width="2"><title>best {label} = {best[1]:.6g} at step '
                         f"{best[0]:g}</title></circle>")
    parts.append("</svg>")
    return "".join(parts)


def legend_entries(chart: Chart) -> list[tuple[str, str]]:
    """(colour, text) per drawn series; the text names the direction and the best point."""
    entries = []
    for i, series in enumerate(chart.series):
        if not series.values:
            continue
        text = series.label
        best = series.best()
        if best is not None:
            text += f" ({series.better} is better; best {best[1]:.4g} at step {best[0]:g})"
        entries.append((PALETTE[i % len(PALETTE)], text))
    return entries


def save_png(chart: Chart, path: Path) -> Path:
    """The chart as a PNG file (matplotlib), for papers and slides."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gankit.files import atomic_write

    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=150)
    for i, series in enumerate(chart.series):
        if not series.values:
            continue
        colour = PALETTE[i % len(PALETTE)]
        marker = "." if len(series.values) <= MAX_MARKERS else None
        label = series.label
        best = series.best()
        if best is not None:
            label += f" (best {best[1]:.4g} at {best[0]:g})"
            ax.plot([best[0]], [best[1]], "o", markersize=9, markerfacecolor="none", markeredgecolor=colour,
                    markeredgewidth=1.6)
        ax.plot(series.steps, series.values, color=colour, lw=1.4, marker=marker, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(chart.y_label)
    ax.set_title(chart.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return Path(path)
