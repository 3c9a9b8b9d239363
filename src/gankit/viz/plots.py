"""Line charts of a run's curves, drawn once by matplotlib (`chart_figure`) and written two ways:
inline SVG for the HTML report (`inline_svg`) and PNG files for papers (`save_png`).

The SVG is made fit to sit in one HTML page beside other charts: text stays text, the same chart
gives the same bytes, the XML prolog, namespaces and metadata go, and every id is prefixed with the
chart's key (matplotlib numbers its groups from 1 in every figure, so ids would repeat).

What the report had before and matplotlib cannot give: a hover title on each point (its SVG has no
per-point <title>). The legend names each series' best point and the report's table holds the values.

matplotlib is used through `Figure` alone, never pyplot: no backend is switched for the whole
process, and a figure is freed with its last reference instead of waiting in pyplot's registry.
"""

from __future__ import annotations

import html
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

# Colour-blind-safe palette (Okabe and Ito, 2008).
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
LINE_STYLES = ["-", "--", ":", "-."]
WIDTH_INCHES = 6.4
HEIGHT_INCHES = 3.0  # plus one legend row's height per row of legend
LEGEND_ROW_INCHES = 0.2
EDGE_POINTS = 6  # white space around the drawing
TICK_POINTS = 7  # a tick's length and the gap to its label (matplotlib's 3.5 each)
X_LABEL_PAD, Y_LABEL_PAD, TITLE_PAD = 2, 3, 5  # points between an axis label or the title and the axes
PNG_DPI = 150
MAX_MARKERS = 60  # draw a dot at every point only when there are few enough to tell apart

STYLE = {
    "svg.fonttype": "none",  # text stays <text>: searchable, and far smaller than glyph outlines
    "path.simplify": False,  # matplotlib would otherwise merge nearly collinear points of a curve
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],  # measured with matplotlib's own font; the SVG falls back to sans-serif
    "font.size": 8,
    "axes.facecolor": "#fbfbfd",
    "axes.edgecolor": "#c9ced8",
    "axes.labelcolor": "#3a4150",
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "xtick.color": "#5a6272",
    "ytick.color": "#5a6272",
    "grid.color": "#e3e6ec",
    "grid.linewidth": 0.8,
    "legend.fontsize": 7.5,
    "legend.frameon": False,
}
# No Creator (it names a web address), no Date (the same chart must give the same bytes).
SVG_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}


@dataclass
class Series:
    label: str
    steps: list[float]
    values: list[float]
    better: str | None = None  # "lower", "higher" or None (no best point is marked)

    def finite_points(self) -> list[tuple[float, float]]:
        """(step, value) pairs whose both coordinates are finite numbers."""
        return [(x, y) for x, y in zip(self.steps, self.values) if math.isfinite(x) and math.isfinite(y)]

    def best(self) -> tuple[float, float] | None:
        """(step, value) of the best finite point, the earliest one on ties; None without a direction."""
        points = self.finite_points()
        if self.better is None or not points:
            return None
        sign = 1.0 if self.better == "lower" else -1.0
        index = min(range(len(points)), key=lambda i: (sign * points[i][1], i))
        return points[index]


@dataclass
class Chart:
    key: str  # file-safe name: plots/<key>.png, data-chart and the id prefix in the HTML
    title: str
    y_label: str
    series: list[Series] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not any(s.finite_points() for s in self.series)


def format_number(value: float) -> str:
    """Short, readable tick and table numbers: 15000 -> 15k, 0.000123 -> 0.000123."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 10_000:
        for divisor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if magnitude >= divisor:
                return f"{value / divisor:.4g}{suffix}"
    return f"{value:.4g}"


def legend_text(series: Series) -> str:
    """The series' label, with its direction and best point when it has one."""
    best = series.best()
    if best is None:
        return series.label
    return f"{series.label} ({series.better} is better; best {best[1]:.4g} at step {best[0]:g})"


def _text_width(text: str, size: float) -> float:
    """Width in points of one line of text in the charts' font."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    return text_to_path.get_text_width_height_descent(text, FontProperties(size=size), ismath=False)[0]


def _drawn_tick_labels(axis) -> list[str]:
    """The labels matplotlib will draw on an axis: its ticks inside the view, formatted."""
    low, high = sorted(axis.get_view_interval())
    return [format_number(v) for v in axis.get_major_locator()() if low <= v <= high]


def chart_figure(chart: Chart):
    """The chart as a matplotlib Figure: one line per series, the best point ringed, the legend below."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    # Past the palette's eight colours, the colours come again with another dash pattern.
    drawn = [(PALETTE[i % len(PALETTE)], LINE_STYLES[i // len(PALETTE) % len(LINE_STYLES)], s, s.finite_points())
             for i, s in enumerate(chart.series)]
    drawn = [(colour, dashes, s, points) for colour, dashes, s, points in drawn if points]
    with matplotlib.rc_context(STYLE):
        texts = [legend_text(s) for *_, s, _ in drawn]
        legend_size = STYLE["legend.fontsize"]
        # A column holds the handle (2 em), the gap to the text (0.8 em), the text and the spacing (2 em).
        column = max((_text_width(t, legend_size) for t in texts), default=0.0) + 4.8 * legend_size
        columns = max(1, min(len(texts), int((WIDTH_INCHES * 72 - 2 * EDGE_POINTS) // column)))
        rows = math.ceil(len(texts) / columns)
        height = HEIGHT_INCHES + LEGEND_ROW_INCHES * rows
        figure = Figure(figsize=(WIDTH_INCHES, height))
        axes = figure.subplots()
        for index, (colour, dashes, series, points) in enumerate(drawn):
            steps, values = zip(*points)
            marker = "o" if len(points) <= MAX_MARKERS else None
            axes.plot(steps, values, color=colour, linestyle=dashes, lw=1.4, marker=marker, markersize=3,
                      gid=f"series_{index}", label=texts[index])
            best = series.best()
            if best is not None:
                axes.plot([best[0]], [best[1]], "o", markersize=9, markerfacecolor="none", markeredgecolor=colour,
                          markeredgewidth=1.6, gid=f"best_{index}")
        steps = {x for *_, points in drawn for x, _ in points}
        if len(steps) == 1:  # one step: whole steps around it, not matplotlib's fractions of one
            only = steps.pop()
            axes.set_xlim(only - 1, only + 1)
        axes.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 5, 10], integer=True))  # steps are whole
        axes.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
        number = FuncFormatter(lambda value, _: format_number(value))
        axes.xaxis.set_major_formatter(number)
        axes.yaxis.set_major_formatter(number)
        axes.set_xlabel("step", labelpad=X_LABEL_PAD)
        axes.set_ylabel(chart.y_label, labelpad=Y_LABEL_PAD)
        axes.set_title(chart.title, loc="left", pad=TITLE_PAD)
        axes.grid(True)
        # Margins from the measured widths of the labels: one layout pass, where matplotlib's
        # constrained layout draws the figure twice (the report's main cost).
        axes.get_ylim()  # settles the autoscaled limits the tick labels depend on
        tick_size = STYLE["font.size"]
        y_ticks = max((_text_width(t, tick_size) for t in _drawn_tick_labels(axes.yaxis)), default=0.0)
        x_ticks = max((_text_width(t, tick_size) for t in _drawn_tick_labels(axes.xaxis)), default=0.0)
        line = 1.25 * tick_size  # one line of text, in points
        left = EDGE_POINTS + line + Y_LABEL_PAD + y_ticks + TICK_POINTS
        right = EDGE_POINTS + x_ticks / 2  # the last x label is centred on the right edge
        bottom = EDGE_POINTS + LEGEND_ROW_INCHES * 72 * rows + line + X_LABEL_PAD + line + TICK_POINTS
        top = EDGE_POINTS + 1.25 * STYLE["axes.titlesize"] + TITLE_PAD
        width_points, height_points = WIDTH_INCHES * 72, height * 72
        figure.subplots_adjust(left=left / width_points, right=1 - right / width_points,
                               bottom=bottom / height_points, top=1 - top / height_points)
        if texts:
            figure.legend(loc="lower center", bbox_to_anchor=(0.5, EDGE_POINTS / height_points), ncols=columns,
                          borderaxespad=0, borderpad=0)
    return figure


def save_png(chart: Chart, path: Path) -> Path:
    """The chart as a PNG file for papers and slides: 960 pixels wide, 480 high with one legend row."""
    import matplotlib

    from gankit.files import atomic_write

    figure = chart_figure(chart)
    with matplotlib.rc_context(STYLE):
        atomic_write(Path(path), lambda tmp: figure.savefig(tmp, format="png", dpi=PNG_DPI))
    return Path(path)


def inline_svg(chart: Chart) -> str:
    """The chart as an <svg> element for an HTML page: no prolog, its ids prefixed with the chart's key,
    series and best points marked with class and data-label."""
    import matplotlib

    figure = chart_figure(chart)
    buffer = io.StringIO()
    # The salt makes matplotlib's hashed clip-path and marker ids the same on every run.
    with matplotlib.rc_context({**STYLE, "svg.hashsalt": f"gankit:{chart.key}"}):
        figure.savefig(buffer, format="svg", metadata=SVG_METADATA)
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    root_end = svg.index(">") + 1
    view_box = re.search(r'viewBox="([^"]+)"', svg[:root_end]).group(1)
    body = svg[root_end:]
    # matplotlib's one default style rule (stroke joins and caps) lives in the page's style sheet: inside
    # the page, a <style> would apply to the whole document.
    body = re.sub(r"<defs>\s*<style[^>]*>.*?</style>\s*</defs>", "", body, count=1, flags=re.DOTALL)
    body = re.sub(r"\s*\n\s*", " ", re.sub(r">\s+<", "><", body))  # matplotlib's indentation: a tenth of the size
    prefix = f"{chart.key}-"
    body = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}\1"', body)
    body = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}\1)", body)
    body = re.sub(r'xlink:href="#([^"]+)"', rf'href="#{prefix}\1"', body)
    labels = [s.label for s in chart.series if s.finite_points()]
    for index, label in enumerate(labels):
        for kind in ("series", "best"):
            body = body.replace(f'<g id="{prefix}{kind}_{index}">',
                                f'<g id="{prefix}{kind}_{index}" class="{kind}" data-label="{html.escape(label)}">')
    return (f'<svg class="chart" data-chart="{html.escape(chart.key)}" viewBox="{view_box}" role="img" '
            f'aria-label="{html.escape(chart.title)}">{body}')
