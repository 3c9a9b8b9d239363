"""StyleGAN2's use side: --truncation (sample, interpolate, eval), interpolation in W, the style-mixing grid.

Every expected picture is computed here from the generator's two halves (mapping, synthesize) and compared
with the files the commands write; a tiny randomly initialised 16x16 StyleGAN2 with a non-zero w_avg is
enough (its layer resolutions: 4, 8, 8, 16, 16, 16).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from gankit.checkpoint import export_generator, load_generator
from gankit.config import load
from gankit.models import build_generator
from gankit.sampling import draw_latents
from gankit.viz.grid import to_uint8
from gankit.viz.interpolate import STYLE_GROUPS, seeded_latents, slerp, style_layers

SIZE = 16
PADDING = 2  # gankit.viz.grid.grid_image's
TINY_STYLEGAN2 = ["model.arch=stylegan2", "model.conditioning=none", "model.z_dim=16", "model.w_dim=16", "model.channel_base=64",
                  "model.channel_max=16", "model.mapping_layers=2", "data.resolution=16"]


def tiny_config():
    return load("dcgan-fashion-mnist", TINY_STYLEGAN2)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """An export folder holding only generator.json + generator.safetensors, with a non-zero w_avg."""
    cfg = tiny_config()
    torch.manual_seed(0)
    generator = build_generator(cfg.model, cfg.data).eval()
    with torch.no_grad():
        generator.mapping.w_avg.copy_(torch.randn(cfg.model.w_dim, generator=torch.Generator().manual_seed(9)))
    folder = tmp_path_factory.mktemp("sg2") / "export"
    export_generator(folder, generator, cfg.model.model_dump(mode="json"), cfg.data.model_dump(mode="json"), 0)
    assert sorted(p.name for p in folder.iterdir()) == ["generator.json", "generator.safetensors"]
    return folder


@pytest.fixture(scope="module")
def G(export):
    return load_generator(export)[0]


@pytest.fixture(scope="module")
def dcgan_export(tmp_path_factory):
    cfg = load("dcgan-fashion-mnist", ["model.g_channels=8", "model.z_dim=8", "data.resolution=16",
                                       "model.conditioning=none"])
    folder = tmp_path_factory.mktemp("dc") / "export"
    export_generator(folder, build_generator(cfg.model, cfg.data).eval(), cfg.model.model_dump(mode="json"),
                     cfg.data.model_dump(mode="json"), 0)
    return folder


def cells(path, rows: int, columns: int) -> torch.Tensor:
    """The uint8 images [rows, columns, 1, S, S] of a grid PNG written by save_grid."""
    array = torch.from_numpy(np.array(Image.open(path)))
    step = SIZE + PADDING
    assert array.shape == (PADDING + rows * step, PADDING + columns * step)
    return torch.stack([torch.stack([array[PADDING + r * step:][:SIZE, PADDING + c * step:][:, :SIZE][None]
                                     for c in range(columns)]) for r in range(rows)])


def files_of(folder) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.array(Image.open(p)))[None] for p in sorted(folder.glob("*.png"))])


@torch.no_grad()
def images(G, ws: torch.Tensor) -> torch.Tensor:
    """uint8 images of styles [N, num_ws, w_dim] (or one w [N, w_dim] for every layer)."""
    if ws.ndim == 2:
        ws = ws[:, None].repeat(1, G.num_ws, 1)
    return to_uint8(G.synthesize(ws))


@torch.no_grad()
def mapped(G, z: torch.Tensor) -> torch.Tensor:
    return G.mapping(z)  # untruncated ws [N, num_ws, w_dim]


def assert_same_images(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal but for one level of rounding (batches of other sizes may round the last float bit otherwise)."""
    assert actual.shape == expected.shape
    assert (actual.int() - expected.int()).abs().max() <= 1


def clearly_differ(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.int() - b.int()).abs().max() > 20


# ---- truncation -------------------------------------------------------------------------------------

def test_psi_0_gives_the_w_average_image_for_every_z(export, G, tmp_path, run_cli):
    code, _, err = run_cli("sample", export / "generator.json", "--truncation", "0", "--num", "5", "--out-dir",
                           tmp_path / "t0")
    assert code == 0, err
    written = files_of(tmp_path / "t0")
    average = images(G, G.w_avg[None])  # w_avg read back from the safetensors: the exported non-zero one
    assert G.w_avg.abs().sum() > 1
    for image in written:
        assert_same_images(image[None], average)
    code, _, err = run_cli("sample", export, "--num", "5", "--out-dir", tmp_path / "t1")
    assert clearly_differ(files_of(tmp_path / "t1")[0], files_of(tmp_path / "t1")[1])  # without it they differ


def test_psi_1_equals_no_option(export, tmp_path, run_cli):
    assert run_cli("sample", export, "--num", "9", "--seed", "3", "--out", tmp_path / "plain.png")[0] == 0
    assert run_cli("sample", export, "--num", "9", "--seed", "3", "--truncation", "1",
                   "--out", tmp_path / "psi1.png")[0] == 0
    assert np.array_equal(np.array(Image.open(tmp_path / "plain.png")), np.array(Image.open(tmp_path / "psi1.png")))


def test_psi_half_moves_each_w_halfway_to_the_average(export, G, tmp_path, run_cli):
    for psi in ("0.5", "1"):
        code, _, err = run_cli("sample", export, "--num", "4", "--seed", "2", "--truncation", psi,
                               "--out-dir", tmp_path / psi)
        assert code == 0, err
    half, full = files_of(tmp_path / "0.5"), files_of(tmp_path / "1")
    assert all(clearly_differ(a, b) for a, b in zip(half, full))
    ws = mapped(G, draw_latents(4, G.z_dim, 2))
    assert_same_images(half, images(G, G.w_avg + 0.5 * (ws - G.w_avg)))
    assert_same_images(full, images(G, ws))


@pytest.mark.parametrize("psi", ["1.5", "-0.1", "nan"])
@pytest.mark.parametrize("command", [["sample"], ["interpolate"], ["eval", "--metrics", "ms_ssim"]])
def test_truncation_outside_0_to_1_is_refused(export, tmp_path, run_cli, command, psi):
    code, _, err = run_cli(command[0], export, *command[1:], "--truncation", psi, "--out", tmp_path / "x.png")
    assert code == 2
    message = (f"gankit {command[0]}: error: --truncation {float(psi):g}: give a value from 0 to 1 (1: no "
               "truncation; 0: every sample is the image of the average w)")
    assert err.strip().splitlines() == [message]
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("argv", [["sample", "--truncation", "0.5"],
                                  ["interpolate", "--truncation", "0.5"],
                                  ["eval", "--metrics", "ms_ssim", "--truncation", "0.5"],
                                  ["interpolate", "--mode", "style-mix"],
                                  ["interpolate", "--mode", "lerp", "--space", "w"]])
def test_stylegan2_options_on_a_dcgan_are_refused(dcgan_export, tmp_path, run_cli, argv):
    option = "--mode style-mix" if "style-mix" in argv else "--space w" if "--space" in argv else "--truncation"
    code, _, err = run_cli(argv[0], dcgan_export, *argv[1:], "--out", tmp_path / "x.png")
    assert code == 2
    message = (f"gankit {argv[0]}: error: {option} applies to StyleGAN2 generators (model.arch stylegan2); this "
               "one is dcgan")
    assert err.strip().splitlines() == [message]


# ---- interpolation in W -----------------------------------------------------------------------------

def test_lerp_moves_in_w_its_midpoint_is_the_mean_w(export, G, tmp_path, run_cli):
    for mode in ("lerp", "slerp"):
        code, _, err = run_cli("interpolate", export, "--mode", mode, "--steps", "3", "--pairs", "2", "--seed", "5",
                               "--out", tmp_path / f"{mode}.png")
        assert code == 0, err
    lerp_cells, slerp_cells = cells(tmp_path / "lerp.png", 2, 3), cells(tmp_path / "slerp.png", 2, 3)
    ends = seeded_latents((2, 2, G.z_dim), 5)  # interpolation_latents' endpoints for this seed
    for row in range(2):
        ws = mapped(G, ends[row])
        assert_same_images(lerp_cells[row, [0, 2]], images(G, ws))  # G(z_a), G(z_b)
        assert_same_images(lerp_cells[row, 1:2], images(G, ws.mean(0, keepdim=True)))
        z_mid = slerp(ends[row, 0], ends[row, 1], 0.5)
        assert_same_images(slerp_cells[row, 1:2], images(G, mapped(G, z_mid[None])))  # slerp stays in Z
        assert clearly_differ(lerp_cells[row, 1], slerp_cells[row, 1])


def test_space_z_lerps_the_latents(export, G, tmp_path, run_cli):
    code, _, err = run_cli("interpolate", export, "--mode", "lerp", "--space", "z", "--steps", "3", "--pairs", "1",
                           "--seed", "5", "--truncation", "0.6", "--out", tmp_path / "z.png")
    assert code == 0, err
    ends = seeded_latents((1, 2, G.z_dim), 5)[0]
    ws = mapped(G, ends.mean(0, keepdim=True))
    assert_same_images(cells(tmp_path / "z.png", 1, 3)[0, 1:2], images(G, G.w_avg + 0.6 * (ws - G.w_avg)))


def test_w_lerp_truncates_the_endpoints(export, G, tmp_path, run_cli):
    code, _, err = run_cli("interpolate", export, "--mode", "lerp", "--steps", "2", "--pairs", "1", "--seed", "1",
                           "--truncation", "0.3", "--out", tmp_path / "t.png")
    assert code == 0, err
    ws = mapped(G, seeded_latents((1, 2, G.z_dim), 1)[0])
    assert_same_images(cells(tmp_path / "t.png", 1, 2)[0], images(G, G.w_avg + 0.3 * (ws - G.w_avg)))


def test_grid_sweeps_the_halves_of_w(export, G, tmp_path, run_cli):
    code, _, err = run_cli("interpolate", export, "--mode", "grid", "--steps", "3", "--seed", "4",
                           "--out", tmp_path / "g.png")
    assert code == 0, err
    grid = cells(tmp_path / "g.png", 3, 3)
    w0, w1 = mapped(G, seeded_latents((2, G.z_dim), 4))[:, 0]
    half = G.w_dim // 2
    top_right = torch.cat([w1[:half], w0[half:]])  # x (columns) moves the first half of w
    assert_same_images(torch.stack([grid[0, 0], grid[2, 2], grid[0, 2]]), images(G, torch.stack([w0, w1, top_right])))


def test_w_space_gif_passes_through_the_keys(export, G, tmp_path, run_cli):
    code, _, err = run_cli("interpolate", export, "--mode", "lerp", "--pairs", "2", "--steps", "2", "--seed", "3",
                           "--out", tmp_path / "loop.gif")
    assert code == 0, err
    gif = Image.open(tmp_path / "loop.gif")
    frames = []
    for i in range(gif.n_frames):
        gif.seek(i)
        frame = np.array(gif.convert("L"))
        frames.append(torch.from_numpy(frame[::frame.shape[0] // SIZE, ::frame.shape[1] // SIZE].copy())[None])
    keys = mapped(G, seeded_latents((2, G.z_dim), 3))
    assert len(frames) == 4
    assert_same_images(torch.stack([frames[0], frames[2]]), images(G, keys))
    assert_same_images(frames[1][None], images(G, keys.mean(0, keepdim=True)))


# ---- style mixing -----------------------------------------------------------------------------------

# The tiny model's layer_resolutions() are 4, 8, 8, 16, 16, 16: coarse = the 4x4-8x8 styles; middle = the
# 16x16 ones; a 16x16 model has no 64x64-and-up styles, so fine = those of its last resolution, 16.
EXPECTED_LAYERS = {"coarse": [0, 1, 2], "middle": [3, 4, 5], "fine": [3, 4, 5]}


@pytest.mark.parametrize("group", ["coarse", "fine"])
def test_style_mix_cells_take_the_columns_styles_of_one_group(export, G, tmp_path, run_cli, group):
    assert G.layer_resolutions() == [4, 8, 8, 16, 16, 16]
    rows, columns = 2, 3
    argv = ["interpolate", export, "--mode", "style-mix", "--rows", rows, "--cols", columns, "--seed", "6",
            "--out", tmp_path / "mix.png"]
    code, _, err = run_cli(*argv, *([] if group == "coarse" else ["--styles", group]))
    assert code == 0, err
    picture = cells(tmp_path / "mix.png", rows + 1, columns + 1)
    z = seeded_latents((columns + rows, G.z_dim), 6)  # the column sources first, then the row sources
    column_ws, row_ws = mapped(G, z[:columns]), mapped(G, z[columns:])
    assert torch.all(picture[0, 0] == 128)  # the grey corner
    assert_same_images(picture[0, 1:], images(G, column_ws))  # G(z_c) along the top
    assert_same_images(picture[1:, 0], images(G, row_ws))  # G(z_r) down the left
    layers = EXPECTED_LAYERS[group]
    for r in range(rows):
        for c in range(columns):
            ws = row_ws[r].clone()
            ws[layers] = column_ws[c, layers]
            assert_same_images(picture[1 + r, 1 + c][None], images(G, ws[None]))
            assert clearly_differ(picture[1 + r, 1 + c], picture[1 + r, 0])  # something was taken
            assert clearly_differ(picture[1 + r, 1 + c], picture[0, 1 + c])  # but not everything


def test_style_mix_truncates_every_source(export, G, tmp_path, run_cli):
    code, _, err = run_cli("interpolate", export, "--mode", "style-mix", "--pairs", "1", "--seed", "2",
                           "--truncation", "0", "--out", tmp_path / "mix.png")
    assert code == 0, err
    picture = cells(tmp_path / "mix.png", 2, 2)
    assert_same_images(picture.flatten(0, 1)[1:], images(G, G.w_avg[None]).repeat(3, 1, 1, 1))


def test_style_groups_by_resolution():
    def resolutions(size):  # as layer_resolutions(): two convs per block from 8 on, toRGB's at the end
        return [4] + [r for k in range(3, int(math.log2(size)) + 1) for r in (2**k, 2**k)] + [size]

    assert resolutions(32) == [4, 8, 8, 16, 16, 32, 32, 32]
    assert {g: style_layers(resolutions(32), g) for g in STYLE_GROUPS} == {
        "coarse": [0, 1, 2], "middle": [3, 4, 5, 6, 7], "fine": [5, 6, 7]}
    assert {g: style_layers(resolutions(256), g) for g in STYLE_GROUPS} == {
        "coarse": [0, 1, 2], "middle": [3, 4, 5, 6], "fine": [7, 8, 9, 10, 11, 12, 13]}


@pytest.mark.parametrize("argv, message", [
    (["--mode", "style-mix", "--out", "mix.gif"], "--mode style-mix makes a still picture: use --out FILE.png"),
    (["--styles", "fine"], "--styles goes with --mode style-mix"),
    (["--mode", "lerp", "--rows", "3"], "--rows goes with --mode style-mix"),
    (["--mode", "style-mix", "--cols", "0"], "--cols 0: give 1 to 64"),
    (["--mode", "style-mix", "--space", "w"], "--space goes with --mode lerp, slerp or grid, not style-mix"),
    (["--mode", "slerp", "--space", "w"], "--mode slerp moves along a great circle in Z; for W give --mode lerp"),
])
def test_bad_interpolation_options_are_refused(export, tmp_path, run_cli, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("interpolate", export, *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not list(tmp_path.glob("*.png")) + list(tmp_path.glob("*.gif"))


# ---- eval ---------------------------------------------------------------------------------------------

def test_eval_scores_truncated_samples_and_records_psi(export, tmp_path, run_cli):
    run = tmp_path / "run"  # an export with a config.yaml is a run: eval appends to its metrics.jsonl
    run.mkdir()
    for f in export.iterdir():
        (run / f.name).write_bytes(f.read_bytes())
    (run / "config.yaml").write_text(yaml.safe_dump(tiny_config().model_dump(mode="json")))
    assert run_cli("sample", run, "--num", "8", "--seed", "7", "--out-dir", tmp_path / "real")[0] == 0
    common = ["eval", run, "--metrics", "ms_ssim", "--num-samples", "8", "--real", tmp_path / "real", "--json"]
    code, out, err = run_cli(*common, "--truncation", "0")
    assert code == 0, err
    truncated = json.loads(out)
    assert truncated["truncation"] == 0.0
    assert truncated["ms_ssim"] == pytest.approx(1.0, abs=1e-4)  # every sample is the average's image
    code, out, err = run_cli(*common)
    assert code == 0, err
    plain = json.loads(out)
    assert "truncation" not in plain and plain["ms_ssim"] < 0.99
    # The run's curve holds the untruncated score only.
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["ms_ssim"] for r in records] == [plain["ms_ssim"]]
    code, out, err = run_cli(*common[:-1], "--truncation", "0.5", "--out", tmp_path / "m.json")
    assert code == 0, err
    assert "truncation psi 0.5" in out.splitlines()[0]  # the table's "generated:" line
    assert json.loads((tmp_path / "m.json").read_text())["truncation"] == 0.5


def test_eval_truncation_of_files_is_refused(tmp_path, run_cli):
    (tmp_path / "fake").mkdir()
    code, _, err = run_cli("eval", "--fake", tmp_path / "fake", "--metrics", "ms_ssim", "--truncation", "0.5")
    assert code == 2 and "--truncation applies to a StyleGAN2 generator, not to --fake files" in err
