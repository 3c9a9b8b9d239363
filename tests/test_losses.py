import math

import pytest
import torch
from torch import nn

from gankit import losses
from gankit.config import LossConfig

R = torch.tensor([2.0, -1.0])
F = torch.tensor([0.5, -3.0])


def softplus(x):
    return math.log1p(math.exp(x))


def mean(values):
    return sum(values) / len(values)


def test_gan_losses_by_hand():
    r, f = R.tolist(), F.tolist()
    sig = lambda x: 1 / (1 + math.exp(-x))
    d_expected = mean([-math.log(sig(x)) for x in r]) + mean([-math.log(1 - sig(x)) for x in f])
    assert losses.d_loss_terms("gan", R, F).item() == pytest.approx(d_expected, rel=1e-6)
    assert losses.d_loss_terms("nsgan", R, F).item() == pytest.approx(d_expected, rel=1e-6)
    # minimax G: minimize log(1 - D(G(z)))
    assert losses.g_loss_term("gan", F).item() == pytest.approx(mean([math.log(1 - sig(x)) for x in f]), rel=1e-6)
    # non-saturating G: minimize -log D(G(z))
    assert losses.g_loss_term("nsgan", F).item() == pytest.approx(mean([-math.log(sig(x)) for x in f]), rel=1e-6)


def test_lsgan_wgan_hinge_by_hand():
    r, f = R.tolist(), F.tolist()
    assert losses.d_loss_terms("lsgan", R, F).item() == pytest.approx(
        0.5 * mean([(x - 1) ** 2 for x in r]) + 0.5 * mean([x**2 for x in f]))
    assert losses.g_loss_term("lsgan", F).item() == pytest.approx(0.5 * mean([(x - 1) ** 2 for x in f]))
    for kind in ("wgan", "wgan-gp"):
        assert losses.d_loss_terms(kind, R, F).item() == pytest.approx(mean(f) - mean(r))
        assert losses.g_loss_term(kind, F).item() == pytest.approx(-mean(f))
    assert losses.d_loss_terms("hinge", R, F).item() == pytest.approx(
        mean([max(0, 1 - x) for x in r]) + mean([max(0, 1 + x) for x in f]))
    assert losses.g_loss_term("hinge", F).item() == pytest.approx(-mean(f))


def test_gradient_penalty_of_linear_critic_is_analytic():
    # D(x) = w.x has gradient w everywhere: the penalty is (||w|| - 1)^2 whatever the interpolates.
    w = torch.tensor([3.0, 4.0, 0.0])
    critic = lambda x: x @ w
    real, fake = torch.randn(5, 3), torch.randn(5, 3)
    assert losses.gradient_penalty(critic, real, fake).item() == pytest.approx((5.0 - 1.0) ** 2)


def test_gradient_penalty_matches_per_sample_computation():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 1), nn.Flatten(0))
    real, fake = torch.randn(6, 3, 2, 2), torch.randn(6, 3, 2, 2)
    torch.manual_seed(1)
    penalty = losses.gradient_penalty(critic, real, fake)
    torch.manual_seed(1)
    eps = torch.rand(6, 1, 1, 1)  # the same draw the penalty made
    expected = []
    for i in range(6):
        x = (eps[i] * real[i] + (1 - eps[i]) * fake[i]).unsqueeze(0).requires_grad_(True)
        (g,) = torch.autograd.grad(critic(x).sum(), x)
        expected.append((g.norm() - 1) ** 2)
    assert penalty.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)
    # It is differentiable with respect to the critic's weights (create_graph=True).
    penalty.backward()
    assert critic[1].weight.grad is not None and critic[1].weight.grad.abs().sum() > 0


def test_discriminator_loss_adds_weighted_penalties():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1), nn.Flatten(0))
    real, fake = torch.randn(4, 2), torch.randn(4, 2)
    cfg = LossConfig(kind="wgan-gp", gp_weight=10.0, drift=0.001)
    torch.manual_seed(3)
    total, stats = losses.discriminator_loss(cfg, critic, real, fake)
    torch.manual_seed(3)
    gp = losses.gradient_penalty(critic, real, fake)
    r, f = critic(real), critic(fake)
    expected = (f.mean() - r.mean()) + 10.0 * gp + 0.001 * (r**2).mean()
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(stats) == {"d_loss", "d_real", "d_fake", "gp", "drift"}


def test_clip_weights():
    layer = nn.Linear(4, 4)
    nn.init.uniform_(layer.weight, -1, 1)
    losses.clip_weights(layer, 0.01)
    assert layer.weight.abs().max().item() <= 0.01 and layer.weight.abs().max().item() > 0.009


def test_sigmoid_plus_bce_equals_logits_form():
    r, f = torch.tensor([2.0, -1.0, 0.3]), torch.tensor([0.5, -3.0, 4.0])
    for kind in ("gan", "nsgan"):
        assert losses.d_loss_terms(kind, r, f, sigmoid_output=True).item() == pytest.approx(
            losses.d_loss_terms(kind, r, f).item(), rel=1e-6)
        assert losses.g_loss_term(kind, f, sigmoid_output=True).item() == pytest.approx(
            losses.g_loss_term(kind, f).item(), rel=1e-6)
    # Far out, the probability form saturates as torch.nn.BCELoss does (log clamped at -100).
    huge = torch.tensor([200.0])
    assert losses.bce(huge, 0.0, sigmoid_output=True).item() == pytest.approx(100.0)
    assert losses.bce(huge, 0.0).item() == pytest.approx(200.0)
    assert losses.bce(huge, 0.0, sigmoid_output=True).item() == pytest.approx(
        torch.nn.BCELoss()(torch.sigmoid(huge), torch.zeros(1)).item())


def test_one_sided_label_smoothing_by_hand():
    r, f = torch.tensor([2.0]), torch.tensor([-1.0])
    sig = lambda x: 1 / (1 + math.exp(-x))
    expected = -(0.9 * math.log(sig(2.0)) + 0.1 * math.log(1 - sig(2.0))) - math.log(1 - sig(-1.0))
    assert losses.d_loss_terms("nsgan", r, f, label_smoothing=0.1).item() == pytest.approx(expected, rel=1e-6)
    # The generator's target is untouched.
    assert losses.g_loss_term("nsgan", f).item() == pytest.approx(-math.log(sig(-1.0)), rel=1e-6)


def test_bce_options_are_refused_for_other_losses():
    from gankit.errors import GankitError
    from gankit.config import load

    with pytest.raises(GankitError, match="label_smoothing"):
        load("wgangp-fashion-mnist", ["loss.label_smoothing=0.1"])


def linear_critic(w: torch.Tensor) -> nn.Module:
    """D(x) = w . flatten(x) + b: grad_x D(x) = w for every sample, so E||grad||^2 = ||w||^2 exactly."""
    critic = nn.Sequential(nn.Flatten(), nn.Linear(w.numel(), 1), nn.Flatten(0))
    with torch.no_grad():
        critic[1].weight.copy_(w.view(1, -1))
        critic[1].bias.fill_(0.25)
    return critic


@pytest.mark.parametrize("which", ["r1", "r2"])
def test_r1_r2_of_a_linear_critic_are_analytic(which):
    w = torch.tensor([3.0, 4.0, 0.0, 12.0])  # ||w||^2 = 169
    critic = linear_critic(w)
    real, fake = torch.randn(5, 1, 2, 2), torch.randn(5, 1, 2, 2)
    cfg = LossConfig(kind="hinge", **{f"{which}_gamma": 0.5})
    total, stats = losses.discriminator_loss(cfg, critic, real, fake)
    base = losses.d_loss_terms("hinge", critic(real), critic(fake))
    assert stats[which].item() == pytest.approx(169.0)  # logged unweighted
    assert total.item() == pytest.approx(base.item() + 0.5 / 2 * 169.0, rel=1e-6)
    assert ({"r1", "r2"} - {which}).isdisjoint(stats)  # the other penalty is off


def test_r1_and_r2_match_finite_differences_and_train_the_critic():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1), nn.Flatten(0)).double()
    real, fake = torch.randn(4, 1, 2, 3, dtype=torch.float64), torch.randn(4, 1, 2, 3, dtype=torch.float64)

    def squared_norm_by_differences(images):
        h, norms = 1e-6, []
        for x in images:
            flat = x.flatten()
            grad = [(critic((flat + h * e).view(1, *x.shape)) - critic((flat - h * e).view(1, *x.shape))).item()
                    / (2 * h) for e in torch.eye(flat.numel(), dtype=torch.float64)]
            norms.append(sum(g * g for g in grad))
        return mean(norms)

    cfg = LossConfig(kind="nsgan", r1_gamma=1.0, r2_gamma=1.0)
    total, stats = losses.discriminator_loss(cfg, critic, real, fake)
    assert stats["r1"].item() == pytest.approx(squared_norm_by_differences(real), rel=1e-6)
    assert stats["r2"].item() == pytest.approx(squared_norm_by_differences(fake), rel=1e-6)
    # The penalties reach the critic's weights (create_graph=True): one backward differentiates them too.
    (with_penalties,) = torch.autograd.grad(total, critic[1].weight)
    (without,) = torch.autograd.grad(losses.discriminator_loss(LossConfig(kind="nsgan"), critic, real, fake)[0],
                                     critic[1].weight)
    assert (with_penalties - without).abs().max().item() > 1e-4


def test_lazy_regularization_applies_every_kth_update_multiplied_by_k():
    w = torch.tensor([1.0, 2.0, 2.0, 0.0])  # ||w||^2 = 9
    critic = linear_critic(w)
    real, fake = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    cfg = LossConfig(kind="lsgan", r1_gamma=2.0, reg_every=4)
    base = losses.d_loss_terms("lsgan", critic(real), critic(fake)).item()
    applied = []
    for d_update in range(10):
        total, stats = losses.discriminator_loss(cfg, critic, real, fake, d_update=d_update)
        if "r1" in stats:
            applied.append(d_update)
            assert total.item() == pytest.approx(base + 2.0 / 2 * 4 * 9.0, rel=1e-6)  # gamma/2 * k * ||w||^2
        else:
            assert total.item() == pytest.approx(base, rel=1e-6)
    assert applied == [0, 4, 8]
    assert [losses.lazy_weight(1, n) for n in range(3)] == [1, 1, 1]


def test_lecam_term_and_its_ema_by_hand():
    lecam = losses.LeCam(decay=0.99)
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-2.0, 0.0])  # means 2 and -1
    # The first update sets the EMAs to the means: (D(real) - ema_fake)^2 and (D(fake) - ema_real)^2.
    assert lecam(real, fake).item() == pytest.approx(mean([2.0**2, 4.0**2]) + mean([4.0**2, 2.0**2]))
    assert lecam.ema.tolist() == pytest.approx([2.0, -1.0])
    real2, fake2 = torch.tensor([4.0]), torch.tensor([1.0])
    ema_real, ema_fake = 0.99 * 2.0 + 0.01 * 4.0, 0.99 * -1.0 + 0.01 * 1.0
    assert lecam(real2, fake2).item() == pytest.approx((4.0 - ema_fake) ** 2 + (1.0 - ema_real) ** 2, rel=1e-6)
    assert lecam.ema.tolist() == pytest.approx([ema_real, ema_fake], rel=1e-6)
    # Its state round-trips; a checkpoint without it (None) starts afresh.
    copy = losses.LeCam()
    copy.load_state_dict(lecam.state_dict())
    assert torch.equal(copy.ema, lecam.ema)
    copy.load_state_dict(None)
    assert copy.ema is None


def test_lecam_in_the_discriminator_loss_is_weighted_and_averaged_over_ranks():
    critic = linear_critic(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    real, fake = torch.randn(4, 1, 2, 2), torch.randn(4, 1, 2, 2)
    seen = []
    # Under DDP `average` is the all-reduce; here a stand-in that shifts the means, to see it is used.
    lecam = losses.LeCam(average=lambda means: seen.append(means.clone()) or means + 1.0)
    total, stats = losses.discriminator_loss(LossConfig(kind="wgan", lecam=0.5), critic, real, fake, lecam=lecam)
    r, f = critic(real), critic(fake)
    assert len(seen) == 1 and seen[0].tolist() == pytest.approx([r.mean().item(), f.mean().item()])
    term = ((r - (f.mean() + 1)) ** 2).mean() + ((f - (r.mean() + 1)) ** 2).mean()
    assert stats["lecam"].item() == pytest.approx(term.item(), rel=1e-6)
    assert total.item() == pytest.approx((f.mean() - r.mean() + 0.5 * term).item(), rel=1e-6)
    with pytest.raises(ValueError, match="loss.lecam"):
        losses.discriminator_loss(LossConfig(kind="wgan", lecam=0.5), critic, real, fake)
