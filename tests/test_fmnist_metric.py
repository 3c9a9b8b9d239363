"""The shipped Fashion-MNIST classifier and the fd_fmnist / kid_fmnist / class_kl metric built on it."""

import math
import shutil

import pytest
import torch

from gankit.data.idx import load_idx_images
from gankit.data.transforms import fit_digits
from gankit.errors import GankitError
from gankit.metrics import fmnist


@pytest.fixture(scope="module")
def test_set():
    images, labels = load_idx_images("fashion-mnist", None, "test")
    return images[:3000], labels[:3000]


def test_shipped_weights_are_small_and_match_the_recorded_checksum():
    assert fmnist.WEIGHTS_FILE.stat().st_size < 2 * 1024 * 1024
    assert fmnist.sha256_of(fmnist.WEIGHTS_FILE) == fmnist.WEIGHTS_SHA256


def test_classifier_accuracy_on_2000_test_images(test_set):
    images, labels = test_set
    _, logits = fmnist.fmnist_features(images[:2000])
    accuracy = (logits.argmax(1) == labels[:2000]).float().mean().item()
    assert accuracy >= 0.88


def test_a_tampered_weights_file_is_refused_with_its_name(tmp_path):
    tampered = tmp_path / "tampered_classifier.safetensors"
    shutil.copyfile(fmnist.WEIGHTS_FILE, tampered)
    data = bytearray(tampered.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    tampered.write_bytes(bytes(data))
    with pytest.raises(GankitError, match="tampered_classifier.safetensors"):
        fmnist.load_classifier(tampered)
    # The untouched copy loads: the refusal is the checksum's doing, not the path's.
    intact = tmp_path / "intact.safetensors"
    shutil.copyfile(fmnist.WEIGHTS_FILE, intact)
    assert isinstance(fmnist.load_classifier(intact), fmnist.FashionClassifier)


def test_input_convention_undoes_gankit_padding_and_colour(test_set):
    images = test_set[0][:300]
    at_28 = fmnist.to_classifier_input(images)
    at_32 = fmnist.to_classifier_input(fit_digits(images, 32, 1))
    assert at_28.shape == (300, 1, 32, 32)
    assert at_28.min() == -1.0 and at_28.max() <= 1.0
    assert torch.equal(at_28, at_32)  # 28 px is exactly the 32 px data without its zero border
    assert torch.equal(fmnist.to_classifier_input(fit_digits(images, 32, 3)), at_32)  # gray RGB -> same gray


@pytest.mark.parametrize("resolution, channels, min_accuracy", [(64, 3, 0.88), (16, 1, 0.80)])
def test_classifier_still_recognizes_gankit_data_at_other_resolutions(test_set, resolution, channels, min_accuracy):
    # 64 px is 32 px padded then upsampled, and must be brought back down to 32 without cropping;
    # 16 px is 28 resized down, and must go back to 28 then be padded: without the padding, or with
    # the border cropped, accuracy drops to about 0.75.
    images, labels = test_set[0][:2000], test_set[1][:2000]
    _, logits = fmnist.fmnist_features(fit_digits(images, resolution, channels))
    assert (logits.argmax(1) == labels).float().mean().item() >= min_accuracy


def test_fd_fmnist_separates_real_images_from_noise_and_collapse(test_set):
    images, _ = test_set
    real, other_real = images[:800], images[800:1600]
    noise = torch.randint(0, 256, (800, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    collapsed = images[2999:].expand(800, -1, -1, -1)
    options = dict(num_subsets=10, subset_size=400)
    real_vs_real = fmnist.fmnist_metrics(real, other_real, **options)
    real_vs_noise = fmnist.fmnist_metrics(real, noise, **options)
    real_vs_collapsed = fmnist.fmnist_metrics(real, collapsed, **options)
    assert real_vs_real["fd_fmnist"] * 20 < real_vs_noise["fd_fmnist"]
    assert real_vs_real["fd_fmnist"] * 20 < real_vs_collapsed["fd_fmnist"]
    assert abs(real_vs_real["kid_fmnist"]) * 20 < real_vs_noise["kid_fmnist"]
    assert abs(real_vs_real["kid_fmnist"]) * 20 < real_vs_collapsed["kid_fmnist"]
    # The test set is balanced (about 80 of each class here): its predicted histogram is near uniform.
    assert real_vs_real["class_kl"] < 0.05
    assert real_vs_collapsed["class_kl"] == pytest.approx(math.log(10))


def test_too_few_or_malformed_images_are_refused(test_set):
    images = test_set[0]
    with pytest.raises(GankitError, match=f"at least {fmnist.MIN_SAMPLES} fake images"):
        fmnist.fmnist_metrics(images[:500], images[:fmnist.MIN_SAMPLES - 1])
    with pytest.raises(GankitError, match="uint8"):
        fmnist.fmnist_features(images[:10].float())
    with pytest.raises(GankitError, match="1- or 3-channel"):
        fmnist.fmnist_features(images[:10].expand(-1, 2, -1, -1))


def test_kid_subset_size_shrinks_to_the_sample_count(test_set):
    images = test_set[0]
    noise = torch.randint(0, 256, (200, 1, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    # 200 images per side with the default subset_size 1000: subsets of 200, no error, still separating.
    real_vs_real = fmnist.fmnist_metrics(images[:200], images[200:400], num_subsets=5)
    real_vs_noise = fmnist.fmnist_metrics(images[:200], noise, num_subsets=5)
    assert abs(real_vs_real["kid_fmnist"]) * 20 < real_vs_noise["kid_fmnist"]
