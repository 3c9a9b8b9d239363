"""The class-conditional metrics (class_accuracy, intra_fd_fmnist, modes per class) on generators whose
class-k output is known by construction: real test images of the asked class, or points on mode k."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import needs_fashion_mnist
from torch import nn

from gankit.data.idx import CLASS_NAMES
from gankit.data.toy import mixture_modes
from gankit.errors import GankitError
from gankit.metrics.registry import EvalContext, parse_metric_names
from gankit.metrics.sources import Samples, balanced_labels, draw_from_generator

FASHION = CLASS_NAMES["fashion-mnist"]


@pytest.fixture(scope="module")
def test_set():
    from gankit.data.idx import load_idx_images

    return load_idx_images("fashion-mnist", None, "test")


class ClassImages(nn.Module):
    """A stand-in conditional generator at 32 px: for class k it returns the next unused test image of
    class (k + shift) % 10, zero-padded as gankit's data (so to_uint8 of its output is exactly that image)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, shift: int = 0):
        super().__init__()
        self.num_classes = 10
        self.z_dim = 4
        self.by_class = [torch.nn.functional.pad(images[labels == k], (2, 2, 2, 2)) for k in range(10)]
        self.shift = shift
        self.used = [0] * 10
        self.given: list[torch.Tensor] = []  # the uint8 images handed out, in order

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        assert labels is not None and labels.dtype == torch.int64 and len(labels) == len(z)
        out = []
        for k in labels.tolist():
            source = (k + self.shift) % 10
            out.append(self.by_class[source][self.used[source]])
            self.used[source] += 1
        images = torch.stack(out)
        self.given.append(images)
        return (images.float() - 127.5) / 127.5


def plug_generator(monkeypatch, generator: nn.Module, data_config, z_dim: int):
    """gankit eval PATH then evaluates `generator` with `data_config`'s classes."""
    import gankit.sampling
    from gankit.config import ModelConfig

    meta = {"model": ModelConfig(z_dim=z_dim), "data": data_config, "step": 7}
    monkeypatch.setattr(gankit.sampling, "load_for_sampling", lambda source, no_ema, device: (generator, meta))


def fashion_data(class_names=FASHION):
    from gankit.config import DataConfig

    return DataConfig(source="fashion-mnist", class_names=list(class_names))


def classifier_predictions(images_u8: torch.Tensor) -> torch.Tensor:
    """Argmax classes of padded 32 px uint8 images, straight from the shipped network (not fmnist_features)."""
    from gankit.metrics.fmnist import load_classifier

    model = load_classifier()
    with torch.no_grad():
        return torch.cat([model(chunk.float() / 127.5 - 1)[1].argmax(1) for chunk in images_u8.split(1000)])


def run_eval(run_cli, tmp_path, metrics: str, num: int):
    code, out, err = run_cli("eval", tmp_path, "--metrics", metrics, "--num-samples", num, "--json")
    assert code == 0, err
    return json.loads(out)


@needs_fashion_mnist
def test_class_accuracy_and_intra_fd_of_real_images_of_the_asked_class(test_set, tmp_path, monkeypatch, run_cli):
    images, labels = test_set
    right = ClassImages(images, labels)
    plug_generator(monkeypatch, right, fashion_data(), right.z_dim)
    result = run_eval(run_cli, tmp_path, "class_accuracy,intra_fd_fmnist", 1300)

    # 130 per class, asked as 0, 1, ..., 9, 0, ...: the accuracy is the classifier's on exactly those images.
    given = torch.cat(right.given)
    asked = torch.arange(1300) % 10
    correct = classifier_predictions(given) == asked
    assert result["class_accuracy"] == pytest.approx(float(correct.double().mean()), abs=1e-9)
    assert list(result["class_accuracy_per_class"]) == FASHION
    for k, name in enumerate(FASHION):
        assert result["class_accuracy_per_class"][name] == pytest.approx(float(correct[asked == k].double().mean()))
    real_accuracy = (classifier_predictions(torch.nn.functional.pad(images, (2, 2, 2, 2))) == labels).double().mean()
    assert result["class_accuracy_real"] == pytest.approx(float(real_accuracy), abs=1e-9)
    assert result["class_accuracy_real"] == pytest.approx(0.919, abs=0.002)  # the shipped classifier's
    assert result["samples"]["class_accuracy"] == {"fake": 1300, "real": 10000}

    # Real images of the right class: each class's FD is the small-sample floor; every class present.
    assert list(result["intra_fd_fmnist_per_class"]) == FASHION
    per_class = result["intra_fd_fmnist_per_class"]
    assert result["intra_fd_fmnist"] == pytest.approx(sum(per_class.values()) / 10)
    from gankit.metrics import stats
    from gankit.metrics.fmnist import fmnist_features

    sandal = 5
    real_features, _ = fmnist_features(torch.nn.functional.pad(images[labels == sandal], (2, 2, 2, 2)))
    fake_features, _ = fmnist_features(given[asked == sandal])
    assert per_class["Sandal"] == pytest.approx(stats.frechet_distance(real_features, fake_features), rel=1e-6)

    wrong = ClassImages(images, labels, shift=1)  # class k asked, class k + 1 given
    plug_generator(monkeypatch, wrong, fashion_data(), wrong.z_dim)
    shifted = run_eval(run_cli, tmp_path, "class_accuracy,intra_fd_fmnist", 1300)
    assert shifted["class_accuracy"] < 0.1
    assert shifted["class_accuracy_real"] == result["class_accuracy_real"]
    assert shifted["intra_fd_fmnist"] > 5 * result["intra_fd_fmnist"]
    assert all(shifted["intra_fd_fmnist_per_class"][name] > 2 * per_class[name] for name in FASHION)


@needs_fashion_mnist
def test_class_metrics_during_training(test_set, tmp_path):
    from gankit.config import load
    from gankit.metrics.periodic import PeriodicEvaluator

    images, labels = test_set
    config = load("dcgan-fashion-mnist", ["model.conditioning=projection", f"data.class_names={json.dumps(FASHION)}",
                                          "eval.every=1", "eval.metrics=[class_accuracy]", "eval.num_samples=200"])
    evaluator = PeriodicEvaluator(config, tmp_path, torch.device("cpu"))
    line = evaluator(ClassImages(images, labels), step=3)
    assert line.startswith("eval at step 3: class_accuracy ")
    record = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert record["step"] == 3 and record["class_accuracy"] > 0.8
    assert json.loads((tmp_path / "metrics_best.json").read_text())["class_accuracy"]["step"] == 3


# ---- modes per class ----------------------------------------------------------------------------------

def mode_generator(permutation: list[int]):
    """A conditional MLP generator for toy-25gaussians (concat) whose class k lands exactly on mode
    permutation[k], whatever z: the label embedding is one-hot, the hidden layers pass it on, the last maps it
    to the centre. Returns (generator, its config)."""
    from gankit.config import load
    from gankit.models import build_generator

    names = [str(k) for k in range(25)]
    config = load("wgangp-25gaussians", ["model.conditioning=concat", f"data.class_names={json.dumps(names)}",
                                         "model.g_channels=32", "model.d_channels=32"])
    G = build_generator(config.model, config.data)
    centres, _ = mixture_modes("toy-25gaussians")
    z_dim = config.model.z_dim
    with torch.no_grad():
        G.label_embed.weight.zero_()
        G.label_embed.weight[:, :25] = torch.eye(25)
        linears = [m for m in G.net if isinstance(m, nn.Linear)]
        for i, layer in enumerate(linears[:-1]):
            layer.weight.zero_()
            layer.bias.zero_()
            offset = z_dim if i == 0 else 0  # the first layer's input is [z, embedding]
            layer.weight[torch.arange(25), offset + torch.arange(25)] = 1.0
        linears[-1].weight.zero_()
        linears[-1].bias.zero_()
        linears[-1].weight[:, :25] = centres[permutation].T
    return G, config


def test_modes_per_class_of_a_generator_that_puts_class_k_on_mode_k(tmp_path, run_cli):
    from gankit.checkpoint import export_generator

    results = {}
    for name, permutation in (("matched", list(range(25))), ("shuffled", [(k + 7) % 25 for k in range(25)])):
        G, config = mode_generator(permutation)
        folder = tmp_path / name
        export_generator(folder, G, config.model.model_dump(mode="json"), config.data.model_dump(mode="json"), 1)
        results[name] = run_eval(run_cli, folder, "modes", 2500)["modes"]

    matched, shuffled = results["matched"], results["shuffled"]
    assert matched["per_class"] == {str(k): 1.0 for k in range(25)} and matched["class_match"] == 1.0
    assert shuffled["per_class"] == {str(k): 0.0 for k in range(25)} and shuffled["class_match"] == 0.0
    # The unconditional figures see 100 points exactly on every mode either way.
    for result in (matched, shuffled):
        assert (result["covered"], result["total"], result["high_quality"]) == (25, 25, 1.0)
        assert result["kl"] == pytest.approx(0.0, abs=1e-12)


def test_periodic_modes_report_the_class_match(tmp_path):
    from gankit.metrics.periodic import PeriodicEvaluator

    G, config = mode_generator(list(range(25)))
    config = config.model_copy(update={"eval": config.eval.model_copy(update={"num_samples": 500})})
    line = PeriodicEvaluator(config, tmp_path, torch.device("cpu"))(G, step=2)
    assert "modes.class_match 1 (best)" in line
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["modes"]["per_class"]["24"] == 1.0


def test_mode_coverage_per_class_counts_each_class_against_its_own_mode():
    from gankit.metrics.modes import modes_metric

    centres, std = mixture_modes("toy-8gaussians")
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2, 2])
    # Each point 2.9 std from the mode named (within 3 std): classes 1 and 2 have some on other modes.
    points = centres[torch.tensor([0, 0, 1, 5, 2, 2, 2, 7])] + torch.tensor([2.9 * std, 0.0])
    samples = Samples(points, "test", "toy-8gaussians", labels=labels, class_names=[str(k) for k in range(8)])
    result = modes_metric(["modes"], samples, None, None)["modes"]
    assert result["per_class"] == {"0": 1.0, "1": 0.5, "2": 0.75, "3": None, "4": None, "5": None, "6": None,
                                   "7": None}
    assert result["class_match"] == pytest.approx((1.0 + 0.5 + 0.75) / 3)
    assert "per_class" not in modes_metric(["modes"], Samples(points, "test", "toy-8gaussians"), None, None)["modes"]


# ---- the sources layer --------------------------------------------------------------------------------

def test_labels_are_balanced_over_the_draw_and_every_prefix():
    labels = balanced_labels(1000, 10)
    assert labels.dtype == torch.int64 and torch.bincount(labels).tolist() == [100] * 10
    prefix = Samples(torch.zeros(1000, 2), "test", labels=labels).first(333).labels
    assert torch.bincount(prefix, minlength=10).tolist() == [34, 34, 34] + [33] * 7
    assert balanced_labels(5, 0) is None


def test_a_conditional_draw_asks_each_sample_its_label_and_an_unconditional_one_is_unchanged():
    from gankit.config import load
    from gankit.models import build_generator
    from gankit.sampling import generate
    from gankit.viz.grid import to_uint8

    base = ["model.g_channels=8", "model.z_dim=16", "data.resolution=16", "model.conditioning=none"]
    torch.manual_seed(0)
    unconditional = build_generator(load("dcgan-fashion-mnist", base).model,
                                    load("dcgan-fashion-mnist", base).data).eval()
    drawn = draw_from_generator(unconditional, 16, 300, 5, "cpu", "images")
    assert torch.equal(drawn, to_uint8(generate(unconditional, 16, 300, 5, torch.device("cpu"))))

    config = load("dcgan-fashion-mnist", [*base, "model.conditioning=projection", "data.class_names=[a,b,c]"])
    conditional = build_generator(config.model, config.data).eval()
    labels = balanced_labels(300, 3)
    drawn = draw_from_generator(conditional, 16, 300, 5, "cpu", "images", labels=labels)
    z = torch.randn(300, 16, generator=torch.Generator().manual_seed(5))  # the unconditional draw's latents
    with torch.no_grad():
        expected = torch.cat([to_uint8(conditional(zc, lc)) for zc, lc in zip(z.split(256), labels.split(256))])
    assert torch.equal(drawn, expected)


# ---- refusals -----------------------------------------------------------------------------------------

def tiny_export(folder, extra=()):
    from gankit.checkpoint import export_generator
    from gankit.config import load
    from gankit.models import build_generator

    config = load("dcgan-fashion-mnist", ["model.g_channels=8", "model.z_dim=8", "model.conditioning=none", *extra])
    export_generator(folder, build_generator(config.model, config.data), config.model.model_dump(mode="json"),
                     config.data.model_dump(mode="json"), 0)
    return folder


@pytest.mark.parametrize("metric", ["class_accuracy", "intra_fd_fmnist"])
def test_class_metrics_refuse_samples_without_fashion_mnist_classes(metric, tmp_path, run_cli):
    unconditional = tiny_export(tmp_path / "unconditional")
    code, out, err = run_cli("eval", unconditional, "--metrics", metric)
    assert code == 2 and f"{metric} needs a class-conditional generator" in err and out == ""

    other = tiny_export(tmp_path / "other", ["model.conditioning=projection", "data.class_names=[cat,dog,bird]"])
    code, _, err = run_cli("eval", other, "--metrics", metric)
    assert code == 2 and "has 3: cat, dog, bird" in err and "Ankle boot" in err

    folder = tmp_path / "files"
    folder.mkdir()
    code, _, err = run_cli("eval", "--fake", folder, "--metrics", metric)
    assert code == 2 and "files without classes" in err


def test_intra_fd_refuses_fewer_than_129_samples_per_class(tmp_path, run_cli):
    conditional = tiny_export(tmp_path / "g", ["model.conditioning=projection",
                                               f"data.class_names={json.dumps(FASHION)}"])
    code, _, err = run_cli("eval", conditional, "--metrics", "intra_fd_fmnist", "--num-samples", "1289")
    assert code == 2 and "needs at least 1290 samples (129 per class" in err

    from gankit.metrics.classes import class_metrics

    labels = balanced_labels(1400, 10)
    labels[:200] = 1  # unbalanced: class 0 keeps 120 of its 140
    few = Samples(torch.zeros(1400, 1, 32, 32, dtype=torch.uint8), "test", labels=labels, class_names=FASHION)
    reference = Samples(torch.zeros(10, 1, 32, 32, dtype=torch.uint8), "ref", labels=torch.arange(10),
                        class_names=FASHION)
    with pytest.raises(GankitError, match="at least 129 generated images per class"):
        class_metrics(["intra_fd_fmnist"], few, reference, EvalContext(device=torch.device("cpu")))


def test_training_refuses_class_metrics_for_an_unconditional_run(tmp_path):
    from gankit.config import load
    from gankit.metrics.periodic import PeriodicEvaluator

    config = load("dcgan-fashion-mnist", ["model.conditioning=none", "eval.every=1", "eval.metrics=[class_accuracy]"])
    with pytest.raises(GankitError, match="class_accuracy needs a class-conditional generator"):
        PeriodicEvaluator(config, tmp_path, torch.device("cpu"))


def test_the_registry_tracks_the_class_metrics():
    accuracy, intra = parse_metric_names("class_accuracy,intra_fd_fmnist")
    assert accuracy.best == (("class_accuracy", "higher"),) and intra.best == (("intra_fd_fmnist", "lower"),)
    assert accuracy.default_samples == intra.default_samples == 10000 and intra.min_samples == 1290
