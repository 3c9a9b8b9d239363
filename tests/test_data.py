import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gankit.config import DataConfig
from gankit.data import load_images
from gankit.data.batches import ImageBatches, ToyBatches
from gankit.data.idx import read_idx
from gankit.data.images import load_folder, load_zip
from gankit.data.toy import mixture_modes, sample_toy
from gankit.data.transforms import fit_digits
from gankit.errors import GankitError


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, compress):
    array = np.random.RandomState(0).randint(0, 256, (7, 28, 28)).astype(np.uint8)
    path = tmp_path / ("x.gz" if compress else "x")
    write_idx(path, array, compress)
    assert np.array_equal(read_idx(path), array)


def test_truncated_idx_is_named(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, np.zeros((3, 28, 28), np.uint8), False)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(GankitError, match="train-images-idx3-ubyte.*truncated"):
        read_idx(path)


def test_idx_source_from_data_path(tmp_path):
    images = np.random.RandomState(1).randint(0, 256, (20, 28, 28)).astype(np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(20) % 10, True)
    out = load_images(DataConfig(source="mnist", path=str(tmp_path), resolution=32, channels=3))
    assert out.shape == (20, 3, 32, 32) and out.dtype == torch.uint8
    # 28 -> 32 is a 2-pixel zero border, the pixels themselves unchanged.
    assert torch.equal(out[:, 0, 2:30, 2:30], torch.from_numpy(images))
    assert out[:, :, :2].sum() == 0 and torch.equal(out[:, 0], out[:, 2])


def test_missing_idx_path_is_a_clear_error(tmp_path):
    with pytest.raises(GankitError, match="holds no mnist train IDX files"):
        load_images(DataConfig(source="mnist", path=str(tmp_path)))


def test_fit_digits_resizes_other_resolutions():
    images = torch.full((2, 1, 28, 28), 200, dtype=torch.uint8)
    assert fit_digits(images, 16, 1).shape == (2, 1, 16, 16)
    big = fit_digits(images, 64, 1)
    assert big.shape == (2, 1, 64, 64) and big[0, 0, 32, 32] == 200 and big[0, 0, 0, 0] == 0


def make_image(path: Path, size, color, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_folder_recursive_with_and_without_class_folders(tmp_path):
    make_image(tmp_path / "a.png", (40, 20), (255, 0, 0))
    make_image(tmp_path / "cats" / "b.jpg", (20, 20), (0, 255, 0))
    make_image(tmp_path / "cats" / "deep" / "c.png", (10, 30), 128, mode="L")
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_folder(str(tmp_path), 8, 3)
    assert images.shape == (3, 3, 8, 8)
    assert images[0, :, 4, 4].tolist() == [255, 0, 0]  # a.png: wide image, centre-cropped
    assert images[2, :, 4, 4].tolist() == [128, 128, 128]  # grayscale to RGB
    gray = load_folder(str(tmp_path), 8, 1)
    assert gray.shape == (3, 1, 8, 8) and gray[1, 0, 4, 4].item() == pytest.approx(150, abs=2)


def test_rgba_and_palette_images_are_converted(tmp_path):
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "transparent.png")
    Image.new("P", (8, 8), 3).save(tmp_path / "palette.png")
    images = load_folder(str(tmp_path), 8, 3)
    assert images[0].float().mean() >= 0 and images[1, :, 0, 0].tolist() == [255, 255, 255]


def test_corrupt_image_names_its_file(tmp_path):
    make_image(tmp_path / "good.png", (8, 8), (1, 2, 3))
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(buffer, format="JPEG")
    (tmp_path / "broken.jpg").write_bytes(buffer.getvalue()[:200])
    with pytest.raises(GankitError, match="broken.jpg"):
        load_folder(str(tmp_path), 8, 3)


def test_empty_folder_and_zip(tmp_path):
    with pytest.raises(GankitError, match="no images"):
        load_folder(str(tmp_path), 8, 3)
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as z:
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), (10, 20, 30)).save(buffer, format="PNG")
        z.writestr("x/one.png", buffer.getvalue())
        z.writestr("readme.txt", "hello")
    images = load_zip(str(archive), 4, 3)
    assert images.shape == (1, 3, 4, 4) and images[0, :, 0, 0].tolist() == [10, 20, 30]


def test_toy_mixtures_follow_the_wgan_gp_parameters():
    gen = torch.Generator().manual_seed(0)
    centres, std = mixture_modes("toy-8gaussians")
    assert centres.norm(dim=1).allclose(torch.full((8,), 2 / 1.414))
    points = sample_toy("toy-8gaussians", 20000, gen)
    nearest = torch.cdist(points, centres).argmin(1)
    offsets = points - centres[nearest]
    assert abs(offsets.std().item() - 0.02 / 1.414) < 1e-3
    assert torch.bincount(nearest, minlength=8).min() > 2000
    centres25, std25 = mixture_modes("toy-25gaussians")
    assert centres25.shape == (25, 2) and centres25.max().item() == pytest.approx(4 / 2.828)
    assert std25 == pytest.approx(0.05 / 2.828)
    roll = sample_toy("toy-swissroll", 5000, gen)
    radius = roll.norm(dim=1) * 7.5
    assert radius.min() > 1.5 and radius.max() < 15.5


def test_image_batches_resume_exactly():
    images = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1)
    a = ImageBatches(images, 8, seed=3)
    seen = [a.next() for _ in range(4)]
    state = a.state_dict()
    rest = [a.next() for _ in range(10)]  # crosses two epoch boundaries (6 batches per epoch)
    b = ImageBatches(images, 8, seed=3)
    b.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(rest, [b.next() for _ in range(10)]))
    first_epoch = torch.cat(seen + rest[:2]).flatten()
    assert len(set(first_epoch.tolist())) == 48  # no repeats within an epoch
    assert not torch.equal(torch.cat(rest[2:8]), torch.cat(seen + rest[:2]))  # reshuffled next epoch


def test_toy_batches_resume_exactly():
    a = ToyBatches("toy-25gaussians", 4, seed=1)
    a.next()
    state = a.state_dict()
    expected = a.next()
    b = ToyBatches("toy-25gaussians", 4, seed=1)
    b.load_state_dict(state)
    assert torch.equal(b.next(), expected)
