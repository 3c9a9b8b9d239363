"""fd_fmnist and kid_fmnist: Fréchet distance and KID in the feature space of a small Fashion-MNIST
classifier shipped with gankit, plus the KL divergence of the predicted-class histogram to uniform.

This metric works offline and on a CPU. Its values compare gankit runs with each other; they are on
another scale than Inception FIDs and must not be compared with them.

Input convention: the classifier sees 1 x 32 x 32 gray images scaled to [-1, 1], Fashion-MNIST's
28 x 28 images zero-padded by 2 px per side (gankit's data at resolution 32). Other inputs are brought
there the way gankit's data pipeline made them (see `to_classifier_input`).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gankit.errors import GankitError
from gankit.files import sha256_of  # noqa: F401 (the weights file's check, tests/test_fmnist_metric.py)
from gankit.metrics import stats
from gankit.metrics.progress import progress_bar

WEIGHTS_FILE = Path(__file__).parent / "weights" / "fmnist_classifier.safetensors"
# SHA-256 of WEIGHTS_FILE, written by scripts/train_fmnist_classifier.py; a mismatch refuses the file.
WEIGHTS_SHA256 = "c9f42e856db1170a7f51fb7697977cb0d2a898d932b1a1644a581b3730ad35f2"
INPUT_SIZE = 32
FEATURE_DIM = 128
NUM_CLASSES = 10
# Below this many images per side the 128-d covariance is singular and fd_fmnist meaningless.
MIN_SAMPLES = FEATURE_DIM + 1
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's convert("L") and gankit's data loader


class FashionClassifier(nn.Module):
    """Three strided conv blocks, a 128-d feature layer (the metric's features) and a 10-way head."""

    def __init__(self):
        super().__init__()

        def block(cin: int, cout: int, kernel: int) -> list[nn.Module]:
            conv = nn.Conv2d(cin, cout, kernel, stride=2, padding=kernel // 2, bias=False)
            return [conv, nn.BatchNorm2d(cout), nn.ReLU()]

        # Stride-2 convolutions rather than conv + max-pool at the same widths: 4x less CPU time per
        # step, which keeps training to a few minutes on one core. 32 -> 16 -> 8 -> 4 px.
        self.body = nn.Sequential(*block(1, 32, 5), *block(32, 64, 3), *block(64, 128, 3), nn.Flatten())
        self.embed = nn.Sequential(nn.Linear(128 * 4 * 4, FEATURE_DIM), nn.ReLU())
        self.dropout = nn.Dropout(0.3)  # training only; no parameters, so not in the weights file
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [N, 1, 32, 32] in [-1, 1] -> (features [N, 128], logits [N, 10])."""
        features = self.embed(self.body(x))
        return features, self.head(self.dropout(features))


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    # Antialiased bicubic rather than bilinear: it undoes gankit's resizes better (the round trip
    # 32 -> 64 -> 32 moves fd_fmnist half as much), which keeps the classifier on familiar inputs.
    x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x.clamp_(0, 255)


def to_classifier_input(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 images [N, 1|3, S, S] -> float [N, 1, 32, 32] in [-1, 1], undoing gankit's data fitting.

    3 channels become gray with the luma weights. Sizes above 32 (gankit pads 28 to 32, then
    resizes) are resized to 32; sizes below 32 (gankit resizes 28 directly) are resized to 28 and
    padded by 2 px of zeros per side, so 28 x 28 Fashion-MNIST is only padded and 32 x 32 untouched.
    """
    if not isinstance(images_u8, torch.Tensor) or images_u8.dtype != torch.uint8 or images_u8.dim() != 4:
        raise GankitError("fd_fmnist takes uint8 image tensors [N, C, H, W]")
    channels, height, width = images_u8.shape[1:]
    if channels not in (1, 3):
        raise GankitError(f"fd_fmnist takes 1- or 3-channel images, got {channels} channels")
    if height != width:
        raise GankitError(f"fd_fmnist takes square images, got {height}x{width}")
    x = images_u8.float()
    if channels == 3:
        x = (x * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True).round_()
    if height > INPUT_SIZE:
        x = _resize(x, INPUT_SIZE)
    elif height < INPUT_SIZE:
        if height != 28:
            x = _resize(x, 28)
        x = F.pad(x, (2, 2, 2, 2))
    return x / 127.5 - 1.0


def load_classifier(path: Path | str = WEIGHTS_FILE, device: str | torch.device = "cpu") -> FashionClassifier:
    """The shipped classifier in eval mode; refuses a weights file whose SHA-256 is not the recorded one."""
    from safetensors.torch import load as load_safetensors

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise GankitError(f"cannot read the fd_fmnist classifier weights {path}: {err}; reinstall gankit") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise GankitError(
            f"the fd_fmnist classifier weights {path} have SHA-256 {digest}, expected {WEIGHTS_SHA256}: "
            "the file was modified or corrupted; reinstall gankit"
        )
    model = FashionClassifier()
    # safetensors holds raw tensors only: loading it never executes code.
    model.load_state_dict(load_safetensors(data))
    return model.eval().to(device)


@functools.lru_cache(maxsize=4)
def _shipped_classifier(device: str) -> FashionClassifier:
    return load_classifier(WEIGHTS_FILE, device)


@torch.no_grad()
def fmnist_features(
    images_u8: torch.Tensor, device: str | torch.device = "cpu", batch_size: int = 500,
    progress: bool | None = False, desc: str = "classifier features",
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N, C, H, W] -> (features float64 [N, 128], logits float32 [N, 10]) on the CPU."""
    model = _shipped_classifier(str(torch.device(device)))
    features, logits = [], []
    with progress_bar(len(images_u8), desc, "img", progress) as bar:
        for chunk in images_u8.split(batch_size):
            chunk_features, chunk_logits = model(to_classifier_input(chunk).to(device))
            features.append(chunk_features.cpu().double())
            logits.append(chunk_logits.cpu().float())
            bar.update(len(chunk))
    if not features:
        return torch.zeros(0, FEATURE_DIM, dtype=torch.float64), torch.zeros(0, NUM_CLASSES)
    return torch.cat(features), torch.cat(logits)


def fmnist_metrics(
    real: torch.Tensor,
    fake: torch.Tensor,
    device: str | torch.device = "cpu",
    num_subsets: int = 100,
    subset_size: int = 1000,
    progress: bool | None = False,
) -> dict[str, float]:
    """{"fd_fmnist", "kid_fmnist", "class_kl"} of uint8 image sets real [N, C, H, W] and fake [M, C, H, W].

    KID uses min(subset_size, N, M) images per subset. class_kl is KL(fake class histogram || uniform),
    0 when the fake images spread evenly over the 10 classes, log(10) when they all fall in one.
    """
    for name, images in (("real", real), ("fake", fake)):
        if len(images) < MIN_SAMPLES:
            raise GankitError(
                f"fd_fmnist needs at least {MIN_SAMPLES} {name} images for a stable {FEATURE_DIM}-d covariance, "
                f"got {len(images)}; pass at least {MIN_SAMPLES} per side (10000 is the usual protocol, "
                "gankit eval --num-samples 10000)"
            )
    real_features, _ = fmnist_features(real, device, progress=progress, desc="classifier features (real)")
    fake_features, fake_logits = fmnist_features(fake, device, progress=progress,
                                                 desc="classifier features (generated)")
    kid_mean, _ = stats.kernel_inception_distance(real_features, fake_features, num_subsets, subset_size)
    class_counts = torch.bincount(fake_logits.argmax(1), minlength=NUM_CLASSES)
    return {
        "fd_fmnist": stats.frechet_distance(real_features, fake_features),
        "kid_fmnist": kid_mean,
        "class_kl": stats.kl_to_uniform(class_counts.numpy()),
    }
