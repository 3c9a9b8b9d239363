import pytest
import torch
from torch import nn

from gankit.config import DataConfig, ModelConfig
from gankit.models import build_discriminator, build_generator
from gankit.models.dcgan import DCGANDiscriminator, DCGANGenerator


@pytest.mark.parametrize("resolution", [16, 32, 64, 128, 256])
def test_dcgan_sizes_follow_resolution(resolution):
    G = DCGANGenerator(z_dim=8, resolution=resolution, channels=3, width=4)
    D = DCGANDiscriminator(resolution=resolution, channels=3, width=4)
    images = G(torch.randn(2, 8))
    assert images.shape == (2, 3, resolution, resolution)
    assert images.abs().max() <= 1.0  # tanh output
    assert D(images).shape == (2,)


def test_dcgan_layout_is_the_papers():
    G = DCGANGenerator(z_dim=100, resolution=64, channels=3, width=64)
    convs = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [512, 256, 128, 64, 3]
    assert all(c.kernel_size == (4, 4) for c in convs)
    assert [c.stride for c in convs] == [(1, 1)] + [(2, 2)] * 4
    assert sum(isinstance(m, nn.BatchNorm2d) for m in G.modules()) == 4  # not at the output
    assert isinstance(list(G.modules())[-1], nn.Tanh)

    D = DCGANDiscriminator(resolution=64, channels=3, width=64)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in D.modules()) == 3  # not at the input
    slopes = {m.negative_slope for m in D.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.2}


def test_dcgan_init_is_normal_002():
    torch.manual_seed(0)
    G = DCGANGenerator(z_dim=100, resolution=64, channels=3, width=64)
    weights = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, nn.ConvTranspose2d)])
    assert weights.mean().abs() < 1e-3 and abs(weights.std().item() - 0.02) < 1e-3
    bn = torch.cat([m.weight for m in G.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(bn.mean().item() - 1.0) < 0.01 and abs(bn.std().item() - 0.02) < 0.01


@pytest.mark.parametrize("mode", ["transposed", "nearest", "pixelshuffle"])
def test_generator_upsampling_modes(mode):
    model = ModelConfig(z_dim=8, g_channels=4, g_upsample=mode)
    G = build_generator(model, DataConfig(resolution=32, channels=1))
    assert G(torch.randn(3, 8)).shape == (3, 1, 32, 32)
    count = lambda kind: sum(isinstance(m, kind) for m in G.modules())
    # The 1x1 -> 4x4 projection is always transposed; the three doublings follow the mode.
    assert count(nn.ConvTranspose2d) == (4 if mode == "transposed" else 1)
    assert count(nn.PixelShuffle) == (3 if mode == "pixelshuffle" else 0)
    assert count(nn.Upsample) == (3 if mode == "nearest" else 0)


def test_discriminator_norm_choices():
    data = DataConfig(resolution=16)
    layer = build_discriminator(ModelConfig(d_channels=4), data, "layer")
    none = build_discriminator(ModelConfig(d_channels=4), data, "none")
    assert any(isinstance(m, nn.GroupNorm) and m.num_groups == 1 for m in layer.modules())
    assert not any(isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)) for m in none.modules())


def test_mlp_for_points_and_images():
    toy = DataConfig(source="toy-8gaussians")
    G = build_generator(ModelConfig(arch="mlp", z_dim=2, g_channels=16, hidden_layers=2), toy)
    points = G(torch.randn(5, 2) * 100)
    assert points.shape == (5, 2) and points.abs().max() > 1.0  # linear output for points
    images = DataConfig(resolution=28)
    G = build_generator(ModelConfig(arch="mlp", z_dim=4, g_channels=16), images)
    D = build_discriminator(ModelConfig(arch="mlp", d_channels=16), images, "batch")
    x = G(torch.randn(5, 4))
    assert x.shape == (5, 1, 28, 28) and x.abs().max() <= 1 and D(x).shape == (5,)


def test_ema_decay_ramps_up_then_holds():
    from gankit.training.ema import ema_decay, make_ema, update_ema

    assert ema_decay(0.999, 0) == pytest.approx(0.1)
    assert ema_decay(0.999, 90) == pytest.approx(0.91)
    assert ema_decay(0.999, 10**6) == 0.999
    G = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = make_ema(G)
    with torch.no_grad():
        G[0].weight.add_(1.0)
        G[1].running_mean.fill_(5.0)
    before = ema[0].weight.clone()
    update_ema(ema, G, 0.75)
    assert torch.allclose(ema[0].weight, 0.75 * before + 0.25 * G[0].weight)
    assert torch.equal(ema[1].running_mean, G[1].running_mean)  # buffers are copied
