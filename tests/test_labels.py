"""Class labels through the data layer: read from every source that has them, aligned with their images
in every batch, resumable, stored by `gankit prepare`, and refused with one clear message where missing."""

import gzip
import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gankit.config import DataConfig
from gankit.data import build_batches, load_dataset, load_images, resolve_class_names
from gankit.data import packed
from gankit.data.batches import ImageBatches, ToyBatches
from gankit.data.idx import CLASS_NAMES
from gankit.data.images import Decoded
from gankit.data.toy import mixture_modes
from gankit.errors import GankitError
from gankit.prepare.pack import pack

# Each class's images are one constant grey, so the label of any image can be read off its pixels.
CLASS_GREYS = {"ankle": 40, "bag": 120, "coat": 200}
CLASS_SIZES = {"ankle": 5, "bag": 4, "coat": 3}  # unequal, so a label misaligned with its image shows


def grey_png(grey: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), grey).save(buffer, format="PNG")
    return buffer.getvalue()


def class_folder(root: Path) -> Path:
    """ankle/ (with a nested folder), bag/, coat/: 12 images of 8x8 grey."""
    for name, count in CLASS_SIZES.items():
        for i in range(count):
            path = root / name / ("deeper" if name == "ankle" and i >= 3 else "") / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(grey_png(CLASS_GREYS[name]))
    return root


def class_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, count in CLASS_SIZES.items():
            for i in range(count):
                archive.writestr(f"{name}/{i}.png", grey_png(CLASS_GREYS[name]))
        archive.writestr("readme.txt", "not an image, not a class")
    return path


def label_of_grey(images: torch.Tensor, class_names: list[str]) -> torch.Tensor:
    by_grey = {grey: class_names.index(name) for name, grey in CLASS_GREYS.items()}
    return torch.tensor([by_grey[int(image[0, 0, 0])] for image in images])


def assert_labels_follow_images(stream, batches: int, label_of) -> None:
    seen = torch.zeros(0, dtype=torch.int64)
    for _ in range(batches):
        images, labels = stream.next_labeled()
        assert labels.dtype == torch.int64 and labels.device.type == "cpu" and labels.shape == (len(images),)
        assert torch.equal(labels, label_of(images))
        seen = torch.cat([seen, labels])
    assert len(seen.unique()) > 1  # the check above compared more than one class


def image_config(source: str, path: Path, **extra) -> DataConfig:
    return DataConfig(source=source, path=str(path), resolution=8, channels=1, **extra)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def idx_pair(folder: Path, count: int = 30, label_count: int | None = None, prefix: str = "train") -> np.ndarray:
    """IDX images whose pixels all equal 10 * label + 5, and their labels."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = (np.arange(count) * 7) % 10
    write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", np.broadcast_to((labels * 10 + 5)[:, None, None], (count, 28, 28)))
    write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels[:label_count])
    return labels


def idx_label_of(images: torch.Tensor) -> torch.Tensor:
    return ((images[:, 0, 16, 16].long() - 5) // 10)  # the centre pixel, inside the 2-pixel zero border


def prepare(run_cli, kind: str, src: Path, dest: Path, *options) -> str:
    code, out, err = run_cli("prepare", kind, src, dest, "--size", 8, "--channels", 1, *options)
    assert code == 0, err
    return out


# ---- each source: labels aligned with their images over two epochs -------------------------------

@pytest.mark.parametrize("source", ["folder", "zip"])
def test_folder_and_zip_labels_follow_their_images(tmp_path, source):
    path = class_folder(tmp_path / "classes") if source == "folder" else class_zip(tmp_path / "classes.zip")
    stream = build_batches(image_config(source, path), 4, seed=3, with_labels=True)
    assert stream.class_names == ["ankle", "bag", "coat"]  # folder names, sorted
    assert len(stream.images) == 12  # the nested folder's images belong to ankle
    assert_labels_follow_images(stream, 6, lambda images: label_of_grey(images, stream.class_names))  # 2 epochs


def test_prepared_folder_stores_labels_that_follow_their_images(tmp_path, run_cli):
    out = prepare(run_cli, "folder", class_folder(tmp_path / "classes"), tmp_path / "packed")
    assert "labelled: 3 class(es) (ankle, bag, coat)" in out
    manifest = json.loads((tmp_path / "packed" / packed.MANIFEST_FILE).read_text())
    assert manifest["class_names"] == ["ankle", "bag", "coat"] and manifest["labels"]["count"] == 12
    for streamed in ("0", "1"):  # in memory and memory-mapped
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(packed.STREAM_ENV, streamed)
            stream = build_batches(image_config("packed", tmp_path / "packed"), 4, seed=1, with_labels=True)
        assert stream.class_names == ["ankle", "bag", "coat"]
        assert_labels_follow_images(stream, 6, lambda images: label_of_grey(images, stream.class_names))


def test_prepared_zip_stores_labels(tmp_path, run_cli):
    prepare(run_cli, "folder", class_zip(tmp_path / "classes.zip"), tmp_path / "packed")
    dataset = load_dataset(image_config("packed", tmp_path / "packed"))
    assert dataset.class_names == ["ankle", "bag", "coat"]
    assert torch.equal(dataset.labels, label_of_grey(dataset.images, dataset.class_names))


@pytest.mark.parametrize("source", ["mnist", "fashion-mnist"])
def test_idx_labels_follow_their_images(tmp_path, source):
    idx_pair(tmp_path)
    stream = build_batches(DataConfig(source=source, path=str(tmp_path), resolution=32), 8, seed=0, with_labels=True)
    assert stream.class_names == CLASS_NAMES[source]
    assert stream.class_names[7] == ("Sneaker" if source == "fashion-mnist" else "7")
    assert_labels_follow_images(stream, 8, idx_label_of)  # 30 images, batches of 8: two epochs and more


def test_prepared_idx_stores_the_labels_file_beside_it(tmp_path, run_cli):
    labels = idx_pair(tmp_path / "fashion")
    images_file = tmp_path / "fashion" / "train-images-idx3-ubyte.gz"
    out = prepare(run_cli, "idx", images_file, tmp_path / "packed", "--size", 32)
    assert "labelled: 10 class(es) (T-shirt/top, Trouser" in out  # "fashion" in the path: Fashion-MNIST's names
    dataset = load_dataset(DataConfig(source="packed", path=str(tmp_path / "packed"), resolution=32))
    assert torch.equal(dataset.labels, torch.from_numpy(labels)) and dataset.class_names == CLASS_NAMES["fashion-mnist"]
    assert torch.equal(idx_label_of(dataset.images), dataset.labels)

    (tmp_path / "fashion" / "train-labels-idx1-ubyte.gz").rename(tmp_path / "elsewhere.gz")
    assert "unlabelled" in prepare(run_cli, "idx", images_file, tmp_path / "unlabelled", "--size", 32)
    assert load_dataset(DataConfig(source="packed", path=str(tmp_path / "unlabelled"), resolution=32)).labels is None


def test_toy_labels_are_the_mode_each_point_came_from():
    for source in ("toy-8gaussians", "toy-25gaussians"):
        centres, std = mixture_modes(source)
        stream = build_batches(DataConfig(source=source), 512, seed=2, with_labels=True)
        assert stream.class_names == [str(k) for k in range(len(centres))]
        points, modes = stream.next_labeled()
        assert modes.dtype == torch.int64 and len(modes.unique()) == len(centres)
        # Every point within 6 std of its own mode's centre (the modes lie over 10 std apart).
        assert (points - centres[modes]).norm(dim=1).max() < 6 * std


# ---- the same images with and without labels, and exact resume -------------------------------------

def test_next_and_next_labeled_give_the_same_images(tmp_path):
    path = class_folder(tmp_path / "classes")
    plain = build_batches(image_config("folder", path), 4, seed=7)
    labelled = build_batches(image_config("folder", path), 4, seed=7, with_labels=True)
    assert plain.next_labeled()[1] is None and plain.class_names is None
    plain = build_batches(image_config("folder", path), 4, seed=7)
    for step in range(7):  # alternating the two calls on one stream, across epoch boundaries
        images = labelled.next() if step % 2 else labelled.next_labeled()[0]
        assert torch.equal(images, plain.next())
    for source in ("toy-25gaussians", "toy-swissroll"):
        plain, labelled = ToyBatches(source, 16, seed=4, with_labels=False), ToyBatches(source, 16, seed=4)
        for step in range(3):
            points = labelled.next() if step % 2 else labelled.next_labeled()[0]
            assert torch.equal(points, plain.next())
    assert ToyBatches("toy-swissroll", 4, seed=0).next_labeled()[1] is None


def test_toy_streams_draw_what_they_drew_before_labels():
    """The mode index was always drawn; returning it must not change the random stream of old runs."""
    centres, std = mixture_modes("toy-25gaussians")
    generator = torch.Generator().manual_seed(9)
    stream = build_batches(DataConfig(source="toy-25gaussians"), 6, seed=9, with_labels=True)
    for _ in range(3):
        which = torch.randint(25, (6,), generator=generator)
        points, modes = stream.next_labeled()
        assert torch.equal(modes, which)
        assert torch.equal(points, centres[which] + std * torch.randn(6, 2, generator=generator))
    generator = torch.Generator().manual_seed(9)
    roll = build_batches(DataConfig(source="toy-swissroll"), 6, seed=9)
    for _ in range(2):
        t = 1.5 * np.pi * (1 + 2 * torch.rand(6, generator=generator, dtype=torch.float64))
        noise = 0.25 * torch.randn(6, 2, generator=generator, dtype=torch.float64)
        assert torch.equal(roll.next(), ((torch.stack([t * t.cos(), t * t.sin()], 1) + noise) / 7.5).float())


def test_labelled_streams_resume_exactly(tmp_path):
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    labels = torch.arange(10, dtype=torch.int64) % 3
    for make in (lambda: ImageBatches(images, 4, seed=5, labels=labels, class_names=["a", "b", "c"]),
                 lambda: ToyBatches("toy-8gaussians", 4, seed=5)):
        whole, first = make(), make()
        expected = [whole.next_labeled() for _ in range(6)]
        for _ in range(3):
            first.next_labeled()
        resumed = make()
        resumed.load_state_dict(first.state_dict())
        for batch, labels_of_batch in expected[3:]:
            got_batch, got_labels = resumed.next_labeled()
            assert torch.equal(got_batch, batch) and torch.equal(got_labels, labels_of_batch)
    stream = ImageBatches(images, 4, seed=5, labels=labels, class_names=["a", "b", "c"])
    batch, batch_labels = stream.next_labeled()
    assert torch.equal(batch_labels, batch[:, 0, 0, 0].long() % 3)  # permuted with the images' order


def test_load_dataset_honours_max_images_labels_none_and_class_names(tmp_path):
    path = class_folder(tmp_path / "classes")
    cut = load_dataset(image_config("folder", path, max_images=6))
    assert len(cut.images) == len(cut.labels) == 6 and cut.class_names == ["ankle", "bag", "coat"]
    assert torch.equal(cut.labels, label_of_grey(cut.images, cut.class_names))
    off = load_dataset(image_config("folder", path, labels="none"))
    assert off.labels is None and off.class_names is None and len(off.images) == 12
    renamed = load_dataset(image_config("folder", path, class_names=["A", "B", "C"]))
    assert renamed.class_names == ["A", "B", "C"]
    assert torch.equal(renamed.labels, label_of_grey(renamed.images, ["ankle", "bag", "coat"]))
    assert torch.equal(load_images(image_config("folder", path)), off.images)  # images unchanged by labels


def test_resolve_class_names():
    assert resolve_class_names(DataConfig(), ["x", "y"]) == ["x", "y"]
    assert resolve_class_names(DataConfig(class_names=["p", "q"]), ["x", "y"]) == ["p", "q"]
    with pytest.raises(GankitError, match="data.class_names gives 3 name.*the data has 2 classes"):
        resolve_class_names(DataConfig(class_names=["p", "q", "r"]), ["x", "y"])


# ---- the packed format: old datasets, damaged labels ------------------------------------------------

def write_version_1_dataset_without_labels(dest: Path, images: np.ndarray) -> None:
    """A packed dataset exactly as gankit wrote them before labels existed (no labels entry, no file)."""
    dest.mkdir()
    count, channels, res = images.shape[0], images.shape[1], images.shape[-1]
    (dest / "images.u8").write_bytes(packed.pack_header(count, channels, res) + images.tobytes())
    manifest = {"format": "gankit-packed-u8", "version": 1, "count": count, "resolution": res, "channels": channels,
                "layout": "uint8 [count, channels, resolution, resolution] after a 64-byte header in images.u8",
                "checksum": "sha256:" + hashlib.sha256(images.tobytes()).hexdigest(),
                "source": {"kind": "folder", "path": "/data/faces", "crop": "center", "limit": None},
                "skipped": 0, "converted": 0, "ignored": 0, "created": "2024-01-01T00:00:00+00:00"}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2))


def test_old_packed_dataset_without_labels_still_loads(tmp_path):
    images = np.random.RandomState(0).randint(0, 256, (6, 1, 8, 8)).astype(np.uint8)
    write_version_1_dataset_without_labels(tmp_path / "old", images)
    data = image_config("packed", tmp_path / "old")
    assert torch.equal(load_images(data), torch.from_numpy(images))
    dataset = load_dataset(data)
    assert torch.equal(dataset.images, torch.from_numpy(images)) and dataset.labels is None
    assert build_batches(data, 3, seed=0).next().shape == (3, 1, 8, 8)
    with pytest.raises(GankitError, match="has none: it was prepared from a source without class labels. Re-run "
                                          "`gankit prepare` on a labelled source"):
        build_batches(data, 3, seed=0, with_labels=True)


def labelled_packed(dest: Path, labels: list[int], class_names: list[str]) -> Path:
    images = np.arange(len(labels), dtype=np.uint8).reshape(-1, 1, 1, 1).repeat(8, 2).repeat(8, 3)
    results = (Decoded(f"img{i}", image, label=label) for i, (image, label) in enumerate(zip(images, labels)))
    pack(results, dest, resolution=8, channels=1, strict=False, limit=None, expected=len(labels),
         source={"kind": "test"}, class_names=class_names)
    return dest


def replace_labels(dest: Path, array: np.ndarray, allow_pickle: bool = False) -> None:
    """Writes another labels.npy and, as a forger would, a matching checksum."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    (dest / packed.LABELS_FILE).write_bytes(buffer.getvalue())
    manifest = json.loads((dest / packed.MANIFEST_FILE).read_text())
    manifest["labels"]["checksum"] = "sha256:" + hashlib.sha256(buffer.getvalue()).hexdigest()
    (dest / packed.MANIFEST_FILE).write_text(json.dumps(manifest))


def test_packed_labels_out_of_range_wrong_length_or_changed_are_refused(tmp_path):
    dest = labelled_packed(tmp_path / "ds", [0, 1, 2, 1], ["a", "b", "c"])
    data = image_config("packed", dest)
    assert load_dataset(data).labels.tolist() == [0, 1, 2, 1]
    cases = [
        (np.array([0, 1, 3, 1]), False, "labels.npy holds label 3 at index 2, outside the 3 classes"),
        (np.array([0, -1, 2, 1]), False, "labels.npy holds label -1 at index 1"),
        (np.array([0, 1, 2]), False, "labels.npy holds 3 labels for the 4 images"),
        (np.array([0.0, 1.0, 2.0, 1.0]), False, "labels.npy holds float64"),
        # A pickled object array would run code when loaded with allow_pickle: it is refused unread.
        (np.array([0, 1, 2, 1], dtype=object), True, "labels.npy is not a labels array.*pickle"),
    ]
    for array, allow_pickle, message in cases:
        replace_labels(dest, array, allow_pickle)
        with pytest.raises(GankitError, match=message):
            load_dataset(data)
    (dest / packed.LABELS_FILE).write_bytes(b"changed")
    with pytest.raises(GankitError, match="labels.npy does not match the checksum"):
        build_batches(data, 2, seed=0, with_labels=True)
    assert load_images(data).shape == (4, 1, 8, 8)  # unconditional runs never read the labels


def test_interrupted_labelled_pack_leaves_no_dataset(tmp_path):
    def interrupted():
        yield Decoded("img0", np.zeros((1, 8, 8), np.uint8), label=0)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pack(interrupted(), tmp_path / "ds", resolution=8, channels=1, strict=False, limit=None, expected=4,
             source={"kind": "test"}, class_names=["a", "b"])
    assert list(tmp_path.iterdir()) == []


# ---- sources without labels -------------------------------------------------------------------------

def test_with_labels_on_an_unlabelled_folder_or_zip_is_refused_before_decoding(tmp_path, monkeypatch):
    path = class_folder(tmp_path / "mixed")
    (path / "loose.png").write_bytes(grey_png(7))
    (path / "broken.png").write_bytes(b"not decoded: the layout is refused first")
    with pytest.raises(GankitError) as err:
        build_batches(image_config("folder", path), 4, seed=0, with_labels=True)
    message = str(err.value)
    assert "2 of the 14 images" in message and "not in a class subfolder (e.g. broken.png)" in message
    assert "Put each class's images in its own subfolder of data.path (torchvision's ImageFolder layout)" in message
    (path / "broken.png").unlink()
    assert load_dataset(image_config("folder", path)).labels is None  # unlabelled, not an error
    assert build_batches(image_config("folder", path), 4, seed=0).next().shape == (4, 1, 8, 8)

    archive = tmp_path / "flat.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.png", grey_png(1))
        z.writestr("b.png", grey_png(2))
    with pytest.raises(GankitError, match="images of zip .*flat.zip are not in a class subfolder.*ImageFolder"):
        build_batches(image_config("zip", archive), 2, seed=0, with_labels=True)


def test_single_class_is_a_layout_but_not_a_conditional_dataset(tmp_path):
    path = tmp_path / "one"
    for i in range(3):
        (path / "faces").mkdir(parents=True, exist_ok=True)
        (path / "faces" / f"{i}.png").write_bytes(grey_png(i))
    dataset = load_dataset(image_config("folder", path))
    assert dataset.class_names == ["faces"] and dataset.labels.tolist() == [0, 0, 0]
    with pytest.raises(GankitError, match="holds a single class, 'faces'.*at least two.*point data.path at it"):
        build_batches(image_config("folder", path), 2, seed=0, with_labels=True)


def test_labels_none_unlabelled_sources_and_class_name_count(tmp_path):
    with pytest.raises(GankitError, match="data.labels is none: set data.labels auto"):
        build_batches(DataConfig(source="toy-8gaussians", labels="none"), 4, seed=0, with_labels=True)
    with pytest.raises(GankitError, match="data.source toy-swissroll has none"):
        build_batches(DataConfig(source="toy-swissroll"), 4, seed=0, with_labels=True)
    with pytest.raises(GankitError, match="data.source lmdb at .* has none"):
        build_batches(image_config("lmdb", tmp_path), 4, seed=0, with_labels=True)
    with pytest.raises(GankitError, match="gives 2 name.*the data has 3 classes \\(ankle, bag, coat\\)"):
        build_batches(image_config("folder", class_folder(tmp_path / "c"), class_names=["x", "y"]), 4, seed=0,
                      with_labels=True)


def test_mismatched_or_out_of_range_idx_labels_are_refused(tmp_path):
    idx_pair(tmp_path / "short", label_count=29)
    with pytest.raises(GankitError) as err:
        load_images(DataConfig(source="mnist", path=str(tmp_path / "short")))
    assert "train-labels-idx1-ubyte.gz holds 29 labels but" in str(err.value)
    assert "train-images-idx3-ubyte.gz holds 30 images" in str(err.value)

    idx_pair(tmp_path / "wide")
    write_idx(tmp_path / "wide" / "train-labels-idx1-ubyte.gz", np.arange(30) % 12)
    with pytest.raises(GankitError, match="train-labels-idx1-ubyte.gz holds labels outside 0..9 \\(label 10 at index 10"):
        build_batches(DataConfig(source="mnist", path=str(tmp_path / "wide")), 4, seed=0, with_labels=True)
    assert load_images(DataConfig(source="mnist", path=str(tmp_path / "wide"))).shape[0] == 30  # unconditional: as before
