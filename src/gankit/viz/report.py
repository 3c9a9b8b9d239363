"""`gankit report RUN`: one self-contained HTML page telling a run's story.

Everything is inline (images as data: URIs, charts as SVG that matplotlib draws in gankit.viz.plots) and
the page carries a content security policy that forbids any fetch, so it can be mailed or archived as one file.
It is built from whatever the run folder holds at the moment, so it also works while training runs:
a stats line being written is skipped, missing parts are said to be missing.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gankit.errors import GankitError
from gankit.viz.plots import Chart, Series, format_number, inline_svg, save_png

SAMPLE_PATTERN = re.compile(r"^step_(\d+)\.png$")
STAGE_PATTERN = re.compile(r"^scale_(\d+)px\.png$")  # Progressive GAN: the grid at the end of each stage
MAX_SAMPLE_FRAMES = 30  # sample grids embedded in the slider (evenly spaced, the newest always included)
INTERPOLATION_FILE = "interpolation_grid.png"
INTERPOLATION_K = 8
INTERPOLATION_SEED = 0

# stats.jsonl keys that are bookkeeping, not curves.
STATS_BOOKKEEPING = {"step", "images_seen", "time"}
LOSS_KEYS = ["d_loss", "g_loss"]
PENALTY_KEYS = ["gp", "drift", "r1", "r2", "lecam"]
D_OUTPUT_KEYS = ["d_real", "d_fake"]
THROUGHPUT_KEYS = ["img_per_s"]
AUGMENT_KEYS = ["augment_p", "ada_rt"]  # ADA's probability and its overfitting measure r_t, both in [-1, 1]
# metrics.jsonl keys that describe the evaluation rather than measure the generator: where and when it
# ran, and how many samples each metric used ("samples").
METRICS_BOOKKEEPING = {"step", "num_samples", "samples", "time", "images_seen", "elapsed", "origin"}
LOWER_IS_BETTER = {"fid", "kid", "fd_fmnist", "kid_fmnist", "kl", "class_kl", "ms_ssim_gap"}
HIGHER_IS_BETTER = {"is", "precision", "recall", "pr", "covered", "high_quality"}


@dataclass
class RunContents:
    """What a run folder holds right now."""

    run_dir: Path
    config_text: str | None = None
    config: dict = field(default_factory=dict)
    stats: list[dict] = field(default_factory=list)
    metrics: list[dict] = field(default_factory=list)
    skipped_lines: dict[str, int] = field(default_factory=dict)
    samples: list[tuple[int, Path]] = field(default_factory=list)
    stage_samples: list[tuple[int, Path]] = field(default_factory=list)  # (resolution, grid)


def read_jsonl(path: Path) -> tuple[list[dict], int]:
    """The JSON objects of a .jsonl file and how many lines were not one (a line still being written)."""
    if not path.is_file():
        return [], 0
    records, skipped = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if isinstance(record, dict) and _number(record.get("step")) is not None:
            records.append(record)
        else:
            skipped += 1
    return records, skipped


def drop_superseded(records: list[dict], merge_same_step: bool) -> list[dict]:
    """The history as the run now stands. A run resumed from a checkpoint older than its last log
    line logs those steps again: the newer lines replace the older ones. Records of one step are
    merged (metrics from several evaluations of one generator) or the newest kept (stats)."""
    kept: list[dict] = []
    for record in records:
        while kept and kept[-1]["step"] > record["step"]:
            kept.pop()
        if kept and kept[-1]["step"] == record["step"]:
            kept[-1] = {**kept[-1], **record} if merge_same_step else record
        else:
            kept.append(record)
    return kept


def metric_history(records: list[dict]) -> list[dict]:
    """metrics.jsonl as the run now stands, by step. Training's own evaluations are superseded as the
    stats are (a resumed run redoes them); a user's `gankit eval` lines never are: evaluating an older
    checkpoint file appends a smaller step after larger ones, and must not hide them."""
    training = drop_superseded([r for r in records if r.get("origin") != "eval"], merge_same_step=True)
    by_step: dict[int, dict] = {}
    for record in sorted(training + [r for r in records if r.get("origin") == "eval"], key=lambda r: r["step"]):
        by_step[record["step"]] = {**by_step.get(record["step"], {}), **record}
    return list(by_step.values())


def _number(value) -> float | None:
    """A finite float, or None for anything else (NaN, infinities, strings, booleans, nested values)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def read_run(run_dir: Path) -> RunContents:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GankitError(f"{run_dir} is not a folder: give the run folder that `gankit train --out` wrote")
    marks = ["config.yaml", "stats.jsonl", "samples", "generator.json"]
    if not any((run_dir / m).exists() for m in marks):
        raise GankitError(f"{run_dir} is not a gankit run folder (none of {', '.join(marks)} is there): give "
                          "the folder that `gankit train --out` wrote")
    contents = RunContents(run_dir)
    config_file = run_dir / "config.yaml"
    if config_file.is_file():
        contents.config_text = config_file.read_text(errors="replace")
        try:
            parsed = yaml.safe_load(contents.config_text)
            contents.config = parsed if isinstance(parsed, dict) else {}
        except yaml.YAMLError:
            contents.config = {}
    stats, contents.skipped_lines["stats.jsonl"] = read_jsonl(run_dir / "stats.jsonl")
    metrics, contents.skipped_lines["metrics.jsonl"] = read_jsonl(run_dir / "metrics.jsonl")
    contents.stats = drop_superseded(stats, merge_same_step=False)
    contents.metrics = metric_history(metrics)
    sample_dir = run_dir / "samples"
    if sample_dir.is_dir():
        found = [(int(m.group(1)), p) for p in sample_dir.iterdir() if (m := SAMPLE_PATTERN.match(p.name))]
        contents.samples = sorted(found)
        stages = [(int(m.group(1)), p) for p in sample_dir.iterdir() if (m := STAGE_PATTERN.match(p.name))]
        contents.stage_samples = sorted(stages)
    return contents


# ---- charts --------------------------------------------------------------------------------------

def _series(records: list[dict], key: str, label: str | None = None, better: str | None = None) -> Series:
    steps, values = [], []
    for record in records:
        value = _number(record.get(key))
        if value is not None:
            steps.append(float(record["step"]))
            values.append(value)
    return Series(label or key, steps, values, better)


def stats_charts(stats: list[dict]) -> list[Chart]:
    """Losses, penalties, D outputs, ADA's p and r_t, throughput, then one chart per other numeric stats key."""
    present = {k for record in stats for k, v in record.items() if _number(v) is not None} - STATS_BOOKKEEPING
    groups = [("losses", "Losses", "loss", LOSS_KEYS),
              ("penalties", "Regularizers (unweighted)", "value", PENALTY_KEYS),
              ("d_outputs", "Discriminator outputs (mean raw score)", "D(x)", D_OUTPUT_KEYS),
              ("augment", "Adaptive augmentation (p, r_t = E[sign D(real)])", "value", AUGMENT_KEYS),
              ("throughput", "Throughput", "images / s", THROUGHPUT_KEYS)]
    charts = []
    for key, title, y_label, keys in groups:
        chart = Chart(key, title, y_label, [_series(stats, k) for k in keys if k in present])
        if not chart.is_empty():
            charts.append(chart)
    known = {k for *_, keys in groups for k in keys}
    for other in sorted(present - known):
        charts.append(Chart(f"stat_{_safe(other)}", other, other, [_series(stats, other)]))
    return charts


def flatten_metrics(record: dict) -> dict[str, float]:
    """{"swd": {"64": v}, "fid": v} -> {"swd.64": v, "fid": v}; non-numbers and bookkeeping dropped."""
    flat = {}

    def visit(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                visit(f"{prefix}.{k}", v)
        elif (number := _number(value)) is not None:
            flat[prefix] = number

    for key, value in record.items():
        if key not in METRICS_BOOKKEEPING:
            visit(str(key), value)
    return flat


def _registry_directions() -> dict[str, str]:
    """The directions the metric registry tracks during training (metrics_best.json), by dotted key."""
    try:
        from gankit.metrics.registry import METRICS
    except ImportError:  # the report must work without the metrics package
        return {}
    return {key: better for metric in METRICS.values() for key, better in metric.best}


def metric_direction(name: str) -> str | None:
    """"lower", "higher" or None for a flattened metric name such as fid, swd.avg or pr.recall."""
    registered = _registry_directions().get(name)
    if registered in ("lower", "higher"):
        return registered
    parts = name.split(".")
    top, leaf = parts[0], parts[-1]
    if leaf in ("std", "total"):
        return None
    if top.startswith("swd") or top in LOWER_IS_BETTER or leaf in LOWER_IS_BETTER:
        return "lower"
    if top in HIGHER_IS_BETTER or leaf in HIGHER_IS_BETTER:
        return "higher"
    return None


def metric_charts(metrics: list[dict]) -> list[Chart]:
    """One chart per metric; the parts of a nested metric share a chart when they agree in direction
    and lie within a factor of ten of each other (swd per resolution, precision and recall)."""
    flat_records = [{"step": r["step"], **flatten_metrics(r)} for r in metrics]
    names = list(dict.fromkeys(k for r in flat_records for k in r if k != "step"))
    charts: list[tuple[Chart, float]] = []
    for name in names:
        if name.split(".")[-1] in ("std", "total"):
            continue  # spreads and constants belong in the table, not on a curve
        series = _series(flat_records, name, better=metric_direction(name))
        if not series.values:
            continue
        top = name.split(".")[0]
        size = max(abs(v) for v in series.values) or 1e-12
        for chart, chart_size in charts:
            first = chart.series[0]
            if (first.label.split(".")[0] == top and "." in name and first.better == series.better
                    and max(size, chart_size) / min(size, chart_size) <= 10):
                chart.series.append(series)
                break
        else:
            charts.append((Chart("", name, name, [series]), size))
    used: set[str] = set()
    for chart, _ in charts:
        if len(chart.series) > 1:  # a group is named after its metric: swd, pr
            chart.title = chart.y_label = chart.series[0].label.split(".")[0]
        key, n = f"metric_{_safe(chart.title)}", 2
        while key in used:
            key, n = f"metric_{_safe(chart.title)}_{n}", n + 1
        chart.key = key
        used.add(key)
    return [chart for chart, _ in charts]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# ---- interpolation -------------------------------------------------------------------------------

def latest_interpolation(run_dir: Path, is_toy: bool) -> tuple[Path | None, str]:
    """RUN/interpolation_grid.png, regenerated when the exported generator is newer; (path, note)."""
    if is_toy:
        return None, "toy runs generate 2-D points; there is no image interpolation to show"
    target = run_dir / INTERPOLATION_FILE
    export = run_dir / "generator.safetensors"
    if not export.is_file():
        if target.is_file():
            return target, "from an earlier report (no exported generator now)"
        return None, "no exported generator yet (it is written with the first checkpoint)"
    if target.is_file() and target.stat().st_mtime >= export.stat().st_mtime:
        return target, "reused: the exported generator has not changed since it was drawn"
    from gankit.checkpoint import load_generator
    from gankit.device import resolve_device
    from gankit.viz.interpolate import interpolation_labels, save_interpolation_png

    device = resolve_device("auto")
    try:
        generator, meta = load_generator(run_dir, device)
        if meta["data"].is_toy:
            return None, "toy runs generate 2-D points; there is no image interpolation to show"
        from gankit.sampling import class_names_of

        names = class_names_of(generator, meta)
        labels = None if names is None else interpolation_labels("grid", INTERPOLATION_K, INTERPOLATION_K, [0],
                                                                 len(names))
        save_interpolation_png(generator, meta["model"].z_dim, "grid", INTERPOLATION_K, 1, INTERPOLATION_SEED,
                               device, target, labels)
    except GankitError as err:  # e.g. the export being replaced by a running training at this moment
        return (target if target.is_file() else None), f"could not draw a new grid: {err}"
    which = "" if names is None else f", all of class 0 ({names[0]})"
    return target, f"drawn now from the exported generator (step {meta['step']}){which}"


# ---- HTML ----------------------------------------------------------------------------------------

def _data_uri(path: Path) -> tuple[str, int, int]:
    """(data: URI, width, height) of a PNG file."""
    from PIL import Image

    data = path.read_bytes()
    with Image.open(path) as image:
        width, height = image.size
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii"), width, height


def _img(path: Path, name: str, extra: str = "") -> str:
    """An inline <img>, or a note when the file cannot be read (deleted or damaged meanwhile)."""
    from PIL import UnidentifiedImageError

    try:
        uri, width, height = _data_uri(path)
    except (OSError, UnidentifiedImageError) as err:
        return f'<p class="note"{extra}>{html.escape(name)}: {html.escape(path.name)} cannot be read ({err})</p>'
    scale = max(1, min(4, 560 // max(width, 1)))  # small grids are enlarged, pixels kept sharp
    return (f'<img src="{uri}" data-name="{html.escape(name)}" alt="{html.escape(name)}" width="{width * scale}" '
            f'height="{height * scale}"{extra}>')


def pick_frames(samples: list[tuple[int, Path]], limit: int = MAX_SAMPLE_FRAMES) -> list[tuple[int, Path]]:
    """At most `limit` sample grids, evenly spaced over the run, always the first and the newest."""
    if len(samples) <= limit:
        return samples
    indices = sorted({round(i * (len(samples) - 1) / (limit - 1)) for i in range(limit)})
    return [samples[i] for i in indices]


def _stage_strip(contents: RunContents) -> str:
    """Progressive runs: the grid saved at the end of each resolution stage, side by side."""
    if not contents.stage_samples:
        return ""
    figures = "".join(f'<figure class="stage">{_img(path, f"end of the {res}px stage")}<figcaption>{res}x{res}'
                      "</figcaption></figure>" for res, path in contents.stage_samples)
    return f'<p class="note">At the end of each progressive stage:</p><div class="stages">{figures}</div>'


def _chart_block(chart: Chart) -> str:
    """The chart's figure (its title and legend are drawn in it, as in its PNG)."""
    return f'<figure class="chart-box">{inline_svg(chart)}</figure>'


def _metrics_table(metrics: list[dict]) -> str:
    flat_records = [{"step": r["step"], **flatten_metrics(r)} for r in metrics]
    names = list(dict.fromkeys(k for r in flat_records for k in r if k != "step"))
    rows = []
    for name in names:
        series = _series(flat_records, name, better=metric_direction(name))
        if not series.values:
            continue
        best = series.best()
        best_cell = f"{best[1]:.5g} at step {best[0]:g}" if best else "-"
        direction = {"lower": "lower is better", "higher": "higher is better"}.get(series.better, "")
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{series.values[-1]:.5g}</td><td>{series.steps[-1]:g}</td>"
                    f"<td>{best_cell}</td><td>{direction}</td></tr>")
    return ("<table><thead><tr><th>metric</th><th>latest</th><th>at step</th><th>best</th><th></th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _summary(contents: RunContents, now: float) -> str:
    items = []
    train = contents.config.get("train") if contents.config else None
    train = train if isinstance(train, dict) else {}
    planned, schedule = train.get("steps"), train.get("max_iter_at_scale")
    if planned is None and isinstance(schedule, list) and schedule and all(type(n) is int for n in schedule):
        planned = sum(schedule)  # Progressive GAN without train.steps lasts its schedule
    if contents.stats:
        last = contents.stats[-1]
        step = int(last["step"])
        progress = f"{step:,}" + (f" of {int(planned):,}" if isinstance(planned, int) else "")
        items.append(("step", progress))
        if _number(last.get("images_seen")) is not None:
            items.append(("images seen", f"{int(last['images_seen']):,}"))
        speeds = sorted(v for r in contents.stats if (v := _number(r.get("img_per_s"))) is not None)
        if speeds:
            items.append(("images / s (median)", format_number(speeds[len(speeds) // 2])))
        times = [t for r in contents.stats if (t := _number(r.get("time"))) is not None]
        if times:
            items.append(("last stats line", f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(times[-1]))} "
                                             f"({_age(now - times[-1])} before this report)"))
        if isinstance(planned, int):
            items.append(("status", "finished" if step >= planned else "in progress, or stopped early"))
    else:
        items.append(("step", "no stats logged yet"))
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in items)
    return f'<table class="summary">{rows}</table>'


def grid_class_names(config: dict) -> list[str] | None:
    """The class of each sample grid row, top to bottom, for a conditional image run (training's grids hold
    a row per class, gankit.models.conditioning.grid_labels); None otherwise."""
    model, data = config.get("model"), config.get("data")
    if not isinstance(model, dict) or not isinstance(data, dict):
        return None
    names = data.get("class_names")
    if model.get("conditioning", "none") == "none" or str(data.get("source", "")).startswith("toy-"):
        return None
    if not isinstance(names, list) or not names:
        return None
    return [str(name) for name in names]


def _class_labelled(frames_html: str, names: list[str] | None) -> str:
    """The sample frames with the class names beside their rows (a column of evenly spaced labels as tall as
    the grid), and the same names as a caption for readers the layout does not reach."""
    if not names:
        return f'<div id="sample-frames" class="frames">{frames_html}</div>'
    labels = "".join(f"<li>{html.escape(name)}</li>" for name in names)
    caption = ", ".join(f"{i} {name}" for i, name in enumerate(names))
    return (f'<div class="class-grid"><ol class="row-labels" aria-label="class of each row">{labels}</ol>'
            f'<div id="sample-frames" class="frames">{frames_html}</div></div>'
            f'<p class="note" id="row-classes">Rows, top to bottom: {html.escape(caption)}; each column is one '
            "latent across the classes.</p>")


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def build_html(contents: RunContents, charts: list[Chart], metric_chart_list: list[Chart],
               interpolation: tuple[Path | None, str], now: float) -> str:
    name = str(contents.config.get("name") or contents.run_dir.name)
    sections = []

    notes = [f"{count} unreadable line(s) in {file} skipped (a line being written?)"
             for file, count in contents.skipped_lines.items() if count]
    note_html = "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
    config_text = contents.config_text if contents.config_text is not None else "(no config.yaml in the run folder)"
    sections.append(f'<div class="row"><section id="summary"><h2>Summary</h2>{_summary(contents, now)}{note_html}'
                    f'</section><section id="config"><h2>Config</h2><pre class="config">{html.escape(config_text)}'
                    "</pre></section></div>")

    if charts:
        blocks = "".join(_chart_block(c) for c in charts)
        sections.append(f'<section id="curves"><h2>Training curves</h2><div class="charts">{blocks}</div></section>')
    else:
        sections.append('<section id="curves"><h2>Training curves</h2><p class="note">stats.jsonl has no '
                        "complete line yet.</p></section>")

    if contents.metrics:
        blocks = "".join(_chart_block(c) for c in metric_chart_list)
        sections.append(f'<section id="metrics"><h2>Metrics</h2>{_metrics_table(contents.metrics)}'
                        f'<div class="charts">{blocks}</div></section>')
    else:
        sections.append('<section id="metrics"><h2>Metrics</h2><p class="note">no evaluations yet (metrics.jsonl '
                        "is written when eval.every is set, or by `gankit eval`).</p></section>")

    frames = pick_frames(contents.samples)
    if frames:
        images = "".join(_img(path, f"samples step {step}", "" if i == len(frames) - 1 else " hidden")
                         for i, (step, path) in enumerate(frames))
        shown = (f"{len(frames)} of {len(contents.samples)} grids, evenly spaced"
                 if len(frames) < len(contents.samples) else f"{len(frames)} grid(s)")
        steps_json = html.escape(json.dumps([s for s, _ in frames]))
        ema_off = "ema" in (contents.config.get("train") or {}) and contents.config["train"]["ema"] is None
        which = "the raw generator (train.ema is off)" if ema_off else "the EMA generator"
        sections.append(
            '<div class="row"><section id="samples"><h2>Samples over time</h2>'
            f'<p class="note">Fixed latents, {which}; {shown}.</p>'
            f'<div class="slider"><input type="range" id="sample-slider" min="0" max="{len(frames) - 1}" '
            f'value="{len(frames) - 1}" data-steps="{steps_json}" aria-label="sample step">'
            f'<span id="sample-step">step {frames[-1][0]}</span></div>'
            f'{_class_labelled(images, grid_class_names(contents.config))}{_stage_strip(contents)}</section>')
    else:
        sections.append('<div class="row"><section id="samples"><h2>Samples over time</h2><p class="note">no sample '
                        "grids yet.</p></section>")

    path, note = interpolation
    body = (_img(path, "latent interpolation grid") if path is not None else "")
    sections.append(
        f'<section id="interpolation"><h2>Latent interpolation</h2><p class="note">{INTERPOLATION_K}x'
        f"{INTERPOLATION_K} sweep between two latents (seed {INTERPOLATION_SEED}): the first half of z varies "
        f"along x, the second half along y; {html.escape(note)}.</p>{body}</section></div>")

    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    return PAGE.format(title=html.escape(f"gankit report: {name}"), name=html.escape(name),
                       run=html.escape(str(contents.run_dir)), stamp=stamp, sections="".join(sections))


# The content security policy lets the page use nothing but itself: inline styles and scripts and
# data: images. Any reference to the outside would be blocked and reported by the error hooks below.
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title}</title>
<script>
// Collected problems, read by the report's own self-check (and the tests) at the bottom of the page.
window.gankitErrors = [];
window.addEventListener("error", function (e) {{
  var what = e.message || (e.target && e.target.dataset ? "image failed to load: " + e.target.dataset.name : "error");
  window.gankitErrors.push(String(what).slice(0, 200));
}}, true);
document.addEventListener("securitypolicyviolation", function (e) {{
  window.gankitErrors.push("blocked fetch of " + String(e.blockedURI).slice(0, 200));
}});
(function () {{
  var original = console.error;
  console.error = function () {{
    window.gankitErrors.push(Array.prototype.join.call(arguments, " ").slice(0, 200));
    original.apply(console, arguments);
  }};
}})();
</script>
<style>
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330; margin: 0;
       background: #f5f6f8; }}
header {{ background: #1d2330; color: #fff; padding: 14px 24px; }}
header h1 {{ margin: 0; font-size: 20px; }}
header p {{ margin: 2px 0 0; color: #b9c0cc; font-size: 12px; }}
nav {{ padding: 6px 24px; background: #e6e9ef; font-size: 13px; }}
nav a {{ margin-right: 14px; color: #1d4f91; text-decoration: none; }}
main {{ padding: 0 24px 32px; max-width: 1400px; }}
section {{ background: #fff; border: 1px solid #dde1e8; border-radius: 6px; margin: 16px 0; padding: 4px 16px 14px; }}
h2 {{ font-size: 16px; margin: 12px 0 8px; }}
.note {{ color: #5a6272; font-size: 12.5px; margin: 4px 0 8px; }}
.charts {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 12px; }}
.chart-box {{ margin: 0; }}
svg.chart {{ width: 100%; height: auto; display: block; }}
svg.chart * {{ stroke-linejoin: round; stroke-linecap: butt; }} /* matplotlib's SVG default style */
table {{ border-collapse: collapse; font-size: 13px; margin: 4px 0 10px; }}
th, td {{ text-align: left; padding: 3px 12px 3px 0; border-bottom: 1px solid #eceef2; }}
table.summary th {{ color: #5a6272; font-weight: normal; }}
img {{ image-rendering: pixelated; max-width: 100%; height: auto; background: #000; }}
img[hidden] {{ display: none; }}
.stages {{ display: flex; flex-wrap: wrap; gap: 8px; }}
.stage {{ margin: 0; font-size: 12px; color: #5a6272; text-align: center; }}
.stage img {{ width: 130px; height: auto; }}
.slider {{ display: flex; align-items: center; gap: 12px; margin: 6px 0 10px; }}
.slider input {{ flex: 1; max-width: 420px; }}
.slider span {{ white-space: nowrap; }}
.class-grid {{ display: flex; align-items: stretch; gap: 6px; }}
.class-grid .frames {{ min-width: 0; }}
.class-grid img:not([hidden]) {{ display: block; }}
ol.row-labels {{ list-style: none; margin: 0; padding: 0; display: flex; flex-direction: column; font-size: 12px;
                 color: #1d2330; text-align: right; white-space: nowrap; }}
ol.row-labels li {{ flex: 1 1 0; display: flex; align-items: center; justify-content: flex-end; min-height: 0; }}
pre {{ background: #f3f4f7; padding: 10px; font-size: 12px; overflow: auto; }}
pre.config {{ max-height: 300px; margin: 0 0 6px; }}
.row {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 0 16px; }}
.row > section {{ min-width: 0; }}
</style>
</head>
<body>
<header><h1>{name}</h1><p>{run} &middot; report written {stamp} by gankit</p></header>
<nav><a href="#summary">summary</a><a href="#config">config</a><a href="#curves">curves</a><a href="#metrics">metrics</a><a href="#samples">samples</a><a href="#interpolation">interpolation</a></nav>
<main>
{sections}
</main>
<pre id="render-check" hidden></pre>
<script>
(function () {{
  var slider = document.getElementById("sample-slider");
  if (slider) {{
    var frames = document.querySelectorAll("#sample-frames > *");
    var steps = JSON.parse(slider.dataset.steps);
    var label = document.getElementById("sample-step");
    slider.addEventListener("input", function () {{
      var chosen = Number(slider.value);
      frames.forEach(function (frame, i) {{ frame.hidden = i !== chosen; }});
      label.textContent = "step " + steps[chosen];
    }});
  }}
  // Self-check: what rendered, written into the page where a headless browser can read it.
  window.addEventListener("load", function () {{
    var images = Array.prototype.map.call(document.images, function (img) {{
      return {{name: img.dataset.name, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight}};
    }});
    var charts = Array.prototype.map.call(document.querySelectorAll("svg.chart"), function (svg) {{
      // A series' line is the first path of its group: one vertex per point, each an M or L command.
      return {{chart: svg.dataset.chart, points: Array.prototype.map.call(svg.querySelectorAll("g.series"),
        function (group) {{ return (group.querySelector("path").getAttribute("d").match(/[ML]/g) || []).length; }})}};
    }});
    var fetched = performance.getEntriesByType("resource").map(function (entry) {{ return entry.name; }});
    document.getElementById("render-check").textContent = JSON.stringify(
      {{images: images, charts: charts, fetched: fetched, errors: window.gankitErrors}});
  }});
}})();
</script>
</body>
</html>
"""


def write_report(run_dir: Path, png: bool = False) -> tuple[Path, list[Path]]:
    """Writes RUN/report.html (and with png=True the curves as RUN/plots/*.png); returns the paths."""
    from gankit.files import atomic_write

    contents = read_run(Path(run_dir))
    charts = stats_charts(contents.stats)
    metric_chart_list = metric_charts(contents.metrics)
    source = str((contents.config.get("data") or {}).get("source", "")) if contents.config else ""
    is_toy = source.startswith("toy-")
    interpolation = latest_interpolation(contents.run_dir, is_toy)
    page = build_html(contents, charts, metric_chart_list, interpolation, time.time())
    target = contents.run_dir / "report.html"
    atomic_write(target, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    pngs = [save_png(chart, contents.run_dir / "plots" / f"{chart.key}.png")
            for chart in charts + metric_chart_list] if png else []
    return target, pngs


def report_command(args) -> int:
    """`gankit report RUN [--png]`: prints the paths written."""
    target, pngs = write_report(Path(args.run), png=args.png)
    print(target)
    for path in pngs:
        print(path)
    return 0
