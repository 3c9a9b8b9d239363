"""`gankit eval`, the metric registry, the Inception wiring and periodic evaluation during training.

The Inception and VGG16 networks are never run here (no weights offline): the tests check what
gankit hands torch-fidelity and what it does with the answer, and the offline error path."""

import json
import math
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import needs_fashion_mnist, tiny_train_args
from gankit.checkpoint import load_generator
from gankit.config import validate
from gankit.data.toy import mixture_modes
from gankit.errors import GankitError
from gankit.metrics.modes import mode_coverage
from gankit.metrics.registry import METRICS
from gankit.metrics.sources import draw_from_generator, load_samples
from gankit.viz.grid import to_uint8

TOY_SETTINGS = ["model.g_channels=32", "model.d_channels=32", "model.hidden_layers=1", "train.batch_size=32",
                "train.log_every=3", "train.sample_every=6", "train.checkpoint_every=6", "train.grid_size=16"]


def toy_args(out: Path, extra=()) -> list[str]:
    args = ["train", "gan-8gaussians", "--out", str(out), "--set", "train.steps=6"]
    for item in [*TOY_SETTINGS, *extra]:
        args += ["--set", item]
    return args


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A 6-step toy run evaluated (modes, 200 samples) every 3 steps."""
    from gankit.cli import main

    run = tmp_path_factory.mktemp("toy") / "run"
    assert main(toy_args(run, ["eval.every=3", "eval.metrics=[modes]", "eval.num_samples=200"])) == 0
    return run


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A 2-step DCGAN on 256 Fashion-MNIST images at 16x16, evaluated (ms_ssim, 300 samples) at step 2."""
    from gankit.cli import main

    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST not installed")
    run = tmp_path_factory.mktemp("img") / "run"
    evaluation = ["eval.every=2", "eval.metrics=[ms_ssim]", "eval.num_samples=300"]
    assert main(tiny_train_args(run, steps=2, extra=evaluation)) == 0
    return run


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def generated(run: Path, num: int, seed: int) -> torch.Tensor:
    generator, meta = load_generator(run)
    kind = "points" if meta["data"].is_toy else "images"
    return draw_from_generator(generator, meta["model"].z_dim, num, seed, torch.device("cpu"), kind)


# ---- periodic evaluation -----------------------------------------------------------------------

def test_training_appends_an_evaluation_every_eval_every_steps(toy_run):
    records = [r for r in lines(toy_run / "metrics.jsonl") if r["origin"] == "training"]
    assert [r["step"] for r in records] == [3, 6]
    assert all(r["num_samples"] == 200 and r["modes"]["total"] == 8 for r in records)
    # The last evaluation is of the final generator, on fixed latents drawn from seed + 2.
    centres, std = mixture_modes("toy-8gaussians")
    assert records[-1]["modes"] == mode_coverage(generated(toy_run, 200, seed=0 + 2), centres, std)
    best = json.loads((toy_run / "metrics_best.json").read_text())
    covered = [r["modes"]["covered"] for r in records]
    assert best["modes.covered"]["value"] == max(covered)
    assert best["modes.covered"]["step"] == records[covered.index(max(covered))]["step"]
    assert best["modes.covered"]["direction"] == "higher"


def test_evaluation_does_not_change_training(toy_run, tmp_path):
    from gankit.cli import main
    from safetensors.torch import load_file

    plain = tmp_path / "plain"
    assert main(toy_args(plain)) == 0
    with_eval, without = load_file(toy_run / "generator.safetensors"), load_file(plain / "generator.safetensors")
    assert all(torch.equal(with_eval[k], without[k]) for k in without)
    assert not (plain / "metrics.jsonl").exists()


def test_best_values_follow_each_metrics_direction():
    from gankit.metrics.periodic import update_best

    metrics = [METRICS["fid"], METRICS["is"], METRICS["ms_ssim"]]
    best: dict = {}
    update_best(best, metrics, {"fid": 30.0, "is": {"mean": 2.0, "std": 0.1}, "ms_ssim": 0.5,
                                "ms_ssim_real": 0.3, "ms_ssim_gap": 0.2}, step=1)
    improved = update_best(best, metrics, {"fid": 20.0, "is": {"mean": 1.5, "std": 0.1}, "ms_ssim": 0.25,
                                           "ms_ssim_real": 0.3, "ms_ssim_gap": 0.05}, step=2)
    assert improved == {"fid", "ms_ssim_gap"}
    assert best["fid"] == {"value": 20.0, "step": 2, "direction": "lower"}
    assert best["is.mean"] == {"value": 2.0, "step": 1, "direction": "higher"}
    assert best["ms_ssim_gap"]["step"] == 2


@needs_fashion_mnist
def test_periodic_image_metric_uses_the_whole_smaller_training_set(image_run):
    from gankit.metrics.ms_ssim import ms_ssim_pairs

    (record,) = [r for r in lines(image_run / "metrics.jsonl") if r["origin"] == "training"]
    assert record["step"] == 2 and record["samples"] == {"ms_ssim": {"fake": 300, "real": 256}}
    assert record["ms_ssim"] == pytest.approx(ms_ssim_pairs(generated(image_run, 300, seed=2), 150), rel=1e-12)
    assert record["ms_ssim_gap"] == pytest.approx(abs(record["ms_ssim"] - record["ms_ssim_real"]))
    best = json.loads((image_run / "metrics_best.json").read_text())
    assert best == {"ms_ssim_gap": {"value": record["ms_ssim_gap"], "step": 2, "direction": "lower"}}


@needs_fashion_mnist
def test_training_refuses_a_metric_the_training_set_is_too_small_for(tmp_path, run_cli):
    code, _, err = run_cli(*tiny_train_args(tmp_path / "r", steps=2, extra=["eval.every=1", "eval.metrics=[kid]"]))
    assert code == 2 and "kid needs at least 1000 real samples" in err and "has 256" in err


def test_training_refuses_an_image_metric_on_toy_data_before_starting(tmp_path, run_cli):
    code, _, err = run_cli(*toy_args(tmp_path / "r", ["eval.every=3", "eval.metrics=[fid]"]))
    assert code == 2 and "fid needs images" in err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_config_refuses_unknown_metric_names():
    with pytest.raises(GankitError, match="unknown metric fidd; choose from swd, ms_ssim, fid"):
        validate({"eval": {"metrics": ["fidd"]}})


# ---- gankit eval on a toy run ------------------------------------------------------------------

def test_eval_modes_on_a_run(toy_run, tmp_path, run_cli):
    out = tmp_path / "m.json"
    code, stdout, _ = run_cli("eval", toy_run, "--metrics", "modes", "--num-samples", 300, "--out", out, "--json")
    assert code == 0
    result = json.loads(stdout)
    assert json.loads(out.read_text()) == result
    assert list(result) == ["modes", "num_samples", "samples"]
    assert set(result["modes"]) == {"covered", "total", "high_quality", "kl"}
    centres, std = mixture_modes("toy-8gaussians")
    assert result["modes"] == mode_coverage(generated(toy_run, 300, seed=0), centres, std)
    assert result["num_samples"] == 300 and result["samples"] == {"modes": {"fake": 300, "real": 0}}
    last = lines(toy_run / "metrics.jsonl")[-1]
    assert last["origin"] == "eval" and last["step"] == 6 and last["modes"] == result["modes"]


def test_saved_points_evaluate_like_the_generator(toy_run, tmp_path, run_cli):
    points = tmp_path / "points.npy"
    assert run_cli("sample", toy_run, "--num", 400, "--seed", 5, "--out", points)[0] == 0
    code, from_file, _ = run_cli("eval", "--fake", points, "--real", "toy-8gaussians", "--metrics", "modes", "--json")
    assert code == 0
    code, from_run, _ = run_cli("eval", toy_run, "--metrics", "modes", "--num-samples", 400, "--seed", 5, "--json")
    assert json.loads(from_file)["modes"] == json.loads(from_run)["modes"]


@pytest.mark.parametrize("argv, message", [
    (["--metrics", "swd"], "swd needs images, but the generator of"),
    (["--metrics", "fid,nope"], "unknown metric nope"),
    (["--metrics", "modes", "--num-samples", "0"], "--num-samples must be at least 1"),
])
def test_eval_refuses_bad_requests_on_a_toy_run(toy_run, run_cli, argv, message):
    code, stdout, err = run_cli("eval", toy_run, *argv)
    assert code == 2 and message in err and stdout == ""


def test_eval_of_unnamed_points_asks_for_the_mixture(tmp_path, run_cli):
    np.save(tmp_path / "p.npy", np.zeros((10, 2), dtype=np.float32))
    code, _, err = run_cli("eval", "--fake", tmp_path / "p.npy", "--metrics", "modes")
    assert code == 2 and "pass --real toy-8gaussians" in err


# ---- gankit eval on an image run ---------------------------------------------------------------

def write_pngs(folder: Path, images: np.ndarray) -> Path:
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image.squeeze() if image.shape[-1] == 1 else image).save(folder / f"{i:03d}.png")
    return folder


@needs_fashion_mnist
def test_saved_pngs_and_the_generator_give_identical_inputs(image_run, tmp_path, run_cli):
    folder = tmp_path / "pngs"
    assert run_cli("sample", image_run, "--num", 40, "--seed", 3, "--out-dir", folder)[0] == 0
    from_files = load_samples(str(folder), 40, seed=0, shuffle=False).data
    in_memory = generated(image_run, 40, seed=3)
    assert from_files.dtype == torch.uint8 and from_files.shape == (40, 1, 16, 16)
    assert torch.equal(from_files, in_memory)
    # The quantization is the one of saved files, not a rounding of our own.
    generator, meta = load_generator(image_run)
    z = torch.randn(40, meta["model"].z_dim, generator=torch.Generator().manual_seed(3))
    assert torch.equal(in_memory, to_uint8(generator(z)))


@needs_fashion_mnist
def test_eval_ms_ssim_on_an_image_run(image_run, run_cli):
    from gankit.metrics.ms_ssim import ms_ssim_pairs

    code, stdout, _ = run_cli("eval", image_run, "--metrics", "ms_ssim", "--num-samples", 64, "--json")
    assert code == 0
    result = json.loads(stdout)
    assert list(result) == ["ms_ssim", "ms_ssim_real", "ms_ssim_gap", "num_samples", "samples"]
    assert result["ms_ssim"] == pytest.approx(ms_ssim_pairs(generated(image_run, 64, seed=0), 32), rel=1e-12)
    assert result["ms_ssim_gap"] == pytest.approx(abs(result["ms_ssim"] - result["ms_ssim_real"]))
    assert result["samples"] == {"ms_ssim": {"fake": 64, "real": 64}}
    assert lines(image_run / "metrics.jsonl")[-1]["ms_ssim"] == result["ms_ssim"]


@needs_fashion_mnist
def test_eval_refuses_mismatched_and_short_inputs(image_run, tmp_path, run_cli):
    rng = np.random.default_rng(0)
    bigger = write_pngs(tmp_path / "big", rng.integers(0, 256, (8, 32, 32, 1), dtype=np.uint8))
    rgb = write_pngs(tmp_path / "rgb", rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8))
    few = write_pngs(tmp_path / "few", rng.integers(0, 256, (8, 16, 16, 1), dtype=np.uint8))
    cases = [
        (["--metrics", "ms_ssim", "--real", bigger, "--num-samples", 8],
         "are 1-channel 16x16 images but the real ones"),
        (["--metrics", "ms_ssim", "--real", rgb, "--num-samples", 8], "are 3-channel 16x16 images"),
        (["--metrics", "modes"], "modes needs points, but the generator of"),
        (["--metrics", "kid", "--num-samples", 500], "kid needs at least 1000 samples per side"),
        (["--metrics", "ms_ssim", "--real", few, "--num-samples", 20], "asks for more than the 8 real samples"),
    ]
    for argv, message in cases:
        code, _, err = run_cli("eval", image_run, *argv)
        assert code == 2 and message in err, (argv, err)
    code, _, err = run_cli("eval", "--fake", rgb, "--metrics", "swd")
    assert code == 2 and "pass --real" in err


# ---- Inception metrics through torch-fidelity ------------------------------------------------------

@pytest.fixture
def fake_fidelity(monkeypatch):
    """Replaces torch-fidelity's entry point by a recorder, and the weights lookup by a fixed path."""
    import torch_fidelity

    from gankit.metrics import inception

    calls = []

    def calculate_metrics(**options):
        calls.append(options)
        return {"frechet_inception_distance": 12.5, "kernel_inception_distance_mean": 0.25,
                "kernel_inception_distance_std": 0.01, "inception_score_mean": 3.5, "inception_score_std": 0.5,
                "precision": 0.75, "recall": 0.625, "f_score": 0.6}

    monkeypatch.setattr(torch_fidelity, "calculate_metrics", calculate_metrics)
    monkeypatch.setattr(inception, "resolve_weights", lambda extractor, given: f"/weights/{extractor}.pth")
    return calls


def items(dataset) -> torch.Tensor:
    return torch.stack([dataset[i] for i in range(len(dataset))])


@needs_fashion_mnist
def test_inception_metrics_get_the_quantized_images(image_run, fake_fidelity, run_cli):
    code, stdout, _ = run_cli("eval", image_run, "--metrics", "fid,is,pr", "--num-samples", 48, "--json")
    assert code == 0
    result = json.loads(stdout)
    assert {k: result[k] for k in ("fid", "is", "pr")} == {
        "fid": 12.5, "is": {"mean": 3.5, "std": 0.5}, "pr": {"precision": 0.75, "recall": 0.625}}
    assert result["samples"]["is"] == {"fake": 48, "real": 0} and result["samples"]["fid"] == {"fake": 48, "real": 48}
    inception_call, vgg_call = fake_fidelity
    assert (inception_call["fid"], inception_call["isc"], inception_call["prc"]) == (True, True, False)
    assert inception_call["feature_extractor"] == "inception-v3-compat"
    assert inception_call["feature_extractor_weights_path"] == "/weights/inception.pth"
    assert (vgg_call["prc"], vgg_call["fid"], vgg_call["feature_extractor"]) == (True, False, "vgg16")
    expected = generated(image_run, 48, seed=0).expand(-1, 3, -1, -1)  # grayscale repeated to RGB
    fake_items = items(inception_call["input1"])
    assert fake_items.dtype == torch.uint8 and torch.equal(fake_items, expected)
    real_items = items(inception_call["input2"])
    assert real_items.shape == (48, 3, 16, 16) and torch.equal(real_items[:, 0], real_items[:, 2])
    assert not torch.equal(real_items, fake_items)


@needs_fashion_mnist
def test_inception_metrics_of_a_folder_match_the_generator(image_run, fake_fidelity, tmp_path, run_cli):
    folder = tmp_path / "pngs"
    assert run_cli("sample", image_run, "--num", 24, "--out-dir", folder)[0] == 0
    assert run_cli("eval", "--fake", folder, "--metrics", "is")[0] == 0
    assert run_cli("eval", image_run, "--metrics", "is", "--num-samples", 24)[0] == 0
    from_folder, from_run = fake_fidelity
    assert "input2" not in from_folder  # IS looks at generated images only
    assert torch.equal(items(from_folder["input1"]), items(from_run["input1"]))


@needs_fashion_mnist
def test_missing_inception_weights_offline(image_run, tmp_path, monkeypatch, run_cli):
    from gankit.metrics import inception

    def offline(url, destination, hash_prefix):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(inception, "_download", offline)
    code, _, err = run_cli("eval", image_run, "--metrics", "fid", "--num-samples", 16)
    assert code == 2
    assert "pass --inception-weights PATH with the file pt_inception-2015-12-05-6726825d.pth" in err
    code, _, err = run_cli("eval", image_run, "--metrics", "pr", "--num-samples", 16)
    assert code == 2 and "pass --vgg16-weights PATH" in err

    not_weights = tmp_path / "w.pth"
    torch.save({"something": torch.zeros(2)}, not_weights)
    for path, message in [(tmp_path / "none.pth", "no such file"), (not_weights, "does not hold the TF-Inception")]:
        code, _, err = run_cli("eval", image_run, "--metrics", "fid", "--num-samples", 16,
                               "--inception-weights", path)
        assert code == 2 and message in err, err


def test_weights_with_code_are_refused(tmp_path):
    from gankit.metrics.inception import resolve_weights

    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(1008, 2048), "hook": math.floor}, path)  # a pickled function
    with pytest.raises(GankitError, match="not a plain PyTorch state dict"):
        resolve_weights("inception", str(path))


def test_resume_drops_the_evaluations_training_redoes(tmp_path):
    """A run killed after step 4's evaluation but resumed from step 2's checkpoint redoes that
    evaluation: its line goes, a user's own `gankit eval` line stays, a cut-off line is dropped."""
    from gankit.training.loop import drop_stats_after

    metrics = tmp_path / "metrics.jsonl"
    records = [{"step": 2, "origin": "training"}, {"step": 3, "origin": "eval"},
               {"step": 4, "origin": "training"}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 5, "ori')
    drop_stats_after(metrics, 2, only_origin="training")
    assert lines(metrics) == records[:2]


# ---- the table, --json and --out ---------------------------------------------------------------

def table_of(stdout: str) -> dict[str, tuple[str, str, str]]:
    """The rows of `gankit eval`'s table: name -> (value, generated, real)."""
    lines = stdout.splitlines()
    header = lines.index(next(line for line in lines if line.split()[:1] == ["metric"]))
    assert lines[header].split() == ["metric", "value", "generated", "real"]
    return {name: tuple(rest) for name, *rest in (line.split() for line in lines[header + 1:])}


def test_eval_prints_a_table_of_the_json_values(toy_run, tmp_path, run_cli):
    from gankit.metrics.command import format_value

    out = tmp_path / "m.json"
    code, table_text, err = run_cli("eval", toy_run, "--metrics", "modes", "--num-samples", 300, "--out", out)
    assert code == 0 and err == ""
    code, json_text, _ = run_cli("eval", toy_run, "--metrics", "modes", "--num-samples", 300, "--json")
    result = json.loads(json_text)
    assert json.loads(out.read_text()) == result  # --out holds the --json object, whatever stdout shows
    assert table_text.splitlines()[:2] == [f"generated: the generator of {toy_run} (step 6)", "real:      none"]
    modes = result["modes"]
    assert table_of(table_text) == {f"modes.{key}": (format_value(modes[key]), "300", "-")
                                    for key in ("covered", "total", "high_quality", "kl")}
    assert table_of(table_text)["modes.total"][0] == "8"


@needs_fashion_mnist
def test_the_table_names_nested_values_and_companions(image_run, fake_fidelity, run_cli):
    argv = ["eval", image_run, "--metrics", "ms_ssim,fid,is,pr", "--num-samples", 48]
    code, table_text, _ = run_cli(*argv)
    assert code == 0
    result = json.loads(run_cli(*argv, "--json")[1])
    rows = table_of(table_text)
    assert list(rows) == ["ms_ssim", "ms_ssim_real", "ms_ssim_gap", "fid", "is.mean", "is.std", "pr.precision",
                          "pr.recall"]
    assert rows["fid"] == ("12.5", "48", "48") and rows["is.mean"] == ("3.5", "48", "-")
    assert rows["pr.recall"] == ("0.625", "48", "48")
    for name in ("ms_ssim", "ms_ssim_real", "ms_ssim_gap"):
        assert float(rows[name][0]) == pytest.approx(result[name], rel=1e-4) and rows[name][1:] == ("48", "48")
    assert "real:      the train images of fashion-mnist" in table_text


def test_table_values_are_short_and_exact_where_whole():
    from gankit.metrics.command import format_value

    assert [format_value(v) for v in (25, 0.26134567, 68.65712, 123456.7, -0.000123456, None)] == [
        "25", "0.26135", "68.657", "123457", "-0.00012346", "none"]


# ---- named real sets: --fake alone for fd_fmnist, --real fashion-mnist[:split] -------------------

@pytest.fixture(scope="module")
def sample_folder(image_run, tmp_path_factory):
    """130 PNGs (16x16 gray) from the image run's generator: just over fd_fmnist's minimum."""
    from gankit.cli import main

    folder = tmp_path_factory.mktemp("samples") / "pngs"
    assert main(["sample", str(image_run), "--num", "130", "--out-dir", str(folder)]) == 0
    return folder


@needs_fashion_mnist
def test_fd_fmnist_of_files_alone_compares_with_the_fashion_mnist_test_set(sample_folder, run_cli):
    def evaluate_with(*real):
        code, stdout, err = run_cli("eval", "--fake", sample_folder, "--metrics", "fd_fmnist,kid_fmnist",
                                    "--num-samples", 130, *real, "--json")
        assert code == 0, err
        return json.loads(stdout)

    alone = evaluate_with()
    assert alone == evaluate_with("--real", "fashion-mnist:test")
    assert alone == evaluate_with("--real", "fashion-mnist")  # fd_fmnist's usual split is test
    assert alone["samples"]["fd_fmnist"] == {"fake": 130, "real": 130}
    train = evaluate_with("--real", "fashion-mnist:train")
    assert train["fd_fmnist"] != alone["fd_fmnist"] and train["kid_fmnist"] != alone["kid_fmnist"]
    code, table_text, _ = run_cli("eval", "--fake", sample_folder, "--metrics", "fd_fmnist", "--num-samples", 130)
    assert code == 0 and "real:      the test images of fashion-mnist" in table_text
    assert table_of(table_text)["fd_fmnist"][1:] == ("130", "130")


@needs_fashion_mnist
@pytest.mark.parametrize("channels, size", [(1, 16), (3, 64)])
def test_a_named_dataset_is_the_training_data_at_the_generated_size(channels, size):
    from gankit.config import DataConfig
    from gankit.metrics.sources import Samples, load_dataset, load_real

    like = Samples(torch.zeros(1, channels, size, size, dtype=torch.uint8), "generated")
    named = load_dataset("fashion-mnist", "test", like, 200, seed=4)
    trained_on = load_real(None, DataConfig(source="fashion-mnist", resolution=size, channels=channels), 200,
                           "test", 4)
    assert named.data.shape == (200, channels, size, size) and torch.equal(named.data, trained_on.data)


@needs_fashion_mnist
def test_named_real_sets_refuse_bad_names_and_shapes(sample_folder, tmp_path, run_cli):
    wide = write_pngs(tmp_path / "wide", np.zeros((2, 16, 20, 1), dtype=np.uint8))
    cases = [
        (sample_folder, ["--real", "fashion-mnist:val"],
         "--real fashion-mnist:val: fashion-mnist has no split 'val'; use fashion-mnist:train or fashion-mnist:test"),
        (sample_folder, ["--real", "mnst"], "--real mnst: no such file or folder (did you mean mnist?)"),
        (wide, ["--real", "fashion-mnist", "--metrics", "swd"],
         "fashion-mnist's 28x28 images can be fitted to square 1- or 3-channel images, but"),
        (sample_folder, ["--metrics", "swd"], "swd compares with real samples, and"),
    ]
    for fake, argv, message in cases:
        metrics = [] if "--metrics" in argv else ["--metrics", "fd_fmnist"]
        code, stdout, err = run_cli("eval", "--fake", fake, *metrics, *argv)
        assert code == 2 and stdout == "" and message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1


def test_mnist_missing_is_one_clear_error(tmp_path, monkeypatch, run_cli):
    from gankit.data import idx

    def offline(kind, dest):
        raise OSError("Name or service not known")

    monkeypatch.setitem(idx.SYSTEM_DIRS, "mnist", [str(tmp_path / "none")])
    monkeypatch.setenv("GANKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(idx, "_download", offline)
    folder = write_pngs(tmp_path / "pngs", np.zeros((2, 16, 16, 1), dtype=np.uint8))
    code, stdout, err = run_cli("eval", "--fake", folder, "--metrics", "swd", "--real", "mnist:test")
    assert code == 2 and stdout == ""
    assert err.startswith(f"gankit eval: error: mnist not found in {tmp_path / 'none'}") and "download failed" in err


@pytest.mark.skipif(not Path("/usr/share/datasets/mnist").is_dir(), reason="MNIST not installed")
def test_real_mnist_by_name(tmp_path, run_cli):
    folder = write_pngs(tmp_path / "pngs", np.random.default_rng(0).integers(0, 256, (8, 32, 32, 1), dtype=np.uint8))
    results = []
    for name in ("mnist:test", "fashion-mnist:test"):
        code, stdout, err = run_cli("eval", "--fake", folder, "--metrics", "swd", "--real", name, "--json")
        assert code == 0, err
        results.append(json.loads(stdout))
    assert results[0]["samples"]["swd"] == {"fake": 8, "real": 8} and results[0]["swd"] != results[1]["swd"]


# ---- progress bars -------------------------------------------------------------------------------

class RecordedBar:
    """Stands in for tqdm: records each bar's description, total, updates and its disable argument."""

    def __init__(self, total, desc, unit, leave, dynamic_ncols, disable, file):
        self.total, self.desc, self.disable, self.updates, self.closed = total, desc, disable, [], False

    def update(self, n=1):
        self.updates.append(n)

    def close(self):
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture
def recorded_bars(monkeypatch):
    from gankit.metrics import progress

    bars = []

    def record(**options):
        bars.append(RecordedBar(**options))
        return bars[-1]

    monkeypatch.setattr(progress, "tqdm", record)
    return bars


@needs_fashion_mnist
def test_eval_bars_count_the_work(sample_folder, recorded_bars, run_cli):
    code, _, err = run_cli("eval", "--fake", sample_folder, "--metrics", "fd_fmnist,ms_ssim", "--num-samples", 130)
    assert code == 0, err
    done = {bar.desc: (bar.total, sum(bar.updates)) for bar in recorded_bars}
    assert done == {"reading pngs": (130, 130), "classifier features (real)": (130, 130),
                    "classifier features (generated)": (130, 130), "MS-SSIM pairs": (65, 65)}
    # disable=None: tqdm draws them only on a terminal; all closed, so none lingers on the screen.
    assert all(bar.disable is None and bar.closed for bar in recorded_bars)


def test_generating_bar_counts_the_samples(toy_run, recorded_bars, run_cli):
    assert run_cli("eval", toy_run, "--metrics", "modes", "--num-samples", 300)[0] == 0
    assert [(b.desc, b.total, sum(b.updates), b.disable) for b in recorded_bars] == [("generating", 300, 300, None)]


def test_inception_bar_follows_the_items_torch_fidelity_reads(recorded_bars):
    from gankit.metrics.inception import UInt8Images

    images = UInt8Images(torch.zeros(70, 1, 8, 8, dtype=torch.uint8), "Inception features (real)", True)
    images[0]  # torch-fidelity probes the first item before its batches
    for index in range(len(images)):
        images[index]
    (bar,) = recorded_bars
    assert (bar.desc, bar.total, sum(bar.updates), bar.disable, bar.closed) == (
        "Inception features (real)", 70, 70, False, True)


def test_bars_show_on_a_terminal_only(toy_run, monkeypatch, capsys):
    import io

    from gankit.cli import main

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    argv = ["eval", str(toy_run), "--metrics", "modes", "--num-samples", "300"]
    assert main(argv) == 0
    assert capsys.readouterr().err == ""  # not a terminal: no bar, no timing
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert main(argv) == 0
    assert "generating" in terminal.getvalue() and "modes: " in terminal.getvalue()


@needs_fashion_mnist
def test_a_run_on_a_subset_is_scored_against_the_whole_test_set():
    """data.max_images limits the training images; the test-split reference must not shrink with it
    (it did: a run on 1,000 images had fd_fmnist computed against the first 1,000 test images only)."""
    from gankit.config import DataConfig
    from gankit.metrics.sources import load_real

    subset = DataConfig(source="fashion-mnist", resolution=16, max_images=50)
    assert len(load_real(None, subset, 120, "test", 0).data) == 120  # the test split, whole, then sampled
    assert len(load_real(None, subset, 120, "train", 0).data) == 50  # what training saw
