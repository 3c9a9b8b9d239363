"""ADA: each op against hand-made expectations, the draws and their probability, the gradient through it,
p's adaptation, its config checks, and that training logs and checkpoints it."""

import json
import math

import pytest
import torch
from torch import nn

from conftest import generator_gradient, needs_fashion_mnist, resume_without_state, tiny_image_gan, tiny_train_args
from gankit import ada as A
from gankit import config as cfg
from gankit import losses
from gankit.augment import build_augment
from gankit.checkpoint import list_checkpoints, load_training_state
from gankit.errors import GankitError

CPU = torch.device("cpu")
INTEGER_OPS = ["xflip", "rotate90", "xint"]


def ramp(n: int = 1, size: int = 8) -> torch.Tensor:
    """Images whose channel 0 holds each pixel's centred x coordinate and channel 1 its y coordinate."""
    c = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    return torch.stack([c.view(1, size).expand(size, size), c.view(size, 1).expand(size, size)]).expand(n, 2, size,
                                                                                                         size)


def reflected(index: torch.Tensor, size: int) -> torch.Tensor:
    """Reflection about the image's border (edge pixel repeated): -1 -> 0, size -> size - 1."""
    index = torch.where(index < 0, -index - 1, index)
    return torch.where(index >= size, 2 * size - 1 - index, index)


def shifted(image: torch.Tensor, right: int, down: int) -> torch.Tensor:
    """[C, H, W] moved right/down by whole pixels, reflected at the borders, by index arithmetic."""
    _, h, w = image.shape
    rows = reflected(torch.arange(h) - down, h)
    cols = reflected(torch.arange(w) - right, w)
    return image[:, rows][:, :, cols]


# ---- geometric ops ------------------------------------------------------------------------------

def test_xflip_mirrors_exactly_the_chosen_samples():
    x = torch.rand(3, 3, 16, 16)
    out = A.augment_images(x, {"xflip": torch.tensor([1.0, 0.0, 1.0])})
    assert torch.equal(out[0], x[0].flip(2)) and torch.equal(out[1], x[1]) and torch.equal(out[2], x[2].flip(2))


def test_rotate90_turns_by_the_given_quarter_turns_exactly():
    x = torch.rand(4, 3, 16, 16)
    out = A.augment_images(x, {"rotate90": torch.tensor([0.0, 1, 2, 3])})
    for k in range(4):
        assert torch.equal(out[k], torch.rot90(x[k], k, dims=(1, 2)))
    assert not torch.equal(out[1], x[1])


def test_xint_moves_pixels_by_the_given_amount_reflecting_at_the_borders():
    x = torch.arange(256.0).view(1, 1, 16, 16).repeat(2, 3, 1, 1)
    out = A.augment_images(x, {"xint": torch.tensor([[3.0, -2.0], [-1.0, 2.0]])})  # (right, down) in pixels
    assert torch.equal(out[0], shifted(x[0], 3, -2)) and torch.equal(out[1], shifted(x[1], -1, 2))
    assert out[0, 0, 0, 5].item() == x[0, 0, 2, 2].item()  # pixel (row 0, col 5) read from (row 2, col 2)


def test_integer_ops_are_exact_pixel_copies_when_only_they_are_drawn():
    torch.manual_seed(4)
    x = torch.rand(12, 3, 16, 16)
    # Every op of the default pipeline enabled, at p = 1 for the integer ones and the others drawn off.
    params = A.draw_parameters(INTEGER_OPS, 12, 16, 16, 3, torch.tensor(1.0), CPU)
    off = A.draw_parameters(cfg.ADA_DEFAULT_OPS, 12, 16, 16, 3, torch.tensor(0.0), CPU)
    out = A.augment_images(x, {**off, **params})
    assert params["xint"].abs().max() > 0 and params["rotate90"].max() > 0 and params["xflip"].max() > 0
    for i in range(12):
        expected = x[i].flip(2) if params["xflip"][i] else x[i]
        expected = torch.rot90(expected, int(params["rotate90"][i]), dims=(1, 2))
        expected = shifted(expected, int(params["xint"][i, 0]), int(params["xint"][i, 1]))
        assert torch.equal(out[i], expected), i


def test_geometric_matrices_map_known_points():
    def maps(step, value, output_point, input_point):
        m = A.sampling_matrix(step, torch.tensor([value]))[0]
        got = m @ torch.tensor([*output_point, 1.0])
        assert torch.allclose(got, torch.tensor([*input_point, 1.0]), atol=1e-6), (step, got)

    maps("scale", 2.0, (2.0, 4.0), (1.0, 2.0))  # content enlarged 2x: output (2, 4) shows input (1, 2)
    maps("aniso", 2.0, (2.0, 0.5), (1.0, 1.0))  # x stretched by 2, y by 1/2
    maps("xfrac", [0.25, -0.5], (1.25, 1.5), (1.0, 2.0))  # moved right 0.25, up 0.5
    maps("rotate_pre", math.pi / 2, (0.0, 1.0), (1.0, 0.0))  # rotated by theta: input (1, 0) lands at (cos, sin)
    maps("rotate_post", math.pi / 6, (math.cos(math.pi / 6), math.sin(math.pi / 6)), (1.0, 0.0))


def test_scale_rotate_aniso_and_xfrac_resample_a_linear_ramp_as_their_matrices_say():
    x = ramp(size=16)  # bilinear sampling reproduces a linear function exactly, away from the borders
    inner = (slice(None), slice(6, 10), slice(6, 10))
    xs, ys = x[0, 0], x[0, 1]
    cases = [({"scale": torch.tensor([2.0])}, xs / 2, ys / 2),
             ({"aniso": torch.tensor([2.0])}, xs / 2, ys * 2),
             ({"xfrac": torch.tensor([[0.25, -0.5]])}, xs - 0.25, ys + 0.5),
             ({"rotate_pre": torch.tensor([math.pi / 2])}, ys, -xs)]  # output (x, y) shows input (y, -x)
    for params, expected_x, expected_y in cases:
        out = A.augment_images(x, params)[0]
        assert torch.allclose(out[inner], torch.stack([expected_x, expected_y])[inner], atol=1e-5), params


def test_geometric_steps_compose_in_pipeline_order():
    # xflip then xint: the content is mirrored, then moved right by 2.
    m = A._compose(A.sampling_matrix("xflip", torch.tensor([1.0])), A.sampling_matrix("xint", torch.tensor([[2.0, 0]])))
    assert torch.equal(m[0] @ torch.tensor([3.0, 1.0, 1.0]), torch.tensor([-1.0, 1.0, 1.0]))


# ---- colour ops and cutout ----------------------------------------------------------------------

def pixel(*rgb: float) -> torch.Tensor:
    return torch.tensor(rgb).view(1, len(rgb), 1, 1)


def test_color_ops_on_known_colours():
    colour, grey = pixel(0.5, 0.1, -0.3), pixel(0.3, 0.3, 0.3)
    one = lambda step, value, image: A.augment_images(image, {step: torch.tensor([value])}).flatten()
    assert torch.allclose(one("brightness", 0.25, colour), torch.tensor([0.75, 0.35, -0.05]))
    # Contrast scales about 0, the middle of [-1, 1] (the official code's scale3d).
    assert torch.allclose(one("contrast", 2.0, colour), torch.tensor([1.0, 0.2, -0.6]))
    # Luma flip: the grey component (mean 0.1) negated, the colour's offsets from it kept.
    assert torch.allclose(one("lumaflip", 1.0, colour), torch.tensor([0.3, -0.1, -0.5]))
    assert torch.allclose(one("lumaflip", 1.0, grey), torch.tensor([-0.3, -0.3, -0.3]))
    assert torch.equal(one("lumaflip", 0.0, colour), colour.flatten())
    # Hue: a third of a turn around the grey axis takes red to green and green to blue; grey stays.
    assert torch.allclose(one("hue", 2 * math.pi / 3, pixel(1.0, 0, 0)), torch.tensor([0.0, 1, 0]), atol=1e-6)
    assert torch.allclose(one("hue", 2 * math.pi / 3, pixel(0, 1.0, 0)), torch.tensor([0.0, 0, 1]), atol=1e-6)
    assert torch.allclose(one("hue", 1.234, grey), grey.flatten(), atol=1e-6)
    # Saturation: the distance from the grey axis times s (0: the grey of the same mean).
    assert torch.allclose(one("saturation", 0.0, colour), torch.tensor([0.1, 0.1, 0.1]), atol=1e-6)
    assert torch.allclose(one("saturation", 2.0, colour), torch.tensor([0.9, 0.1, -0.7]), atol=1e-6)


def test_color_ops_compose_in_pipeline_order_and_act_on_one_channel_images():
    colour = pixel(0.5, 0.1, -0.3)
    both = A.augment_images(colour, {"brightness": torch.tensor([0.1]), "contrast": torch.tensor([2.0])})
    assert torch.allclose(both.flatten(), torch.tensor([1.2, 0.4, -0.4]))  # (x + 0.1) * 2
    gray = torch.rand(2, 1, 4, 4) * 2 - 1
    assert torch.allclose(A.augment_images(gray, {"brightness": torch.tensor([0.2, -0.1])}),
                          gray + torch.tensor([0.2, -0.1]).view(2, 1, 1, 1))
    assert torch.allclose(A.augment_images(gray, {"contrast": torch.tensor([0.5, 3.0])}),
                          gray * torch.tensor([0.5, 3.0]).view(2, 1, 1, 1))
    assert torch.allclose(A.augment_images(gray, {"lumaflip": torch.tensor([1.0, 0.0])}),
                          gray * torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1), atol=1e-6)
    # Hue and saturation change nothing on grey, and are not even drawn for one channel.
    assert torch.allclose(A.augment_images(gray, {"hue": torch.tensor([1.0, 2.0]),
                                                 "saturation": torch.tensor([3.0, 0.0])}), gray, atol=1e-6)
    drawn = A.draw_parameters(cfg.ADA_DEFAULT_OPS, 4, 8, 8, 1, torch.tensor(1.0), CPU)
    assert "hue" not in drawn and "saturation" not in drawn and "lumaflip" in drawn


def test_cutout_zeroes_the_box():
    x = torch.full((2, 3, 8, 8), 0.5)
    out = A.cut_out(x, torch.tensor([[0.5, 0.5, 0.5], [0.0, 1.0, 0.5]]))  # (centre x, centre y, side)
    expected = x.clone()
    expected[0, :, 2:6, 2:6] = 0  # pixel centres 0.3125 .. 0.6875 lie within 0.25 of 0.5
    expected[1, :, 6:8, 0:2] = 0  # bottom-left corner: a quarter of the box inside the image
    assert torch.equal(out, expected)
    assert torch.equal(A.cut_out(x, torch.tensor([[0.5, 0.5, 0.0]] * 2)), x)  # side 0: off


# ---- draws, probability, the augment object -----------------------------------------------------

def test_p_zero_is_the_identity_and_p_one_applies_every_op():
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    torch.manual_seed(0)
    assert torch.equal(A.AdaptiveAugment(cfg.ADA_OPS, p=0.0, target=0.6)(x), x)
    torch.manual_seed(0)
    drawn = A.draw_parameters(cfg.ADA_OPS, 2000, 16, 16, 3, torch.tensor(1.0), CPU)
    for step, identity in (("scale", 1.0), ("aniso", 1.0), ("rotate_pre", 0.0), ("rotate_post", 0.0),
                           ("brightness", 0.0), ("contrast", 1.0), ("hue", 0.0), ("saturation", 1.0)):
        assert (drawn[step] != identity).all(), step
    assert (drawn["xfrac"] != 0).all() and (drawn["cutout"][:, 2] == A.CUTOUT_SIZE).all()
    # The discrete ops take each of their values, as often as the draw says, on every sample.
    for step, values in (("xflip", 2), ("rotate90", 4), ("lumaflip", 2)):
        counts = torch.bincount(drawn[step].long(), minlength=values).float() / 2000
        assert torch.allclose(counts, torch.full((values,), 1 / values), atol=0.05), step
    assert (drawn["xint"].abs() <= 2).all() and set(drawn["xint"].flatten().tolist()) == {-2.0, -1.0, 0.0, 1.0, 2.0}
    with torch.no_grad():
        assert not torch.equal(A.AdaptiveAugment(cfg.ADA_OPS, p=1.0, target=None)(x), x)


def test_each_op_is_on_with_probability_p_and_rotation_at_all_with_p():
    torch.manual_seed(1)
    drawn = A.draw_parameters(cfg.ADA_OPS, 20000, 16, 16, 3, torch.tensor(0.3), CPU)
    for step, identity in (("scale", 1.0), ("aniso", 1.0), ("brightness", 0.0), ("contrast", 1.0)):
        assert (drawn[step] != identity).float().mean().item() == pytest.approx(0.3, abs=0.015), step
    # Each rotation with 1 - sqrt(1 - p), so that a sample is rotated at all with probability p.
    pre, post = drawn["rotate_pre"] != 0, drawn["rotate_post"] != 0
    assert pre.float().mean().item() == pytest.approx(1 - math.sqrt(0.7), abs=0.015)
    assert (pre | post).float().mean().item() == pytest.approx(0.3, abs=0.015)
    assert (drawn["cutout"][:, 2] > 0).float().mean().item() == pytest.approx(0.3, abs=0.015)


def test_draws_follow_the_official_distributions():
    torch.manual_seed(2)
    drawn = A.draw_parameters(cfg.ADA_OPS, 40000, 32, 32, 3, torch.tensor(1.0), CPU)
    std = lambda t: t.float().std().item()
    assert std(torch.log2(drawn["scale"])) == pytest.approx(0.2, rel=0.03)
    assert std(torch.log2(drawn["aniso"])) == pytest.approx(0.2, rel=0.03)
    assert std(torch.log2(drawn["contrast"])) == pytest.approx(0.5, rel=0.03)
    assert std(torch.log2(drawn["saturation"])) == pytest.approx(1.0, rel=0.03)
    assert std(drawn["brightness"]) == pytest.approx(0.2, rel=0.03)
    assert std(drawn["xfrac"]) == pytest.approx(0.125 * 32, rel=0.03)  # in pixels
    for step in ("rotate_pre", "hue"):
        assert drawn[step].abs().max().item() <= math.pi and drawn[step].abs().max().item() > 3.1
    assert set(drawn["xint"].flatten().tolist()) == set(float(v) for v in range(-4, 5))  # 0.125 * 32


def test_a_rank_augments_its_share_as_one_process_augments_the_global_batch():
    x = torch.rand(6, 3, 16, 16)
    torch.manual_seed(1)
    whole = A.AdaptiveAugment(cfg.ADA_OPS, p=0.7)(x)
    torch.manual_seed(1)
    rank_1 = A.AdaptiveAugment(cfg.ADA_OPS, p=0.7, share=lambda values: values[1::2], world_size=2)(x[1::2])
    assert torch.equal(rank_1, whole[1::2])


def test_channels_last_and_bf16_images_keep_their_layout_and_dtype():
    x = torch.rand(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    out = A.AdaptiveAugment(cfg.ADA_OPS, p=1.0)(x)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    assert A.AdaptiveAugment(cfg.ADA_OPS, p=1.0)(x.bfloat16()).dtype == torch.bfloat16


def test_build_augment_makes_ada_from_the_config():
    augment = build_augment(cfg.load("dcgan-fashion-mnist", ["augment.policy=ada", "augment.p=0.25",
                                                             "augment.ada_ops=[xflip, cutout]"]).augment)
    assert isinstance(augment, A.AdaptiveAugment) and augment.ops == ["xflip", "cutout"]
    assert augment.p.item() == 0.25 and augment.target == 0.6 and augment.interval == 4


# ---- gradients ----------------------------------------------------------------------------------

def test_the_generators_gradient_flows_through_ada():
    G, D, z = tiny_image_gan()
    loss_cfg = cfg.LossConfig()

    def g_grad(run_loss):
        return generator_gradient(G, run_loss)

    torch.manual_seed(5)
    through = g_grad(lambda: losses.generator_loss(loss_cfg, D, G(z), A.AdaptiveAugment(cfg.ADA_OPS, p=0.8))[0])

    def explicit():  # the same draws, applied by the pure pipeline
        images = G(z)
        torch.manual_seed(5)
        params = A.draw_parameters(cfg.ADA_OPS, 6, 8, 8, 3, torch.tensor(0.8), CPU)
        return losses.g_loss_term("nsgan", D(A.augment_images(images, params)))

    plain = g_grad(lambda: losses.generator_loss(loss_cfg, D, G(z))[0])
    assert through.abs().sum() > 0
    assert torch.allclose(through, g_grad(explicit), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(through, plain, atol=1e-4)


class LinearCritic(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.linear = nn.Linear(features, 1)

    def forward(self, x):
        return self.linear(x.flatten(1))


def test_r1_differentiates_through_the_resampling():
    torch.manual_seed(0)
    D = LinearCritic(3 * 8 * 8)
    real, fake = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    flip_all = A.AdaptiveAugment(["xflip", "rotate90"], p=1.0)
    loss, stats = losses.discriminator_loss(cfg.LossConfig(r1_gamma=1.0), D, real, fake, augment=flip_all)
    # Flips and quarter turns permute pixels: the gradient with respect to the reals is w permuted.
    assert stats["r1"].item() == pytest.approx(D.linear.weight.square().sum().item(), rel=1e-5)
    loss.backward()  # the penalty's double backward runs through grid_sample
    assert D.linear.weight.grad.abs().sum() > 0


# ---- adaptation ---------------------------------------------------------------------------------

def feed(augment: A.AdaptiveAugment, first_step: int, steps: int, sign: float, batch: int = 10) -> None:
    for step in range(first_step, first_step + steps):
        augment.observe_real_scores(torch.full((batch, 1), sign))
        augment.end_generator_step(step)


def test_p_rises_when_rt_stays_above_target_and_falls_below_by_images_over_speed():
    augment = A.AdaptiveAugment(cfg.ADA_OPS, p=0.5, target=0.6, speed_images=1000, interval=2)
    feed(augment, 1, 1, 1.0)
    assert augment.p.item() == 0.5 and augment.rt is None  # step 1: no interval has ended
    feed(augment, 2, 1, 1.0)  # r_t = 1 > 0.6 over 20 real images: p + 20 / 1000
    assert augment.p.item() == pytest.approx(0.52) and augment.rt.item() == 1.0
    feed(augment, 3, 4, -1.0)  # two intervals below the target
    assert augment.p.item() == pytest.approx(0.48) and augment.rt.item() == -1.0
    # r_t of an interval is the mean over it: 3 positive and 1 negative of 4 equal batches is 0.5 < 0.6.
    for step, sign in zip((7, 8), (1.0, 1.0)):
        augment.observe_real_scores(torch.tensor([[sign], [sign], [sign], [-sign]]))
        augment.end_generator_step(step)
    assert augment.rt.item() == 0.5 and augment.p.item() == pytest.approx(0.472)
    log = augment.log_values()
    assert log["augment_p"].item() == pytest.approx(0.472) and log["ada_rt"].item() == 0.5


def test_p_is_clamped_to_zero_and_one_and_stays_without_a_target():
    rising = A.AdaptiveAugment(cfg.ADA_OPS, p=0.99, target=0.6, speed_images=100, interval=1)
    feed(rising, 1, 3, 1.0)
    assert rising.p.item() == 1.0
    falling = A.AdaptiveAugment(cfg.ADA_OPS, p=0.05, target=0.6, speed_images=100, interval=1)
    feed(falling, 1, 3, -1.0)
    assert falling.p.item() == 0.0
    fixed = A.AdaptiveAugment(cfg.ADA_OPS, p=0.3, target=None, speed_images=100, interval=1)
    feed(fixed, 1, 3, 1.0)
    assert fixed.p.item() == pytest.approx(0.3) and fixed.rt.item() == 1.0  # measured, not acted on
    at_target = A.AdaptiveAugment(cfg.ADA_OPS, p=0.3, target=0.5, speed_images=100, interval=1)
    at_target.observe_real_scores(torch.tensor([[1.0], [1.0], [1.0], [-1.0]]))
    at_target.end_generator_step(1)
    assert at_target.p.item() == pytest.approx(0.3)  # r_t = 0.5 = target: sign 0


def test_rt_is_averaged_over_the_ranks_and_counts_the_global_images():
    # This rank's reals are all positive, the mean over the ranks (stood in for here) is negative.
    augment = A.AdaptiveAugment(cfg.ADA_OPS, p=0.5, target=0.6, speed_images=1000, interval=1, world_size=2,
                                average=lambda value: -value)
    feed(augment, 1, 1, 1.0)
    assert augment.rt.item() == -1.0 and augment.p.item() == pytest.approx(0.5 - 20 / 1000)


def test_state_round_trip_continues_mid_interval():
    straight = A.AdaptiveAugment(cfg.ADA_OPS, p=0.5, target=0.6, speed_images=1000, interval=3)
    feed(straight, 1, 4, 1.0)
    resumed = A.AdaptiveAugment(cfg.ADA_OPS, p=0.5, target=0.6, speed_images=1000, interval=3)
    resumed.load_state_dict(straight.state_dict())
    assert resumed.sign_count == 10 and resumed.p.item() == straight.p.item()
    for augment in (straight, resumed):
        feed(augment, 5, 2, -1.0)  # step 6 ends the interval: r_t over steps 4-6 is -1/3
    assert resumed.p.item() == straight.p.item() and resumed.rt.item() == pytest.approx(-1 / 3)
    fresh = A.AdaptiveAugment(cfg.ADA_OPS, p=0.2)
    fresh.load_state_dict(None)  # a checkpoint without ADA's state: the config's p
    assert fresh.p.item() == pytest.approx(0.2) and fresh.sign_count == 0


def test_discriminator_loss_hands_ada_the_signs_of_the_augmented_reals():
    D = LinearCritic(4)
    augment = A.AdaptiveAugment(["brightness"], p=0.0, target=0.6)
    real = torch.randn(5, 1, 2, 2)
    scores = D(real).detach()
    losses.discriminator_loss(cfg.LossConfig(), D, real, torch.randn(5, 1, 2, 2), augment=augment)
    assert augment.sign_count == 5 and augment.sign_sum.item() == scores.sign().sum().item()


@pytest.mark.parametrize("kind", ["nsgan", "hinge", "lsgan", "wgan-gp"])
def test_rt_counts_reals_on_the_real_side_of_each_losss_boundary(kind):
    """r_t's signs are taken about the score that separates real from fake for the loss: 0 for the logistic
    and hinge losses, 0.5 for LSGAN's targets 0/1, and for a Wasserstein critic (whose scores have no
    origin) the midpoint of the batch's mean real and fake scores."""
    real_scores = torch.tensor([0.2, 0.4, 0.7, 3.0])
    fake_scores = torch.tensor([-1.0, 0.0, 0.2, 0.8])  # mean 0: the wgan midpoint is (1.075 + 0) / 2
    boundary = {"nsgan": 0.0, "hinge": 0.0, "lsgan": 0.5, "wgan-gp": 1.075 / 2}[kind]
    expected = torch.sign(real_scores - boundary).sum().item()  # nsgan: 4; lsgan, wgan-gp: 0 (2 above, 2 below)
    scores = iter([real_scores.view(4, 1), fake_scores.view(4, 1)])
    augment = A.AdaptiveAugment(["brightness"], p=0.0, target=0.6)
    losses.discriminator_loss(cfg.LossConfig(kind=kind, gp_weight=0.0), lambda x: next(scores),
                              torch.zeros(4, 1, 2, 2), torch.zeros(4, 1, 2, 2), augment=augment)
    assert augment.sign_sum.item() == pytest.approx(expected)
    assert expected == (4.0 if kind in ("nsgan", "hinge") else 0.0)


# ---- config and training ------------------------------------------------------------------------

def test_ada_defaults():
    augment = cfg.load("dcgan-fashion-mnist", ["augment.policy=ada"]).augment
    assert augment.ada_ops == ["xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
                               "brightness", "contrast", "lumaflip", "hue", "saturation"]
    assert (augment.p, augment.target, augment.speed_images, augment.interval) == (0.0, 0.6, 500000, 4)
    assert cfg.load("dcgan-fashion-mnist", ["augment.policy=ada", "augment.target=null"]).augment.target is None


@pytest.mark.parametrize("settings, key", [
    (["augment.policy=ada", "augment.p=1.5"], "augment.p"),
    (["augment.policy=ada", "augment.p=-0.1"], "augment.p"),
    (["augment.policy=ada", "augment.target=0"], "augment.target"),
    (["augment.policy=ada", "augment.target=1.0"], "augment.target"),
    (["augment.policy=ada", "augment.speed_images=0"], "augment.speed_images"),
    (["augment.policy=ada", "augment.interval=0"], "augment.interval"),
    (["augment.policy=ada", "augment.ada_ops=[xflip, zoom]"], "augment.ada_ops"),
    (["augment.policy=ada", "augment.ada_ops=[]"], "augment.ada_ops"),
    (["augment.policy=ada", "augment.ada_ops=[hue, hue]"], "augment.ada_ops"),
    (["augment.policy=ada", "augment.ops=[color]"], "augment.ops"),  # DiffAugment's key
    (["augment.policy=diffaugment", "augment.ada_ops=[xflip]"], "augment.ada_ops"),
    (["augment.p=0.5"], "augment.p"),  # policy none: ADA's keys would be ignored
    (["augment.policy=ada", "data.source=toy-8gaussians", "model.arch=mlp"], "augment.policy"),
])
def test_bad_ada_settings_exit_2_naming_the_key(settings, key, tmp_path, run_cli):
    with pytest.raises(GankitError, match=key.replace(".", r"\.")):
        cfg.load("dcgan-fashion-mnist", settings)
    argv = ["train", "dcgan-fashion-mnist", "--out", tmp_path / "run"]
    for item in settings:
        argv += ["--set", item]
    code, _, err = run_cli(*argv)
    assert code == 2 and key in err and "Traceback" not in err and not (tmp_path / "run").exists()


ADA_RUN = ["augment.policy=ada", "augment.p=0.5", "augment.interval=2", "augment.speed_images=320"]


@needs_fashion_mnist
def test_training_logs_p_and_rt_follows_the_rule_and_the_report_charts_them(tmp_path, run_cli):
    run = tmp_path / "run"
    assert run_cli(*tiny_train_args(run, steps=8, extra=ADA_RUN))[0] == 0  # logged every 2 steps
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    p = 0.5
    for record in stats:  # each interval of 2 steps saw 32 real images: p moves by 32 / 320
        p = min(1.0, max(0.0, p + math.copysign(0.1, record["ada_rt"] - 0.6)))
        assert record["augment_p"] == pytest.approx(p, abs=1e-6) and -1 <= record["ada_rt"] <= 1
    state = load_training_state(list_checkpoints(run)[-1])["augment"]
    assert state["p"].item() == pytest.approx(stats[-1]["augment_p"]) and state["sign_count"] == 0
    assert run_cli("report", run)[0] == 0
    assert 'data-chart="augment"' in (run / "report.html").read_text()


@needs_fashion_mnist
def test_a_checkpoint_without_ada_state_resumes_from_the_configs_p(tmp_path, run_cli):
    run = tmp_path / "run"
    assert run_cli(*tiny_train_args(run, steps=4, extra=[*ADA_RUN, "augment.target=null", "augment.p=0.25"]))[0] == 0
    resume_without_state(run, run_cli, "augment")  # as written before ADA existed
    assert load_training_state(list_checkpoints(run)[-1])["augment"]["p"].item() == 0.25
