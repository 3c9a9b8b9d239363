"""Trains the Fashion-MNIST classifier behind fd_fmnist / kid_fmnist and writes its weights.

The shipped weights came from exactly this command (about 4 minutes on one CPU core):

    .venv/bin/python scripts/train_fmnist_classifier.py \\
        --out src/gankit/metrics/weights/fmnist_classifier.safetensors

It prints the test accuracy and the file's SHA-256, which goes into WEIGHTS_SHA256 in
src/gankit/metrics/fmnist.py (the loader refuses any other file). Deterministic: a fixed seed,
deterministic algorithms and one thread give the same weights on the same machine and torch version.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from gankit.data.idx import load_idx_images
from gankit.metrics.fmnist import FashionClassifier, to_classifier_input


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the .safetensors weights")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam peak learning rate, cosine-annealed to 0")
    parser.add_argument("--seed", type=int, default=0)
    # One thread: reproducible reductions, and faster than two on a machine shared with other jobs.
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args()


@torch.no_grad()
def accuracy(model: FashionClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    correct = 0
    for chunk, chunk_labels in zip(images.split(1000), labels.split(1000)):
        _, logits = model(to_classifier_input(chunk))
        correct += int((logits.argmax(1) == chunk_labels).sum())
    return correct / len(labels)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)

    train_images, train_labels = load_idx_images("fashion-mnist", None, "train")
    test_images, test_labels = load_idx_images("fashion-mnist", None, "test")
    # The classifier's input convention: 28 px padded to 32, scaled to [-1, 1]; done once up front.
    train_inputs = to_classifier_input(train_images)

    model = FashionClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = len(train_inputs) // args.batch_size  # the last partial batch is dropped
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs * steps_per_epoch)
    order_rng = torch.Generator().manual_seed(args.seed)

    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train_inputs), generator=order_rng)
        total_loss = 0.0
        for step in range(steps_per_epoch):
            batch = order[step * args.batch_size : (step + 1) * args.batch_size]
            _, logits = model(train_inputs[batch])
            loss = F.cross_entropy(logits, train_labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item()
        print(
            f"epoch {epoch + 1}/{args.epochs}: train loss {total_loss / steps_per_epoch:.4f}, "
            f"test accuracy {accuracy(model, test_images, test_labels):.4f}, {time.time() - start:.0f} s",
            flush=True,
        )

    test_accuracy = accuracy(model, test_images, test_labels)
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    about = {
        "input": "1x32x32 gray, Fashion-MNIST 28x28 zero-padded by 2 px, scaled to [-1, 1]",
        "features": "128-d, output of embed (after ReLU)",
        "test_accuracy": f"{test_accuracy:.4f}",
        "trained_with": f"epochs={args.epochs} batch_size={args.batch_size} lr={args.lr} seed={args.seed}",
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # One metadata key holding sorted JSON: safetensors writes a multi-key metadata map in a random
    # order, which would change the file's bytes (and its checksum) from run to run.
    save_file(state, str(args.out), metadata={"gankit": json.dumps(about, sort_keys=True)})
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"test accuracy {test_accuracy:.4f} on {len(test_labels)} images")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes), sha256 {digest}")


if __name__ == "__main__":
    main()
