"""DCGAN's dense-form convolutions (models/dense_conv.py) and the projection term's memory order: the same
values and gradients as the plain convolutions, in either memory format, and the layouts they keep."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gankit import config as cfg
from gankit.models import build_discriminator, build_generator
from gankit.models.conditioning import DiscriminatorHead
from gankit.models.dense_conv import DenseConv2d, DenseConvTranspose2d

CL = torch.channels_last


def _grads(out: torch.Tensor, *tensors: torch.Tensor, seed: int = 1) -> list[torch.Tensor]:
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return list(torch.autograd.grad(out, tensors, upstream))


@pytest.mark.parametrize("channels_last", [False, True])
def test_dense_transposed_conv_equals_the_convolution(channels_last):
    torch.manual_seed(0)
    layer = DenseConvTranspose2d(7, 5, 4, 1, 0, bias=True)
    with torch.no_grad():
        layer.bias.normal_()
    if channels_last:
        layer = layer.to(memory_format=CL)
    x = torch.randn(3, 7, 1, 1, requires_grad=True)
    out = layer(x)
    expected = F.conv_transpose2d(x, layer.weight, layer.bias)
    assert out.shape == (3, 5, 4, 4)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    # The result keeps the weight's memory order: no copy is made to get there.
    assert out.is_contiguous(memory_format=CL if channels_last else torch.contiguous_format)
    for mine, theirs in zip(_grads(out, x, layer.weight, layer.bias), _grads(expected, x, layer.weight, layer.bias)):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("out_channels", [1, 4])
def test_dense_conv_equals_the_convolution(channels_last, out_channels):
    torch.manual_seed(0)
    layer = DenseConv2d(6, out_channels, 4, 1, 0)
    x = torch.randn(3, 6, 4, 4)
    if channels_last:
        layer, x = layer.to(memory_format=CL), x.contiguous(memory_format=CL)
    x.requires_grad_(True)
    out = layer(x)
    expected = F.conv2d(x, layer.weight, layer.bias)
    assert out.shape == (3, out_channels, 1, 1)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    mine = _grads(out, x, layer.weight, layer.bias)
    torch.testing.assert_close(mine, _grads(expected, x, layer.weight, layer.bias), rtol=1e-5, atol=1e-6)
    assert mine[0].is_contiguous(memory_format=CL if channels_last else torch.contiguous_format)


def test_other_shapes_fall_back_to_the_plain_convolution_and_the_state_dict_is_the_plain_one():
    torch.manual_seed(0)
    conv, plain = DenseConv2d(3, 2, 4, 1, 0), nn.Conv2d(3, 2, 4, 1, 0)
    plain.load_state_dict(conv.state_dict())  # same keys and shapes: old checkpoints load unchanged
    x = torch.randn(2, 3, 7, 7)  # larger than the kernel: an ordinary convolution
    assert conv(x).shape == (2, 2, 4, 4)
    torch.testing.assert_close(conv(x), plain(x))
    deconv, plain_t = DenseConvTranspose2d(3, 2, 4, 1, 0), nn.ConvTranspose2d(3, 2, 4, 1, 0)
    plain_t.load_state_dict(deconv.state_dict())
    z = torch.randn(2, 3, 2, 2)
    torch.testing.assert_close(deconv(z), plain_t(z))
    with pytest.raises(ValueError, match="stride 1, padding 0"):
        DenseConv2d(3, 2, 4, 2, 1)


def test_dcgan_uses_the_dense_layers_and_computes_what_plain_convolutions_do():
    """The whole DCGAN pair with its dense layers against the same weights run through plain convolutions."""
    config = cfg.load("dcgan-fashion-mnist", ["model.conditioning=none", "model.g_channels=8", "model.d_channels=8",
                                              "data.resolution=16", "model.z_dim=6"])
    torch.manual_seed(0)
    G, D = build_generator(config.model, config.data), build_discriminator(config.model, config.data, "batch")
    assert isinstance(G.net[0], DenseConvTranspose2d) and isinstance(D.net[-1], DenseConv2d)
    z = torch.randn(4, 6)
    images = G(z)
    scores = D(images)
    G.net[0].forward = lambda x: nn.ConvTranspose2d.forward(G.net[0], x)
    D.net[-1].forward = lambda x: nn.Conv2d.forward(D.net[-1], x)
    torch.testing.assert_close(G(z), images, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(D(images), scores, rtol=1e-4, atol=1e-5)


def test_projection_gives_phi_a_gradient_in_its_own_memory_order():
    """A channels_last phi must get a channels_last gradient (an NCHW one sends D's last activation's backward
    down a slow path); the value is the NCHW inner product <embed(y), phi.flatten(1)>."""
    torch.manual_seed(0)
    head = DiscriminatorHead("projection", 3, 5 * 4 * 4, DenseConv2d(5, 1, 4, 1, 0))
    phi = torch.randn(6, 5, 4, 4).contiguous(memory_format=CL).requires_grad_(True)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    out = head(phi, labels)
    expected = head.score(phi).flatten() + (head.embed(F.one_hot(labels, 3).float()) * phi.flatten(1)).sum(1)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    (grad,) = torch.autograd.grad(out.sum(), phi)
    assert grad.is_contiguous(memory_format=CL) and not grad.is_contiguous()
    (expected_grad,) = torch.autograd.grad(expected.sum(), phi)
    torch.testing.assert_close(grad, expected_grad)
