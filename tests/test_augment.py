"""DiffAugment: each op against hand-made expectations, the draws, the gradient through it, where the
losses apply it, its config checks, and that training uses it."""

import pytest
import torch
from torch import nn

from conftest import generator_gradient, needs_fashion_mnist, tiny_image_gan, tiny_train_args
from gankit import augment as A
from gankit import config as cfg
from gankit import losses
from gankit.checkpoint import list_checkpoints, load_training_state
from gankit.errors import GankitError


def test_translation_moves_pixels_by_the_given_amount_and_shifts_zeros_in():
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4).repeat(2, 1, 1, 1)
    out = A.translate(x, down=torch.tensor([1, -2]), right=torch.tensor([-1, 0]))
    assert torch.equal(out[0, 0], torch.tensor([[0.0, 0, 0, 0], [2, 3, 4, 0], [6, 7, 8, 0], [10, 11, 12, 0]]))
    assert torch.equal(out[1, 0], torch.tensor([[9.0, 10, 11, 12], [13, 14, 15, 16], [0, 0, 0, 0], [0, 0, 0, 0]]))


def test_cutout_zeroes_exactly_the_given_box_also_across_a_border():
    x = torch.full((2, 3, 4, 5), 0.5)
    out = A.cut_out(x, top=torch.tensor([1, -1]), left=torch.tensor([2, 4]), size=(2, 2))
    expected = torch.full((2, 3, 4, 5), 0.5)
    expected[0, :, 1:3, 2:4] = 0
    expected[1, :, 0:1, 4:5] = 0  # the box's rows -1..0 and columns 4..5, inside the image: one pixel
    assert torch.equal(out, expected)


def test_color_ops_follow_their_formulas():
    x = torch.tensor([[[[0.2, -0.4]], [[0.6, 0.0]]]])  # one image, 2 channels, 1 x 2 pixels
    assert torch.allclose(A.adjust_brightness(x, torch.tensor([0.3])), x + 0.3)
    # Saturation: per pixel, channel mean m = (0.4, -0.2); (x - m) * 1.5 + m.
    assert torch.allclose(A.adjust_saturation(x, torch.tensor([1.5])),
                          torch.tensor([[[[0.1, -0.5]], [[0.7, 0.1]]]]))
    # Contrast: image mean 0.1; (x - 0.1) * 0.5 + 0.1.
    assert torch.allclose(A.adjust_contrast(x, torch.tensor([0.5])),
                          torch.tensor([[[[0.15, -0.15]], [[0.35, 0.05]]]]))
    gray = torch.rand(3, 1, 4, 4)
    assert torch.equal(A.adjust_saturation(gray, torch.tensor([0.0, 1.7, 2.0])), gray)  # one channel: identity
    # color = brightness, then saturation, then contrast.
    params = {"shift": torch.tensor([0.3]), "saturation": torch.tensor([1.5]), "contrast": torch.tensor([0.5])}
    expected = A.adjust_contrast(A.adjust_saturation(x + 0.3, params["saturation"]), params["contrast"])
    assert torch.allclose(A.apply_op("color", x, params), expected)


def test_draws_cover_the_published_ranges():
    torch.manual_seed(0)
    color = A.draw_parameters("color", 4000, 32, 32, torch.device("cpu"))
    for name, low, high in (("shift", -0.5, 0.5), ("saturation", 0.0, 2.0), ("contrast", 0.5, 1.5)):
        values = color[name]
        assert values.min() >= low and values.max() <= high
        assert values.min() < low + 0.01 and values.max() > high - 0.01
    moves = A.draw_parameters("translation", 4000, 32, 16, torch.device("cpu"))
    assert set(moves["down"].tolist()) == set(range(-4, 5)) and set(moves["right"].tolist()) == set(range(-2, 3))
    box = A.draw_parameters("cutout", 4000, 32, 32, torch.device("cpu"))
    assert A.cutout_size(32, 32) == (16, 16)
    # The box's centre (corner + 8) is any of rows 0..32: from half outside at the top to half at the bottom.
    assert set((box["top"] + 8).tolist()) == set(range(33))


def test_each_call_applies_the_ops_in_order_with_fresh_draws():
    augment = A.DiffAugment(["translation", "cutout", "color"])
    x = torch.rand(5, 3, 8, 8) * 2 - 1
    torch.manual_seed(3)
    first, second = augment(x), augment(x)
    assert not torch.equal(first, second)
    torch.manual_seed(3)
    expected = x
    for op in ("translation", "cutout", "color"):
        expected = A.apply_op(op, expected, A.draw_parameters(op, 5, 8, 8, x.device))
    assert torch.equal(first, expected)


def test_channels_last_images_stay_channels_last():
    x = torch.rand(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    out = A.DiffAugment(cfg.AUGMENT_OPS)(x)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()


def test_a_rank_augments_its_share_as_one_process_augments_the_global_batch():
    x = torch.rand(6, 3, 8, 8)
    torch.manual_seed(1)
    whole = A.DiffAugment(cfg.AUGMENT_OPS)(x)
    torch.manual_seed(1)
    rank_1 = A.DiffAugment(cfg.AUGMENT_OPS, share=lambda values: values[1::2], world_size=2)(x[1::2])
    assert torch.equal(rank_1, whole[1::2])


class Recorder(nn.Module):
    """A linear critic that keeps the batches it is given."""

    def __init__(self, features: int):
        super().__init__()
        self.linear = nn.Linear(features, 1)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.linear(x.flatten(1))


def test_losses_show_d_augmented_reals_and_fakes_and_g_augmented_fakes():
    marker = lambda images: images + 100.0  # recognizable in what D records
    D = Recorder(4)
    real, fake = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    losses.discriminator_loss(cfg.LossConfig(), D, real, fake, augment=marker)
    assert torch.equal(D.seen[0], real + 100) and torch.equal(D.seen[1], fake + 100)
    D.seen.clear()
    losses.generator_loss(cfg.LossConfig(), D, fake, marker)
    assert len(D.seen) == 1 and torch.equal(D.seen[0], fake + 100)


def test_wgan_gp_draws_its_weights_before_the_augmentation_as_data_parallel_training_does():
    D, wgan_gp = Recorder(4), cfg.LossConfig(kind="wgan-gp")
    real, fake, augment = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2), A.DiffAugment(["color"])
    torch.manual_seed(2)
    drawn_inside = losses.discriminator_loss(wgan_gp, D, real, fake, augment=augment)[1]["gp"]
    torch.manual_seed(2)
    eps = losses.penalty_epsilon(3, real)  # what a rank receives from the loop, drawn first
    assert drawn_inside == losses.discriminator_loss(wgan_gp, D, real, fake, gp_eps=eps, augment=augment)[1]["gp"]


def test_r1_differentiates_through_the_augmentation_to_the_reals():
    D = Recorder(4)
    real, fake = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    _, stats = losses.discriminator_loss(cfg.LossConfig(r1_gamma=1.0), D, real, fake,
                                         augment=lambda images: images * 2.0)
    # D(2x) = 2 w.x + b: the gradient with respect to the reals is 2w, its squared norm 4 ||w||^2.
    assert stats["r1"].item() == pytest.approx(4 * D.linear.weight.square().sum().item(), rel=1e-6)


def test_the_generators_gradient_flows_through_the_augmentation():
    G, D, z = tiny_image_gan()
    loss_cfg = cfg.LossConfig()

    def g_grad(run_loss):
        return generator_gradient(G, run_loss)

    torch.manual_seed(5)
    through = g_grad(lambda: losses.generator_loss(loss_cfg, D, G(z), A.DiffAugment(cfg.AUGMENT_OPS))[0])

    def explicit():  # the same draws, composed by hand from the ops
        images = G(z)
        torch.manual_seed(5)
        color = torch.rand(3, 6)
        images = A.adjust_contrast(A.adjust_saturation(A.adjust_brightness(images, color[0] - 0.5), color[1] * 2),
                                   color[2] + 0.5)
        down, right = torch.randint(-1, 2, (6,)), torch.randint(-1, 2, (6,))
        images = A.translate(images, down, right)
        top, left = torch.randint(0, 9, (6,)) - 2, torch.randint(0, 9, (6,)) - 2
        images = A.cut_out(images, top, left, (4, 4))
        return losses.g_loss_term("nsgan", D(images))

    plain = g_grad(lambda: losses.generator_loss(loss_cfg, D, G(z))[0])
    assert through.abs().sum() > 0
    assert torch.allclose(through, g_grad(explicit), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(through, plain, atol=1e-4)


@pytest.mark.parametrize("settings, key", [
    (["augment.policy=diffaugment", "augment.ops=[color, zoom]"], "augment.ops"),
    (["augment.policy=diffaugment", "augment.ops=[cutout, cutout]"], "augment.ops"),
    (["augment.policy=diffaugment", "augment.ops=[]"], "augment.ops"),
    (["augment.policy=diffaugment", "data.source=toy-8gaussians", "model.arch=mlp"], "augment.policy"),
])
def test_bad_augment_settings_exit_2_naming_the_key(settings, key, tmp_path, run_cli):
    with pytest.raises(GankitError, match=key.replace(".", r"\.")):
        cfg.load("dcgan-fashion-mnist", settings)
    argv = ["train", "dcgan-fashion-mnist", "--out", tmp_path / "run"]
    for item in settings:
        argv += ["--set", item]
    code, _, err = run_cli(*argv)
    assert code == 2 and key in err and "Traceback" not in err and not (tmp_path / "run").exists()


def test_augment_defaults_and_pgan_refusal():
    assert cfg.Config().augment.policy == "none" and cfg.Config().augment.ops == ["color", "translation", "cutout"]
    with pytest.raises(GankitError, match="augment.policy diffaugment.*model.arch pgan"):
        cfg.load("pgan-fashion-mnist", ["augment.policy=diffaugment"])


@needs_fashion_mnist
def test_training_augments_and_the_policy_is_frozen_on_resume(tmp_path, run_cli):
    plain, augmented = tmp_path / "plain", tmp_path / "augmented"
    assert run_cli(*tiny_train_args(plain, steps=2))[0] == 0
    assert run_cli(*tiny_train_args(augmented, steps=2, extra=["augment.policy=diffaugment"]))[0] == 0
    a, b = (load_training_state(list_checkpoints(run)[-1]) for run in (plain, augmented))
    assert not torch.equal(a["D"]["net.0.weight"], b["D"]["net.0.weight"])
    code, _, err = run_cli("train", augmented, "--set", "train.steps=4", "--set", "augment.policy=none")
    assert code == 2 and "augment.policy" in err
