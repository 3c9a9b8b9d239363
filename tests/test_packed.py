"""The packed dataset format: round trip, memory-mapped streaming, and refusing damaged or mismatched files."""

import hashlib
import json

import numpy as np
import pytest
import torch

from gankit import config as cfg
from gankit.config import DataConfig
from gankit.data import build_batches, load_images
from gankit.data import packed
from gankit.data.images import Decoded
from gankit.errors import GankitError
from gankit.prepare.pack import pack


def write_packed(dest, images: np.ndarray, **kwargs):
    results = (Decoded(f"img{i}", image) for i, image in enumerate(images))
    return pack(results, dest, resolution=images.shape[-1], channels=images.shape[1], strict=False,
                limit=kwargs.get("limit"), expected=len(images), source={"kind": "test", "path": "memory"})


@pytest.fixture
def images():
    return np.random.RandomState(0).randint(0, 256, (10, 3, 8, 8)).astype(np.uint8)


def test_round_trip_in_memory_and_memory_mapped(tmp_path, images):
    dest = tmp_path / "ds"
    write_packed(dest, images)
    raw = (dest / packed.IMAGES_FILE).read_bytes()
    assert len(raw) == packed.HEADER_BYTES + images.nbytes and raw[:8] == packed.MAGIC
    assert raw[packed.HEADER_BYTES:] == images.tobytes()  # NCHW order right after the header
    manifest = json.loads((dest / packed.MANIFEST_FILE).read_text())
    assert (manifest["count"], manifest["resolution"], manifest["channels"]) == (10, 8, 3)
    assert manifest["checksum"] == "sha256:" + hashlib.sha256(images.tobytes()).hexdigest()

    in_memory = packed.load_packed(dest, 8, 3, stream=False)
    streamed = packed.load_packed(dest, 8, 3, stream=True)
    assert torch.equal(in_memory, torch.from_numpy(images)) and torch.equal(streamed, in_memory)
    assert isinstance(streamed.numpy().base, np.memmap) or streamed.numpy().base is not None
    # data.path may also name the images file itself; max_images keeps the first N.
    subset = packed.load_packed(dest / packed.IMAGES_FILE, 8, 3, limit=4, stream=False)
    assert torch.equal(subset, torch.from_numpy(images[:4]))


def test_streamed_batches_match_in_memory_batches(tmp_path, images, monkeypatch):
    write_packed(tmp_path / "ds", images)
    data = DataConfig(source="packed", path=str(tmp_path / "ds"), resolution=8, channels=3)
    monkeypatch.setenv(packed.STREAM_ENV, "1")
    streamed = build_batches(data, 4, seed=5)
    monkeypatch.setenv(packed.STREAM_ENV, "0")
    in_memory = build_batches(data, 4, seed=5)
    for _ in range(5):  # crosses an epoch boundary
        assert torch.equal(streamed.next(), in_memory.next())


def test_stream_choice_follows_size_and_override(monkeypatch):
    monkeypatch.delenv(packed.STREAM_ENV, raising=False)
    assert packed.should_stream(1 << 60) and not packed.should_stream(1024)
    monkeypatch.setenv(packed.STREAM_ENV, "1")
    assert packed.should_stream(1024)
    monkeypatch.setenv(packed.STREAM_ENV, "0")
    assert not packed.should_stream(1 << 60)


def test_resolution_or_channel_mismatch_is_a_clear_error(tmp_path, images):
    write_packed(tmp_path / "ds", images)
    with pytest.raises(GankitError) as err:
        load_images(DataConfig(source="packed", path=str(tmp_path / "ds"), resolution=16, channels=3))
    message = str(err.value)
    assert "8x8 images with 3 channel(s)" in message and "data.resolution 16" in message
    assert "data.resolution=8" in message and "--size 16" in message
    with pytest.raises(GankitError, match="data.channels 1"):
        load_images(DataConfig(source="packed", path=str(tmp_path / "ds"), resolution=8, channels=1))


def test_packed_and_lmdb_sources_need_a_path():
    for source in ("packed", "lmdb"):
        with pytest.raises(GankitError, match=f"data.source {source} needs data.path"):
            cfg.load("dcgan-fashion-mnist", [f"data.source={source}", "data.channels=3", "model.conditioning=none"])


def test_changed_bytes_fail_the_checksum(tmp_path, images):
    dest = tmp_path / "ds"
    write_packed(dest, images)
    path = dest / packed.IMAGES_FILE
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(GankitError, match="checksum"):
        packed.load_packed(dest, 8, 3, stream=False)
    with pytest.raises(GankitError, match="checksum"):
        packed.verify_packed(dest)


def test_truncated_or_mislabelled_files_are_refused(tmp_path, images):
    dest = tmp_path / "ds"
    write_packed(dest, images)
    path = dest / packed.IMAGES_FILE
    full = path.read_bytes()
    path.write_bytes(full[:-5])
    with pytest.raises(GankitError, match="truncated or corrupt"):
        packed.load_packed(dest, 8, 3)
    path.write_bytes(b"NOTPACK!" + full[8:])
    with pytest.raises(GankitError, match="bad magic"):
        packed.load_packed(dest, 8, 3)
    path.write_bytes(full)
    manifest = json.loads((dest / packed.MANIFEST_FILE).read_text())
    for key, value in [("count", 11), ("count", -3), ("channels", 2), ("count", "10")]:
        (dest / packed.MANIFEST_FILE).write_text(json.dumps({**manifest, key: value}))
        with pytest.raises(GankitError, match=key if key != "count" or value != 11 else "header"):
            packed.load_packed(dest, 8, 3)


def test_folder_without_manifest_is_not_a_dataset(tmp_path, images):
    dest = tmp_path / "ds"
    write_packed(dest, images)
    (dest / packed.MANIFEST_FILE).unlink()
    with pytest.raises(GankitError, match="not a complete packed dataset.*interrupted"):
        packed.load_packed(dest, 8, 3)
    with pytest.raises(GankitError, match="does not exist"):
        packed.load_packed(tmp_path / "missing", 8, 3)


def test_pack_refuses_a_non_empty_destination_and_honours_limit(tmp_path, images):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(GankitError, match="not empty"):
        write_packed(tmp_path / "full", images)
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    summary = write_packed(tmp_path / "empty", images, limit=3)
    assert summary.count == 3
    assert torch.equal(packed.load_packed(tmp_path / "empty", 8, 3), torch.from_numpy(images[:3]))


def test_interrupted_pack_leaves_no_dataset(tmp_path, images):
    def interrupted():
        for i in range(4):
            yield Decoded(f"img{i}", images[i])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pack(interrupted(), tmp_path / "ds", resolution=8, channels=3, strict=False, limit=None, expected=10,
             source={"kind": "test"})
    assert list(tmp_path.iterdir()) == []  # neither DEST nor the temporary folder
