"""Images per second delivered by each data source at 64x64, batch 64, as training-ready float batches
in [-1, 1], printed as ratios against the tutorials' image-folder path and against what one DCGAN-64
training step consumes on this machine.

    python benchmarks/data_speed.py                # a synthetic CelebA-like folder of 2,048 JPEGs
    python benchmarks/data_speed.py --folder DIR   # your own folder of images (kept untouched)

Sources:
  packed, in memory     `gankit prepare` output loaded as one uint8 tensor (data.source: packed)
  packed, memory-mapped the same file memory-mapped; "cold" first drops it from the page cache
  zip of PNGs           StyleGAN's dataset format, decoded per sample by a DataLoader with 2 workers
  image folder          torchvision ImageFolder + Resize(64) + CenterCrop(64) + ToTensor + Normalize,
                        DataLoader with 2 workers and shuffling: the PyTorch DCGAN tutorial's loader
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SIZE, BATCH = 64, 64


def synthetic_folder(root: Path, count: int) -> Path:
    """CelebA-sized (178x218) JPEGs with smooth random content, in one class subfolder for ImageFolder."""
    folder = root / "faces"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(0)
    y, x = np.mgrid[0:218, 0:178].astype(np.float32)
    for i in range(count):
        f = rng.uniform(3, 12, size=6)
        pixels = np.stack([127 + 120 * np.sin(x / f[c] + i) * np.cos(y / f[c + 3]) for c in range(3)], -1)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)
    return root


def to_training_batch(batch: torch.Tensor) -> torch.Tensor:
    return batch.float().div_(127.5).sub_(1.0)  # what the training loop does with a uint8 batch


def time_batches(next_batch, batches: int, warmup: int = 2) -> float:
    """Images per second over `batches` batches after `warmup` untimed ones."""
    for _ in range(warmup):
        next_batch()
    start = time.perf_counter()
    for _ in range(batches):
        out = next_batch()
        assert out.shape == (BATCH, 3, SIZE, SIZE) and out.dtype == torch.float32
    return batches * BATCH / (time.perf_counter() - start)


def packed_speed(dest: Path, stream: bool, batches: int, cold: bool = False) -> float:
    from gankit.data.batches import ImageBatches
    from gankit.data.packed import IMAGES_FILE, load_packed

    if cold:
        # Ask the kernel to forget the file's cached pages, so the first reads come from the disk.
        fd = os.open(dest / IMAGES_FILE, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    images = load_packed(dest, SIZE, 3, stream=stream)
    stream_of_batches = ImageBatches(images, BATCH, seed=0)
    return time_batches(lambda: to_training_batch(stream_of_batches.next()), batches, warmup=0 if cold else 2)


class ZipOfPNGs(torch.utils.data.Dataset):
    """StyleGAN-style dataset zip: one PNG per image at the final size, decoded per sample."""

    def __init__(self, path: Path):
        self.path = path
        self.names = sorted(zipfile.ZipFile(path).namelist())
        self.archive = None

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index):
        if self.archive is None:  # opened per worker process
            self.archive = zipfile.ZipFile(self.path)
        with Image.open(io.BytesIO(self.archive.read(self.names[index]))) as image:
            array = np.asarray(image.convert("RGB"))
        return torch.from_numpy(array.transpose(2, 0, 1).copy())


def loader_speed(dataset, batches: int, uint8: bool) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=2, drop_last=True,
                                         persistent_workers=True)
    iterator = iter(loader)

    def next_batch():
        nonlocal iterator
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        batch = batch[0] if isinstance(batch, (list, tuple)) else batch
        return to_training_batch(batch) if uint8 else batch

    return time_batches(next_batch, batches)


def folder_speed(root: Path, batches: int) -> float:
    import torchvision.datasets as dset
    import torchvision.transforms as transforms

    dataset = dset.ImageFolder(str(root), transform=transforms.Compose([
        transforms.Resize(SIZE), transforms.CenterCrop(SIZE), transforms.ToTensor(),
        transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ]))
    return loader_speed(dataset, batches, uint8=False)


def zip_speed(dest: Path, work: Path, batches: int) -> float:
    from gankit.data.packed import load_packed

    archive = work / "pngs.zip"
    images = load_packed(dest, SIZE, 3).numpy()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as z:
        for i, image in enumerate(images):
            buffer = io.BytesIO()
            Image.fromarray(image.transpose(1, 2, 0)).save(buffer, format="PNG", compress_level=6)
            z.writestr(f"{i:08d}.png", buffer.getvalue())
    return loader_speed(ZipOfPNGs(archive), batches, uint8=True)


def dcgan_step_speed(steps: int) -> float:
    """Images per second consumed by non-saturating DCGAN-64 steps (G and D width 64, Adam), batch 64."""
    import torch.nn.functional as F

    from gankit.config import DataConfig, ModelConfig
    from gankit.models import build_discriminator, build_generator

    data, model = DataConfig(source="folder", path=".", resolution=SIZE, channels=3), ModelConfig()
    G, D = build_generator(model, data), build_discriminator(model, data, "batch")
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    real = torch.rand(BATCH, 3, SIZE, SIZE) * 2 - 1

    def step():
        fake = G(torch.randn(BATCH, model.z_dim))
        d_loss = F.softplus(-D(real)).mean() + F.softplus(D(fake.detach())).mean()
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = F.softplus(-D(fake)).mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * BATCH / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", help="a folder of images to use instead of the synthetic one")
    parser.add_argument("--count", type=int, default=2048, help="synthetic images (default 2048)")
    parser.add_argument("--folder-batches", type=int, default=30, help="timed batches for the decoding loaders")
    parser.add_argument("--packed-batches", type=int, default=1000, help="timed batches for the packed sources")
    parser.add_argument("--train-steps", type=int, default=3, help="timed DCGAN-64 steps (0: skip)")
    args = parser.parse_args()

    from gankit.cli import main as gankit_main

    work = Path(tempfile.mkdtemp(prefix="gankit-data-speed-"))
    try:
        if args.folder:
            root = work / "linked"
            root.mkdir()
            os.symlink(Path(args.folder).resolve(), root / "images")  # ImageFolder wants a class folder
        else:
            root = synthetic_folder(work / "folder", args.count)
        dest = work / "packed"
        start = time.perf_counter()
        if gankit_main(["prepare", "folder", str(root), str(dest), "--size", str(SIZE)]) != 0:
            raise SystemExit("gankit prepare failed")
        prepare_seconds = time.perf_counter() - start

        rows = [
            ("image folder, PIL per sample, DataLoader 2 workers", folder_speed(root, args.folder_batches)),
            ("zip of PNGs, PIL per sample, DataLoader 2 workers", zip_speed(dest, work, args.folder_batches)),
            ("packed, memory-mapped, cold page cache (1st pass)", packed_speed(dest, True, min(args.packed_batches, 30),
                                                                                cold=True)),
            ("packed, memory-mapped, warm", packed_speed(dest, True, args.packed_batches)),
            ("packed, in memory", packed_speed(dest, False, args.packed_batches)),
        ]
        train = dcgan_step_speed(args.train_steps) if args.train_steps else None
    finally:
        shutil.rmtree(work, ignore_errors=True)

    folder_rate = rows[0][1]
    print(f"\n{SIZE}x{SIZE}, batch {BATCH}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs; prepare took {prepare_seconds:.1f} s\n")
    header = "| source | images/s | vs image folder |" + (" vs DCGAN-64 step |" if train else "")
    print(header)
    print("| --- | ---: | ---: |" + (" ---: |" if train else ""))
    for name, rate in rows:
        line = f"| {name} | {rate:,.0f} | {rate / folder_rate:.1f}x |"
        print(line + (f" {rate / train:.0f}x |" if train else ""))
    if train:
        print(f"| (DCGAN-64 training step consumes) | {train:,.1f} | {train / folder_rate:.2f}x | 1x |")


if __name__ == "__main__":
    main()
