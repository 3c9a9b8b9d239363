"""`gankit report`: the page's content, its self-containment, --png, and a render in headless Chromium."""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from gankit.checkpoint import export_generator
from gankit.cli import main
from gankit.config import load, to_yaml
from gankit.models import build_generator
from gankit.viz.grid import save_grid
from gankit.viz.plots import PALETTE, Chart, Series, chart_figure, inline_svg, save_png
from gankit.viz.report import (INTERPOLATION_FILE, INTERPOLATION_K, metric_charts, metric_direction, pick_frames,
                               read_jsonl, write_report)

TINY = ["model.conditioning=none", "model.z_dim=8", "model.g_channels=8", "model.d_channels=8", "data.resolution=16",
        "train.batch_size=8", "data.max_images=64", "train.steps=70"]
STATS_LINES = 7
SAMPLE_STEPS = [20, 40, 60]
# fid is best (lowest) at step 40; is.mean best (highest) at step 60.
METRICS = [
    {"step": 20, "fid": 30.0, "swd": {"64": 10.0, "32": 8.0, "16": 6.0, "avg": 8.0},
     "is": {"mean": 2.0, "std": 0.1}, "pr": {"precision": 0.5, "recall": 0.2}, "num_samples": 100},
    {"step": 40, "fid": 20.0, "swd": {"64": 9.0, "32": 7.0, "16": 5.0, "avg": 7.0},
     "is": {"mean": 2.5, "std": 0.1}, "pr": {"precision": 0.6, "recall": 0.3}, "num_samples": 100},
    {"step": 60, "fid": 25.0, "swd": {"64": 9.5, "32": 7.5, "16": 5.5, "avg": 7.5},
     "is": {"mean": 2.7, "std": 0.2}, "pr": {"precision": 0.55, "recall": 0.35}, "num_samples": 100},
]


def stats_record(i: int) -> dict:
    step = 10 * (i + 1)
    return {"step": step, "images_seen": 8 * step, "d_loss": 1.0 + 0.1 * i, "d_real": 0.5 - 0.05 * i,
            "d_fake": -0.5 + 0.02 * i, "gp": 0.01 * i, "g_loss": 2.0 - 0.2 * i, "img_per_s": 100.0 + i,
            "time": 1.7e9 + i}


def make_run(folder, loss="wgan-gp", stats_lines=STATS_LINES, metrics=True, samples=True, export=True,
             source=None):
    """A run folder in the exact format `gankit train` writes, built without training (fast)."""
    overrides = TINY + [f"loss.kind={loss}"]
    if source:
        overrides += [f"data.source={source}", "model.arch=mlp"]
    config = load("dcgan-fashion-mnist", overrides)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(to_yaml(config))
    lines = [json.dumps(stats_record(i)) for i in range(stats_lines)]
    (folder / "stats.jsonl").write_text("\n".join(lines) + "\n" + '{"step": 80, "d_lo')  # a line being written
    if metrics:
        (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in METRICS))
    if samples:
        g = torch.Generator().manual_seed(0)
        for step in SAMPLE_STEPS:
            images = torch.randint(0, 256, (4, 1, 16, 16), dtype=torch.uint8, generator=g)
            save_grid(images, folder / "samples" / f"step_{step:06d}.png")
    if export:
        torch.manual_seed(0)
        generator = build_generator(config.model, config.data)
        export_generator(folder, generator, config.model.model_dump(mode="json"),
                         config.data.model_dump(mode="json"), step=60)
    return folder


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path / "run")


def data_images(page: str) -> list[Image.Image]:
    uris = re.findall(r'<img src="([^"]+)"', page)
    assert all(u.startswith("data:image/png;base64,") for u in uris)
    return [Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))) for u in uris]


def chart_svg(page: str, chart: str) -> str:
    return re.search(rf'<svg class="chart" data-chart="{re.escape(chart)}".*?</svg>', page, re.DOTALL).group(0)


def series_points(page: str, chart: str) -> dict[str, list[tuple[float, float]]]:
    """Each series' label and the vertices of its line, in SVG coordinates (y grows downwards)."""
    found = re.findall(r'<g id="[^"]+" class="series" data-label="([^"]+)"><path d="([^"]*)"', chart_svg(page, chart))
    return {html.unescape(label): [(float(x), float(y)) for x, y in re.findall(r"[ML] (\S+) (\S+)", d)]
            for label, d in found}


def best_rings(page: str, chart: str) -> dict[str, tuple[float, float]]:
    """Each ringed best point's label and its position, in the same coordinates as series_points."""
    svg = chart_svg(page, chart)
    found = re.findall(r'<g id="[^"]+" class="best" data-label="([^"]+)">.*?<use [^>]*x="([^"]+)" y="([^"]+)"', svg)
    return {label: (float(x), float(y)) for label, x, y in found}


def svg_texts(svg: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)]


# ---- reading the run -----------------------------------------------------------------------------

def test_read_jsonl_skips_a_line_being_written(run):
    records, skipped = read_jsonl(run / "stats.jsonl")
    assert [r["step"] for r in records] == [10 * (i + 1) for i in range(STATS_LINES)]
    assert skipped == 1


def test_a_resumed_run_replaces_the_steps_it_logged_again():
    from gankit.viz.report import drop_superseded

    logged = [{"step": s, "v": s} for s in (10, 20, 30, 40)] + [{"step": s, "v": -s} for s in (30, 40, 50)]
    assert drop_superseded(logged, merge_same_step=False) == [
        {"step": 10, "v": 10}, {"step": 20, "v": 20}, {"step": 30, "v": -30}, {"step": 40, "v": -40},
        {"step": 50, "v": -50}]
    evaluations = [{"step": 10, "fid": 5.0}, {"step": 10, "is": {"mean": 2.0}}, {"step": 20, "fid": 4.0}]
    assert drop_superseded(evaluations, merge_same_step=True) == [
        {"step": 10, "fid": 5.0, "is": {"mean": 2.0}}, {"step": 20, "fid": 4.0}]


def test_evaluating_an_older_checkpoint_hides_no_later_metrics():
    # `gankit eval RUN/checkpoints/step_001500.pt` after `gankit eval RUN` (step 2000) appends a smaller step.
    from gankit.viz.report import metric_history

    records = [{"step": 500, "fid": 9.0, "origin": "training"}, {"step": 1000, "fid": 8.0, "origin": "training"},
               {"step": 500, "fid": 8.5, "origin": "training"},  # a resumed run redid step 500: 1000 is gone
               {"step": 2000, "fid": 4.0, "origin": "eval"}, {"step": 1500, "fid": 6.0, "origin": "eval"},
               {"step": 500, "kid": 0.1, "origin": "eval"}]
    assert [(r["step"], r.get("fid"), r.get("kid")) for r in metric_history(records)] == [
        (500, 8.5, 0.1), (1500, 6.0, None), (2000, 4.0, None)]


@pytest.mark.parametrize("name, direction", [
    ("fid", "lower"), ("kid", "lower"), ("kid.mean", "lower"), ("kid.std", None), ("swd.64", "lower"),
    ("swd.avg", "lower"), ("fd_fmnist", "lower"), ("kid_fmnist", "lower"), ("is", "higher"), ("is.mean", "higher"),
    ("is.std", None), ("pr.precision", "higher"), ("pr.recall", "higher"), ("modes.covered", "higher"),
    ("modes.kl", "lower"), ("modes.total", None), ("ms_ssim", None), ("ms_ssim_gap", "lower"), ("class_kl", "lower"),
])
def test_metric_direction(name, direction):
    assert metric_direction(name) == direction


def test_best_point_follows_the_direction_and_prefers_the_earliest_tie():
    assert Series("fid", [1, 2, 3, 4], [5.0, 3.0, 3.0, 4.0], "lower").best() == (2, 3.0)
    assert Series("is", [1, 2, 3], [5.0, 7.0, 6.0], "higher").best() == (2, 7.0)
    assert Series("ms_ssim", [1, 2], [0.3, 0.2]).best() is None


def test_metric_charts_group_nested_parts_of_similar_size():
    charts = {c.key: [s.label for s in c.series] for c in metric_charts(METRICS)}
    assert charts == {"metric_fid": ["fid"], "metric_swd": ["swd.64", "swd.32", "swd.16", "swd.avg"],
                      "metric_is.mean": ["is.mean"], "metric_pr": ["pr.precision", "pr.recall"]}
    modes = [{"step": 1, "modes": {"covered": 20, "total": 25, "high_quality": 0.8, "kl": 0.1}}]
    split = {c.key: [s.label for s in c.series] for c in metric_charts(modes)}
    assert split == {"metric_modes.covered": ["modes.covered"], "metric_modes.high_quality": ["modes.high_quality"],
                     "metric_modes.kl": ["modes.kl"]}


def test_sample_counts_and_origin_are_not_charted_as_metrics():
    record = {"step": 5, "fd_fmnist": 68.7, "class_kl": 0.02, "num_samples": 10000, "origin": "eval",
              "samples": {"fd_fmnist": {"fake": 10000, "real": 10000}}, "time": 1.0}
    labels = [s.label for c in metric_charts([record]) for s in c.series]
    assert sorted(labels) == ["class_kl", "fd_fmnist"]


def x_tick_labels(svg: str) -> list[str]:
    return re.findall(r'id="[^"]*-xtick_\d+">.*?<text[^>]*>([^<]+)</text>', svg)


def test_a_chart_of_one_step_labels_whole_steps_only():
    svg = inline_svg(Chart("metric_fd", "fd", "fd", [Series("fd", [2000], [68.7], "lower")]))
    assert x_tick_labels(svg) == ["1999", "2000", "2001"]
    assert len(series_points(svg, "metric_fd")["fd"]) == 1
    assert "fd (lower is better; best 68.7 at step 2000)" in svg_texts(svg)


def test_x_ticks_are_whole_round_steps_and_numbers_are_short():
    svg = inline_svg(Chart("c", "c", "v", [Series("v", [1, 2, 3], [15_000, 0, 2e4])]))
    assert x_tick_labels(svg) == ["1", "2", "3"]  # matplotlib alone would put ticks at 1.25, 1.5, ...
    assert {"0", "10k", "20k"} <= set(svg_texts(svg))  # y ticks by format_number, no offset or 1e4 factor
    long_run = inline_svg(Chart("c", "c", "v", [Series("v", [0, 10_000, 20_000], [1.0, 2.0, 3.0])]))
    assert x_tick_labels(long_run) == ["0", "5000", "10k", "15k", "20k"]


def test_svg_is_deterministic_text_and_ready_to_inline():
    chart = Chart("losses", "Losses", "loss", [Series("d_loss", [10, 20], [1.0, 0.5]),
                                               Series("g_loss", [10, 20], [2.0, 3.0], "lower")])
    svg = inline_svg(chart)
    assert svg == inline_svg(chart)  # same bytes: salted ids, no date
    assert svg.startswith('<svg class="chart" data-chart="losses" viewBox="0 0 460.8 230.4" role="img"')
    for absent in ("<?xml", "<!DOCTYPE", "xmlns", "http", "<metadata", "<style", "<script"):
        assert absent not in svg
    # Text stays text (svg.fonttype none): the words are there, no glyph outlines are.
    assert {"Losses", "step", "loss", "d_loss", "g_loss (lower is better; best 2 at step 10)"} <= set(svg_texts(svg))
    assert "DejaVuSans" not in svg
    assert "\n" not in svg and len(svg) < 14_000  # without matplotlib's indentation, without glyph outlines


def test_ids_are_unique_on_the_page_and_every_reference_stays_in_its_chart(run):
    page = write_report(run)[0].read_text()
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids)) > 100
    for svg in re.findall(r'<svg class="chart".*?</svg>', page, re.DOTALL):
        own = set(re.findall(r'\bid="([^"]+)"', svg))
        referenced = set(re.findall(r'url\(#([^)]+)\)', svg)) | set(re.findall(r'href="#([^"]+)"', svg))
        assert referenced and referenced <= own


def test_png_and_svg_are_one_figure(tmp_path):
    chart = Chart("metric_swd", "swd", "swd", [Series(f"swd.{r}", [1, 2, 3], [r, r - 1.0, r + 1.0], "lower")
                                               for r in (16, 32, 64, 99)])
    width, height = map(float, re.search(r'viewBox="0 0 (\S+) (\S+)"', inline_svg(chart)).groups())
    with Image.open(save_png(chart, tmp_path / "swd.png")) as image:
        assert image.size == (round(width * 150 / 72), round(height * 150 / 72)) == (960, 510)  # two legend rows
    figure = chart_figure(chart)
    assert [t.get_text() for t in figure.legends[0].get_texts()] == [
        f"swd.{r} (lower is better; best {r - 1} at step 2)" for r in (16, 32, 64, 99)]


def test_non_finite_points_are_left_out_of_the_curve_and_the_best():
    series = Series("fid", [1, 2, 3, 4, 5], [30.0, float("nan"), float("-inf"), 20.0, float("inf")], "lower")
    assert series.best() == (4, 20.0)
    svg = inline_svg(Chart("metric_fid", "fid", "fid", [series, Series("empty", [1], [float("nan")])]))
    points = series_points(svg, "metric_fid")
    assert list(points) == ["fid"] and len(points["fid"]) == 2
    assert best_rings(svg, "metric_fid")["fid"] == points["fid"][1]


def test_a_long_straight_curve_keeps_every_point():
    steps = list(range(0, 3000, 10))  # matplotlib simplifies paths of 128 points and more
    svg = inline_svg(Chart("c", "c", "v", [Series("v", steps, [0.5 * s for s in steps])]))
    assert len(series_points(svg, "c")["v"]) == len(steps)


def test_many_series_each_keep_a_line_and_a_legend_entry():
    labels = [f"part_{k}" for k in range(12)]
    chart = Chart("many", "many", "v", [Series(label, [0, 1, 2], [k, k + 1, k]) for k, label in enumerate(labels)])
    svg = inline_svg(chart)
    assert list(series_points(svg, "many")) == labels
    assert set(labels) <= set(svg_texts(svg))
    styles = dict(re.findall(r'class="series" data-label="([^"]+)"><path d="[^"]*"[^>]*style="([^"]*)"', svg))
    # Past eight series the colours come again, dashed.
    assert PALETTE[0].lower() in styles["part_0"] and PALETTE[0].lower() in styles["part_8"]
    assert "dasharray" not in styles["part_0"] and "dasharray" in styles["part_8"]


def test_drawing_leaves_matplotlib_as_it_was(tmp_path):
    """Charts and toy scatters: no pyplot (slow to import, a process-wide backend and figure registry),
    no settings left changed."""
    # (Reading rcParams["backend"] would itself import pyplot to resolve the default.)
    script = ("import sys, matplotlib, torch; from gankit.viz.plots import *; "
              "from gankit.viz.grid import save_scatter; "
              "settings = lambda: {k: matplotlib.rcParams[k] for k in matplotlib.rcParams if k != 'backend'}; "
              "before = settings(); c = Chart('c', 'c', 'v', [Series('v', [1, 2], [1.0, 2.0])]); inline_svg(c); "
              f"save_png(c, {str(tmp_path / 'c.png')!r}); "
              f"save_scatter(torch.zeros(4, 2), {str(tmp_path / 's.png')!r}, 'toy-8gaussians'); "
              "print('matplotlib.pyplot' in sys.modules, settings() == before)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert result.stdout.split() == ["False", "True"], result.stderr


def test_pick_frames_spreads_evenly_and_keeps_the_ends():
    samples = [(step, None) for step in range(0, 1000, 10)]
    picked = [s for s, _ in pick_frames(samples, 30)]
    assert len(picked) == 30 and picked[0] == 0 and picked[-1] == 990
    gaps = {b - a for a, b in zip(picked, picked[1:])}
    assert gaps <= {30, 40}
    assert pick_frames(samples[:5], 30) == samples[:5]


# ---- the page ------------------------------------------------------------------------------------

def test_page_is_one_self_contained_file(run):
    target, _ = write_report(run)
    page = target.read_text()
    assert target == run / "report.html"
    assert "http://" not in page and "https://" not in page
    assert not re.search(r'(?:src|href)="(?!data:|#)', page)  # only inline data and in-page anchors
    assert "<link" not in page.replace('<link rel="icon" href="data:,">', "")
    assert "default-src 'none'" in page  # the browser itself refuses any fetch
    images = data_images(page)
    assert len(images) == len(SAMPLE_STEPS) + 1
    assert [im.size for im in images[:-1]] == [(2 * 18 + 2,) * 2] * len(SAMPLE_STEPS)
    assert images[-1].size == (INTERPOLATION_K * 18 + 2,) * 2
    assert "kind: wgan-gp" in page  # the resolved config
    assert "1 unreadable line(s) in stats.jsonl" in page


def test_curves_hold_every_logged_point(run):
    page = write_report(run)[0].read_text()
    assert re.findall(r'<svg class="chart" data-chart="([^"]+)"', page) == [
        "losses", "penalties", "d_outputs", "throughput", "metric_fid", "metric_swd", "metric_is.mean", "metric_pr"]
    losses = series_points(page, "losses")
    assert set(losses) == {"d_loss", "g_loss"}
    assert set(series_points(page, "penalties")) == {"gp"}
    assert set(series_points(page, "d_outputs")) == {"d_real", "d_fake"}
    assert len(series_points(page, "throughput")["img_per_s"]) == STATS_LINES
    assert {"Losses", "Throughput", "d_loss", "img_per_s"} <= set(svg_texts(page))
    for label, points in losses.items():
        values = [stats_record(i)[label] for i in range(STATS_LINES)]
        assert len(points) == STATS_LINES
        xs, ys = zip(*points)
        assert list(xs) == sorted(xs) and len(set(xs)) == STATS_LINES
        # SVG y grows downwards: a higher value sits higher on the page.
        assert sorted(range(STATS_LINES), key=lambda i: -ys[i]) == sorted(range(STATS_LINES), key=lambda i: values[i])
    # Points logged at equal intervals sit at equal distances: the x axis is linear in steps.
    xs = [x for x, _ in losses["d_loss"]]
    gaps = [b - a for a, b in itertools.pairwise(xs)]
    assert max(gaps) - min(gaps) < 1e-3


def test_a_non_finite_stats_value_leaves_a_gap_of_one_point(tmp_path):
    run = make_run(tmp_path / "nan", metrics=False, samples=False, export=False)
    records = [stats_record(i) for i in range(STATS_LINES)]
    records[2]["d_loss"], records[4]["g_loss"] = float("nan"), float("inf")
    (run / "stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))  # NaN, Infinity
    losses = series_points(write_report(run)[0].read_text(), "losses")
    assert {k: len(v) for k, v in losses.items()} == {"d_loss": STATS_LINES - 1, "g_loss": STATS_LINES - 1}


def test_best_metrics_are_marked(run):
    page = write_report(run)[0].read_text()
    legends = set(svg_texts(page))
    assert "fid (lower is better; best 20 at step 40)" in legends
    assert "is.mean (higher is better; best 2.7 at step 60)" in legends
    assert "pr.recall (higher is better; best 0.35 at step 60)" in legends
    assert "swd.avg (lower is better; best 7 at step 40)" in legends
    assert "is.std" in page and not any(t.startswith("is.std") for t in legends)  # in the table only
    assert len(series_points(page, "metric_swd")) == 4
    # The ring sits on the best point: fid's second evaluation, is.mean's third.
    assert best_rings(page, "metric_fid") == {"fid": series_points(page, "metric_fid")["fid"][1]}
    assert best_rings(page, "metric_is.mean") == {"is.mean": series_points(page, "metric_is.mean")["is.mean"][2]}
    assert len(best_rings(page, "metric_swd")) == 4 and best_rings(page, "losses") == {}


def test_samples_slider_shows_the_newest_grid(run):
    page = write_report(run)[0].read_text()
    frames = re.findall(r'<img [^>]*data-name="samples step (\d+)"[^>]*>', page)
    assert [int(s) for s in frames] == SAMPLE_STEPS
    tags = re.findall(r'<img [^>]*data-name="samples step \d+"[^>]*>', page)
    assert [" hidden" in t for t in tags] == [True, True, False]
    assert f'max="{len(SAMPLE_STEPS) - 1}"' in page


def test_progressive_stage_grids_are_shown_in_order(run):
    for resolution in (8, 4, 16):
        save_grid(torch.zeros(4, 1, resolution, resolution, dtype=torch.uint8),
                  run / "samples" / f"scale_{resolution:04d}px.png")
    page = write_report(run)[0].read_text()
    assert re.findall(r'data-name="end of the (\d+)px stage"', page) == ["4", "8", "16"]
    assert len(data_images(page)) == len(SAMPLE_STEPS) + 3 + 1


def test_a_damaged_sample_file_is_named_not_fatal(run):
    (run / "samples" / "step_000040.png").write_bytes(b"not a png")
    page = write_report(run)[0].read_text()
    assert "step_000040.png cannot be read" in page
    assert len(data_images(page)) == len(SAMPLE_STEPS)  # the two good grids and the interpolation


def test_partial_run_still_gives_a_page(tmp_path):
    run = make_run(tmp_path / "young", stats_lines=0, metrics=False, samples=False, export=False)
    page = write_report(run)[0].read_text()
    assert "stats.jsonl has no complete line yet" in page
    assert "no evaluations yet" in page and "no sample grids yet" in page
    assert "no exported generator yet" in page
    assert "<img" not in page and 'id="render-check"' in page


def test_interpolation_grid_is_reused_until_the_export_changes(run):
    write_report(run)
    grid = run / INTERPOLATION_FILE
    assert Image.open(grid).size == (INTERPOLATION_K * 18 + 2,) * 2
    os.utime(grid, (1_000_000, 1_000_000))  # older than the export: must be drawn again
    page = write_report(run)[0].read_text()
    assert grid.stat().st_mtime > 1_000_000 and "drawn now from the exported generator" in page
    page = write_report(run)[0].read_text()
    assert "reused" in page


def test_toy_run_has_no_interpolation(tmp_path):
    run = make_run(tmp_path / "toy", loss="nsgan", metrics=False, source="toy-8gaussians")
    page = write_report(run)[0].read_text()
    assert "toy runs generate 2-D points" in page
    assert not (run / INTERPOLATION_FILE).exists()


def test_png_curves(run, capsys):
    assert main(["report", str(run), "--png"]) == 0
    printed = capsys.readouterr().out.split()
    names = sorted(p.name for p in (run / "plots").iterdir())
    assert names == sorted(["losses.png", "penalties.png", "d_outputs.png", "throughput.png", "metric_fid.png",
                            "metric_swd.png", "metric_is.mean.png", "metric_pr.png"])
    assert printed[0] == str(run / "report.html") and len(printed) == 1 + len(names)
    with Image.open(run / "plots" / "losses.png") as image:
        assert image.size == (960, 480) and len(np.unique(np.array(image.convert("L")))) > 10


@pytest.mark.parametrize("make, message", [
    (lambda p: p, "is not a gankit run folder"),
    (lambda p: p / "missing", "is not a folder"),
])
def test_not_a_run_is_a_user_error(tmp_path, capsys, make, message):
    assert main(["report", str(make(tmp_path))]) == 2
    assert message in capsys.readouterr().err


# ---- headless Chromium -----------------------------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]


def find_chromium() -> str | None:
    return next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)


def open_in_chromium(binary, page, profile, *extra) -> subprocess.CompletedProcess:
    """One headless Chromium run on a fresh, empty profile."""
    profile.mkdir(parents=True)
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


def render_check(binary, page, profile, *extra) -> tuple[dict, list[str]]:
    """The page's self-check (written into the DOM after load) and the console lines Chromium logged."""
    result = open_in_chromium(binary, page, profile, "--dump-dom", *extra)
    found = re.search(r'<pre id="render-check"[^>]*>(.*?)</pre>', result.stdout, re.S)
    assert found and found.group(1), f"the page's self-check did not run; chromium said: {result.stderr[-2000:]}"
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return json.loads(html.unescape(found.group(1))), console


@pytest.fixture(scope="module")
def chromium():
    binary = find_chromium()
    if binary is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium chromium-driver)")
    return binary


def test_report_renders_in_headless_chromium(run, chromium, tmp_path):
    page = write_report(run)[0]
    shot = tmp_path / "shot.png"
    check, console = render_check(chromium, page, tmp_path / "profile", "--window-size=1280,1600",
                                  "--hide-scrollbars", f"--screenshot={shot}")
    assert check["errors"] == [] and console == []
    assert check["fetched"] == []
    sizes = [(im["width"], im["height"]) for im in check["images"]]
    assert all(im["complete"] for im in check["images"])
    assert sizes == [(38, 38)] * len(SAMPLE_STEPS) + [(INTERPOLATION_K * 18 + 2,) * 2]
    points = {c["chart"]: c["points"] for c in check["charts"]}
    assert points["losses"] == [STATS_LINES, STATS_LINES]
    assert points["metric_fid"] == [len(METRICS)]
    assert all(counts and min(counts) > 0 for counts in points.values())

    with Image.open(shot) as image:
        rgb = image.convert("RGB")
        assert rgb.size == (1280, 1600)
        assert rgb.getpixel((5, 5)) == (0x1D, 0x23, 0x30)  # the header's colour: the style sheet applied
        colours = rgb.getcolors(maxcolors=1 << 24)
        assert len(colours) > 50  # text, charts and images drawn, not a blank page


def test_the_render_check_catches_broken_pages(run, chromium, tmp_path):
    """Guards the test above: a fetch, a failing image and a script error must all show up."""
    page = write_report(run)[0]
    broken = page.with_name("broken.html")
    html_text = page.read_text().replace(
        "<main>", '<main><img src="https://example.invalid/x.png" data-name="remote">'
                  "<script>undefinedFunction();</script>", 1)
    broken.write_text(html_text)
    check, console = render_check(chromium, broken, tmp_path / "profile-broken")
    remote = next(im for im in check["images"] if im["name"] == "remote")
    assert remote["width"] == 0
    assert any("example.invalid" in e for e in check["errors"])
    assert any("undefinedFunction" in e for e in check["errors"])
    assert console


@pytest.mark.slow
def test_report_of_a_real_training_run(tmp_path):
    """The page from what `gankit train` really writes (the fast tests build the files by hand)."""
    from gankit.training.loop import train

    config = load("dcgan-fashion-mnist", TINY[:-1] + ["train.steps=6", "train.log_every=2", "train.sample_every=3",
                                                      "train.checkpoint_every=6", "train.grid_size=4"])
    train(config, tmp_path / "real", device_name="cpu")
    page = write_report(tmp_path / "real")[0].read_text()
    assert {k: len(v) for k, v in series_points(page, "losses").items()} == {"d_loss": 3, "g_loss": 3}
    assert len(series_points(page, "d_outputs")["d_fake"]) == 3
    images = data_images(page)
    assert len(images) == 2 + 1  # samples at steps 3 and 6, and the interpolation grid
    assert images[-1].size == (INTERPOLATION_K * 18 + 2,) * 2
    assert "finished" in page
