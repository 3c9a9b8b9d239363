"""Progressive GAN: layers, growth continuity, the stage held by an export, GDPP."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gankit import config as cfg
from gankit.checkpoint import export_generator, load_generator
from gankit.errors import GankitError
from gankit.losses import g_loss_term
from gankit.losses_gdpp import _GuardedEigh, gdpp_loss, generator_loss_with_gdpp
from gankit.models import build_discriminator, build_generator
from gankit.models.layers import (EqualizedConv2d, EqualizedLinear, minibatch_stddev, pixel_norm,
                                  stddev_group_size)
from gankit.models.pgan import (PGANDiscriminator, PGANGenerator, default_depths, downsample_to,
                                fade_real, real_for_stage)

DEPTHS = [16, 16, 8, 8]  # 4x4 .. 32x32
Z_DIM = 16


def _randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights and non-zero biases, so that no path is trivially zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.3 if p.dim() == 1 else 1.0))
    return module


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    G = _randomize(PGANGenerator(Z_DIM, 32, 3, DEPTHS), 1)
    D = _randomize(PGANDiscriminator(32, 3, DEPTHS), 2)
    return G, D


def _block_mean(x: torch.Tensor, factor: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // factor, factor, w // factor, factor).mean(dim=(3, 5))


def _nearest(x: torch.Tensor, factor: int) -> torch.Tensor:
    return x.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


# ---- layers -------------------------------------------------------------------------------------

def test_equalized_conv_scales_weight_by_he_constant_at_run_time():
    torch.manual_seed(0)
    conv = EqualizedConv2d(64, 32, 3)
    assert conv.weight.std().item() == pytest.approx(1.0, abs=0.03)  # stored N(0, 1)
    with torch.no_grad():
        conv.bias.normal_()
    expected = conv.weight * math.sqrt(2 / (64 * 3 * 3))
    assert torch.equal(conv.effective_weight(), expected)
    x = torch.randn(2, 64, 5, 5)
    reference = F.conv2d(x, expected, conv.bias, padding=1)  # bias added after the scaling
    assert torch.allclose(conv(x), reference, atol=1e-5)
    assert EqualizedConv2d(8, 3, 1, gain=1.0).scale == pytest.approx(1 / math.sqrt(8))


def test_equalized_linear_scales_weight_by_he_constant_at_run_time():
    torch.manual_seed(0)
    fc = EqualizedLinear(200, 10)
    with torch.no_grad():
        fc.bias.normal_()
    expected = fc.weight * math.sqrt(2 / 200)
    assert torch.equal(fc.effective_weight(), expected)
    x = torch.randn(4, 200)
    assert torch.allclose(fc(x), x @ expected.T + fc.bias, atol=1e-5)


def test_pixel_norm_gives_unit_mean_square_over_channels():
    x = torch.randn(3, 7, 4, 4) * torch.rand(3, 1, 4, 4) * 50  # a different scale per pixel
    y = pixel_norm(x)
    assert torch.allclose(y.pow(2).mean(dim=1), torch.ones(3, 4, 4), atol=1e-5)
    assert torch.allclose(y / y.norm(dim=1, keepdim=True), x / x.norm(dim=1, keepdim=True), atol=1e-6)


def _stddev_by_hand(x: torch.Tensor, members: list[list[int]]) -> torch.Tensor:
    """The appended channel's value per sample, from explicit groups of sample indices."""
    value = torch.empty(x.shape[0])
    for group in members:
        stats = x[group]  # [g, C, H, W]
        var = ((stats - stats.mean(0)) ** 2).mean(0)
        value[group] = torch.sqrt(var + 1e-8).mean()
    return value


@pytest.mark.parametrize("batch, members", [
    (8, [[0, 2, 4, 6], [1, 3, 5, 7]]),  # NVIDIA's reshape: sample i is in group i mod (N / 4)
    (4, [[0, 1, 2, 3]]),
    (6, [[0, 2, 4], [1, 3, 5]]),  # not divisible by 4: groups of 3
    (2, [[0, 1]]),
    (5, [[0], [1], [2], [3], [4]]),  # prime: groups of 1
])
def test_minibatch_stddev_matches_hand_computation(batch, members):
    torch.manual_seed(batch)
    x = torch.randn(batch, 3, 2, 2)
    y = minibatch_stddev(x, group_size=4)
    assert y.shape == (batch, 4, 2, 2)
    assert torch.equal(y[:, :3], x)
    expected = _stddev_by_hand(x, members)
    assert torch.allclose(y[:, 3], expected.view(-1, 1, 1).expand(batch, 2, 2), atol=1e-6)
    assert stddev_group_size(batch) == len(members[0])


def test_default_depths_are_the_papers():
    assert default_depths(1024) == [512, 512, 512, 512, 256, 128, 64, 32, 16]
    assert default_depths(32) == [512] * 4
    G = PGANGenerator(8, 8, 1)
    assert G.depths == [512, 512] and G.to_rgb[1].weight.shape == (1, 512, 1, 1)


# ---- growth continuity --------------------------------------------------------------------------

@pytest.mark.parametrize("stage", [1, 2, 3])
def test_grown_generator_at_alpha_zero_is_previous_generator_upsampled(nets, stage):
    G, _ = nets
    z = torch.randn(6, Z_DIM)
    with torch.no_grad():
        grown = G(z, stage, 0.0)
        previous = G(z, stage - 1, 1.0)
        fully_new = G(z, stage, 1.0)
        halfway = G(z, stage, 0.25)
    assert grown.shape == (6, 3, 4 * 2**stage, 4 * 2**stage)
    assert torch.allclose(grown, _nearest(previous, 2), atol=1e-5)
    # alpha is the weight of the new path: the output is the linear blend of the two ends.
    assert not torch.allclose(fully_new, grown, atol=1e-2)
    assert torch.allclose(halfway, 0.25 * fully_new + 0.75 * grown, atol=1e-5)


@pytest.mark.parametrize("stage", [1, 2, 3])  # stage 1 is the first transition (8x8), blended too
def test_grown_discriminator_at_alpha_zero_scores_the_pooled_input_as_before(nets, stage):
    _, D = nets
    size = 4 * 2**stage
    x = torch.randn(8, 3, size, size)
    with torch.no_grad():
        grown = D(x, stage, 0.0)
        previous = D(_block_mean(x, 2), stage - 1, 1.0)
        halfway = D(x, stage, 0.5)
        fully_new = D(x, stage, 1.0)
    assert grown.shape == (8,)
    assert torch.allclose(grown, previous, atol=1e-5 * max(1.0, previous.abs().max().item()))
    # During the fade-in the score depends on alpha (a D that skipped the blend would not).
    assert not torch.allclose(halfway, fully_new, atol=1e-3)
    assert not torch.allclose(halfway, grown, atol=1e-3)


def test_real_images_are_pooled_and_blended_like_the_generator_output():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 32, 32)
    assert torch.allclose(downsample_to(x, 4), _block_mean(x, 8), atol=1e-6)
    at_16 = _block_mean(x, 2)
    old_path = _nearest(_block_mean(at_16, 2), 2)
    assert torch.allclose(fade_real(at_16, 0.3), 0.3 * at_16 + 0.7 * old_path, atol=1e-6)
    assert torch.allclose(real_for_stage(x, 2, 0.3), 0.3 * at_16 + 0.7 * old_path, atol=1e-6)
    assert torch.equal(real_for_stage(x, 3, 1.0), x)
    assert torch.allclose(real_for_stage(x, 0, 0.0), _block_mean(x, 8), atol=1e-6)  # no fade at 4x4


def test_discriminator_refuses_images_at_another_resolution(nets):
    _, D = nets
    with pytest.raises(ValueError, match="takes 8x8"):
        D(torch.randn(4, 3, 32, 32), 1, 1.0)
    with pytest.raises(ValueError, match="stage 4"):
        D.set_progress(4, 1.0)
    with pytest.raises(ValueError, match="alpha"):
        D(torch.randn(4, 3, 8, 8), 1, 1.5)


def test_adam_over_all_scales_leaves_unused_scales_untouched():
    """The optimizer holds every scale from the start: unused layers get no gradient and no state."""
    torch.manual_seed(0)
    G = PGANGenerator(Z_DIM, 32, 1, DEPTHS)
    opt = torch.optim.Adam(G.parameters(), lr=1e-2, betas=(0.0, 0.99))
    later = list(G.blocks[1].parameters()) + list(G.to_rgb[2].parameters())
    before = [p.detach().clone() for p in later]
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        G(torch.randn(4, Z_DIM), 1, 0.5).square().mean().backward()
        opt.step()
    assert all(p.grad is None and p not in opt.state for p in later)
    assert all(torch.equal(p, b) for p, b in zip(later, before))
    assert all(p in opt.state for p in G.blocks[0].parameters())  # the fading-in scale trains


# ---- the stage held by the weights --------------------------------------------------------------

def _pgan_config(**train):
    raw = {"data": {"resolution": 32, "channels": 1},
           "model": {"arch": "pgan", "z_dim": Z_DIM, "depths": DEPTHS},
           "train": {"max_iter_at_scale": [10, 20, 20, 20], "fade_iters": 5, **train}}
    return cfg.validate(raw)


def test_exported_generator_renders_its_stored_stage_at_full_resolution(tmp_path):
    config = _pgan_config()
    torch.manual_seed(0)
    G = _randomize(build_generator(config.model, config.data), 3)
    assert isinstance(G, PGANGenerator) and G.depths == DEPTHS
    assert isinstance(build_discriminator(config.model, config.data, "none"), PGANDiscriminator)
    G.set_progress(2, 0.375)
    z = torch.randn(5, Z_DIM)
    with torch.no_grad():
        expected = _nearest(G(z, 2, 0.375), 2)
        plain = G(z)
    assert plain.shape == (5, 1, 32, 32) and torch.allclose(plain, expected, atol=1e-6)

    export_generator(tmp_path, G, config.model.model_dump(mode="json"), config.data.model_dump(mode="json"), 7)
    loaded, meta = load_generator(tmp_path)
    assert loaded.progress() == (2, 0.375)
    with torch.no_grad():
        assert torch.allclose(loaded(z), plain, atol=1e-6)


# ---- config -------------------------------------------------------------------------------------

def test_pgan_config_is_validated_against_the_scales():
    config = _pgan_config(batch_size_at_scale=[16, 16, 8, 8], lr_at_scale=[1e-3, 1e-3, 1e-3, 5e-4])
    assert config.model.depths == DEPTHS and config.loss.gdpp == 0.0
    with pytest.raises(GankitError, match="train.max_iter_at_scale has 3 entries.*4 scales"):
        cfg.validate({"data": {"resolution": 32}, "model": {"arch": "pgan"},
                      "train": {"max_iter_at_scale": [1, 2, 3], "fade_iters": 1}})
    with pytest.raises(GankitError, match="model.depths has 5 entries"):
        cfg.validate({"data": {"resolution": 32}, "model": {"arch": "pgan", "depths": [8] * 5},
                      "train": {"max_iter_at_scale": [4] * 4, "fade_iters": 1}})
    with pytest.raises(GankitError, match="power of two from 8 to 1024"):
        cfg.validate({"data": {"resolution": 28}, "model": {"arch": "pgan"},
                      "train": {"max_iter_at_scale": [4] * 4, "fade_iters": 1}})
    with pytest.raises(GankitError, match="needs train.fade_iters"):
        cfg.validate({"data": {"resolution": 8}, "model": {"arch": "pgan"}, "train": {"max_iter_at_scale": [4, 4]}})
    with pytest.raises(GankitError, match="fade_iters 5 is longer"):
        cfg.validate({"data": {"resolution": 8}, "model": {"arch": "pgan"},
                      "train": {"max_iter_at_scale": [4, 4], "fade_iters": 5}})
    with pytest.raises(GankitError, match="only apply to model.arch pgan"):
        cfg.validate({"model": {"arch": "dcgan"}, "train": {"fade_iters": 3}})
    with pytest.raises(GankitError, match="loss.gdpp only apply"):
        cfg.validate({"model": {"arch": "dcgan"}, "loss": {"gdpp": 1.0}})


# ---- GDPP ---------------------------------------------------------------------------------------

def test_gdpp_is_zero_for_identical_batches_and_positive_otherwise():
    torch.manual_seed(0)
    real = torch.randn(8, 12)
    assert gdpp_loss(real.clone(), real).item() == pytest.approx(0.0, abs=1e-10)
    assert gdpp_loss(real * 3.0, real).item() == pytest.approx(0.0, abs=1e-10)  # features are L2-normalized
    assert gdpp_loss(torch.randn(8, 12), real).item() > 1e-3


def test_gdpp_matches_a_hand_computed_two_sample_case():
    """With two samples of cosine c the kernel is [[1, c], [c, 1]]: eigenvalues 1 -/+ c with
    eigenvectors (1, -1) and (1, 1) for c > 0, in the opposite order for c < 0."""
    def pair(c: float) -> torch.Tensor:
        return torch.tensor([[1.0, 0.0], [c, math.sqrt(1 - c * c)]])
    # Same eigenvectors: only the magnitude part, 1e-4 * mean((lambda_f - lambda_r)^2) = 1e-4 (c_f - c_r)^2.
    assert gdpp_loss(pair(0.2), pair(0.6)).item() == pytest.approx(1e-4 * 0.4**2, rel=1e-5)
    # c = -0.5 vs 0.5: equal eigenvalues, but the top real eigenvector (weight 1) is orthogonal to the fake one.
    assert gdpp_loss(pair(-0.5), pair(0.5)).item() == pytest.approx(1.0, abs=1e-6)


def test_gdpp_gradients_are_finite_even_for_a_collapsed_batch():
    torch.manual_seed(0)
    real = torch.randn(16, 8)
    for fake in (torch.randn(16, 8), torch.randn(1, 8).repeat(16, 1) + 1e-4 * torch.randn(16, 8)):
        fake.requires_grad_(True)
        gdpp_loss(fake, real).backward()
        assert torch.isfinite(fake.grad).all() and fake.grad.abs().max() < 1e4


def test_guarded_eigh_gradient_equals_torchs_when_eigenvalues_are_distinct():
    torch.manual_seed(0)
    a = torch.randn(6, 6, dtype=torch.float64)
    matrix = (a + a.T).requires_grad_(True)
    w_values, w_vectors = torch.randn(6, dtype=torch.float64), torch.randn(6, 6, dtype=torch.float64)

    def objective(eigh):
        values, vectors = eigh(matrix)
        return (values * w_values).sum() + (vectors.abs() * w_vectors).sum()  # sign-invariant in vectors

    (ours,) = torch.autograd.grad(objective(_GuardedEigh.apply), matrix)
    (theirs,) = torch.autograd.grad(objective(torch.linalg.eigh), matrix)
    assert torch.allclose(ours, 0.5 * (theirs + theirs.T), atol=1e-10)


def test_generator_loss_adds_weighted_gdpp_on_discriminator_features(nets):
    _, D = nets
    torch.manual_seed(0)
    real, fake = torch.randn(8, 3, 8, 8), torch.randn(8, 3, 8, 8)
    off = cfg.LossConfig(kind="wgan-gp")
    on = cfg.LossConfig(kind="wgan-gp", gdpp=2.0)
    with torch.no_grad():
        scores, fake_features = D(fake, 1, 1.0, with_features=True)
        _, real_features = D(real, 1, 1.0, with_features=True)
    assert fake_features.shape == (8, D.feature_dim)
    D.set_progress(1, 1.0)
    loss_off, _ = generator_loss_with_gdpp(off, D, real, fake)
    loss_on, stats = generator_loss_with_gdpp(on, D, real, fake)
    assert loss_off.item() == pytest.approx(g_loss_term("wgan-gp", scores).item(), rel=1e-5)
    expected = loss_off + 2.0 * gdpp_loss(fake_features, real_features)
    assert loss_on.item() == pytest.approx(expected.item(), rel=1e-5)
    assert stats["gdpp"].item() > 0
    D.set_progress(3, 1.0)
