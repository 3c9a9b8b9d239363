"""Using class-conditional generators: `gankit sample --class`, grids with a row per class, labels beside
written samples, interpolation within and between classes, exports that keep the class names, the report's
row labels. Generators are built (not trained) and, where the class must be visible in the output, given
weights by hand: a toy MLP whose class k lands exactly on mode k."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gankit import config as gankit_config
from gankit.checkpoint import export_generator, load_generator
from gankit.models import build_generator
from gankit.models.conditioning import ConditionalBatchNorm2d
from gankit.sampling import draw_latents, render, resolve_class
from gankit.viz.grid import to_uint8
from gankit.viz.interpolate import seeded_latents

RESOLUTION = 16
Z_DIM = 8
IMAGE_CLASSES = ["7", "0", "Bag"]  # "0" is the name of class 1: a name wins over an index
TOY_CLASSES = [str(k) for k in range(25)]


def _names(names: list[str]) -> str:
    return "data.class_names=[" + ",".join(f"'{name}'" for name in names) + "]"  # quoted: YAML reads 7 as a number


def export(folder, G, cfg, step: int = 3):
    export_generator(folder, G, cfg.model.model_dump(mode="json"), cfg.data.model_dump(mode="json"), step)
    return folder


@pytest.fixture
def image_export(tmp_path):
    """A DCGAN projection generator for 3 classes, its class-conditional batch norm shifted per class (at
    initialization every class has the same scale and shift, which would hide the label)."""
    cfg = gankit_config.load("dcgan-fashion-mnist", [
        "model.conditioning=projection", _names(IMAGE_CLASSES), f"data.resolution={RESOLUTION}",
        "model.g_channels=8", "model.d_channels=8", f"model.z_dim={Z_DIM}"])
    torch.manual_seed(0)
    G = build_generator(cfg.model, cfg.data)
    with torch.no_grad():
        for module in G.modules():
            if isinstance(module, ConditionalBatchNorm2d):
                module.beta.normal_(0.0, 1.0)
    return export(tmp_path / "image_export", G, cfg)


def class_coded_toy(folder):
    """A concat MLP generator on toy-25gaussians whose output is mode k for class k, whatever z: the label
    embedding is the identity, one hidden ReLU layer passes the one-hot on, the output layer holds the modes.
    Class weights w give sum_k w_k mode_k (everything is linear in the weights)."""
    from gankit.data.toy import mixture_modes

    cfg = gankit_config.load("wgangp-25gaussians", [
        "model.conditioning=concat", _names(TOY_CLASSES), "model.hidden_layers=1", "model.g_channels=25",
        "model.label_embed_dim=25", f"model.z_dim={Z_DIM}"])
    G = build_generator(cfg.model, cfg.data, parametrized=False)
    centres, _ = mixture_modes("toy-25gaussians")
    first, last = G.net[0], G.net[-1]
    with torch.no_grad():
        G.label_embed.weight.copy_(torch.eye(25))
        first.weight.zero_()
        first.weight[:, Z_DIM:] = torch.eye(25)
        first.bias.zero_()
        last.weight.copy_(centres.T.float())
        last.bias.zero_()
    return export(folder, G, cfg), cfg, centres.float()


def unconditional_export(folder):
    cfg = gankit_config.load("dcgan-fashion-mnist", ["model.conditioning=none", f"data.resolution={RESOLUTION}", "model.g_channels=8",
                                                     "model.d_channels=8", f"model.z_dim={Z_DIM}"])
    return export(folder, build_generator(cfg.model, cfg.data), cfg)


def expected(folder, z: torch.Tensor, labels) -> torch.Tensor:
    """What the exported generator gives for these latents and labels, as saved pixels [N, H, W]."""
    G, _ = load_generator(folder)
    with torch.no_grad():
        return to_uint8(G(z, labels))[:, 0].int()


def cells(path, rows: int, columns: int, size: int = RESOLUTION, padding: int = 2) -> torch.Tensor:
    """A saved grid cut back into its images [rows * columns, H, W]; checks the grid has exactly that shape."""
    array = torch.from_numpy(np.array(Image.open(path))).int()
    assert array.shape == (rows * (size + padding) + padding, columns * (size + padding) + padding)
    return torch.stack([array[padding + r * (size + padding):][:size, padding + c * (size + padding):][:, :size]
                        for r in range(rows) for c in range(columns)])


# ---- choosing classes ---------------------------------------------------------------------------

def test_class_option_passes_that_class_to_the_generator(tmp_path, run_cli):
    folder, _, centres = class_coded_toy(tmp_path / "toy")
    code, out, err = run_cli("sample", folder, "--class", "7", "--class", "12", "--num", 30, "--out",
                             tmp_path / "p.npy")
    assert code == 0, err
    points, labels = np.load(tmp_path / "p.npy"), np.load(tmp_path / "p.labels.npy")
    assert str(tmp_path / "p.labels.npy") in out
    assert points.shape == (60, 2) and labels.tolist() == [7] * 30 + [12] * 30  # --num of each, class by class
    np.testing.assert_allclose(points[:30], np.broadcast_to(centres[7].numpy(), (30, 2)), atol=1e-5)
    np.testing.assert_allclose(points[30:], np.broadcast_to(centres[12].numpy(), (30, 2)), atol=1e-5)


def test_without_class_the_samples_take_every_class_in_turn(tmp_path, run_cli):
    folder, _, centres = class_coded_toy(tmp_path / "toy")
    assert run_cli("sample", folder, "--num", 300, "--out", tmp_path / "p.npy")[0] == 0
    points, labels = np.load(tmp_path / "p.npy"), np.load(tmp_path / "p.labels.npy")
    assert labels.tolist() == [i % 25 for i in range(300)]  # over all samples, not restarted per batch
    np.testing.assert_allclose(points, centres[labels].numpy(), atol=1e-5)
    assert run_cli("sample", folder, "--num", 300, "--class", "3", "--out", tmp_path / "plot.png")[0] == 0
    assert Image.open(tmp_path / "plot.png").size[0] > 100


def test_a_name_wins_over_an_index_and_an_index_must_be_in_range():
    names = IMAGE_CLASSES
    assert resolve_class("0", names, "run") == 1  # the name "0", not index 0
    assert resolve_class("7", names, "run") == 0
    assert resolve_class("2", names, "run") == 2  # no class is called "2": the index
    assert resolve_class("Bag", names, "run") == 2 and resolve_class("bag", names, "run") == 2
    fashion = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
    assert resolve_class("Ankle boot", fashion, "run") == 9 and resolve_class("sneaker", fashion, "run") == 7


def test_class_by_name_reaches_the_generator_as_its_index(image_export, run_cli, tmp_path):
    code, _, err = run_cli("sample", image_export, "--class", "0", "--num", 4, "--seed", 5, "--out",
                           tmp_path / "g.png")
    assert code == 0, err
    z = draw_latents(4, Z_DIM, 5)
    got = cells(tmp_path / "g.png", 2, 2)  # one class: a near-square grid of --num
    assert (got - expected(image_export, z, torch.full((4,), 1))).abs().max() <= 1
    assert (got - expected(image_export, z, torch.full((4,), 0))).abs().max() > 1  # not index 0


@pytest.mark.parametrize("spec, message", [
    ("Sneaker", "has no class 'Sneaker'; its classes: 0 7, 1 0, 2 Bag"),
    ("3", "class index 3 is out of range (0 to 2); its classes: 0 7, 1 0, 2 Bag"),
    ("-1", "has no class '-1'"),
])
def test_a_bad_class_is_refused_with_the_list_of_classes(image_export, run_cli, tmp_path, spec, message):
    code, _, err = run_cli("sample", image_export, "--class", spec, "--out", tmp_path / "g.png")
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "g.png").exists()


def test_class_options_on_an_unconditional_generator_are_refused(tmp_path, run_cli):
    folder = unconditional_export(tmp_path / "plain")
    for argv in (["sample", folder, "--class", "Bag"], ["interpolate", folder, "--class", "0"],
                 ["interpolate", folder, "--mode", "classes", "--from", "0", "--to", "1"]):
        code, _, err = run_cli(*argv, "--out", tmp_path / "x.png")
        assert code == 2 and "is not class-conditional" in err, argv
    assert not (tmp_path / "x.png").exists()


# ---- grids and files ------------------------------------------------------------------------------

def test_a_conditional_grid_has_a_row_per_class_and_a_latent_per_column(image_export, run_cli, tmp_path):
    assert run_cli("sample", image_export, "--num", 7, "--seed", 2, "--out", tmp_path / "g.png")[0] == 0
    got = cells(tmp_path / "g.png", 3, 2)  # 3 classes, 7 // 3 columns
    z = draw_latents(2, Z_DIM, 2).repeat(3, 1)
    assert (got - expected(image_export, z, torch.tensor([0, 0, 1, 1, 2, 2]))).abs().max() <= 1


def test_several_classes_give_a_row_each_in_the_order_given(image_export, run_cli, tmp_path):
    argv = ["--num", 3, "--seed", 4, "--out", tmp_path / "g.png"]
    assert run_cli("sample", image_export, "--class", "Bag", "--class", "7", *argv)[0] == 0
    got = cells(tmp_path / "g.png", 2, 3)
    z = draw_latents(3, Z_DIM, 4).repeat(2, 1)
    assert (got - expected(image_export, z, torch.tensor([2, 2, 2, 0, 0, 0]))).abs().max() <= 1


def test_out_dir_writes_each_image_with_its_class(image_export, run_cli, tmp_path):
    assert run_cli("sample", image_export, "--class", "Bag", "--class", "0", "--num", 2, "--seed", 3,
                   "--out-dir", tmp_path / "d")[0] == 0
    with open(tmp_path / "d" / "labels.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [["file", "class_index", "class_name"], ["000000.png", "2", "Bag"], ["000001.png", "2", "Bag"],
                    ["000002.png", "1", "0"], ["000003.png", "1", "0"]]
    want = expected(image_export, draw_latents(4, Z_DIM, 3), torch.tensor([2, 2, 1, 1]))  # a latent per image
    for i, (file, *_) in enumerate(rows[1:]):
        assert (torch.from_numpy(np.array(Image.open(tmp_path / "d" / file))).int() - want[i]).abs().max() <= 1
    assert run_cli("sample", image_export, "--num", 4, "--out-dir", tmp_path / "e")[0] == 0
    with open(tmp_path / "e" / "labels.csv", newline="") as f:
        assert [row[1] for row in csv.reader(f)][1:] == ["0", "1", "2", "0"]


def test_samples_do_not_depend_on_the_batch_size(image_export):
    G, _ = load_generator(image_export)
    z, labels = draw_latents(10, Z_DIM, 0), torch.arange(10) % 3
    one_by_one = render(G, z, torch.device("cpu"), labels, batch_size=1)
    torch.testing.assert_close(render(G, z, torch.device("cpu"), labels, batch_size=256), one_by_one,
                               rtol=0, atol=1e-5)


# ---- interpolation ----------------------------------------------------------------------------

def test_interpolation_between_classes_starts_and_ends_at_the_two_classes(image_export, run_cli, tmp_path):
    code, _, err = run_cli("interpolate", image_export, "--mode", "classes", "--from", "7", "--to", "Bag",
                           "--steps", 5, "--pairs", 2, "--seed", 6, "--out", tmp_path / "c.png")
    assert code == 0, err
    got = cells(tmp_path / "c.png", 2, 5).view(2, 5, RESOLUTION, RESOLUTION)
    z = seeded_latents((2, Z_DIM), 6)
    for index, column in ((0, 0), (2, 4)):
        assert (got[:, column] - expected(image_export, z, torch.full((2,), index))).abs().max() <= 1
    halfway = torch.tensor([[0.5, 0.0, 0.5]]).repeat(2, 1)
    assert (got[:, 2] - expected(image_export, z, halfway)).abs().max() <= 1
    assert (got[:, 2] - got[:, 0]).abs().max() > 1 and (got[:, 2] - got[:, 4]).abs().max() > 1


def test_interpolation_stays_within_a_class(image_export, run_cli, tmp_path):
    from gankit.viz.interpolate import interpolation_latents

    latents = interpolation_latents("slerp", Z_DIM, 4, 2, 1).reshape(8, Z_DIM)
    assert run_cli("interpolate", image_export, "--class", "Bag", "--steps", 4, "--pairs", 2, "--seed", 1,
                   "--out", tmp_path / "s.png")[0] == 0
    assert (cells(tmp_path / "s.png", 2, 4) - expected(image_export, latents, torch.full((8,), 2))).abs().max() <= 1
    # Without --class, row r is class r.
    assert run_cli("interpolate", image_export, "--steps", 4, "--pairs", 2, "--seed", 1,
                   "--out", tmp_path / "d.png")[0] == 0
    want = expected(image_export, latents, torch.tensor([0, 1]).repeat_interleave(4))
    assert (cells(tmp_path / "d.png", 2, 4) - want).abs().max() <= 1


@pytest.mark.parametrize("argv, message", [
    (["--from", "0", "--to", "Bag"], "--from and --to go with --mode classes"),
    (["--mode", "classes", "--from", "0"], "give --from CLASS and --to CLASS"),
    (["--mode", "classes", "--from", "0", "--to", "0"], "the same class"),
    (["--mode", "classes", "--from", "0", "--to", "Shoe"], "image_export has no class 'Shoe'; its classes: 0 7"),
    (["--mode", "classes", "--from", "0", "--to", "2", "--class", "0"], "not --class"),
    (["--mode", "classes", "--from", "0", "--to", "2", "--out", "x.gif"], "still picture"),
    (["--mode", "grid", "--class", "0", "--class", "2"], "give one --class"),
])
def test_bad_class_interpolation_options(image_export, run_cli, tmp_path, argv, message):
    code, _, err = run_cli("interpolate", image_export, *argv)
    assert code == 2 and message in err


# ---- export and report --------------------------------------------------------------------------

def test_an_exported_conditional_generator_samples_a_class_without_the_config(tmp_path, run_cli):
    """`gankit export` of a run (here a checkpoint written by hand) keeps the class names in generator.json;
    the export alone, without any config.yaml, samples a class by name."""
    cfg_folder, cfg, centres = class_coded_toy(tmp_path / "coded")
    G, _ = load_generator(cfg_folder)
    names = [f"mode {k}" for k in range(25)]
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"class_names": names})})
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"format": "gankit-training-state", "config": cfg.model_dump(mode="json"), "G_ema": G.state_dict(),
                "G": G.state_dict(), "step": 7}, run / "checkpoints" / "step_000007.pt")
    code, _, err = run_cli("export", run, "--out", tmp_path / "exported")
    assert code == 0, err
    assert json.loads((tmp_path / "exported" / "generator.json").read_text())["data"]["class_names"] == names
    assert not (tmp_path / "exported" / "config.yaml").exists()
    code, _, err = run_cli("sample", tmp_path / "exported" / "generator.safetensors", "--class", "mode 19",
                           "--num", 5, "--out", tmp_path / "p.npy")
    assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), np.broadcast_to(centres[19].numpy(), (5, 2)), atol=1e-5)
    code, _, err = run_cli("sample", tmp_path / "exported", "--class", "mode 30", "--out", tmp_path / "q.npy")
    assert code == 2 and "has no class 'mode 30'; its classes: 0 mode 0, 1 mode 1, 2 mode 2" in err


def write_run(folder, conditioning: str, class_names, source: str = "fashion-mnist"):
    from gankit.viz.grid import save_grid

    (folder / "samples").mkdir(parents=True)
    config = {"name": "c", "data": {"source": source, "class_names": class_names},
              "model": {"arch": "dcgan", "conditioning": conditioning}}
    import yaml

    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    save_grid(torch.zeros(6, 1, 8, 8, dtype=torch.uint8), folder / "samples" / "step_000004.png", 2)
    return folder


def test_the_report_labels_the_sample_rows_by_class(tmp_path):
    from gankit.viz.report import write_report

    page = write_report(write_run(tmp_path / "c", "projection", ["Bag", "<b>", "Coat"]))[0].read_text()
    assert '<ol class="row-labels" aria-label="class of each row"><li>Bag</li><li>&lt;b&gt;</li><li>Coat</li></ol>' \
        in page
    assert "Rows, top to bottom: 0 Bag, 1 &lt;b&gt;, 2 Coat" in page
    for folder, conditioning, names, source in ((tmp_path / "u", "none", None, "fashion-mnist"),
                                                (tmp_path / "t", "concat", ["0", "1"], "toy-8gaussians")):
        assert '<ol class="row-labels"' not in write_report(write_run(folder, conditioning, names, source))[0] \
            .read_text()
