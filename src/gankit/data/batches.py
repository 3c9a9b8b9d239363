"""Resumable batch streams: the position in the data order is part of the training state."""

from __future__ import annotations

import torch

from gankit.data.toy import sample_toy
from gankit.errors import GankitError


class ImageBatches:
    """Shuffled, drop-last batches of an in-memory uint8 tensor. The order of epoch e is a
    permutation drawn from (seed, e) alone, so (epoch, position) is enough to resume exactly."""

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int):
        if len(images) < batch_size:
            raise GankitError(
                f"the dataset has {len(images)} images, fewer than train.batch_size {batch_size}: "
                "lower the batch size or add images"
            )
        self.images = images
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.images), generator=generator)

    def next(self, batch_size: int | None = None) -> torch.Tensor:
        """The next batch (of batch_size, default the stream's own; Progressive GAN varies it per scale)."""
        size = batch_size or self.batch_size
        if self.position + size > len(self.images):
            self.epoch += 1
            self.position = 0
            self._order = self._permutation(self.epoch)
        index = self._order[self.position : self.position + size]
        self.position += size
        return self.images[index]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation(self.epoch)


class ToyBatches:
    """Fresh points from the toy distribution, drawn with a generator whose state is saved."""

    def __init__(self, source: str, batch_size: int, seed: int):
        self.source = source
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def next(self, batch_size: int | None = None) -> torch.Tensor:
        return sample_toy(self.source, batch_size or self.batch_size, self.generator)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
