"""Up- and downsampling with a low-pass FIR filter, in plain PyTorch ops (StyleGAN2's resampling).

StyleGAN2 resamples with the separable filter [1, 3, 3, 1] (normalized to sum 1) instead of nearest or
average pooling, which alias. NVIDIA's code runs it through a custom CUDA op, upfirdn2d; here each
resampling is a depthwise convolution (or a transposed one) with the filter's 4x4 outer product, with the
paddings that op uses, so the sample grids line up as in the paper's code:

- upsampling x2: zero insertion, padding (2, 1), the filter times 4 (the gain that keeps the mean);
  which is a stride-2 transposed depthwise convolution with padding 1;
- downsampling x2 before a stride-2 convolution with kernel k: padding (k + 1) // 2 on each side
  ((k - 1) // 2 of the convolution's own padding plus the filter's 1), the filter, then the convolution;
- downsampling x2 of a 1x1 convolution's input: padding 1, the filter at stride 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TAPS = (1.0, 3.0, 3.0, 1.0)


def fir_filter(taps: tuple[float, ...] = TAPS) -> torch.Tensor:
    """The 2-D filter: the outer product of the taps with itself, normalized to sum 1."""
    t = torch.tensor(taps, dtype=torch.float32)
    f = torch.outer(t, t)
    return f / f.sum()


def _depthwise(f: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The filter as a depthwise weight [C, 1, kh, kw] in x's dtype and device."""
    return f.to(device=x.device, dtype=x.dtype)[None, None].expand(x.shape[1], 1, *f.shape).contiguous()


def _in_float32_on_cpu(op):
    """Runs a depthwise filtering op in float32 on CPUs, whatever the autocast: oneDNN's bf16 depthwise
    convolutions are slow there (a stride-2 one 3.4x slower than in fp32), and the filter is exact in both."""
    def run(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if x.device.type != "cpu" or x.dtype not in (torch.bfloat16, torch.float16):
            return op(x, *args, **kwargs)
        with torch.autocast("cpu", enabled=False):
            return op(x.float(), *args, **kwargs).to(x.dtype)
    run.__doc__ = op.__doc__
    return run


@_in_float32_on_cpu
def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """x [N, C, H, W] -> [N, C, 2H, 2W]: zero insertion, then the filter (times 4) with padding (2, 1)."""
    return F.conv_transpose2d(x, _depthwise(f * 4, x), stride=2, padding=1, groups=x.shape[1])


@_in_float32_on_cpu
def blur(x: torch.Tensor, f: torch.Tensor, pad: int, stride: int = 1) -> torch.Tensor:
    """The filter over x zero-padded by `pad` on every side (a 4x4 filter: the size shrinks by 3 - 2 pad)."""
    x = F.pad(x, [pad] * 4)
    return F.conv2d(x, _depthwise(f, x), stride=stride, groups=x.shape[1])


def conv_up(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """A convolution (odd kernel k <= 5) of x upsampled x2, output 2H x 2W: a stride-2 transposed
    convolution with the kernel as it is (NVIDIA's conv2d_resample for up=2 does not flip it), then the
    filter times 4 with padding (5 - k) // 2."""
    k = weight.shape[-1]
    x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)  # 2H - 2 + k
    return blur(x, f * 4, pad=(5 - k) // 2)


def conv_down(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """A stride-2 convolution of the filtered x (output H/2 x W/2): kernel k > 1 is padded (k + 1) // 2
    before the filter, a 1x1 kernel filters at stride 2 first (NVIDIA's two fast paths)."""
    k = weight.shape[-1]
    if k == 1:
        return F.conv2d(blur(x, f, pad=1, stride=2), weight)
    return F.conv2d(blur(x, f, pad=(k + 1) // 2), weight, stride=2)
