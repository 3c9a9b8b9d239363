"""The demo's training step (dcgan-fashion-mnist, class-conditional, batch 32, bf16 autocast, channels_last)
with and without each of its CPU speed-ups, alternated in one process so that the machine's drift cancels.

The step is the training loop's: G forward, D on reals and detached fakes, D's Adam step, D on the fakes for
G's loss, G's Adam step, the EMA update. The variants:

    before       plain 4x4 convolutions for G's first and D's last layer, the label lookups of the projection
                 and of the conditional batch norms as bf16 matmuls (autocast), the projection term in NCHW
                 order, Adam's default (single-tensor on CPU): the code before 2026-12-02
    +dense       G's first and D's last layer as the float32 matrix products they are (models/dense_conv.py)
    +labels      the label lookups in float32, the projection term in phi's memory order
                 (models/conditioning.py)
    +fused       Adam's fused kernel (train.fused_optimizer, which the preset sets)
    after        all three: what the preset runs now
    after-fp32   all three, without bf16 autocast: what bf16 itself is worth on this CPU (train.precision fp32)
    after-nchw   all three, in the default memory format: what channels_last is worth (train.channels_last)

    python benchmarks/demo_step.py                   # 2 threads, 8 rounds of 40 steps per variant
    python benchmarks/demo_step.py --threads 1 --rounds 4

Prints first the two dense layers alone (forward and backward at batch 32 in bf16 autocast, channels_last,
as plain convolutions and as the matrix products), the small matmuls in bf16 and float32 and leaky ReLU's
backward with matching and mixed memory formats, then each variant's median images/s over the rounds and
its ratio to `before`.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from gankit import config as gcfg
from gankit.models import build_discriminator, build_generator, discriminator_norm
from gankit.models.conditioning import ConditionalBatchNorm2d, DiscriminatorHead, class_weights
from gankit.models.dense_conv import DenseConv2d, DenseConvTranspose2d
from gankit.training.ema import update_ema

BATCH = 32
VARIANTS = {"before": set(), "+dense": {"dense"}, "+labels": {"labels"}, "+fused": {"fused"},
            "after": {"dense", "labels", "fused"},
            "after-fp32": {"dense", "labels", "fused", "fp32"}, "after-nchw": {"dense", "labels", "fused", "nchw"}}


def old_projection(head: DiscriminatorHead, phi: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """DiscriminatorHead's projection as it was: <embed(y), phi>, embed under autocast, phi flattened in NCHW order."""
    out = head.score(phi).flatten(1)[:, 0]
    weights = class_weights(labels, head.num_classes, phi.dtype)
    return out + (head.embed(weights) * phi.flatten(1)).sum(1)


def old_conditional_norm(norm: ConditionalBatchNorm2d, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ConditionalBatchNorm2d as it was: the (gamma, beta) lookups as matmuls under autocast."""
    weights = class_weights(labels, norm.num_classes, norm.gamma.dtype)
    gamma, beta = weights @ norm.gamma, weights @ norm.beta
    out = norm.norm(x)
    return out * gamma.to(out.dtype)[:, :, None, None] + beta.to(out.dtype)[:, :, None, None]


def build(changes: set[str], config: gcfg.Config):
    torch.manual_seed(0)
    G = build_generator(config.model, config.data)
    D = build_discriminator(config.model, config.data, discriminator_norm(config))
    for m in [*G.modules(), *D.modules()]:
        if "dense" not in changes and isinstance(m, DenseConv2d):
            m.forward = lambda x, m=m: nn.Conv2d.forward(m, x)
        if "dense" not in changes and isinstance(m, DenseConvTranspose2d):
            m.forward = lambda x, m=m: nn.ConvTranspose2d.forward(m, x)
        if "labels" not in changes and isinstance(m, DiscriminatorHead):
            m.forward = lambda phi, labels, m=m: old_projection(m, phi, labels)
        if "labels" not in changes and isinstance(m, ConditionalBatchNorm2d):
            m.forward = lambda x, labels, m=m: old_conditional_norm(m, x, labels)
    if "nchw" not in changes:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    fused = {"fused": True} if "fused" in changes else {}
    opt_g = torch.optim.Adam(G.parameters(), config.train.g_lr, betas=config.train.betas, **fused)
    opt_d = torch.optim.Adam(D.parameters(), config.train.d_lr, betas=config.train.betas, **fused)
    return G, D, copy.deepcopy(G), opt_g, opt_d


def train_step(nets, real: torch.Tensor, num_classes: int, bf16: bool = True) -> None:
    G, D, G_ema, opt_g, opt_d = nets
    real_labels, fake_labels = torch.randint(num_classes, (BATCH,)), torch.randint(num_classes, (BATCH,))
    z = torch.randn(BATCH, G.z_dim)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        fake = G(z, fake_labels)
        d_loss = F.softplus(-D(real, real_labels)).mean() + F.softplus(D(fake.detach(), fake_labels)).mean()
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    D.requires_grad_(False)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        g_loss = F.softplus(-D(fake, fake_labels)).mean()
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    D.requires_grad_(True)
    update_ema(G_ema, G, 0.999)


def time_layers(rounds: int) -> None:
    """G's first layer (100 -> 4x4x128 from the 1x1 latent) and D's last (4x4x128 -> 1), each as the plain
    convolution and as DenseConv*'s matmul, forward and backward, alternated; median milliseconds."""
    cases = {"G first layer": (DenseConvTranspose2d(100, 128, 4, 1, 0, bias=False), nn.ConvTranspose2d,
                               (BATCH, 100, 1, 1)),
             "D last layer": (DenseConv2d(128, 1, 4, 1, 0), nn.Conv2d, (BATCH, 128, 4, 4))}
    for name, (layer, plain, shape) in cases.items():
        layer = layer.to(memory_format=torch.channels_last)
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        forms = {"convolution": lambda: plain.forward(layer, x), "matmul": lambda: layer(x)}
        times: dict[str, list[float]] = {form: [] for form in forms}
        for _ in range(rounds):
            for form, run in forms.items():
                start = time.perf_counter()
                for _ in range(20):
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        out = run()
                    out.float().sum().backward()
                times[form].append((time.perf_counter() - start) / 20 * 1e3)
        conv, dense = (statistics.median(times[f]) for f in forms)
        print(f"{name:14s} forward+backward: convolution {conv:.2f} ms, matmul {dense:.2f} ms (x{conv / dense:.1f})")


def median_us(run, rounds: int, repeat: int = 50) -> float:
    run()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            run()
        times.append((time.perf_counter() - start) / repeat * 1e6)
    return statistics.median(times)


def time_parts(rounds: int) -> None:
    """Why the changes help: the small matmuls of the dense layers and label lookups in bf16 against float32
    (forward + backward), and leaky ReLU's backward with the gradient in the activation's memory format
    against the other one (what the NCHW-order projection made it do)."""
    for m, k, n in [(BATCH, 100, 2048), (BATCH, 2048, 1), (BATCH, 10, 2048)]:
        row = []
        for dtype in (torch.bfloat16, torch.float32):
            a = torch.randn(m, k, dtype=dtype, requires_grad=True)
            b = torch.randn(k, n, dtype=dtype, requires_grad=True)
            upstream = torch.randn(m, n, dtype=dtype)
            row.append(median_us(lambda: (a @ b).backward(upstream), rounds))
        print(f"matmul [{m},{k}]x[{k},{n}] forward+backward: bf16 {row[0]:.0f} us, float32 {row[1]:.0f} us "
              f"(x{row[0] / row[1]:.1f})")
    x = torch.randn(BATCH, 128, 4, 4, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    same = torch.randn_like(x)  # channels_last, as x
    mixed = same.contiguous()  # NCHW
    times = [median_us(lambda g=g: torch.ops.aten.leaky_relu_backward(g, x, 0.2, True), rounds) for g in (same, mixed)]
    print(f"leaky_relu backward {BATCH}x128x4x4 bf16 channels_last: gradient channels_last {times[0]:.0f} us, "
          f"NCHW {times[1]:.0f} us (x{times[1] / times[0]:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40, help="steps per variant per round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    num_classes = 10
    config = gcfg.load("dcgan-fashion-mnist", [f"data.class_names=[{','.join((f'c{k}' for k in range(num_classes)))}]"])
    # Random images stand in for Fashion-MNIST: the step's cost does not depend on the pixels.
    real = (torch.rand(BATCH, 1, 32, 32) * 2 - 1).contiguous(memory_format=torch.channels_last)
    time_layers(args.rounds)
    time_parts(args.rounds)
    nets = {name: build(changes, config) for name, changes in VARIANTS.items()}
    bf16 = {name: "fp32" not in changes for name, changes in VARIANTS.items()}
    nchw_real = real.contiguous()
    reals = {name: nchw_real if "nchw" in changes else real for name, changes in VARIANTS.items()}
    for name, n in nets.items():  # warm-up: oneDNN builds its kernels on first use
        for _ in range(10):
            train_step(n, reals[name], num_classes, bf16[name])
    rates: dict[str, list[float]] = {name: [] for name in nets}
    for _ in range(args.rounds):
        for name, n in nets.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                train_step(n, reals[name], num_classes, bf16[name])
            rates[name].append(args.steps * BATCH / (time.perf_counter() - start))
    reference = statistics.median(rates["before"])
    print(f"dcgan-fashion-mnist step, batch {BATCH}, bf16 autocast and channels_last (but as named), {args.threads} threads, "
          f"{args.rounds} rounds of {args.steps} steps")
    for name, values in rates.items():
        median = statistics.median(values)
        rounds = ", ".join(f"{v:.0f}" for v in values)
        print(f"{name:10s} {median:7.1f} img/s  x{median / reference:.3f}  (rounds: {rounds})")


if __name__ == "__main__":
    main()
