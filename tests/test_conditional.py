"""Class-conditional models and losses (issue 14): cBN, projection, AC-GAN and concat against independent
computations, the label forms, the config's refusals, and training with labels."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from gankit import config as cfg
from gankit import losses
from gankit.errors import GankitError
from gankit.models import build_discriminator, build_generator
from gankit.models.conditioning import (ConditionalBatchNorm2d, class_weights, cycling_labels, grid_labels)

CLASSES = "data.class_names=[a,b,c]"


def small(conditioning: str, *extra: str, arch: str = "dcgan") -> cfg.Config:
    sets = [f"model.conditioning={conditioning}", CLASSES, "model.g_channels=8", "model.d_channels=8",
            "model.z_dim=6", "data.resolution=16", *extra]
    if arch == "mlp":
        sets += ["model.arch=mlp", "data.source=toy-25gaussians"]
    return cfg.load("dcgan-fashion-mnist", sets)


def nets(config: cfg.Config, norm: str = "batch"):
    torch.manual_seed(0)
    return build_generator(config.model, config.data), build_discriminator(config.model, config.data, norm)


# ---- label forms ---------------------------------------------------------------------------------

def test_class_weights_from_indices_and_weights():
    assert torch.equal(class_weights(torch.tensor([2, 0]), 3), torch.tensor([[0.0, 0, 1], [1, 0, 0]]))
    mix = torch.tensor([[0.25, 0.75, 0.0]])
    assert torch.equal(class_weights(mix, 3), mix)
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        class_weights(torch.ones(2, 4), 3)


def test_grid_labels_give_a_row_per_class():
    labels, columns = grid_labels(10, 64)
    assert columns == 6 and labels.tolist()[:7] == [0] * 6 + [1] and labels.tolist()[-1] == 9
    assert len(labels) == 60
    assert grid_labels(25, 16)[1] == 1  # more classes than the grid: one column


@pytest.mark.parametrize("conditioning, arch", [("projection", "dcgan"), ("acgan", "dcgan"), ("concat", "dcgan"),
                                                ("concat", "mlp"), ("projection", "mlp")])
def test_generator_labels_select_the_class_and_mix_linearly(conditioning, arch):
    G, _ = nets(small(conditioning, arch=arch))
    G.eval()
    with torch.no_grad():  # conditional batch norm starts alike for every class: make the classes differ
        for layer in G.modules():
            if isinstance(layer, ConditionalBatchNorm2d):
                layer.gamma.normal_()
                layer.beta.normal_()
    z = torch.randn(4, 6)
    with torch.no_grad():
        by_index = G(z, torch.tensor([0, 1, 2, 0]))
        by_weights = G(z, F.one_hot(torch.tensor([0, 1, 2, 0]), 3).float())
        other = G(z, torch.tensor([1, 1, 2, 0]))
        default = G(z)
    assert torch.allclose(by_index, by_weights, atol=1e-6)
    assert (by_index[0] - other[0]).abs().max() > 1e-2 * by_index.abs().max()  # the label changes the sample
    assert torch.allclose(by_index[1:], other[1:], atol=1e-6)  # and only that sample's
    assert torch.allclose(default, G(z, cycling_labels(4, 3, "cpu")), atol=1e-6)  # without labels: 0, 1, 2, 0


def test_conditional_batch_norm_is_batch_norm_then_the_class_affine():
    torch.manual_seed(0)
    layer = ConditionalBatchNorm2d(4, 3)
    with torch.no_grad():
        layer.gamma.copy_(torch.randn(3, 4))
        layer.beta.copy_(torch.randn(3, 4))
    x, labels = torch.randn(6, 4, 5, 5), torch.tensor([0, 1, 2, 2, 1, 0])
    mean, var = x.mean(dim=(0, 2, 3), keepdim=True), x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    normalized = (x - mean) / torch.sqrt(var + 1e-5)  # batch statistics over the whole batch, every class
    expected = normalized * layer.gamma[labels][:, :, None, None] + layer.beta[labels][:, :, None, None]
    assert torch.allclose(layer(x, labels), expected, atol=1e-5)


# ---- discriminators ------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["dcgan", "mlp"])
def test_projection_adds_the_inner_product_of_the_class_embedding_and_the_features(arch):
    _, D = nets(small("projection", arch=arch))
    D.eval()
    x = torch.randn(5, 1, 16, 16) if arch == "dcgan" else torch.randn(5, 2)
    labels = torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        phi = D.net(x if arch == "dcgan" else x.flatten(1))
        psi = D.head.score(phi).flatten()  # D's unconditional score
        embedding = D.head.embed.weight.T  # [K, F]: the vector of each class
        expected = psi + (embedding[labels] * phi.flatten(1)).sum(1)
        assert torch.allclose(D(x, labels), expected, atol=1e-5)
        # The projection is what makes the score depend on the class.
        assert not torch.allclose(D(x, labels), D(x, (labels + 1) % 3), atol=1e-5)


def test_acgan_discriminator_returns_the_score_and_class_logits():
    _, D = nets(small("acgan"))
    D.eval()
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        out = D(x, torch.tensor([0, 1, 2, 0]))
        phi = D.net(x)
        assert out.shape == (4, 4)
        assert torch.allclose(out[:, 0], D.head.score(phi).flatten(), atol=1e-6)
        assert torch.allclose(out[:, 1:], D.head.classifier(phi).flatten(1), atol=1e-6)
        # AC-GAN's D takes no class information in: the labels change nothing.
        assert torch.equal(out, D(x, torch.tensor([2, 2, 2, 2])))


def test_concat_discriminator_sees_the_label_embedding_as_input_planes():
    _, D = nets(small("concat"))
    D.eval()
    x, labels = torch.randn(3, 1, 16, 16), torch.tensor([0, 1, 2])
    planes = D.label_embed.weight[labels][:, :, None, None].expand(3, -1, 16, 16)
    with torch.no_grad():
        features = D.net(torch.cat([x, planes], dim=1))
        assert torch.allclose(D(x, labels), D.head.score(features).flatten(), atol=1e-6)
        assert not torch.allclose(D(x, labels), D(x, torch.tensor([1, 2, 0])), atol=1e-5)


def test_spectral_norm_reaches_the_projection_embedding():
    from torch.nn.utils import parametrize

    _, D = nets(small("projection", "model.d_spectral_norm=true", "model.d_norm=none"), norm="none")
    assert parametrize.is_parametrized(D.head.embed)


# ---- losses --------------------------------------------------------------------------------------

@pytest.mark.parametrize("on_fakes", [False, True])
def test_acgan_losses_against_an_independent_computation(on_fakes):
    config = small("acgan", "loss.class_weight=0.5", f"loss.class_loss_on_fakes={str(on_fakes).lower()}")
    _, D = nets(config)
    real, fake = torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)
    real_labels, fake_labels = torch.tensor([0, 1, 2, 0]), torch.tensor([2, 2, 1, 0])
    loss, stats = losses.discriminator_loss(config.loss, D, real, fake, real_labels=real_labels,
                                            fake_labels=fake_labels)
    with torch.no_grad():
        r, f = D(real, real_labels), D(fake, fake_labels)  # batch norm: the same batches, the same statistics
    # -log sigmoid(D(real)) - log(1 - sigmoid(D(fake))), plus the class cross-entropy on both batches.
    adversarial = -torch.log(torch.sigmoid(r[:, 0])).mean() - torch.log(1 - torch.sigmoid(f[:, 0])).mean()
    nll = lambda logits, y: -torch.log_softmax(logits, 1)[torch.arange(len(y)), y].mean()  # noqa: E731
    # D's classifier learns from the reals, and with class_loss_on_fakes from the fakes' asked-for classes too.
    classes = nll(r[:, 1:], real_labels) + (nll(f[:, 1:], fake_labels) if on_fakes else 0)
    assert loss.item() == pytest.approx((adversarial + 0.5 * classes).item(), rel=1e-5)
    assert stats["d_class"].item() == pytest.approx(classes.item(), rel=1e-5)

    g_loss, g_stats = losses.generator_loss(config.loss, D, fake, fake_labels=fake_labels)
    assert g_loss.item() == pytest.approx((-torch.log(torch.sigmoid(f[:, 0])).mean()
                                           + 0.5 * nll(f[:, 1:], fake_labels)).item(), rel=1e-5)
    assert g_stats["g_class"].item() == pytest.approx(nll(f[:, 1:], fake_labels).item(), rel=1e-5)


def test_projection_hinge_loss_uses_each_batch_with_its_own_labels():
    config = small("projection", "loss.kind=hinge", "model.d_norm=none")
    _, D = nets(config, norm="none")
    real, fake = torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)
    real_labels, fake_labels = torch.tensor([0, 1, 2, 0]), torch.tensor([2, 2, 1, 0])
    loss, stats = losses.discriminator_loss(config.loss, D, real, fake, real_labels=real_labels,
                                            fake_labels=fake_labels)
    with torch.no_grad():
        expected = F.relu(1 - D(real, real_labels)).mean() + F.relu(1 + D(fake, fake_labels)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert "d_class" not in stats


def test_r1_and_gradient_penalty_differentiate_the_adversarial_score_only():
    # AC-GAN's D outputs [N, 1 + K]: R1 is of the score's gradient, not of the class logits'.
    config = small("acgan", "loss.r1_gamma=2.0", "model.d_norm=none")
    _, D = nets(config, norm="none")
    real, fake = torch.randn(3, 1, 16, 16), torch.randn(3, 1, 16, 16)
    labels = torch.tensor([0, 1, 2])
    _, stats = losses.discriminator_loss(config.loss, D, real, fake, real_labels=labels, fake_labels=labels)
    x = real.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x, labels)[:, 0].sum(), x)
    assert stats["r1"].item() == pytest.approx(grad.flatten(1).square().sum(1).mean().item(), rel=1e-5)

    wgan = small("projection", "loss.kind=wgan-gp", "model.d_norm=layer")
    _, critic = nets(wgan, norm="layer")
    eps = torch.rand(3, 1, 1, 1)
    _, stats = losses.discriminator_loss(wgan.loss, critic, real, fake, gp_eps=eps, real_labels=labels,
                                         fake_labels=torch.tensor([2, 2, 2]))
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat, labels).sum(), x_hat)  # interpolates scored as the reals' class
    assert stats["gp"].item() == pytest.approx(((grad.flatten(1).norm(dim=1) - 1) ** 2).mean().item(), rel=1e-5)


# ---- config --------------------------------------------------------------------------------------

@pytest.mark.parametrize("sets, message", [
    (["model.conditioning=projection", "model.arch=pgan", "data.resolution=8",
      "train.max_iter_at_scale=[2,2]", "train.fade_iters=1"], "not supported by model.arch pgan"),
    (["model.conditioning=acgan", "data.labels=none"], "data.labels is none"),
    (["model.conditioning=acgan", "data.source=lmdb", "data.path=x"], "has none"),
    (["model.conditioning=concat", "model.arch=mlp", "data.source=toy-swissroll"], "has none"),
    (["loss.class_weight=2.0"], "acgan only"),
    (["model.conditioning=projection", "loss.class_weight=2.0"], "acgan only"),
    (["model.conditioning=concat", "loss.class_loss_on_fakes=true"], "acgan only"),
    (["model.conditioning=none", "data.class_names=[a,b]"], "applies to conditional runs"),
    (["model.conditioning=projection", "data.class_names=[a,a]"], "distinct"),
])
def test_config_refuses_inconsistent_conditioning(sets, message):
    with pytest.raises(GankitError, match=message):
        cfg.load("dcgan-fashion-mnist", sets)


def test_resume_with_class_names_left_null_is_the_same_run():
    saved = cfg.load("dcgan-fashion-mnist", ["model.conditioning=projection", "data.class_names=[a,b]"])
    again = cfg.load("dcgan-fashion-mnist", ["model.conditioning=projection"])
    assert cfg.changed_frozen_keys(saved, again) == []
    renamed = cfg.load("dcgan-fashion-mnist", ["model.conditioning=projection", "data.class_names=[a,c]"])
    assert cfg.changed_frozen_keys(saved, renamed) == ["data.class_names"]


# ---- training with labels ------------------------------------------------------------------------

def test_toy_samples_of_class_k_land_near_mode_k(tmp_path, run_cli):
    from gankit.checkpoint import load_generator
    from gankit.data.toy import mixture_modes

    run = tmp_path / "cgan"
    code, _, err = run_cli("train", "cgan-25gaussians", "--out", run, "--set", "train.steps=300",
                           "--set", "eval.every=1000", "--set", "train.checkpoint_every=300")
    assert code == 0, err
    G, meta = load_generator(run)
    assert meta["data"].class_names == [str(k) for k in range(25)]
    centres, std = mixture_modes("toy-25gaussians")
    torch.manual_seed(1)
    with torch.no_grad():
        labels = torch.arange(25).repeat_interleave(40)
        points = G(torch.randn(len(labels), 2), labels)
    nearest = torch.cdist(points, centres).argmin(1)
    # Asked for class k, G draws from mode k: nearly every sample's nearest mode is its class's.
    assert (nearest == labels).float().mean() > 0.9
    # ...and without the labels, classes come in turn, so every mode is drawn.
    with torch.no_grad():
        cycled = torch.cdist(G(torch.randn(250, 2)), centres).argmin(1)
    assert len(set(cycled.tolist())) == 25


def test_conditional_run_saves_class_names_and_a_grid_with_a_row_per_class(tmp_path, run_cli):
    from PIL import Image

    from conftest import tiny_train_args

    run = tmp_path / "proj"
    extra = ["model.conditioning=projection", "train.grid_size=20"]
    code, _, err = run_cli(*tiny_train_args(run, steps=4, extra=extra))
    assert code == 0, err
    saved = cfg.load(str(run / "config.yaml"))
    assert saved.data.class_names[:2] == ["T-shirt/top", "Trouser"] and saved.data.num_classes == 10
    assert json.loads((run / "generator.json").read_text())["data"]["class_names"] == saved.data.class_names
    # 20 images for 10 classes: 10 rows of 2 columns, 16x16 images with 2 pixels of padding.
    width, height = Image.open(run / "samples" / "step_000004.png").size
    assert (width, height) == (2 + 2 * 18, 2 + 10 * 18)
    stats = json.loads((run / "stats.jsonl").read_text().splitlines()[-1])
    assert "d_class" not in stats


def test_acgan_run_logs_its_class_losses_and_an_unlabelled_folder_is_refused(tmp_path, run_cli):
    from conftest import tiny_train_args

    run = tmp_path / "acgan"
    code, _, err = run_cli(*tiny_train_args(run, steps=2, extra=["model.conditioning=acgan"]))
    assert code == 0, err
    stats = json.loads((run / "stats.jsonl").read_text().splitlines()[-1])
    assert stats["d_class"] > 0 and stats["g_class"] > 0

    from PIL import Image

    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(20):
        Image.new("L", (16, 16), i * 10).save(folder / f"{i}.png")
    code, _, err = run_cli(*tiny_train_args(tmp_path / "refused", steps=2, extra=[
        "model.conditioning=projection", "data.source=folder", f"data.path={folder}"]))
    assert code == 2 and "subfolder" in err and "Traceback" not in err
    assert not (tmp_path / "refused" / "checkpoints").exists()
