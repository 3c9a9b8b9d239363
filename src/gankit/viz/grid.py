"""Image grids and toy scatter plots."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats to uint8 exactly as saved files hold them: x * 127.5 + 128, clamped, truncated."""
    return (images.detach().float() * 127.5 + 128).clamp_(0, 255).to(torch.uint8)


def tile(images: torch.Tensor, nrow: int, padding: int = 2) -> torch.Tensor:
    """[N, C, H, W] as one [C, H', W'] picture, torchvision's make_grid layout with pad_value 0: rows of
    `nrow` images (the last one short), `padding` pixels of 0 around and between them; one image is itself.
    Written here because importing torchvision (torch._dynamo with it) costs seconds at every start-up."""
    count, channels, height, width = images.shape
    if count == 1:
        return images[0]
    columns = min(nrow, count)
    rows = math.ceil(count / columns)
    cell_h, cell_w = height + padding, width + padding
    grid = images.new_zeros(channels, rows * cell_h + padding, columns * cell_w + padding)
    for k in range(count):
        top, left = (k // columns) * cell_h + padding, (k % columns) * cell_w + padding
        grid[:, top:top + height, left:left + width] = images[k]
    return grid


def grid_image(images_uint8: torch.Tensor, nrow: int | None = None, padding: int = 2) -> Image.Image:
    """A PIL image of a uint8 batch [N, C, H, W] laid out in a near-square grid."""
    nrow = nrow or max(1, math.ceil(math.sqrt(len(images_uint8))))
    array = tile(images_uint8.cpu(), nrow, padding).permute(1, 2, 0).numpy()
    if images_uint8.shape[1] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array)


def save_grid(images_uint8: torch.Tensor, path: Path, nrow: int | None = None) -> Path:
    from gankit.files import atomic_write

    image = grid_image(images_uint8, nrow)
    atomic_write(Path(path), lambda tmp: image.save(tmp, format="PNG"))
    return Path(path)


MAX_LEGEND_CLASSES = 10  # beyond this a legend of classes hides the plot


def save_scatter(points: torch.Tensor, path: Path, source: str | None = None, title: str = "",
                 labels: torch.Tensor | None = None, class_names: list[str] | None = None) -> Path:
    """Scatter plot of 2-D points; for mixture sources the true modes (and 3-std circles) are drawn.
    labels (class indices [N], with class_names): points coloured by the class they were asked for."""
    # Figure, not pyplot: no process-wide backend or figure registry.
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    from gankit.files import atomic_write

    fig = Figure(figsize=(5, 5), dpi=120)
    ax = fig.subplots()
    pts = points.detach().float().cpu().numpy()
    if labels is None:
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4, color="tab:blue", label="samples")
    else:
        _scatter_by_class(ax, pts, labels.cpu().numpy(), class_names)
    if source in ("toy-8gaussians", "toy-25gaussians"):
        from gankit.data.toy import mixture_modes

        centres, std = mixture_modes(source)
        ax.scatter(centres[:, 0], centres[:, 1], s=40, marker="x", color="tab:red", label="true modes")
        for c in centres.tolist():
            ax.add_patch(Circle(c, 3 * std, fill=False, color="tab:red", lw=0.6))
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
    return Path(path)


def _scatter_by_class(ax, pts, labels, class_names: list[str] | None) -> None:
    """One colour per class (a cyclic map, so that 25 classes stay distinguishable); a legend for few classes."""
    from matplotlib import colormaps

    count = len(class_names) if class_names else int(labels.max()) + 1
    cmap = colormaps["tab10" if count <= 10 else "hsv"]
    present = sorted(set(labels.tolist()))
    for k in present:
        colour = cmap(k % 10) if count <= 10 else cmap(k / count)
        name = class_names[k] if class_names else str(k)
        mask = labels == k
        ax.scatter(pts[mask, 0], pts[mask, 1], s=2, alpha=0.5, color=colour,
                   label=f"class {name}" if len(present) <= MAX_LEGEND_CLASSES else None)
    if len(present) > MAX_LEGEND_CLASSES:
        ax.scatter([], [], s=2, color="gray", label=f"samples, coloured by class ({len(present)} classes)")
