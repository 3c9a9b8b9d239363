"""CelebA's aligned-and-cropped release (img_align_celeba: 178x218 JPEGs) and its two usual crops.

pgan: the Progressive GAN crop, a 128x128 box centred at column 89, row 121, i.e. rows 57..184 and
      columns 25..152 (the array slice [121-64 : 121+64, 89-64 : 89+64]); smaller sizes are the
      2x2 box-filter pyramid of that crop, rounded to nearest as the PGAN dataset tool does.
dcgan: the DCGAN tutorials' crop: the shorter side resized to the size, then the centre square."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from gankit.data.images import center_crop_resize
from gankit.errors import GankitError
from gankit.prepare.folder import FileSource, folder_source

ALIGNED_SIZE = (178, 218)  # width, height of every img_align_celeba image
PGAN_CENTRE = (89, 121)  # (column, row) of the crop centre
PGAN_BOX = 128


def pgan_crop(image: Image.Image, size: int) -> Image.Image:
    """The 128x128 PGAN box of an aligned CelebA image, reduced to size x size."""
    if image.size != ALIGNED_SIZE:
        raise ValueError(f"is {image.size[0]}x{image.size[1]}, not the 178x218 of img_align_celeba")
    left, top = PGAN_CENTRE[0] - PGAN_BOX // 2, PGAN_CENTRE[1] - PGAN_BOX // 2
    box = image.crop((left, top, left + PGAN_BOX, top + PGAN_BOX))
    if size == PGAN_BOX:
        return box
    factor = PGAN_BOX // size
    if size < PGAN_BOX and PGAN_BOX % size == 0 and factor & (factor - 1) == 0:
        # The PGAN pyramid halves by averaging 2x2 blocks in float and rounds each level once; for
        # a power-of-two factor that equals the mean over factor x factor blocks.
        pixels = np.asarray(box, dtype=np.float64)
        blocks = pixels.reshape(size, factor, size, factor, -1).mean(axis=(1, 3))
        reduced = np.rint(blocks).clip(0, 255).astype(np.uint8)
        return Image.fromarray(reduced[:, :, 0] if image.mode == "L" else reduced, image.mode)
    return box.resize((size, size), Image.Resampling.LANCZOS)


CROPS = {"pgan": pgan_crop, "dcgan": center_crop_resize}


def celeba_source(src: str | Path) -> FileSource:
    """The images of img_align_celeba: SRC is that folder, its parent, or img_align_celeba.zip."""
    src = Path(src)
    if src.is_dir() and (src / "img_align_celeba").is_dir():
        src = src / "img_align_celeba"
    if not src.exists():
        raise GankitError(f"SRC {src} does not exist: pass the img_align_celeba folder or img_align_celeba.zip")
    return folder_source(src)
