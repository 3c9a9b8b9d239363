"""`gankit prepare`: fake CelebA, LSUN (an LMDB written here) and folder inputs with bad files among
them; outputs checked pixel for pixel against crops computed here with PIL and numpy."""

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from gankit.config import DataConfig
from gankit.data import load_images
from gankit.data.images import MAX_PIXELS, try_decode
from gankit.data.packed import LOG_FILE, MANIFEST_FILE, PREVIEW_FILE, load_packed

lmdb = pytest.importorskip("lmdb")


# ---- inputs -------------------------------------------------------------------------------------

def smooth_image(seed: int, width: int, height: int) -> np.ndarray:
    """An RGB image with structure at every scale (so a wrong crop or filter changes pixels)."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = [127 + 120 * np.sin(x / rng.uniform(3, 9) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(3, 9))
                for _ in range(3)]
    noise = rng.randint(-6, 7, (height, width, 3))
    return (np.stack(channels, -1) + noise).clip(0, 255).astype(np.uint8)


def encode(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels and holds none (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def bad_files() -> dict[str, bytes]:
    """Files with image names that cannot be decoded, one per kind of damage."""
    jpeg = encode(smooth_image(99, 178, 218), "JPEG", quality=90)
    return {
        "bad_truncated.jpg": jpeg[: len(jpeg) // 3],
        "bad_empty.jpg": b"",
        "bad_text.png": b"this is a text file, not an image\n" * 20,
        "bad_bomb.png": png_header_only(100_000, 100_000),
        "bad_big.png": png_header_only(20_000, 20_000),  # under PIL's own error limit, over ours
    }


def make_celeba(root: Path, count: int = 5) -> dict[str, np.ndarray]:
    """img_align_celeba-like JPEGs plus damaged files; returns the decoded pixels of the good ones."""
    folder = root / "img_align_celeba"
    folder.mkdir(parents=True)
    decoded = {}
    for i in range(count):
        path = folder / f"{i + 1:06d}.jpg"
        path.write_bytes(encode(smooth_image(i, 178, 218), "JPEG", quality=92))
        decoded[path.name] = np.asarray(Image.open(path).convert("RGB"))
    for name, data in bad_files().items():
        (folder / name).write_bytes(data)
    Image.fromarray(smooth_image(50, 200, 200)).save(folder / "odd_size.png")  # not 178x218: no PGAN box
    (folder / "Thumbs.db").write_bytes(b"\0" * 64)
    return decoded


def centre_crop(array: np.ndarray, size: int) -> np.ndarray:
    """Shorter side resized to size with Lanczos (long side rounded), centre square (offsets floored)."""
    image = Image.fromarray(array)
    w, h = image.size
    new_w, new_h = (size, round(h * size / w)) if w <= h else (round(w * size / h), size)
    image = image.resize((new_w, new_h), Image.Resampling.LANCZOS)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    out = np.asarray(image.crop((left, top, left + size, top + size)))
    return out[None] if out.ndim == 2 else out.transpose(2, 0, 1)


def pgan_crop(array: np.ndarray, size: int) -> np.ndarray:
    """Rows 57..184 and columns 25..152, then 2x2 averaging per halving, rounded to nearest."""
    box = array[121 - 64 : 121 + 64, 89 - 64 : 89 + 64].astype(np.float64)
    while box.shape[0] > size:
        box = (box[0::2, 0::2] + box[0::2, 1::2] + box[1::2, 0::2] + box[1::2, 1::2]) * 0.25
    return np.rint(box).astype(np.uint8).transpose(2, 0, 1)


def write_lmdb(path: Path, values: dict[bytes, bytes]) -> None:
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for key, value in values.items():
            txn.put(key, value)
    env.close()


def read_log(dest: Path) -> list[tuple[str, str, str]]:
    lines = (dest / LOG_FILE).read_text().splitlines()
    return [tuple(line.split("\t", 2)) for line in lines if not line.startswith("#")]


# ---- CelebA -------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [64, 128])
def test_celeba_pgan_crop_pixel_for_pixel(tmp_path, run_cli, size):
    decoded = make_celeba(tmp_path / "celeba")
    dest = tmp_path / f"celeba{size}"
    code, out, err = run_cli("prepare", "celeba", tmp_path / "celeba", dest, "--size", size)
    assert code == 0, err
    images = load_packed(dest, size, 3).numpy()
    expected = np.stack([pgan_crop(decoded[name], size) for name in sorted(decoded)])
    assert images.shape == (5, 3, size, size)
    assert np.array_equal(images, expected)
    manifest = json.loads((dest / MANIFEST_FILE).read_text())
    assert manifest["count"] == 5 and manifest["source"]["crop"] == "pgan" and manifest["skipped"] == 6
    log = read_log(dest)
    skipped = {Path(name).name for what, name, _ in log if what == "skipped"}
    assert skipped == set(bad_files()) | {"odd_size.png"}
    assert ("ignored", str(tmp_path / "celeba" / "img_align_celeba" / "Thumbs.db")) in {e[:2] for e in log}
    assert "skipped 6 unreadable" in out and (dest / PREVIEW_FILE).is_file()


def test_celeba_dcgan_crop_from_the_zip(tmp_path, run_cli):
    import zipfile

    decoded = make_celeba(tmp_path / "celeba", count=3)
    archive = tmp_path / "img_align_celeba.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted((tmp_path / "celeba" / "img_align_celeba").iterdir()):
            z.write(path, f"img_align_celeba/{path.name}")
    code, _, err = run_cli("prepare", "celeba", archive, tmp_path / "out", "--size", 32, "--crop", "dcgan")
    assert code == 0, err
    expected = np.stack([centre_crop(decoded[name], 32) for name in sorted(decoded)])
    odd = np.asarray(Image.open(tmp_path / "celeba" / "img_align_celeba" / "odd_size.png"))
    images = load_packed(tmp_path / "out", 32, 3).numpy()
    assert np.array_equal(images, np.concatenate([expected, centre_crop(odd, 32)[None]]))  # any size crops
    # 178x218 -> 32x39: the crop keeps rows 3..34, so it differs from the PGAN box.
    assert not np.array_equal(expected, np.stack([pgan_crop(decoded[n], 32) for n in sorted(decoded)]))


def test_strict_stops_at_the_first_bad_file(tmp_path, run_cli):
    make_celeba(tmp_path / "celeba")
    dest = tmp_path / "out"
    code, _, err = run_cli("prepare", "celeba", tmp_path / "celeba", dest, "--strict")
    assert code == 2
    assert "bad_big.png" in err and "--strict" in err  # the first bad file in sorted order
    assert list(tmp_path.iterdir()) == [tmp_path / "celeba"]  # no DEST, no temporary folder


def test_bad_options_and_destinations(tmp_path, run_cli):
    make_celeba(tmp_path / "celeba", count=1)
    assert run_cli("prepare", "celeba", tmp_path / "celeba", tmp_path / "o", "--crop", "tight")[0] == 2
    assert run_cli("prepare", "folder", tmp_path / "celeba", tmp_path / "o", "--crop", "pgan")[0] == 2
    assert run_cli("prepare", "folder", tmp_path / "missing", tmp_path / "o")[0] == 2
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    code, _, err = run_cli("prepare", "folder", tmp_path / "celeba", tmp_path / "taken")
    assert code == 2 and "not empty" in err
    code, _, err = run_cli("prepare", "folder", tmp_path / "celeba" / "img_align_celeba" / "Thumbs.db", tmp_path / "o")
    assert code == 2 and "neither a folder nor a zip" in err


# ---- LSUN ---------------------------------------------------------------------------------------

def make_lsun(path: Path) -> dict[bytes, np.ndarray]:
    """An LSUN-like LMDB (hex keys, webp and jpeg values of several shapes) with corrupt values."""
    good, values = {}, {}
    shapes = [(96, 72), (72, 96), (80, 80), (120, 90), (90, 60), (64, 100)]
    for i, (w, h) in enumerate(shapes):
        key = f"{i:040x}".encode()
        array = smooth_image(100 + i, w, h)
        values[key] = encode(array, "WEBP", lossless=True) if i % 2 == 0 else encode(array, "JPEG", quality=90)
        good[key] = np.asarray(Image.open(io.BytesIO(values[key])).convert("RGB"))
    webp = values[f"{0:040x}".encode()]
    values[b"a" * 40] = webp[: len(webp) // 2]  # truncated
    values[b"b" * 40] = b""  # empty
    values[b"c" * 40] = np.random.RandomState(0).bytes(3000)  # random bytes
    values[b"d" * 40] = png_header_only(100_000, 100_000)
    write_lmdb(path, values)
    return good


def test_lsun_lmdb_pixel_for_pixel_and_limit(tmp_path, run_cli):
    good = make_lsun(tmp_path / "bedroom_train_lmdb")
    code, out, err = run_cli("prepare", "lsun", tmp_path / "bedroom_train_lmdb", tmp_path / "out", "--size", 32)
    assert code == 0, err
    expected = np.stack([centre_crop(good[key], 32) for key in sorted(good)])
    assert np.array_equal(load_packed(tmp_path / "out", 32, 3).numpy(), expected)
    skipped = [name for what, name, _ in read_log(tmp_path / "out") if what == "skipped"]
    assert sorted(name.rsplit(":", 1)[1] for name in skipped) == [c * 40 for c in "abcd"]
    code, _, err = run_cli("prepare", "lsun", tmp_path / "bedroom_train_lmdb", tmp_path / "strict", "--strict")
    assert code == 2 and f"bedroom_train_lmdb:{'a' * 40}" in err
    # --limit counts written images (the corrupt values sort after the good keys here); two decoding
    # processes give the same images in the same order.
    code, _, _ = run_cli("prepare", "lsun", tmp_path / "bedroom_train_lmdb", tmp_path / "few", "--size", 32,
                         "--limit", 4, "--workers", 2)
    assert code == 0 and np.array_equal(load_packed(tmp_path / "few", 32, 3).numpy(), expected[:4])


def test_lmdb_training_source_matches_prepared_lsun(tmp_path, run_cli, capsys):
    make_lsun(tmp_path / "db")
    assert run_cli("prepare", "lsun", tmp_path / "db", tmp_path / "out", "--size", 16)[0] == 0
    direct = load_images(DataConfig(source="lmdb", path=str(tmp_path / "db"), resolution=16, channels=3))
    assert "skipped 4 unreadable" in capsys.readouterr().err
    assert torch.equal(direct, load_packed(tmp_path / "out", 16, 3))


def test_broken_lmdb_is_a_clear_error(tmp_path, run_cli):
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "data.mdb").write_bytes(np.random.RandomState(1).bytes(8192))
    code, _, err = run_cli("prepare", "lsun", tmp_path / "db", tmp_path / "out")
    assert code == 2 and "cannot open LMDB" in err and not (tmp_path / "out").exists()
    (tmp_path / "plain").mkdir()
    code, _, err = run_cli("prepare", "lsun", tmp_path / "plain", tmp_path / "out")
    assert code == 2 and "no data.mdb" in err


# ---- folders ------------------------------------------------------------------------------------

def test_folder_modes_symlinks_and_damage(tmp_path, run_cli):
    src = tmp_path / "anime"
    (src / "a" / "deep").mkdir(parents=True)
    rgb = smooth_image(1, 40, 30)
    Image.fromarray(rgb).save(src / "a" / "01_rgb.png")
    gray = smooth_image(2, 30, 30)[:, :, 0]
    Image.fromarray(gray, "L").save(src / "a" / "02_gray.png")
    rgba = smooth_image(3, 24, 24)
    alpha = np.where(np.arange(24)[None, :] < 12, 0, 255).astype(np.uint8).repeat(24, 0)
    Image.fromarray(np.dstack([rgba, alpha]), "RGBA").save(src / "a" / "03_rgba.png")
    deep16 = (smooth_image(4, 20, 28)[:, :, 0].astype(np.uint16) * 257 + 3)
    Image.fromarray(deep16).save(src / "a" / "deep" / "04_16bit.png")
    palette = Image.fromarray(smooth_image(5, 26, 20)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(src / "a" / "deep" / "05_palette.gif")
    cmyk = Image.fromarray(smooth_image(6, 22, 22)).convert("CMYK")
    cmyk.save(src / "a" / "deep" / "06_cmyk.tif")
    for name, data in bad_files().items():
        (src / name).write_bytes(data)
    (src / "notes.txt").write_text("not an image")
    os.symlink("..", src / "a" / "loop")  # a folder loop
    os.symlink("self.jpg", src / "self.jpg")  # a link to itself
    os.symlink(tmp_path / "gone.png", src / "dangling.png")
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.fromarray(smooth_image(7, 16, 16)).save(outside / "07_linked.png")
    os.symlink(outside, src / "z_linked")  # a symlinked folder is followed, once

    dest = tmp_path / "out"
    code, out, err = run_cli("prepare", "folder", src, dest, "--size", 16)
    assert code == 0, err
    rgba_on_white = np.where(alpha[:, :, None] == 0, 255, rgba).astype(np.uint8)
    gray16_to_8 = np.rint(deep16 * 255.0 / 65535.0).astype(np.uint8)
    expected = [
        centre_crop(rgb, 16),
        centre_crop(np.dstack([gray] * 3), 16),
        centre_crop(rgba_on_white, 16),
        centre_crop(np.dstack([gray16_to_8] * 3), 16),
        centre_crop(np.asarray(palette.convert("RGB")), 16),
        centre_crop(np.asarray(Image.open(src / "a" / "deep" / "06_cmyk.tif").convert("RGB")), 16),
        centre_crop(smooth_image(7, 16, 16), 16),
    ]
    images = load_packed(dest, 16, 3).numpy()
    assert images.shape == (7, 3, 16, 16)  # each real image once despite the loop and the link
    for i, want in enumerate(expected):
        assert np.array_equal(images[i], want), f"image {i}"
    log = read_log(dest)
    converted = {Path(name).name: detail for what, name, detail in log if what == "converted"}
    assert set(converted) == {"02_gray.png", "03_rgba.png", "04_16bit.png", "05_palette.gif", "06_cmyk.tif"}
    skipped = {Path(name).name for what, name, _ in log if what == "skipped"}
    assert skipped == set(bad_files()) | {"self.jpg", "dangling.png"}
    assert [Path(n).name for what, n, _ in log if what == "ignored"] == ["notes.txt"]
    assert "skipped 7 unreadable" in out and "converted 5" in out and "ignored 1" in out


def test_grayscale_output_and_idx(tmp_path, run_cli):
    src = tmp_path / "src"
    src.mkdir()
    rgb = smooth_image(8, 20, 20)
    Image.fromarray(rgb).save(src / "x.png")
    assert run_cli("prepare", "folder", src, tmp_path / "gray", "--size", 8, "--channels", 1)[0] == 0
    expected = centre_crop(np.asarray(Image.fromarray(rgb).convert("L")), 8)
    assert np.array_equal(load_packed(tmp_path / "gray", 8, 1).numpy()[0], expected)

    digits = np.random.RandomState(0).randint(0, 256, (6, 28, 28)).astype(np.uint8)
    header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in digits.shape)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(header + digits.tobytes())
    assert run_cli("prepare", "idx", tmp_path / "train-images-idx3-ubyte", tmp_path / "digits", "--size", 32)[0] == 0
    packed32 = load_packed(tmp_path / "digits", 32, 1).numpy()
    assert np.array_equal(packed32[:, 0, 2:30, 2:30], digits) and packed32[:, :, :2].sum() == 0


@pytest.mark.parametrize("bad_name", sorted(bad_files()) + ["self_link.png"])
def test_each_kind_of_bad_file_is_skipped_or_stops_strict_mode(tmp_path, run_cli, bad_name):
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(smooth_image(0, 12, 12)).save(src / "good.png")
    if bad_name == "self_link.png":
        os.symlink(bad_name, src / bad_name)
    else:
        (src / bad_name).write_bytes(bad_files()[bad_name])
    code, out, err = run_cli("prepare", "folder", src, tmp_path / "out", "--size", 8)
    assert code == 0, err
    assert json.loads((tmp_path / "out" / MANIFEST_FILE).read_text())["count"] == 1
    assert [(what, Path(name).name) for what, name, _ in read_log(tmp_path / "out")] == [("skipped", bad_name)]
    assert "skipped 1 unreadable" in out
    code, _, err = run_cli("prepare", "folder", src, tmp_path / "strict", "--size", 8, "--strict")
    assert code == 2 and f"cannot read image {src / bad_name}:" in err and not (tmp_path / "strict").exists()


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.binary(max_size=400),
                 st.integers(0, 2000).map(lambda n: encode(smooth_image(3, 30, 20), "PNG")[:n]),
                 st.integers(0, 2000).map(lambda n: encode(smooth_image(3, 30, 20), "GIF")[:n]),
                 st.integers(0, 3000).map(lambda n: encode(smooth_image(3, 30, 20), "JPEG")[:n]),
                 st.integers(0, 3000).map(lambda n: encode(smooth_image(3, 30, 20), "WEBP")[:n])))
def test_decoding_any_bytes_never_raises(data):
    result = try_decode(data, "fuzz", 8, 3)
    assert (result.image is None) == (result.problem is not None)
    if result.image is not None:
        assert result.image.shape == (3, 8, 8) and result.image.dtype == np.uint8


def test_pixel_limit_is_ours_not_pils():
    assert MAX_PIXELS < 20_000 * 20_000 < 2 * MAX_PIXELS  # the case PIL would only warn about
    result = try_decode(png_header_only(20_000, 20_000), "big.png", 8, 3)
    assert result.image is None and "decompression bomb" in result.problem


# ---- interruption -------------------------------------------------------------------------------

def test_sigterm_mid_prepare_removes_everything(tmp_path, run_cli, monkeypatch):
    from gankit.data.packed import PackedWriter

    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        Image.fromarray(smooth_image(i, 20, 20)).save(src / f"{i}.png")
    original_add = PackedWriter.add

    def add_then_terminate(self, image):
        original_add(self, image)
        if self.count == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(PackedWriter, "add", add_then_terminate)
    code, _, err = run_cli("prepare", "folder", src, tmp_path / "work" / "out", "--size", 8)
    assert code == 130 and "interrupted" in err
    assert list((tmp_path / "work").iterdir()) == []  # neither DEST nor the temporary folder
    assert signal.getsignal(signal.SIGTERM) is not add_then_terminate  # the handler was restored


def test_kill_9_never_leaves_a_complete_looking_dest(tmp_path):
    src, work = tmp_path / "src", tmp_path / "work"
    src.mkdir()
    work.mkdir()
    jpeg = encode(smooth_image(9, 256, 256), "JPEG", quality=90)
    for i in range(500):
        (src / f"{i:05d}.jpg").write_bytes(jpeg)
    proc = subprocess.Popen([sys.executable, "-m", "gankit", "prepare", "folder", str(src), str(work / "out"),
                             "--size", "16"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = False
    deadline = time.monotonic() + 120
    while not started and time.monotonic() < deadline and proc.poll() is None:
        started = any(p.name.startswith(".out.partial-") for p in work.iterdir())
        time.sleep(0.002)
    proc.kill()
    proc.wait(timeout=60)
    if not started:
        pytest.skip("prepare finished before it could be killed")
    leftovers = list(work.iterdir())
    assert not (work / "out").exists() and leftovers
    assert all(not (p / MANIFEST_FILE).exists() for p in leftovers)
    with pytest.raises(Exception, match="does not exist"):
        load_packed(work / "out", 16, 3)
    with pytest.raises(Exception, match="not a complete packed dataset"):
        load_packed(leftovers[0], 16, 3)


# ---- training on prepared data ------------------------------------------------------------------

TINY = ["data.resolution=16", "model.g_channels=8", "model.d_channels=8", "model.z_dim=8", "train.batch_size=4",
        "train.steps=3", "train.log_every=1", "train.sample_every=3", "train.checkpoint_every=3",
        "train.grid_size=4", "data.source=packed", "data.channels=3"]


def _train(run_cli, preset: str, data_path: Path, out: Path):
    args = ["train", preset, "--out", out, "--set", f"data.path={data_path}"]
    for item in TINY:
        args += ["--set", item]
    return run_cli(*args)


@pytest.mark.parametrize("kind", ["celeba", "lsun"])
def test_prepared_fixture_trains(tmp_path, run_cli, kind):
    if kind == "celeba":
        make_celeba(tmp_path / "raw", count=6)
        preset = "dcgan-celeba-64"
    else:
        make_lsun(tmp_path / "raw")
        preset = "dcgan-lsun-bedroom-64"
    assert run_cli("prepare", kind, tmp_path / "raw", tmp_path / "ds", "--size", 16)[0] == 0
    code, _, err = _train(run_cli, preset, tmp_path / "ds", tmp_path / "run")
    assert code == 0, err
    stats = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert stats[-1]["step"] == 3 and stats[-1]["images_seen"] == 12
    checkpoints = sorted((tmp_path / "run" / "checkpoints").glob("step_*.pt"))
    assert checkpoints and checkpoints[-1].name == "step_000003.pt"
    # A config that does not match the prepared images stops before training, naming both sizes.
    args = ["train", preset, "--out", tmp_path / "bad", "--set", f"data.path={tmp_path / 'ds'}"]
    for item in TINY:
        args += ["--set", item.replace("resolution=16", "resolution=32")]
    code, _, err = run_cli(*args)
    assert code == 2 and "16x16 images" in err and "data.resolution 32" in err
