"""Adaptive discriminator augmentation (ADA; Karras et al. 2020, "Training Generative Adversarial Networks
with Limited Data"): StyleGAN2-ADA's pipeline, each op applied to each sample with probability p, and p
adjusted from how much D's scores on real images overfit.

Images are in [-1, 1], NCHW. Positions are pixel coordinates centred on the image (x right, y down, one
unit a pixel). The geometric ops make one per-sample 3x3 *sampling* matrix, which maps an output pixel
to the point of the input it reads (so each op contributes the inverse of its motion, composed in
pipeline order), applied by one bilinear grid_sample with reflection padding. The colour ops make one
per-sample 4x4 matrix acting on (r, g, b, 1). Both are batched with per-sample parameters, no loop over
samples, and differentiable, so G's gradient flows through them.

Resampling: one bilinear sample at the image's own resolution, with no low-pass filter. The official
code pads, upsamples 2x with a wavelet filter, samples and downsamples again, to suppress aliasing in
scale and rotation; here the cost is one grid_sample, and the integer ops (xflip, rotate90, xint) are
exact pixel copies when no other op is drawn for a sample (at power-of-two sizes). The sampling grid is
formed from the matrix by hand, not by F.affine_grid, whose base grid is off by an ulp at some sizes
(which made even the identity inexact). Reflection is about the image's border (the edge pixel is
repeated), grid_sample's reflection mode; the official code pads by reflecting about the edge pixel.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from gankit.config import ADA_OPS

# The official defaults (StyleGAN2-ADA's AugmentPipe).
XINT_MAX = 0.125  # integer translation: up to this fraction of the side, uniform
SCALE_STD = 0.2  # isotropic scaling: log2 normal
ROTATE_MAX = math.pi  # rotation: uniform in [-pi, pi]
ANISO_STD = 0.2  # anisotropic scaling: log2 normal
XFRAC_STD = 0.125  # fractional translation: normal, as a fraction of the side
BRIGHTNESS_STD = 0.2  # brightness: normal, added
CONTRAST_STD = 0.5  # contrast: log2 normal, a factor
HUE_MAX = math.pi  # hue rotation around the luma axis: uniform in [-pi, pi]
SATURATION_STD = 1.0  # saturation: log2 normal, a factor
CUTOUT_SIZE = 0.5  # cutout: a square of this fraction of each side

# The geometric steps in the order they compose; rotate is drawn twice, around the anisotropic scaling.
GEOMETRIC_STEPS = ("xflip", "rotate90", "xint", "scale", "rotate_pre", "aniso", "rotate_post", "xfrac")
COLOR_STEPS = ("brightness", "contrast", "lumaflip", "hue", "saturation")
LUMA_AXIS = (1 / math.sqrt(3),) * 3  # the grey axis of RGB space, around which hue rotates


# ---- matrices -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _luma_matrices(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """On (r, g, b, 1): the projection v v^T onto the grey axis v, the cross-product matrix [v]x, and the
    RGB block's identity; made once per device (a copy from the host at every step could wait for a GPU)."""
    v = torch.tensor([*LUMA_AXIS, 0.0])
    a = LUMA_AXIS[0]
    cross = torch.tensor([[0, -a, a, 0], [a, 0, -a, 0], [-a, a, 0, 0], [0, 0, 0, 0]])
    rgb = torch.diag(torch.tensor([1.0, 1, 1, 0]))
    return tuple(m.to(device) for m in (torch.outer(v, v), cross, rgb))


def _stack(rows: list[list], like: torch.Tensor) -> torch.Tensor:
    """[N, R, C] from rows of [N] tensors and Python numbers."""
    n = like.shape[0]
    # One tensor per distinct constant, not per cell: these small ops, not the resampling, dominate on CPUs.
    constants: dict[float, torch.Tensor] = {}

    def cell(v) -> torch.Tensor:
        if isinstance(v, torch.Tensor):
            return v.to(torch.float32)
        if float(v) not in constants:
            constants[float(v)] = torch.full((n,), float(v), device=like.device)
        return constants[float(v)]

    cells = [cell(v) for row in rows for v in row]
    return torch.stack(cells, dim=-1).view(n, len(rows), len(rows[0]))


def _compose(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for batches of small matrices, as elementwise products: exact where the entries are, and free
    of TF32 or autocast."""
    return (a.unsqueeze(3) * b.unsqueeze(1)).sum(2)


def translation(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    return _stack([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx)


def scaling(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    return _stack([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx)


def rotation(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return _stack([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]], cos)


def sampling_matrix(step: str, values: torch.Tensor) -> torch.Tensor:
    """A geometric step's [N, 3, 3] sampling matrix (output pixel -> input point), the inverse of the motion
    that `values` describes:
    xflip [N] 1 to mirror left-right, 0 not; rotate90 [N] quarter turns 0..3; xint, xfrac [N, 2] shift
    (x, y) in pixels; scale [N] factor (content enlarged); rotate_pre, rotate_post [N] angle in radians;
    aniso [N] factor s (x scaled by s, y by 1/s)."""
    if step == "xflip":
        return scaling(1 - 2 * values.float(), torch.ones_like(values, dtype=torch.float32))
    if step == "rotate90":
        # Exact cosines and sines of the quarter turns (1, 0, -1, 0 and 0, 1, 0, -1), so that the copy is exact.
        turns = values.float().remainder(4)
        even = (turns.remainder(2) == 0).float()
        return rotation(even * (1 - turns), (1 - even) * (2 - turns))
    if step in ("xint", "xfrac"):
        return translation(-values[:, 0], -values[:, 1])
    if step == "scale":
        return scaling(1 / values, 1 / values)
    if step in ("rotate_pre", "rotate_post"):
        return rotation(torch.cos(values), -torch.sin(values))
    if step == "aniso":
        return scaling(1 / values, values)
    raise ValueError(f"unknown geometric step {step!r}")


def color_matrix(step: str, values: torch.Tensor) -> torch.Tensor:
    """A colour step's [N, 4, 4] matrix on (r, g, b, 1):
    brightness [N] added to every channel; contrast [N] factor on every channel (about 0, the middle of
    [-1, 1]); lumaflip [N] 1 to mirror the colour across the plane orthogonal to the grey axis (grey g
    becomes -g, chroma kept), 0 not; hue [N] rotation around the grey axis in radians; saturation [N]
    factor on the colour's distance from the grey axis."""
    values = values.float()
    n, device = values.shape[0], values.device
    eye = torch.eye(4, device=device).expand(n, 4, 4)
    grey, cross, rgb = _luma_matrices(device)
    if step == "brightness":
        return _stack([[1, 0, 0, values], [0, 1, 0, values], [0, 0, 1, values], [0, 0, 0, 1]], values)
    if step == "contrast":
        return _stack([[values, 0, 0, 0], [0, values, 0, 0], [0, 0, values, 0], [0, 0, 0, 1]], values)
    if step == "lumaflip":
        return eye - 2 * grey * values.view(n, 1, 1)  # a Householder reflection
    if step == "hue":
        # Rodrigues' rotation around the unit axis v: cos I + sin [v]x + (1 - cos) v v^T, on the RGB block.
        cos, sin = torch.cos(values).view(n, 1, 1), torch.sin(values).view(n, 1, 1)
        return cos * rgb + sin * cross + (1 - cos) * grey + (eye - rgb)
    if step == "saturation":
        return grey + (eye - grey) * values.view(n, 1, 1)
    raise ValueError(f"unknown colour step {step!r}")


# ---- applying them ------------------------------------------------------------------------------

def resample(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Image i read at matrix[i] @ (x, y, 1) for each output pixel: bilinear, reflection at the borders."""
    n, _, h, w = x.shape
    xs = torch.arange(w, device=x.device, dtype=torch.float32) - (w - 1) / 2
    ys = torch.arange(h, device=x.device, dtype=torch.float32) - (h - 1) / 2
    m = matrix.to(torch.float32).view(n, 3, 3, 1, 1)
    xs, ys = xs.view(1, 1, w), ys.view(1, h, 1)
    src_x = m[:, 0, 0] * xs + m[:, 0, 1] * ys + m[:, 0, 2]  # [N, H, W]
    src_y = m[:, 1, 0] * xs + m[:, 1, 1] * ys + m[:, 1, 2]
    # grid_sample's coordinates (align_corners=False): -1 and 1 are the outer edges of the border pixels.
    grid = torch.stack([src_x * (2 / w), src_y * (2 / h)], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def recolor(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Each pixel's (r, g, b, 1) times image i's matrix. One channel (grey g, read as (g, g, g)): the mean
    of the three output channels, as the official code does, so hue and saturation change nothing."""
    n, c = x.shape[:2]
    m = matrix.to(x.dtype)
    if c == 3:
        # Three products per output channel, elementwise (no matmul: TF32 and autocast stay out of it).
        out = [m[:, i, 3].view(n, 1, 1) + sum(m[:, i, j].view(n, 1, 1) * x[:, j] for j in range(3))
               for i in range(3)]
        return torch.stack(out, dim=1)
    if c == 1:
        mean_row = m[:, :3, :].mean(dim=1)  # [N, 4]
        return x * mean_row[:, :3].sum(1).view(n, 1, 1, 1) + mean_row[:, 3].view(n, 1, 1, 1)
    raise ValueError(f"ADA's colour ops need 1 or 3 channels, not {c}")


def cut_out(x: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Zeroes in image i the square box[i] = (centre x, centre y, side), all as fractions of the image's
    sides: the pixels whose centres lie strictly within side/2 of the centre along both axes."""
    n, _, h, w = x.shape
    cols = (torch.arange(w, device=x.device, dtype=torch.float32) + 0.5) / w
    rows = (torch.arange(h, device=x.device, dtype=torch.float32) + 0.5) / h
    half = box[:, 2:3] / 2
    in_cols = (cols.view(1, w) - box[:, 0:1]).abs() < half  # [N, W]
    in_rows = (rows.view(1, h) - box[:, 1:2]).abs() < half  # [N, H]
    keep = ~(in_rows.view(n, 1, h, 1) & in_cols.view(n, 1, 1, w))
    return x * keep.to(x.dtype)


def augment_images(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The pipeline with given per-sample parameters (from draw_parameters, or chosen by hand in tests):
    the geometric steps present in `params` as one resampling, then the colour steps as one matrix,
    then cutout."""
    n = x.shape[0]
    geometric = [s for s in GEOMETRIC_STEPS if s in params]
    if geometric:
        matrix = torch.eye(3, device=x.device).expand(n, 3, 3)
        for step in geometric:
            matrix = _compose(matrix, sampling_matrix(step, params[step]))
        x = resample(x, matrix)
    colour = [s for s in COLOR_STEPS if s in params]
    if colour:
        matrix = torch.eye(4, device=x.device).expand(n, 4, 4)
        for step in colour:  # later ops act on the result of earlier ones: multiplied from the left
            matrix = _compose(color_matrix(step, params[step]), matrix)
        x = recolor(x, matrix)
    if "cutout" in params:
        x = cut_out(x, params["cutout"])
    return x


# ---- draws --------------------------------------------------------------------------------------

def draw_parameters(ops: Sequence[str], count: int, height: int, width: int, channels: int, p: torch.Tensor,
                    device: torch.device) -> dict[str, torch.Tensor]:
    """Per-sample parameters of the enabled ops for count images, each op on with probability p (a
    device tensor, compared on the device: no synchronization), its identity value where off. Drawn
    from the default generator of `device`, in the pipeline's order; each op's value before its coin.
    rotate is drawn twice (before and after aniso), each with probability 1 - sqrt(1 - p), so that a
    sample is rotated at all with probability p (as the official code does). One channel: hue and
    saturation are skipped (they would change nothing)."""
    enabled = set(ops)

    def gated(value: torch.Tensor, identity: float, probability: torch.Tensor | None = None) -> torch.Tensor:
        """value where a coin with the probability (default p) comes up, identity elsewhere."""
        on = torch.rand(count, device=device) < (p if probability is None else probability)
        return torch.where(on.view(-1, *[1] * (value.dim() - 1)), value, torch.full_like(value, identity))

    def in_pixels(shift: torch.Tensor) -> torch.Tensor:  # [N, 2] fractions of (width, height)
        return torch.stack([shift[:, 0] * width, shift[:, 1] * height], dim=1)

    params = {}
    if "xflip" in enabled:
        params["xflip"] = gated(torch.floor(torch.rand(count, device=device) * 2), 0.0)
    if "rotate90" in enabled:
        params["rotate90"] = gated(torch.floor(torch.rand(count, device=device) * 4), 0.0)
    if "xint" in enabled:
        shift = (torch.rand(count, 2, device=device) * 2 - 1) * XINT_MAX
        params["xint"] = gated(torch.round(in_pixels(shift)), 0.0)
    if "scale" in enabled:
        params["scale"] = gated(torch.exp2(torch.randn(count, device=device) * SCALE_STD), 1.0)
    p_rotate = 1 - torch.sqrt((1 - p).clamp(0, 1))
    if "rotate" in enabled:
        params["rotate_pre"] = gated((torch.rand(count, device=device) * 2 - 1) * ROTATE_MAX, 0.0, p_rotate)
    if "aniso" in enabled:
        params["aniso"] = gated(torch.exp2(torch.randn(count, device=device) * ANISO_STD), 1.0)
    if "rotate" in enabled:
        params["rotate_post"] = gated((torch.rand(count, device=device) * 2 - 1) * ROTATE_MAX, 0.0, p_rotate)
    if "xfrac" in enabled:
        params["xfrac"] = gated(in_pixels(torch.randn(count, 2, device=device) * XFRAC_STD), 0.0)
    if "brightness" in enabled:
        params["brightness"] = gated(torch.randn(count, device=device) * BRIGHTNESS_STD, 0.0)
    if "contrast" in enabled:
        params["contrast"] = gated(torch.exp2(torch.randn(count, device=device) * CONTRAST_STD), 1.0)
    if "lumaflip" in enabled:
        params["lumaflip"] = gated(torch.floor(torch.rand(count, device=device) * 2), 0.0)
    if "hue" in enabled and channels > 1:
        params["hue"] = gated((torch.rand(count, device=device) * 2 - 1) * HUE_MAX, 0.0)
    if "saturation" in enabled and channels > 1:
        params["saturation"] = gated(torch.exp2(torch.randn(count, device=device) * SATURATION_STD), 1.0)
    if "cutout" in enabled:
        side = (torch.rand(count, device=device) < p).float() * CUTOUT_SIZE
        params["cutout"] = torch.cat([torch.rand(count, 2, device=device), side.view(-1, 1)], dim=1)
    return params


# ---- the adaptive augmentation ------------------------------------------------------------------

class AdaptiveAugment:
    """The pipeline with probability p, and p's adaptation (the state saved in the checkpoint).

    The losses call it on every image D sees; discriminator_loss hands it D's raw scores on the
    (augmented) reals (`observe_real_scores`), and the loop calls `end_generator_step` after each
    generator update. Every `interval` steps r_t, the mean of sign(D(real)) over the interval, moves p
    by sign(r_t - target) * (real images of the interval) / speed_images, clamped to [0, 1]
    (target None: p stays, r_t is still measured for the logs).

    Under DDP, draws are for the global batch and `share` keeps this rank's part (as DiffAugment does);
    `average` maps a tensor to its mean over the ranks, so r_t and hence p are the same on every rank."""

    def __init__(self, ops: Sequence[str], p: float = 0.0, target: float | None = 0.6,
                 speed_images: int = 500000, interval: int = 4,
                 share: Callable[[torch.Tensor], torch.Tensor] | None = None, world_size: int = 1,
                 average: Callable[[torch.Tensor], torch.Tensor] | None = None, device: torch.device | str = "cpu"):
        unknown = [op for op in ops if op not in ADA_OPS]
        if unknown:
            raise ValueError(f"unknown ADA ops {unknown}; choose from {', '.join(ADA_OPS)}")
        self.ops = list(ops)
        self.initial_p, self.target, self.speed_images, self.interval = float(p), target, speed_images, interval
        self.share = share or (lambda values: values)
        self.world_size = world_size
        self.average = average or (lambda values: values)
        self.device = torch.device(device)
        # A fixed p of 0 changes nothing: skip the work (the official code builds no pipeline then).
        self.active = target is not None or p > 0
        self.reset()

    def reset(self) -> None:
        """The state a run starts with: p from the config, empty accumulators."""
        # p lives on the device, so that neither the draws nor its update synchronize with it.
        self.p = torch.tensor(self.initial_p, dtype=torch.float32, device=self.device)
        self.sign_sum = torch.zeros((), dtype=torch.float32, device=self.device)  # sum of sign(D(real))...
        self.sign_count = 0  # ...over this many of this rank's reals, since the last adjustment
        self.rt: torch.Tensor | None = None  # the last interval's r_t, for the logs

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        n, c, h, w = x.shape
        channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        drawn = draw_parameters(self.ops, n * self.world_size, h, w, c, self.p.to(x.device), x.device)
        # Resampling and colour matrices in float32 whatever the autocast (bf16 fakes come back as bf16).
        with torch.autocast(x.device.type, enabled=False):
            out = augment_images(x.float(), {k: self.share(v) for k, v in drawn.items()}).to(x.dtype)
        return out.contiguous(memory_format=torch.channels_last) if channels_last else out

    def observe_real_scores(self, scores: torch.Tensor) -> None:
        """Adds the signs of D's raw scores on a batch of (augmented) reals to the interval's r_t."""
        signs = torch.nan_to_num(torch.sign(scores.detach().float()), nan=0.0)  # an fp16 overflow: counts as 0
        self.sign_sum = self.sign_sum.to(signs.device) + signs.sum()
        self.sign_count += scores.numel()

    def end_generator_step(self, step: int) -> None:
        """After generator step `step` (1-based): adjusts p at the end of every interval."""
        if step % self.interval == 0 and self.sign_count:
            self.adjust()

    def adjust(self) -> None:
        """r_t over the interval (all ranks), p moved towards the target, the accumulators emptied."""
        # Every rank holds an equal share: the mean of the ranks' sums over one share's count is r_t.
        rt = self.average(self.sign_sum) / self.sign_count
        if self.target is not None:
            images = self.sign_count * self.world_size
            self.p = (self.p.to(rt.device) + torch.sign(rt - self.target) * (images / self.speed_images)).clamp(0, 1)
        self.rt = rt
        self.sign_sum = torch.zeros_like(self.sign_sum)
        self.sign_count = 0

    def share_accumulators(self) -> None:
        """Before a checkpoint (called on every rank): each rank's sum becomes the mean over the ranks, which
        leaves r_t unchanged and lets one rank's saved state stand for all of them on resume."""
        self.sign_sum = self.average(self.sign_sum)

    def log_values(self) -> dict[str, torch.Tensor]:
        """augment_p and (after the first interval) ada_rt, as device tensors for stats.jsonl."""
        values = {"augment_p": self.p.clone()}
        if self.rt is not None:
            values["ada_rt"] = self.rt.clone()
        return values

    def state_dict(self) -> dict:
        return {"p": self.p.detach().cpu().clone(), "sign_sum": self.sign_sum.detach().cpu().clone(),
                "sign_count": self.sign_count, "rt": None if self.rt is None else self.rt.detach().cpu().clone()}

    def load_state_dict(self, state: dict | None) -> None:
        """None (a checkpoint without ADA's state): p from the config, empty accumulators."""
        self.reset()
        if not state:
            return
        self.p = state["p"].float().to(self.device)
        self.sign_sum = state["sign_sum"].float().to(self.device)
        self.sign_count = int(state["sign_count"])
        self.rt = None if state.get("rt") is None else state["rt"].float().to(self.device)
