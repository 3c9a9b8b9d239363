"""FID, KID, IS (TF-Inception features) and precision/recall (VGG16 features) through torch-fidelity.

torch-fidelity reproduces the TF reference implementations: the 2015-12-05 TF Inception graph,
TF1's bilinear resize from uint8 to 299x299, IS with 10 splits on the logits without the output
bias, KID with 100 subsets of 1000 and the cubic polynomial kernel, precision/recall (Kynkaanniemi
et al. 2019) with k=3 on VGG16 fc2 features. gankit hands it the uint8 images exactly as they
would be saved (grayscale repeated to 3 channels); generated images are input1 and real ones input2.

Weights: --inception-weights / --vgg16-weights name local files (offline machines); otherwise the
files are looked up in torch's hub cache and downloaded there when missing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset

from gankit.errors import GankitError
from gankit.metrics.progress import progress_bar

INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
# torch-fidelity's file and pytorch-fid's carry the same weights and the same hash suffix.
INCEPTION_FILES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
VGG16_FILES = ("vgg16-397923af.pth",)

EXTRACTORS = {
    "inception": {"option": "--inception-weights", "url": INCEPTION_URL, "files": INCEPTION_FILES,
                  "hash_prefix": None, "check": ("fc.weight", (1008, 2048)),
                  "what": "the TF-Inception weights"},
    "vgg16": {"option": "--vgg16-weights", "url": VGG16_URL, "files": VGG16_FILES,
              "hash_prefix": "397923af", "check": ("classifier.6.weight", (1000, 4096)),
              "what": "the torchvision VGG16 weights"},
}


class UInt8Images(Dataset):
    """uint8 images [N, C, H, W] served as torch-fidelity takes them: uint8 [3, H, W] per item.

    torch-fidelity has no progress callback, so the bar (desc, progress) follows the items it reads:
    it stands at the highest index served + 1 (a probe of item 0 before the batches counts once)."""

    def __init__(self, images: torch.Tensor, desc: str = "features", progress: bool | None = False):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise GankitError(f"Inception metrics take uint8 images [N, 1 or 3, H, W], got {images.dtype} "
                              f"{tuple(images.shape)}")
        self.images = images
        self.desc, self.progress = desc, progress
        self.bar = None  # opened at the first item: cached features are never read, and show no bar
        self.served = 0  # highest index served + 1

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        if self.bar is None:
            self.bar = progress_bar(len(self.images), self.desc, "img", self.progress)
        if index + 1 > self.served:
            self.bar.update(index + 1 - self.served)
            self.served = index + 1
            if self.served == len(self.images):
                self.bar.close()  # done: the next input's bar takes its line
        image = self.images[index]
        return image.expand(3, -1, -1) if image.shape[0] == 1 else image

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _download(url: str, destination: Path, hash_prefix: str | None) -> None:
    """Downloads url to destination (torch's hub cache); a separate function so tests can replace it."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(destination), hash_prefix=hash_prefix, progress=sys.stderr.isatty())


def resolve_weights(extractor: str, given: str | None) -> str:
    """A local path to the feature extractor's weights: the given file (checked), the file in torch's
    hub cache, or a fresh download into that cache. Offline without the file: a GankitError."""
    spec = EXTRACTORS[extractor]
    if given:
        return _checked_weights_file(Path(given), spec)
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    for name in spec["files"]:
        if (cache / name).is_file():
            return str(cache / name)
    destination = cache / spec["files"][0]
    try:
        _download(spec["url"], destination, spec["hash_prefix"])
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a hash mismatch a RuntimeError
        raise GankitError(
            f"{spec['what']} are not in {cache} and the download from {spec['url']} failed ({err}). "
            f"On an offline machine pass {spec['option']} PATH with the file {spec['files'][-1]} "
            f"(or put it in {cache})"
        ) from None
    return str(destination)


def _checked_weights_file(path: Path, spec: dict) -> str:
    # torch-fidelity loads the file with weights_only=False; loading it here first with
    # weights_only=True guarantees it holds tensors only, so that second load runs no code.
    option = spec["option"]
    if not path.is_file():
        raise GankitError(f"{option} {path}: no such file (expected {spec['files'][-1]})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle with code, a damaged file, not a torch file at all
        raise GankitError(f"{option} {path} is not a plain PyTorch state dict ({type(err).__name__}); "
                          f"expected {spec['files'][-1]}") from None
    key, shape = spec["check"]
    if not isinstance(state, dict) or key not in state or tuple(state[key].shape) != shape:
        raise GankitError(f"{option} {path} does not hold {spec['what']} (no {key} of shape {shape}); "
                          f"expected the file {spec['files'][-1]}")
    return str(path)


def inception_metrics(names, fake, real, context) -> dict:
    """fid, kid, is (TF-Inception) or pr (VGG16), whichever of them are in names, in one call each."""
    names = set(names)
    use_vgg = "pr" in names
    if use_vgg and names - {"pr"}:
        raise ValueError("pr uses VGG16 features: compute it in its own call")
    extractor = "vgg16" if use_vgg else "inception"
    weights = resolve_weights(extractor, context.vgg16_weights if use_vgg else context.inception_weights)
    import torch_fidelity  # after the weights: an offline machine fails fast

    binary = bool(names & {"fid", "kid", "pr"})
    network = "VGG16" if use_vgg else "Inception"
    inputs = [UInt8Images(fake.data, f"{network} features (generated)", context.progress)]
    options = dict(
        input1=inputs[0],
        isc="is" in names, fid="fid" in names, kid="kid" in names, prc="pr" in names,
        feature_extractor="vgg16" if use_vgg else "inception-v3-compat",
        feature_extractor_weights_path=weights,
        cuda=context.device.type == "cuda",
        batch_size=64,
        save_cpu_ram=True,  # no worker processes; precision/recall distances in blocks
        prc_batch_size=2000,  # a 2000 x N distance block at a time (N x N would be 10 GB at N=50k)
        verbose=False,  # gankit's bars (UInt8Images) show the work; torch-fidelity's would be a second set
    )
    if binary:
        inputs.append(UInt8Images(real.data, f"{network} features (real)", context.progress))
        options["input2"] = inputs[1]
        if real.key is not None:  # fixed real set: torch-fidelity caches its features on disk
            from gankit.metrics.sources import content_digest

            options["input2_cache_name"] = f"gankit-{content_digest(real.data)}-{Path(weights).stem}"
    else:
        options["cache"] = False
    try:
        values = torch_fidelity.calculate_metrics(**options)
    finally:
        for images in inputs:
            images.close_bar()

    out: dict = {}
    if "fid" in names:
        out["fid"] = float(values[torch_fidelity.KEY_METRIC_FID])
    if "kid" in names:
        out["kid"] = float(values[torch_fidelity.KEY_METRIC_KID_MEAN])
    if "is" in names:
        out["is"] = {"mean": float(values[torch_fidelity.KEY_METRIC_ISC_MEAN]),
                     "std": float(values[torch_fidelity.KEY_METRIC_ISC_STD])}
    if "pr" in names:
        out["pr"] = {"precision": float(values[torch_fidelity.KEY_METRIC_PRECISION]),
                     "recall": float(values[torch_fidelity.KEY_METRIC_RECALL])}
    return out
