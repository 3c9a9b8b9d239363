"""Latent interpolation: lerp and slerp rows, the 2-D latent grid, and a looping GIF; for class-conditional
generators also the path between two classes through the label embeddings, at fixed latents.

Latents are drawn on the CPU from the seed (as `gankit.sampling.generate` does), so a seed gives the
same pictures on every device. The pure functions (`lerp`, `slerp`, `latent_grid`, `loop_latents`,
`class_path_weights`) work on tensors only and know nothing about generators.

Conditional generators: lerp/slerp rows take the --class classes in turn (default every class, row r
class r mod K); grid and GIF stay in one class (--class, default class 0); --mode classes keeps each row's
latent and moves the class weights from onehot(--from) to onehot(--to).

StyleGAN2 generators (docs/stylegan2.md): lerp and grid move in W by default (straight lines between the
endpoints' w = mapping(z), then the synthesis network), slerp in Z; `--space z|w` chooses. --mode style-mix
draws the paper's style-mixing figure. --truncation PSI truncates every w (in Z modes each image's, in W
modes the endpoints', which is the same for straight lines since truncation is affine).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from gankit.errors import GankitError

MAX_STEPS = 64  # images per row (or K of a KxK grid): beyond this a picture stops being readable
MAX_PAIRS = 64
SPACES = ("z", "w")
# Style groups by the resolution the styles act at (the StyleGAN paper's figure 3): coarse 4x4-8x8, middle
# 16x16-32x32, fine 64x64 and up; a model of 32x32 or less has no fine styles, and there fine is the styles
# of its last resolution.
STYLE_GROUPS = {"coarse": (4, 8), "middle": (16, 32), "fine": (64, None)}
GIF_MIN_SIDE = 128  # GIF frames are enlarged (nearest neighbour) to at least this many pixels
GIF_FRAME_MS = 80


def _as_weights(t, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(t, dtype=torch.float64, device=like.device)


def _combine(z0: torch.Tensor, z1: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, t_ndim: int):
    """w0 * z0 + w1 * z1 (weights per latent, without the D axis); 1-D t adds an axis of length T
    just before the last one."""
    z0, z1 = z0.double(), z1.double()
    if t_ndim == 1:
        z0, z1 = z0.unsqueeze(-2), z1.unsqueeze(-2)
    return w0.unsqueeze(-1) * z0 + w1.unsqueeze(-1) * z1


def lerp(z0: torch.Tensor, z1: torch.Tensor, t) -> torch.Tensor:
    """Straight line z0 + t (z1 - z0); t a number or a 1-D tensor of T weights (adds a T axis before the last)."""
    t = _as_weights(t, z0)
    return _combine(z0, z1, 1 - t, t, t.ndim).to(z0.dtype)


def slerp(z0: torch.Tensor, z1: torch.Tensor, t) -> torch.Tensor:
    """Spherical interpolation along the great circle through z0 and z1 (Shoemake 1985, White 2016).

    Latents [..., D]; t a number or a 1-D tensor of T weights (adds a T axis before the last).
    For equal-norm latents every point keeps that norm; (nearly) parallel latents fall back to lerp,
    where the great circle is not defined or numerically unstable."""
    t = _as_weights(t, z0)
    a, b = z0.double(), z1.double()
    cos_angle = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-300)
    angle = torch.arccos(cos_angle.clamp(-1.0, 1.0))
    sin_angle = torch.sin(angle)
    if t.ndim == 1:
        angle, sin_angle = angle.unsqueeze(-1), sin_angle.unsqueeze(-1)
    degenerate = sin_angle.abs() < 1e-6
    safe_sin = torch.where(degenerate, torch.ones_like(sin_angle), sin_angle)
    w0 = torch.where(degenerate, 1 - t, torch.sin((1 - t) * angle) / safe_sin)
    w1 = torch.where(degenerate, t, torch.sin(t * angle) / safe_sin)
    return _combine(z0, z1, w0, w1, t.ndim).to(z0.dtype)


def latent_grid(z0: torch.Tensor, z1: torch.Tensor, k: int) -> torch.Tensor:
    """KxK latents [K (y), K (x), D] between two corners: the first D//2 coordinates go from z0 to z1
    along x, the others along y. So [0, 0] is z0, [K-1, K-1] is z1, and the top-right corner holds
    z1's first half with z0's second half."""
    if z0.ndim != 1 or z0.shape != z1.shape:
        raise ValueError("latent_grid takes two latents of the same shape [D]")
    dim = z0.shape[0]
    if dim < 2:
        raise GankitError(f"the latent grid splits z into two halves; this generator's z_dim is {dim}")
    half = dim // 2
    t = torch.linspace(0.0, 1.0, k, dtype=torch.float64)
    along_x = lerp(z0[:half], z1[:half], t)  # [K, half]
    along_y = lerp(z0[half:], z1[half:], t)  # [K, D - half]
    grid = torch.empty(k, k, dim, dtype=z0.dtype)
    grid[:, :, :half] = along_x.unsqueeze(0)
    grid[:, :, half:] = along_y.unsqueeze(1)
    return grid


def loop_latents(keys: torch.Tensor, frames_per_segment: int, spherical: bool = True) -> torch.Tensor:
    """A closed path through the key latents [N, D], back to the first: N * frames_per_segment latents.

    Each segment starts at its key and stops one step before the next key, so the path repeats
    seamlessly when played in a loop."""
    t = torch.linspace(0.0, 1.0, frames_per_segment + 1, dtype=torch.float64)[:-1]
    path = slerp if spherical else lerp
    segments = [path(keys[i], keys[(i + 1) % len(keys)], t) for i in range(len(keys))]
    return torch.cat(segments)


def class_path_weights(from_class: int, to_class: int, num_classes: int, steps: int) -> torch.Tensor:
    """Class weights [steps, K]: (1 - t) onehot(from) + t onehot(to) for t from 0 to 1; the ends are exactly
    the two one-hot rows, so the first and last images are the two classes themselves."""
    t = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    weights = torch.zeros(steps, num_classes, dtype=torch.float64)
    weights[:, from_class] += 1 - t
    weights[:, to_class] += t
    return weights.float()


def seeded_latents(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Standard normal latents drawn on the CPU from seed (device-independent)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def interpolation_latents(mode: str, z_dim: int, steps: int, pairs: int, seed: int) -> torch.Tensor:
    """The latents behind a picture, laid out [rows, columns, z_dim]: `pairs` rows of `steps` for
    lerp/slerp, a steps x steps sweep for grid, `pairs` latents each repeated `steps` times for classes."""
    if mode == "classes":
        return seeded_latents((pairs, z_dim), seed)[:, None].expand(pairs, steps, z_dim)
    if mode == "grid":
        corners = seeded_latents((2, z_dim), seed)
        return latent_grid(corners[0], corners[1], steps)
    ends = seeded_latents((pairs, 2, z_dim), seed)
    path = slerp if mode == "slerp" else lerp
    return path(ends[:, 0], ends[:, 1], torch.linspace(0.0, 1.0, steps, dtype=torch.float64))


def interpolation_labels(mode: str, rows: int, columns: int, classes: list[int], num_classes: int,
                         from_class: int | None = None, to_class: int | None = None) -> torch.Tensor:
    """The labels of a picture's rows * columns images, row by row: class weights [N, K] along the path from
    `from_class` to `to_class` (classes), row r in class classes[r % len(classes)] (lerp, slerp), or all
    classes[0] (grid)."""
    if mode == "classes":
        return class_path_weights(from_class, to_class, num_classes, columns).repeat(rows, 1)
    if mode == "grid":
        return torch.full((rows * columns,), classes[0])
    return torch.tensor([classes[r % len(classes)] for r in range(rows)]).repeat_interleave(columns)


def style_layers(resolutions: list[int], group: str) -> list[int]:
    """Indices of the styles of a group (STYLE_GROUPS) among a generator's layer_resolutions(); never empty
    for a model of 16x16 or more."""
    low, high = STYLE_GROUPS[group]
    final = max(resolutions)
    if group == "fine" and final < low:
        low = final
    return [i for i, res in enumerate(resolutions) if res >= low and (high is None or res <= high)]


def mixed_styles(row_ws: torch.Tensor, column_ws: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """[R, C, num_ws, w_dim]: cell (r, c) holds row source r's styles with the listed layers from column source c."""
    cells = row_ws[:, None].repeat(1, len(column_ws), 1, 1)
    cells[:, :, layers] = column_ws[None, :, layers]
    return cells


def style_mix_images(generator, rows: int, columns: int, group: str, seed: int, device: torch.device,
                     psi: float | None = None, label: int | None = None) -> torch.Tensor:
    """The style-mixing figure's (rows + 1) x (columns + 1) images, row by row: a grey corner, the column
    sources along the top, the row sources down the left, and mixed_styles(...) in the cells. The sources'
    latents are seeded_latents((columns + rows, z_dim), seed): the column sources first. label: a conditional
    generator's class for every source (None: the classes in turn, map_latents)."""
    from gankit.sampling import map_latents, synthesize

    ws = map_latents(generator, seeded_latents((columns + rows, generator.z_dim), seed), device, psi, label=label)
    column_ws, row_ws = ws[:columns], ws[columns:]
    layers = style_layers(generator.layer_resolutions(), group)
    column_images = synthesize(generator, column_ws, device)
    row_images = synthesize(generator, row_ws, device)
    cells = synthesize(generator, mixed_styles(row_ws, column_ws, layers).flatten(0, 1), device)
    picture = torch.zeros(rows + 1, columns + 1, *column_images.shape[1:])  # 0 is mid-grey in [-1, 1]
    picture[0, 1:] = column_images
    picture[1:, 0] = row_images
    picture[1:, 1:] = cells.unflatten(0, (rows, columns))
    return picture.flatten(0, 1)


def interpolation_ws(generator, mode: str, steps: int, pairs: int, seed: int, device: torch.device,
                     psi: float | None = None, label: int | None = None) -> torch.Tensor:
    """The w of each image of a W-space picture, [rows, columns, w_dim]: the latents of
    interpolation_latents' endpoints (the same seeds), mapped to W (truncated at psi), then lerp rows or the
    grid sweep (first half of w along x, second half along y). label: as for style_mix_images."""
    from gankit.sampling import map_latents

    z_dim = generator.z_dim
    if mode == "grid":
        corners = map_latents(generator, seeded_latents((2, z_dim), seed), device, psi, label=label)[:, 0]
        return latent_grid(corners[0], corners[1], steps)
    ends = seeded_latents((pairs, 2, z_dim), seed).reshape(pairs * 2, z_dim)
    ends_w = map_latents(generator, ends, device, psi, label=label)[:, 0].reshape(pairs, 2, -1)
    return lerp(ends_w[:, 0], ends_w[:, 1], torch.linspace(0.0, 1.0, steps, dtype=torch.float64))


def save_interpolation_png(generator, z_dim: int, mode: str, steps: int, pairs: int, seed: int,
                           device: torch.device, out: Path, labels: torch.Tensor | None = None) -> Path:
    """Renders interpolation_latents(...) and saves it as one grid PNG, one row per pair (or grid row);
    labels: one per image, row by row (interpolation_labels), for a conditional generator."""
    from gankit.viz.grid import save_grid, to_uint8

    latents = interpolation_latents(mode, z_dim, steps, pairs, seed)
    rows, columns = latents.shape[:2]
    from gankit.sampling import render

    images = render(generator, latents.reshape(rows * columns, z_dim), device, labels)
    return save_grid(to_uint8(images), Path(out), nrow=columns)


def save_loop_gif(generator, z_dim: int, keys: int, frames_per_segment: int, seed: int, spherical: bool,
                  device: torch.device, out: Path, label: int | None = None, w_space: bool = False,
                  psi: float | None = None) -> Path:
    """An animated GIF (played in a loop) along a closed path through `keys` seeded latents; label: the
    class of every frame, for a conditional generator. w_space (StyleGAN2): straight segments between the
    keys' w (truncated at psi) instead of a path in Z."""
    from gankit.files import atomic_write
    from gankit.sampling import map_latents, render, synthesize
    from gankit.viz.grid import grid_image, to_uint8

    if w_space:
        keys_w = map_latents(generator, seeded_latents((keys, z_dim), seed), device, psi, label=label)[:, 0]
        images = to_uint8(synthesize(generator, loop_latents(keys_w, frames_per_segment, spherical=False), device))
    else:
        latents = loop_latents(seeded_latents((keys, z_dim), seed), frames_per_segment, spherical)
        labels = None if label is None else torch.full((len(latents),), label)
        images = to_uint8(render(generator, latents, device, labels))
    scale = max(1, math.ceil(GIF_MIN_SIDE / images.shape[-1]))
    frames = [grid_image(image[None], nrow=1, padding=0) for image in images]
    if scale > 1:
        from PIL import Image

        frames = [f.resize((f.width * scale, f.height * scale), Image.Resampling.NEAREST) for f in frames]
    out = Path(out)
    atomic_write(out, lambda tmp: frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                                                 duration=GIF_FRAME_MS, loop=0))
    return out


def _check_class_options(args, kind: str) -> None:
    """The class options that contradict each other or the mode, refused before any loading."""
    from_to = args.from_class is not None or args.to_class is not None
    if args.mode == "classes":
        if args.from_class is None or args.to_class is None:
            raise GankitError("--mode classes interpolates between two classes: give --from CLASS and --to CLASS")
        if args.classes:
            raise GankitError("--mode classes takes --from and --to, not --class")
        if kind == ".gif":
            raise GankitError("--mode classes makes a still picture: use --out FILE.png")
    elif from_to:
        raise GankitError("--from and --to go with --mode classes")
    if len(args.classes) > 1 and (args.mode == "grid" or kind == ".gif"):
        what = "the latent grid" if args.mode == "grid" else "a GIF"
        raise GankitError(f"{what} stays within one class: give one --class")


def _check_stylegan2_options(args, kind: str) -> None:
    """--space, --styles, --rows/--cols and --mode style-mix: the combinations refused before any loading."""
    from gankit.sampling import check_truncation

    check_truncation(args.truncation)
    if args.space is not None and args.mode not in ("lerp", "slerp", "grid"):
        raise GankitError(f"--space goes with --mode lerp, slerp or grid, not {args.mode}")
    if args.space == "w" and args.mode == "slerp":
        raise GankitError("--mode slerp moves along a great circle in Z; for W give --mode lerp (straight lines "
                          "in W, the default for StyleGAN2)")
    if args.mode != "style-mix":
        for option, value in (("--styles", args.styles), ("--rows", args.rows), ("--cols", args.cols)):
            if value is not None:
                raise GankitError(f"{option} goes with --mode style-mix")
        return
    if kind == ".gif":
        raise GankitError("--mode style-mix makes a still picture: use --out FILE.png")
    for option, value in (("--rows", args.rows), ("--cols", args.cols)):
        if value is not None and not 1 <= value <= MAX_PAIRS:
            raise GankitError(f"{option} {value}: give 1 to {MAX_PAIRS}")


def _space(args, stylegan2: bool) -> str:
    """z or w: --space, else w for lerp and grid on StyleGAN2, z otherwise."""
    if args.space is not None:
        return args.space
    return "w" if stylegan2 and args.mode in ("lerp", "grid") else "z"


def interpolate_command(args) -> int:
    """`gankit interpolate`: writes a lerp/slerp/grid/classes/style-mix PNG or a looping GIF and prints its path."""
    from gankit.device import resolve_device
    from gankit.sampling import (class_names_of, is_stylegan2, load_for_sampling, not_conditional, require_stylegan2,
                                 resolve_class, resolve_classes, synthesize, with_truncation)
    from gankit.viz.grid import save_grid, to_uint8

    if not 2 <= args.steps <= MAX_STEPS:
        raise GankitError(f"--steps {args.steps}: give 2 to {MAX_STEPS} (the endpoints count as steps)")
    if not 1 <= args.pairs <= MAX_PAIRS:
        raise GankitError(f"--pairs {args.pairs}: give 1 to {MAX_PAIRS}")
    out = Path(args.out or f"interpolate_{args.mode}.png")
    kind = out.suffix.lower()
    if kind not in (".png", ".gif"):
        raise GankitError(f"--out {out}: write a .png picture or a .gif animation")
    _check_stylegan2_options(args, kind)
    if kind == ".gif" and args.mode == "grid":
        raise GankitError("--mode grid makes a still picture: use --out FILE.png, or --mode slerp/lerp for a GIF")
    if kind == ".gif" and args.pairs < 2:
        raise GankitError("a GIF loops through --pairs seeded latents: give --pairs 2 or more")
    _check_class_options(args, kind)

    device = resolve_device(args.device)
    generator, meta = load_for_sampling(args.source, args.no_ema, device)
    if meta["data"].is_toy:
        raise GankitError(
            f"{args.source} generates 2-D points ({meta['data'].source}), not images: interpolation pictures "
            "need an image model; plot toy samples with `gankit sample RUN --out plot.png`"
        )
    if args.mode == "style-mix":
        require_stylegan2(generator, "--mode style-mix")
    if args.space == "w":
        require_stylegan2(generator, "--space w")
    names = class_names_of(generator, meta)
    if names is None and args.mode == "classes":
        raise not_conditional(args.source, "--mode classes")
    chosen = resolve_classes(args.classes, names, args.source)
    z_dim = meta["model"].z_dim
    psi = args.truncation
    in_w = args.mode == "style-mix" or _space(args, is_stylegan2(generator)) == "w"
    if not in_w:  # each image's w is truncated; in W the endpoints' ws are (map_latents)
        generator = with_truncation(generator, psi)
    w_label = None  # in W a conditional StyleGAN2 maps every latent with the one --class given
    if in_w and chosen:
        if len(chosen) > 1:
            raise GankitError("in W every latent is mapped with one class: give one --class")
        w_label = chosen[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.mode == "style-mix":
        rows, columns = args.rows or args.pairs, args.cols or args.pairs
        images = style_mix_images(generator, rows, columns, args.styles or "coarse", args.seed, device, psi, w_label)
        path = save_grid(to_uint8(images), out, nrow=columns + 1)
    elif kind == ".gif":
        label = None if names is None else (chosen[0] if chosen else None if in_w else 0)
        path = save_loop_gif(generator, z_dim, args.pairs, args.steps, args.seed, args.mode == "slerp", device, out,
                             label, w_space=in_w, psi=psi)
    elif in_w:
        ws = interpolation_ws(generator, args.mode, args.steps, args.pairs, args.seed, device, psi, w_label)
        path = save_grid(to_uint8(synthesize(generator, ws.flatten(0, 1), device)), out, nrow=ws.shape[1])
    else:
        labels = None
        if names is not None:
            from_class = to_class = None
            if args.mode == "classes":
                from_class = resolve_class(args.from_class, names, args.source, "--from")
                to_class = resolve_class(args.to_class, names, args.source, "--to")
                if from_class == to_class:
                    raise GankitError(f"--from and --to name the same class ({names[from_class]}): give two classes")
            rows = args.steps if args.mode == "grid" else args.pairs
            labels = interpolation_labels(args.mode, rows, args.steps, chosen or list(range(len(names))), len(names),
                                          from_class, to_class)
        path = save_interpolation_png(generator, z_dim, args.mode, args.steps, args.pairs, args.seed, device, out,
                                      labels)
    print(path)
    return 0
