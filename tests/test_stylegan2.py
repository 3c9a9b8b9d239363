"""StyleGAN2: the networks (against NVIDIA's parameter counts and independent computations), its
regularizers, training (resume, data parallel) and its config's refusals."""

import math
import subprocess

import pytest
import torch
import torch.nn.functional as F

from conftest import needs_fashion_mnist, tiny_train_args
from gankit import losses
from gankit.checkpoint import checkpoint_path, list_checkpoints, load_training_state
from gankit.config import load
from gankit.errors import GankitError
from gankit.models import build_discriminator, build_generator
from gankit.models.fir import conv_down, conv_up, fir_filter, upsample2d
from gankit.models.stylegan2 import (FullyConnected, MappingNetwork, ModulatedConv, StyleGAN2Discriminator,
                                     StyleGAN2Generator, layer_widths)
from gankit.training.ema import ema_decay_from_half_life

# A StyleGAN2 small enough for the test suite: 16x16, widths 16/16/8, w 16, two mapping layers.
TINY_STYLEGAN2 = ["model.arch=stylegan2", "model.conditioning=none", "model.z_dim=16", "model.w_dim=16", "model.mapping_layers=2",
                  "model.channel_base=64", "model.channel_max=16", "train.grid_size=4", "train.precision=fp32",
                  "train.channels_last=false"]


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- the networks ---------------------------------------------------------------------------------

# Parameter counts of NVIDIA's stylegan2-ada-pytorch networks (training/networks.py: Generator and
# Discriminator with c_dim 0, z_dim = w_dim = 512), read by building them with that code on this machine.
@pytest.mark.parametrize("resolution, channel_base, channels, mapping_layers, official_g, official_d", [
    (256, 16384, 3, 8, 24_767_458, 24_001_089),   # the ADA paper's 256x256 config (paper256)
    (32, 16384, 3, 8, 21_523_475, 21_507_073),
])
def test_parameter_counts_match_nvidias_networks(resolution, channel_base, channels, mapping_layers, official_g,
                                                  official_d):
    G = StyleGAN2Generator(512, 512, resolution, channels, channel_base, 512, mapping_layers)
    D = StyleGAN2Discriminator(resolution, channels, channel_base, 512)
    assert (count(G), count(D)) == (official_g, official_d)
    assert count(G.mapping) == 2_101_248  # 8 layers of 512 x 512 + bias
    assert G.num_ws == 2 * int(math.log2(resolution)) - 2


def test_widths_follow_channel_base_and_max():
    assert layer_widths(32, 512, 128) == {4: 128, 8: 64, 16: 32, 32: 16}
    assert layer_widths(1024, 32768, 512) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128,
                                              512: 64, 1024: 32}


def test_demodulation_keeps_unit_variance():
    torch.manual_seed(0)
    x = torch.randn(64, 32, 8, 8)
    w = torch.randn(64, 16)
    layer = ModulatedConv(32, 48, 16, resolution=8, noise=False, activation=False)
    with torch.no_grad():
        layer.affine.weight.mul_(3.0)  # styles far from 1: without demodulation the variance would follow them
        layer.bias.zero_()
        y = layer(x, w)[:, :, 1:-1, 1:-1]  # pixels away from the zero padding, which sees fewer inputs
        assert y.var().item() == pytest.approx(1.0, abs=0.05)
        layer.demodulate = False
        assert y.var().item() * 20 < layer(x, w).var().item()  # the un-normalized output is far larger


def test_mapping_network_learns_at_a_hundredth_of_the_rate():
    """Equalized learning rate with multiplier 0.01: Adam's first step moves each stored weight by lr, so the
    weight the layer computes with moves by lr * 0.01 / sqrt(fan_in), a hundredth of a plain layer's."""
    torch.manual_seed(0)
    slow, plain = FullyConnected(64, 64, lr_multiplier=0.01), FullyConnected(64, 64)
    changes = []
    for layer in (slow, plain):
        before = (layer.weight * layer.weight_gain).detach().clone()
        optimizer = torch.optim.Adam(layer.parameters(), lr=1e-3)
        layer(torch.randn(32, 64)).square().sum().backward()
        optimizer.step()
        changes.append(((layer.weight * layer.weight_gain).detach() - before).abs().mean().item())
    assert changes[1] == pytest.approx(1e-3 / 8, rel=0.05)
    assert changes[0] / changes[1] == pytest.approx(0.01, rel=0.05)
    # And at initialization both compute with N(0, 1 / fan_in) weights.
    assert (slow.weight * slow.weight_gain).std().item() == pytest.approx(1 / 8, rel=0.1)


def test_truncation_at_zero_gives_the_average_w_for_every_z():
    mapping = MappingNetwork(16, 8, num_ws=6, layers=2)
    mapping.w_avg.copy_(torch.linspace(-1, 1, 8))
    ws = mapping(torch.randn(5, 16), truncation_psi=0.0)
    assert torch.equal(ws, mapping.w_avg.expand(5, 6, 8))
    half = mapping(z := torch.randn(5, 16), truncation_psi=0.5)
    torch.testing.assert_close(half, mapping.w_avg + 0.5 * (mapping(z) - mapping.w_avg))


def test_w_avg_tracks_the_mapped_ws_in_training_only():
    torch.manual_seed(0)
    mapping = MappingNetwork(16, 8, num_ws=4, layers=2)
    z = torch.randn(64, 16)
    mapping(z)  # not training: unchanged
    assert torch.equal(mapping.w_avg, torch.zeros(8))
    mapping(z, update_w_avg=True)
    torch.testing.assert_close(mapping.w_avg, 0.005 * mapping(z)[:, 0].mean(0))


def test_style_mixing_switches_styles_at_the_drawn_layer():
    torch.manual_seed(0)
    G = StyleGAN2Generator(8, 8, 16, 1, 64, 16, 2, style_mixing=1.0)
    z = torch.randn(4, 8)
    ws = G.mapping(z)
    torch.manual_seed(3)
    mixed = G.mix(ws, z)
    torch.manual_seed(3)  # the same draws, in the same order: the second z, the cutoff, the coin
    other = G.mapping(torch.randn(4, 8))
    cutoff = int(torch.randint(1, G.num_ws, ()))
    assert 1 <= cutoff < G.num_ws
    torch.testing.assert_close(mixed[:, :cutoff], ws[:, :cutoff], rtol=0, atol=0)
    torch.testing.assert_close(mixed[:, cutoff:], other[:, cutoff:], rtol=0, atol=0)
    assert not torch.allclose(ws[:, cutoff:], other[:, cutoff:])
    # With probability 0 no layer is ever switched; in eval mode G does not mix at all.
    G.style_mixing = 0.0
    assert torch.equal(G.mix(ws, z), ws)
    G.style_mixing = 1.0
    G.eval()
    torch.testing.assert_close(G(z), G.synthesize(ws))


def test_noise_modes():
    torch.manual_seed(0)
    G = StyleGAN2Generator(8, 8, 16, 1, 64, 16, 2)
    with torch.no_grad():
        for module in G.modules():
            if isinstance(module, ModulatedConv) and module.noise_strength is not None:
                module.noise_strength.fill_(0.5)
    z = torch.randn(2, 8)
    G.eval()
    assert torch.equal(G(z), G(z))  # const: the stored maps
    assert not torch.allclose(G(z, noise_mode="random"), G(z, noise_mode="random"))
    assert not torch.allclose(G(z), G(z, noise_mode="none"))


def reference_upfirdn(x: torch.Tensor, up: int, pad: tuple[int, int], down: int, gain: float) -> torch.Tensor:
    """NVIDIA's upfirdn2d (zero insertion, padding, FIR, keeping every down-th sample), written with loops."""
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f = torch.outer(taps, taps) / 64 * gain
    n, c, h, w = x.shape
    z = torch.zeros(n, c, h * up, w * up)
    z[:, :, ::up, ::up] = x
    z = F.pad(z, [pad[0], pad[1], pad[0], pad[1]])
    out_h = z.shape[2] - 3
    out = torch.zeros(n, c, out_h, out_h)
    for i in range(out_h):
        for j in range(out_h):
            out[:, :, i, j] = (z[:, :, i:i + 4, j:j + 4] * f).sum((2, 3))
    return out[:, :, ::down, ::down]


def test_fir_resampling_matches_nvidias_paddings():
    torch.manual_seed(0)
    f = fir_filter()
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(upsample2d(x, f), reference_upfirdn(x, 2, (2, 1), 1, 4.0))
    # 3x3 convolution downsampling: pad 2, filter, stride-2 convolution.
    weight = torch.randn(5, 3, 3, 3)
    torch.testing.assert_close(conv_down(x, weight, f), F.conv2d(reference_upfirdn(x, 1, (2, 2), 1, 1.0), weight,
                                                                 stride=2))
    # 1x1 downsampling: pad 1, filter at stride 2, then the 1x1 convolution.
    weight = torch.randn(5, 3, 1, 1)
    torch.testing.assert_close(conv_down(x, weight, f), F.conv2d(reference_upfirdn(x, 1, (1, 1), 2, 1.0), weight))
    # 3x3 convolution upsampling: the transposed convolution, then pad 1 and the filter times 4.
    weight = torch.randn(5, 3, 3, 3)
    transposed = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
    torch.testing.assert_close(conv_up(x, weight, f), reference_upfirdn(transposed, 1, (1, 1), 1, 4.0))
    assert conv_up(x, weight, f).shape == (2, 5, 12, 12) and conv_down(x, weight, f).shape == (2, 5, 3, 3)


# ---- regularizers ---------------------------------------------------------------------------------

def test_path_length_against_an_explicit_jacobian():
    torch.manual_seed(0)
    G = StyleGAN2Generator(8, 8, 16, 1, 64, 16, 2, style_mixing=0.0).eval()
    z = torch.randn(3, 8)
    ws = G.mapping(z).detach().requires_grad_(True)
    images = G.synthesize(ws)
    y = torch.randn_like(images)
    pl = losses.PathLength(decay=0.01)
    lengths = pl.lengths(images, ws, y / 16)  # y / sqrt(16 * 16), as __call__ scales it
    for i in range(3):  # |J^T y| per sample from the full Jacobian of the image with respect to its styles
        jac = torch.autograd.functional.jacobian(lambda w: G.synthesize(w[None])[0], ws[i].detach())
        jty = (jac.flatten(0, 2) * (y[i] / 16).flatten()[:, None, None]).sum(0)  # [num_ws, w_dim]
        expected = jty.square().sum(1).mean().sqrt()
        assert lengths[i].item() == pytest.approx(expected.item(), rel=1e-4)
    # The running mean and the penalty: a = 0.01 * mean length (from 0), penalty = mean (length - a)^2.
    penalty = pl(images, ws, noise=y)
    a = 0.01 * lengths.mean()
    assert pl.mean.item() == pytest.approx(a.item(), rel=1e-5)
    assert penalty.item() == pytest.approx((lengths - a).square().mean().item(), rel=1e-4)
    state = pl.state_dict()
    fresh = losses.PathLength()
    fresh.load_state_dict(state)
    assert fresh.mean.item() == pl.mean.item()


def test_path_length_term_is_lazy_and_weighted_by_its_interval(tmp_path):
    from gankit.training.distributed import Replica
    from gankit.training.loop import path_length_term
    from gankit.training.precision import Precision

    config = load("dcgan-fashion-mnist", [*TINY_STYLEGAN2, "data.resolution=16", "loss.pl_weight=2.0",
                                          "loss.pl_every=3", "loss.pl_batch_shrink=2"])
    torch.manual_seed(0)
    G = build_generator(config.model, config.data)
    pl, stats = losses.PathLength(), {}
    torch.manual_seed(1)
    term = path_length_term(pl, G, config, Replica(), 8, torch.device("cpu"), Precision("fp32", torch.device("cpu")),
                            stats)
    assert term.item() == pytest.approx(2.0 * 3 * stats["pl"].item(), rel=1e-6)  # weight * interval * penalty
    assert stats["pl_mean"].item() > 0


def test_ema_half_life_and_ramp_up():
    assert ema_decay_from_half_life(10, 32, images_seen=10**6) == pytest.approx(0.5 ** (32 / 10_000))
    # Ramp-up: the half-life is at most 5% of the images seen (here 1,000 images -> 50).
    assert ema_decay_from_half_life(10, 32, images_seen=1000, rampup=0.05) == pytest.approx(0.5 ** (32 / 50))
    assert ema_decay_from_half_life(10, 32, images_seen=10**7, rampup=0.05) == pytest.approx(0.5 ** (32 / 10_000))


# ---- training --------------------------------------------------------------------------------------

@needs_fashion_mnist
def test_training_runs_every_regularizer_and_tracks_w_avg(tmp_path, run_cli):
    run = tmp_path / "run"
    extra = [*TINY_STYLEGAN2, "loss.r1_gamma=1.0", "loss.reg_every=2", "loss.pl_weight=2.0", "loss.pl_every=2",
             "train.ema_kimg=0.1", "train.ema_rampup=0.05", "train.log_every=2"]
    assert run_cli(*tiny_train_args(run, steps=4, extra=extra))[0] == 0
    import json
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert all("pl" in s and "pl_mean" in s and "r1" in s for s in stats)
    state = load_training_state(list_checkpoints(run)[-1])
    w_avg = state["G"]["mapping.w_avg"]
    assert w_avg.abs().sum() > 0 and torch.equal(state["G_ema"]["mapping.w_avg"], w_avg)
    assert state["path_length"]["mean"].item() > 0
    # The exported generator holds w_avg too, so it can truncate without the run.
    from gankit.checkpoint import load_generator
    G, _ = load_generator(str(run), torch.device("cpu"))
    assert torch.equal(G.w_avg, w_avg)


# Lazy R1 and path length on every third step, ADA at a fixed p: what the resume tests run.
EVERY_REGULARIZER = ["loss.r1_gamma=1.0", "loss.reg_every=3", "loss.pl_weight=2.0", "loss.pl_every=3",
                     "train.ema_kimg=0.1", "train.ema_rampup=0.05", "augment.policy=ada", "augment.p=0.3",
                     "augment.interval=3", "augment.speed_images=1000"]


def assert_resume_is_bit_identical(tmp_path, run_cli, extra: list[str]):
    """Trains 8 steps straight and 4 + 4 with a resume between; every part of the two training states and
    the two exports must be identical. Returns (straight run, split run, the straight run's last state)."""
    from test_training import assert_same_tensors

    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_cli(*tiny_train_args(straight, steps=8, extra=extra))[0] == 0
    assert run_cli(*tiny_train_args(split, steps=4, extra=extra))[0] == 0
    code, out, _ = run_cli("train", split, "--set", "train.steps=8")
    assert code == 0 and "at step 4" in out
    a, b = (load_training_state(list_checkpoints(r)[-1]) for r in (straight, split))
    for key in ("G", "D", "G_ema", "opt_g", "opt_d", "data", "rng", "augment", "path_length"):
        assert_same_tensors(a[key], b[key], key)
    assert a["path_length"]["mean"].item() > 0 and a["augment"] is not None
    assert (straight / "generator.safetensors").read_bytes() == (split / "generator.safetensors").read_bytes()
    return straight, split, a


@needs_fashion_mnist
def test_resume_is_bit_identical_with_ada_and_every_regularizer(tmp_path, run_cli):
    assert_resume_is_bit_identical(tmp_path, run_cli, [*TINY_STYLEGAN2, *EVERY_REGULARIZER])


@needs_fashion_mnist
def test_two_processes_follow_one_process(tmp_path):
    """Under torchrun G's own draws (noise maps, style mixing's second z) and path length's latents and y are
    made for the global batch: two ranks of 8 compute what one process of 16 computes. w_avg is rank 0's,
    tracked from its share (like batch-norm running statistics), so it is compared loosely."""
    from gankit.cli import main as gankit_main
    from test_distributed import DDP_TIMEOUT_S, TOLERANCE, torchrun_command, worker_env

    extra = [*TINY_STYLEGAN2, "loss.r1_gamma=1.0", "loss.reg_every=2", "loss.pl_weight=2.0", "loss.pl_every=2",
             "train.checkpoint_every=4", "train.g_lr=0.001", "train.d_lr=0.001"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert gankit_main(tiny_train_args(one, steps=4, extra=extra)) == 0
    result = subprocess.run(torchrun_command(["--standalone", "--nproc_per_node", "2"],
                                             tiny_train_args(two, steps=4, extra=extra)),
                            cwd=tmp_path, env=worker_env(), capture_output=True, text=True, timeout=DDP_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = (load_training_state(checkpoint_path(r, 4)) for r in (one, two))
    for key in ("G", "D", "G_ema"):
        for name in a[key]:
            tolerance = 1e-2 if name.endswith("w_avg") else TOLERANCE
            torch.testing.assert_close(a[key][name], b[key][name], atol=tolerance, rtol=0, msg=f"{key}.{name}")
    config = load("dcgan-fashion-mnist", [*TINY_STYLEGAN2, "data.resolution=16"])
    initial = build_generator(config.model, config.data).state_dict()
    moved = max((a["G"][n] - initial[n]).abs().max().item() for n in a["G"] if "weight" in n)
    assert moved > 100 * TOLERANCE  # not vacuous
    torch.testing.assert_close(a["path_length"]["mean"], b["path_length"]["mean"], atol=TOLERANCE, rtol=0)


# ---- config ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings, message", [
    (["data.resolution=8"], "data.resolution 8 is not supported by stylegan2"),
    (["data.resolution=24"], "data.resolution 24 is not supported by stylegan2"),
    (["model.conditioning=acgan"], "not supported by model.arch stylegan2: use projection"),
    (["model.d_spectral_norm=true"], "not supported by model.arch stylegan2"),
    (["train.ema=null", "train.ema_kimg=10.0"], "train.ema_kimg"),
    (["train.ema_kimg=null"], "train.ema_rampup applies with train.ema_kimg"),  # the preset has a ramp-up
    (["model.style_mixing=1.5"], "style_mixing"),
])
def test_bad_stylegan2_settings_are_refused(settings, message):
    with pytest.raises(GankitError, match=message):
        load("stylegan2-fashion-mnist", settings)


@pytest.mark.parametrize("setting", ["model.style_mixing=0.5", "model.channel_base=1024", "loss.pl_weight=2.0",
                                     "model.mapping_layers=4"])
def test_stylegan2_keys_on_another_arch_are_refused(setting):
    with pytest.raises(GankitError, match="only apply to model.arch stylegan2"):
        load("dcgan-fashion-mnist", [setting])


def test_presets_build():
    for preset in ("stylegan2-anime-64-ada", "stylegan2-ffhq-256-ada"):  # config F for GPUs
        config = load(preset)
        assert config.model.arch == "stylegan2" and config.loss.pl_weight == 2.0 and config.loss.reg_every == 16
        assert config.model.style_mixing == 0.9 and config.model.conditioning == "none"
    # the CPU recipe (docs/stylegan2.md): class-conditional, lazy R1 only, no style mixing regularization
    config = load("stylegan2-fashion-mnist", ["data.class_names=[a,b,c,d,e,f,g,h,i,j]"])  # Fashion-MNIST's 10
    assert (config.loss.pl_weight, config.model.style_mixing, config.loss.r1_gamma) == (0.0, 0.0, 20.0)
    G, D = build_generator(config.model, config.data), build_discriminator(config.model, config.data, "none")
    assert G.num_classes == 10 and D.num_classes == 10
    labels = torch.tensor([0, 9, 3, 3])
    assert G(torch.randn(4, 512), labels).shape == (4, 1, 32, 32) and D(torch.zeros(4, 1, 32, 32), labels).shape == (4,)


def test_resampling_of_bf16_runs_in_float32_on_the_cpu():
    """bf16 depthwise convolutions are slow on CPUs: the filter runs in float32 and the result is rounded once."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8).bfloat16()
    f = fir_filter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        filtered, upsampled = conv_down(x, torch.ones(3, 3, 1, 1, dtype=torch.bfloat16), f), upsample2d(x, f)
    assert upsampled.dtype == torch.bfloat16
    assert torch.equal(upsampled, upsample2d(x.float(), f).bfloat16())
    assert filtered.shape == (2, 3, 4, 4)


def test_r1_of_the_stylegan2_discriminator_against_finite_differences():
    """R1's gradient norm through the residual D (FIR downsampling, minibatch stddev), checked against central
    differences of D's summed scores along random directions, in float64."""
    torch.manual_seed(0)
    D = StyleGAN2Discriminator(16, 1, 64, 16).double()
    x = torch.randn(4, 1, 16, 16, dtype=torch.float64, requires_grad=True)
    scores = D(x)
    penalty = losses.input_gradient_penalty(scores, x)
    (grad,) = torch.autograd.grad(D(x).sum(), x)
    # (the penalty computes in float32)
    assert penalty.item() == pytest.approx(grad.flatten(1).square().sum(1).mean().item(), rel=1e-6)
    for _ in range(3):
        direction = torch.randn_like(x)
        h = 1e-6  # small: a larger step crosses leaky ReLU's kinks
        with torch.no_grad():
            numeric = (D(x + h * direction).sum() - D(x - h * direction).sum()) / (2 * h)
        assert (grad * direction).sum().item() == pytest.approx(numeric.item(), rel=1e-6)
