"""StyleGAN2 (Karras et al. 2020, config F) in plain PyTorch ops: no custom CUDA, runs wherever PyTorch runs.

The generator maps a normalized z through an MLP (learning-rate multiplier 0.01) to w, broadcast to one w
per layer ("ws"); a synthesis network starts from a learned 4x4 constant and at each resolution applies
two modulated, demodulated 3x3 convolutions (the first upsampling with the [1, 3, 3, 1] filter), each
followed by per-pixel noise with a learned strength, bias and leaky ReLU; a 1x1 toRGB per resolution
(modulated, not demodulated) adds into the image, upsampled and summed (the "skip" generator). The
discriminator is residual: fromRGB at full resolution, then per resolution two 3x3 convolutions (the
second downsampling with the filter) beside a 1x1 downsampling skip, summed with gain sqrt(1/2); at 4x4
the minibatch standard deviation, a 3x3 convolution and two fully connected layers.

Every weight has an equalized learning rate: stored N(0, 1 / lr_multiplier^2), multiplied at run time by
lr_multiplier / sqrt(fan_in). Widths are min(channel_base / resolution, channel_max) as in NVIDIA's
networks, so the parameter counts match theirs at the same settings (docs/stylegan2.md). NVIDIA's
modulated convolution scales the activations by the styles and the output by the demodulation
coefficients around a shared-weight convolution when training; that is the only form here (the grouped
form gives the same numbers and is slower on CPUs, benchmarks/train_speed.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gankit.models.conditioning import class_weights, cycling_labels, require_labels
from gankit.models.fir import conv_down, conv_up, fir_filter, upsample2d
from gankit.models.layers import minibatch_stddev

LRELU_GAIN = math.sqrt(2.0)


def _lrelu(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * (LRELU_GAIN * gain)


def layer_widths(resolution: int, channel_base: int, channel_max: int) -> dict[int, int]:
    """Channels at each resolution 4 .. `resolution`: min(channel_base // res, channel_max)."""
    return {4 * 2**i: min(channel_base // (4 * 2**i), channel_max) for i in range(int(math.log2(resolution)) - 1)}


class FullyConnected(nn.Module):
    """y = x W^T * (lr_multiplier / sqrt(in)) + b * lr_multiplier, then leaky ReLU (gain sqrt 2) or nothing."""

    def __init__(self, in_features: int, out_features: int, activation: bool = False, lr_multiplier: float = 1.0,
                 bias_init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return _lrelu(x) if self.activation else x


class MappingNetwork(nn.Module):
    """z -> w (normalized z, `layers` fully connected layers with a learning-rate multiplier), broadcast to
    `num_ws` copies (None: one w per sample); tracks the average w (w_avg, a buffer) while training, for
    truncation, unless `track_w_avg` is off.

    num_classes > 0 (StyleGAN2-ADA's conditioning): the class weights are embedded by a fully connected layer
    to w_dim features, normalized like z and joined to it (z_dim 0: the embedding alone, the form of the
    discriminator's label mapping)."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int | None, layers: int = 8, lr_multiplier: float = 0.01,
                 w_avg_beta: float = 0.995, num_classes: int = 0, track_w_avg: bool = True):
        super().__init__()
        self.z_dim, self.num_ws, self.w_avg_beta, self.num_classes = z_dim, num_ws, w_avg_beta, num_classes
        self.embed = FullyConnected(num_classes, w_dim) if num_classes else None
        features = [z_dim + (w_dim if num_classes else 0)] + [w_dim] * layers
        self.layers = nn.ModuleList(FullyConnected(a, b, activation=True, lr_multiplier=lr_multiplier)
                                    for a, b in zip(features[:-1], features[1:]))
        if track_w_avg:
            self.register_buffer("w_avg", torch.zeros(w_dim))
        else:
            self.w_avg = None

    def forward(self, z: torch.Tensor | None, truncation_psi: float = 1.0, update_w_avg: bool = False,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        """labels: class indices [N] or class weights [N, K], for a conditional mapping (None: classes in turn)."""
        parts = []
        if self.z_dim:
            parts.append(_normalize_2nd_moment(z.float()))
        if self.embed is not None:
            if labels is None:
                labels = cycling_labels(z.shape[0], self.num_classes, z.device)
            parts.append(_normalize_2nd_moment(self.embed(class_weights(labels, self.num_classes))))
        elif labels is not None:
            raise ValueError("this StyleGAN2 mapping network is unconditional")
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for layer in self.layers:
            x = layer(x)
        if update_w_avg and self.w_avg is not None:
            self.w_avg.copy_(x.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        ws = x if self.num_ws is None else x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            ws = self.w_avg.to(ws.dtype).lerp(ws, truncation_psi)
        return ws


def _normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


class ModulatedConv(nn.Module):
    """Modulated convolution: the input channels scaled by styles = affine(w) (bias 1 at start); with
    `demodulate`, each output channel divided by the norm its modulated kernel would have, so that
    unit-variance inputs give unit-variance outputs; then noise, bias and the activation."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: bool = False, demodulate: bool = True, noise: bool = True, activation: bool = True):
        super().__init__()
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.up, self.demodulate, self.activation = up, demodulate, activation
        self.padding = kernel_size // 2
        # toRGB is not demodulated: its styles carry the weight's 1 / sqrt(fan_in) instead.
        self.style_gain = 1.0 if demodulate else 1 / math.sqrt(in_channels * kernel_size**2)
        if noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))  # noise_mode "const"
            self.noise_strength = nn.Parameter(torch.zeros([]))
        else:
            self.noise_strength = None
        if up:
            self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                share: tuple[int, int] = (0, 1)) -> torch.Tensor:
        styles = self.affine(w) * self.style_gain  # [N, in]
        weight = self.weight.to(x.dtype)
        x = x * styles.to(x.dtype)[:, :, None, None]
        if self.up:
            x = conv_up(x, weight, self.resample_filter)
        else:
            x = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # sum over in, kh, kw of (w * s)^2, per sample and output channel, in float32
            dcoefs = torch.rsqrt(torch.einsum("oikl,ni->no", self.weight.float().square(), styles.float().square())
                                 + 1e-8)
            x = x * dcoefs.to(x.dtype)[:, :, None, None]
        if self.noise_strength is not None and noise_mode != "none":
            if noise_mode == "const":
                noise = self.noise_const.to(x.dtype)[None, None]
            else:
                rank, world = share  # drawn for the global batch, this rank's samples kept (see batch_share)
                noise = torch.randn(x.shape[0] * world, 1, x.shape[2], x.shape[3], device=x.device,
                                    dtype=x.dtype)[rank::world]
            x = x + noise * self.noise_strength.to(x.dtype)
        x = x + self.bias.to(x.dtype)[None, :, None, None]
        return _lrelu(x) if self.activation else x


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: (the 4x4 constant or conv0 upsampling) conv1, toRGB."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int):
        super().__init__()
        self.resolution = resolution
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
            self.conv0 = None
        else:
            self.conv0 = ModulatedConv(in_channels, out_channels, w_dim, resolution, up=True)
        self.conv1 = ModulatedConv(out_channels, out_channels, w_dim, resolution)
        self.torgb = ModulatedConv(out_channels, img_channels, w_dim, resolution, kernel_size=1, demodulate=False,
                                   noise=False, activation=False)
        self.num_conv = 1 if self.conv0 is None else 2
        if self.conv0 is not None:  # the image from the block below is upsampled
            self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def forward(self, x, img, ws: torch.Tensor, noise_mode: str, share: tuple[int, int]):
        """ws: [N, num_conv + 1, w_dim], the last one toRGB's (it is also the next block's first)."""
        if self.conv0 is None:
            x = self.const.to(ws.dtype).unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode, share)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode, share)
            x = self.conv1(x, ws[:, 1], noise_mode, share)
        y = self.torgb(x, ws[:, self.num_conv], noise_mode)
        img = y if img is None else upsample2d(img, self.resample_filter).to(y.dtype) + y
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim: int, resolution: int, img_channels: int, channel_base: int, channel_max: int):
        super().__init__()
        widths = layer_widths(resolution, channel_base, channel_max)
        self.blocks = nn.ModuleList(
            SynthesisBlock(widths[res // 2] if res > 4 else 0, widths[res], w_dim, res, img_channels) for res in widths)
        self.num_ws = sum(b.num_conv for b in self.blocks) + 1

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", share: tuple[int, int] = (0, 1)) -> torch.Tensor:
        x = img = None
        index = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, index:index + block.num_conv + 1], noise_mode, share)
            index += block.num_conv
        return img


class StyleGAN2Generator(nn.Module):
    """G(z) -> images in [-1, 1]-ish (no final tanh, as in the paper). In training mode each call mixes
    styles with probability `style_mixing` (a second z takes over from a random layer on) and updates
    w_avg; in eval mode the noise is the stored per-layer noise ("const"), so a z gives one image.

    `batch_share` (rank, world size): under torchrun the training loop sets it, and the random values G
    draws itself in training (the noise maps, the second z of style mixing) are drawn for the global batch
    and this rank's samples rank::world kept, as the loop draws the latents: K ranks then compute what
    one process computes with the global batch."""

    def __init__(self, z_dim: int, w_dim: int, resolution: int, channels: int, channel_base: int = 32768,
                 channel_max: int = 512, mapping_layers: int = 8, mapping_lr: float = 0.01,
                 style_mixing: float = 0.9, num_classes: int = 0):
        super().__init__()
        self.z_dim, self.w_dim, self.resolution, self.num_classes = z_dim, w_dim, resolution, num_classes
        self.style_mixing = style_mixing
        self.batch_share = (0, 1)
        self.synthesis = SynthesisNetwork(w_dim, resolution, channels, channel_base, channel_max)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, mapping_layers, mapping_lr, num_classes=num_classes)

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    def layer_resolutions(self) -> list[int]:
        """The resolution each of the num_ws styles acts at (toRGB's w is shared with the next block's conv0)."""
        out = []
        for block in self.synthesis.blocks:
            out += [block.resolution] * block.num_conv
        return out + [self.resolution]

    def mix(self, ws: torch.Tensor, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Style mixing regularization: with probability style_mixing, the styles from a layer drawn
        uniformly in 1 .. num_ws - 1 on come from another z, of the same class (one draw per batch, as in
        NVIDIA's loss)."""
        rank, world = self.batch_share
        other_z = torch.randn(z.shape[0] * world, z.shape[1], device=z.device, dtype=z.dtype)[rank::world]
        cutoff = torch.randint(1, self.num_ws, (), device=z.device)
        mixed = torch.rand((), device=z.device) < self.style_mixing
        cutoff = torch.where(mixed, cutoff, torch.full_like(cutoff, self.num_ws))
        take_other = (torch.arange(self.num_ws, device=z.device) >= cutoff)[None, :, None]
        return torch.where(take_other, self.mapping(other_z, labels=labels), ws)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None, truncation_psi: float = 1.0,
                noise_mode: str | None = None, return_ws: bool = False):
        """labels (conditional): class indices [N] or weights [N, K], None: classes in turn; an unconditional
        G refuses them. noise_mode: random, const (the stored maps) or none; None: random in training, else
        const. return_ws: also return the styles used [N, num_ws, w_dim] (path-length regularization)."""
        if labels is not None and not self.num_classes:
            raise ValueError("this StyleGAN2 generator is unconditional")
        # Without labels the mapping takes the classes in turn, for z and for style mixing's second z alike.
        ws = self.mapping(z, truncation_psi, update_w_avg=self.training, labels=labels)
        if self.training and self.style_mixing > 0:
            ws = self.mix(ws, z, labels)
        return self.synthesize(ws, noise_mode, return_ws)

    def synthesize(self, ws: torch.Tensor, noise_mode: str | None = None, return_ws: bool = False):
        """Images from styles [N, num_ws, w_dim] (interpolation in W, style-mixing grids)."""
        img = self.synthesis(ws, noise_mode or ("random" if self.training else "const"), self.batch_share)
        return (img, ws) if return_ws else img


class ConvLayer(nn.Module):
    """Discriminator convolution with equalized learning rate; optional FIR downsampling x2, bias and leaky
    ReLU (gain sqrt 2, times `gain`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: bool = True, down: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.activation, self.down, self.padding = activation, down, kernel_size // 2
        if down:
            self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        weight = (self.weight * self.weight_gain).to(x.dtype)
        x = conv_down(x, weight, self.resample_filter) if self.down else F.conv2d(x, weight, padding=self.padding)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype)[None, :, None, None]
        return _lrelu(x, gain) if self.activation else x * gain


class DiscriminatorBlock(nn.Module):
    """Residual block: (fromRGB,) conv0, conv1 downsampling, beside a 1x1 downsampling skip; sum * sqrt(1/2)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int):
        super().__init__()
        self.fromrgb = ConvLayer(img_channels, tmp_channels, 1) if in_channels == 0 else None
        self.conv0 = ConvLayer(tmp_channels, tmp_channels, 3)
        self.conv1 = ConvLayer(tmp_channels, out_channels, 3, down=True)
        self.skip = ConvLayer(tmp_channels, out_channels, 1, bias=False, activation=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fromrgb is not None:
            x = self.fromrgb(x)
        y = self.skip(x, gain=math.sqrt(0.5))
        return y + self.conv1(self.conv0(x), gain=math.sqrt(0.5))


class StyleGAN2Discriminator(nn.Module):
    """num_classes > 0: StyleGAN2-ADA's conditional form, a projection: the labels go through a mapping network
    of their own (embedding and `mapping_layers` layers, no z) to a vector cmap, the last layer gives cmap_dim
    features instead of one score, and the score is <features, cmap> / sqrt(cmap_dim). cmap_dim is the 4x4
    width, as in NVIDIA's networks."""

    def __init__(self, resolution: int, channels: int, channel_base: int = 32768, channel_max: int = 512,
                 mbstd_group: int = 4, num_classes: int = 0, mapping_layers: int = 8, mapping_lr: float = 0.01):
        super().__init__()
        widths = layer_widths(resolution, channel_base, channel_max)
        resolutions = sorted(widths, reverse=True)[:-1]  # resolution .. 8
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(widths[res] if res < resolution else 0, widths[res], widths[res // 2], channels)
            for res in resolutions)
        self.mbstd_group = mbstd_group
        c = widths[4]
        self.conv = ConvLayer(c + 1, c, 3)
        self.fc = FullyConnected(c * 16, c, activation=True)
        self.num_classes, self.cmap_dim = num_classes, c if num_classes else 0
        self.out = FullyConnected(c, self.cmap_dim or 1)
        self.mapping = (MappingNetwork(0, c, None, mapping_layers, mapping_lr, num_classes=num_classes,
                                       track_w_avg=False) if num_classes else None)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.mapping is None and labels is not None:
            raise ValueError("this StyleGAN2 discriminator is unconditional")
        for block in self.blocks:
            x = block(x)
        x = minibatch_stddev(x, self.mbstd_group)
        x = self.conv(x)
        x = self.out(self.fc(x.flatten(1)))
        if self.mapping is None:
            return x.squeeze(1)
        cmap = self.mapping(None, labels=require_labels(labels, "discriminator")).to(x.dtype)
        return (x * cmap).sum(dim=1) * (1 / math.sqrt(self.cmap_dim))
