"""Training throughput: gankit's training loop against a textbook reference loop, in the same run.

The reference is the loop the tutorials write (the PyTorch examples' DCGAN): a Dataset that turns each
uint8 image into a PIL image and runs torchvision transforms per sample, a DataLoader with 2 workers,
fp32, a discriminator ending in a sigmoid with nn.BCELoss, loss values read with .item() every step.
gankit runs its real `train()` on the same architecture and hyper-parameters. The two are alternated
(reference, gankit, reference, gankit, ...) and the ratio of their median images/s is printed, with the
achieved GFLOP/s as a fraction of this machine's matrix-multiply peak measured in the same run.

    python benchmarks/train_speed.py                       # all cases, variants fp32, bf16, bf16+cl
    python benchmarks/train_speed.py --case dcgan64 --variants fp32,bf16+cl+fused --rounds 3
    python benchmarks/train_speed.py --device cuda --case dcgan64 --variants fp32,bf16,fp16,bf16+cl+compile \
        --data-path DIR                                    # on a GPU; DIR holds Fashion-MNIST's IDX files

On CUDA both loops run on the GPU (the reference's loader still makes PIL images on the CPU, as the
tutorials do) and the reference sets cudnn.benchmark, as the PyTorch example does and gankit does on CUDA.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import flop_registry

from gankit import config as gcfg
from gankit.data.idx import load_idx_images
from gankit_runs import STYLEGAN2_CONFIG_F

DCGAN_REFERENCE = ["model.z_dim=100", "model.g_channels=64", "model.d_channels=64", "model.g_upsample=transposed",
                   "model.d_norm=batch", "model.d_spectral_norm=false", "loss.kind=nsgan", "train.n_critic=1",
                   "model.conditioning=none", "train.lr_schedule=constant"]  # the reference is unconditional
CASES = {
    # name: (gankit preset, overrides matching the reference, reference loss, n_critic, resolution, batch)
    # The reference's networks are the PyTorch examples' DCGAN (widths 64, z 100, transposed convolutions,
    # the non-saturating BCE loss), pinned here whatever the demo preset's own recipe.
    "dcgan64": ("dcgan-fashion-mnist", ["data.resolution=64", "train.batch_size=64", *DCGAN_REFERENCE], "bce", 1, 64, 64),
    "dcgan32": ("dcgan-fashion-mnist", ["train.batch_size=64", *DCGAN_REFERENCE], "bce", 1, 32, 64),
    "wgangp32": ("wgangp-fashion-mnist", ["train.batch_size=64"], "wgan-gp", 5, 32, 64),
    # The PGAN preset at its last scale (32x32, fade-in over): the earlier scales last one step each so
    # that the timed steps are the steady state of the full network, the costliest part of the run.
    "pgan32": ("pgan-fashion-mnist", ["train.max_iter_at_scale=[1,1,1,100000]", "train.fade_iters=0"],
               "pgan", 1, 32, 32),
    # StyleGAN2 against the plain loop of benchmarks/stylegan2_reference.py (grouped modulated convolutions,
    # fp32, R1 and path length on every step): the CPU preset at 32x32, and at 64x64 with channel_base 1024.
    # The preset's config F parts are pinned on (the reference is config F, unconditional).
    "stylegan2-32": ("stylegan2-fashion-mnist", STYLEGAN2_CONFIG_F, "stylegan2", 1, 32, 32),
    "stylegan2-64": ("stylegan2-fashion-mnist", ["data.resolution=64", "model.channel_base=1024",
                                                 *STYLEGAN2_CONFIG_F], "stylegan2", 1, 64, 32),
}
# The FLOPs of a StyleGAN2 step are counted without its lazy regularizers (they run on 1 step in 16 and 4)


# ---- the textbook reference ---------------------------------------------------------------------

class PerSamplePILDataset(Dataset):
    """What torchvision's FashionMNIST does: one PIL image per item, transforms per sample."""

    def __init__(self, images_uint8: torch.Tensor, resolution: int):
        import torchvision.transforms as T

        self.images = images_uint8[:, 0].numpy()
        self.transform = T.Compose([T.Resize(resolution), T.CenterCrop(resolution), T.ToTensor(),
                                    T.Normalize((0.5,), (0.5,))])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index], mode="L")), 0


def textbook_models(resolution: int, nz=100, ngf=64, ndf=64, nc=1, sigmoid=True, batch_norm_d=True):
    """The PyTorch examples' DCGAN, generalised to 32 or 64 px."""
    doublings = {32: 3, 64: 4}[resolution]
    g_layers, mult = [], 2 ** (doublings - 1)
    g_layers += [nn.ConvTranspose2d(nz, ngf * mult, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * mult), nn.ReLU(True)]
    for _ in range(doublings - 1):
        g_layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 4, 2, 1, bias=False),
                     nn.BatchNorm2d(ngf * mult // 2), nn.ReLU(True)]
        mult //= 2
    g_layers += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
    d_layers, mult = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)], 1
    for _ in range(doublings - 1):
        norm = nn.BatchNorm2d(ndf * mult * 2) if batch_norm_d else nn.GroupNorm(1, ndf * mult * 2)
        d_layers += [nn.Conv2d(ndf * mult, ndf * mult * 2, 4, 2, 1, bias=False), norm, nn.LeakyReLU(0.2, True)]
        mult *= 2
    d_layers += [nn.Conv2d(ndf * mult, 1, 4, 1, 0, bias=False)] + ([nn.Sigmoid()] if sigmoid else [])
    G, D = nn.Sequential(*g_layers), nn.Sequential(*d_layers)
    for m in list(G.modules()) + list(D.modules()):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
    return G, D


def textbook_pgan_models(resolution: int):
    """gankit's fully grown PGAN networks: a tutorial reproducing the paper defines the same layers."""
    from gankit.models.pgan import PGANDiscriminator, PGANGenerator

    depths = [128, 128, 64, 32]
    return PGANGenerator(128, resolution, 1, depths), PGANDiscriminator(resolution, 1, depths)


def run_reference(images: torch.Tensor, resolution: int, loss: str, n_critic: int, steps: int, batch=64,
                  warmup=3, device: torch.device = torch.device("cpu")) -> float:
    """Images/s of the textbook loop over `steps` generator steps (after `warmup` steps)."""
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    loader = DataLoader(PerSamplePILDataset(images, resolution), batch_size=batch, shuffle=True, num_workers=2,
                        drop_last=True, persistent_workers=True)
    nz = 128 if loss == "pgan" else 100
    if loss == "pgan":
        G, D = textbook_pgan_models(resolution)
    else:
        G, D = textbook_models(resolution, sigmoid=loss == "bce", batch_norm_d=loss == "bce")
    G, D = G.to(device), D.to(device)
    if loss == "bce":
        opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    elif loss == "pgan":
        opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.0, 0.99))
        opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.0, 0.99))
    else:
        opt_g = torch.optim.Adam(G.parameters(), lr=1e-4, betas=(0.5, 0.9))
        opt_d = torch.optim.Adam(D.parameters(), lr=1e-4, betas=(0.5, 0.9))
    criterion = nn.BCELoss()
    data = iter(loader)

    def next_real():
        nonlocal data
        try:
            return next(data)[0].to(device)
        except StopIteration:
            data = iter(loader)
            return next(data)[0].to(device)

    start, seen = None, 0
    for step in range(steps + warmup):
        if step == warmup:
            synchronize(device)
            start, seen = time.perf_counter(), 0
        for _ in range(n_critic):
            real = next_real()
            b = real.size(0)
            noise = torch.randn(b, nz, device=device) if loss == "pgan" else torch.randn(b, nz, 1, 1, device=device)
            fake = G(noise)
            D.zero_grad()
            if loss == "bce":
                out_real = D(real).view(-1)
                err_real = criterion(out_real, torch.full((b,), 1.0, device=device))
                err_real.backward()
                out_fake = D(fake.detach()).view(-1)
                err_fake = criterion(out_fake, torch.full((b,), 0.0, device=device))
                err_fake.backward()
                d_x, d_g_z1 = out_real.mean().item(), out_fake.mean().item()
            else:
                out_real, out_fake = D(real).view(-1), D(fake.detach()).view(-1)
                eps = torch.rand(b, 1, 1, 1, device=device)
                x_hat = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
                grad = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)[0]
                gp = ((grad.view(b, -1).norm(2, dim=1) - 1) ** 2).mean()
                err = out_fake.mean() - out_real.mean() + 10 * gp
                if loss == "pgan":  # the paper's drift term keeps the critic's outputs near zero
                    err = err + 0.001 * (out_real ** 2).mean()
                err.backward()
                d_x = err.item()
            opt_d.step()
            seen += b
        G.zero_grad()
        out = D(fake).view(-1)
        err_g = criterion(out, torch.full((b,), 1.0, device=device)) if loss == "bce" else -out.mean()
        err_g.backward()
        opt_g.step()
        err_g.item()
    synchronize(device)
    elapsed = time.perf_counter() - start
    del loader
    return seen / elapsed


# ---- gankit -------------------------------------------------------------------------------------

def run_gankit(preset: str, overrides: list[str], steps: int, warmup_steps: int = 6, device: str = "cpu") -> float:
    """Images/s of gankit's train() after warm-up, from its own stats.jsonl (its intervals start and end at
    a read of the losses, which waits for the device: on CUDA they time finished work)."""
    from gankit.training.loop import train

    total = warmup_steps + steps
    config = gcfg.load(preset, overrides + [f"train.steps={total}", f"train.log_every={warmup_steps}",
                                            f"train.sample_every={10 * total}", f"train.checkpoint_every={10 * total}"])
    with tempfile.TemporaryDirectory() as tmp:
        # The final checkpoint and grid are written after the timed steps; the run's log lines are muted.
        with open(Path(tmp) / "stdout.txt", "w") as muted, contextlib.redirect_stdout(muted):
            train(config, Path(tmp) / "run", None, device)
        records = [json.loads(line) for line in (Path(tmp) / "run" / "stats.jsonl").read_text().splitlines()]
    # The first interval holds start-up; each later one covers log_every steps at steady state.
    pairs = [(prev, r) for prev, r in zip(records, records[1:]) if prev["step"] >= warmup_steps]
    images = sum(r["images_seen"] - prev["images_seen"] for prev, r in pairs)
    seconds = sum((r["images_seen"] - prev["images_seen"]) / r["img_per_s"] for prev, r in pairs)
    return images / seconds


class FlopCount(TorchDispatchMode):
    """Counts FLOPs of every dispatched op with torch's own formulas (torch.utils.flop_counter).
    FlopCounterMode itself cannot: its module hooks break autograd.grad, which the gradient penalty uses."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def gankit_step_flops(preset: str, overrides: list[str]) -> float:
    """FLOPs of one gankit generator step (n_critic D updates + one G update), counted by torch; StyleGAN2's
    without its lazy regularizers (R1, path length), so its achieved GFLOP/s are a lower bound."""
    from gankit import losses
    from gankit.models import build_discriminator, build_generator
    from gankit.training.loop import discriminator_norm

    config = gcfg.load(preset, overrides)
    if config.model.arch == "stylegan2":
        config = gcfg.load(preset, [*overrides, "loss.r1_gamma=0.0", "loss.pl_weight=0.0"])
    G = build_generator(config.model, config.data)
    D = build_discriminator(config.model, config.data, discriminator_norm(config))
    b = config.train.batch_size
    real = torch.rand(b, config.data.channels, config.data.resolution, config.data.resolution) * 2 - 1
    with FlopCount() as counter:
        for _ in range(config.train.n_critic):
            fake = G(torch.randn(b, config.model.z_dim))
            d_loss, _ = losses.discriminator_loss(config.loss, D, real, fake.detach())
            d_loss.backward()
        g_loss, _ = losses.generator_loss(config.loss, D, fake)
        g_loss.backward()
    return float(counter.total)


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (CUDA runs asynchronously; the CPU needs no wait)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0,
                device: torch.device = torch.device("cpu")) -> float:
    """GFLOP/s of square matrix multiplies in dtype (the machine's practical peak)."""
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    synchronize(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        synchronize(device)
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def conv_peak(dtype: torch.dtype, seconds: float = 2.0, batch: int = 64, size: int = 16,
              device: torch.device = torch.device("cpu")) -> float:
    """GFLOP/s of a large 3x3 convolution in dtype. oneDNN's convolutions outrun MKL's matrix multiply
    in fp32 on this CPU, so a training step's share of the matmul peak can exceed 100%."""
    x = torch.randn(batch, 128, size, size, dtype=dtype, device=device)
    w = torch.randn(256, 128, 3, 3, dtype=dtype, device=device)
    torch.nn.functional.conv2d(x, w, padding=1)
    synchronize(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.nn.functional.conv2d(x, w, padding=1)
        synchronize(device)
        count += 1
    return 2 * batch * 256 * 128 * 9 * size * size * count / (time.perf_counter() - start) / 1e9


VARIANTS = {
    # name: gankit overrides (each lever on its own, then together)
    "fp32": ["train.precision=fp32"],
    "fp32+cl": ["train.precision=fp32", "train.channels_last=true"],
    "bf16": ["train.precision=bf16"],
    "bf16+cl": ["train.precision=bf16", "train.channels_last=true"],
    "bf16+cl+fused": ["train.precision=bf16", "train.channels_last=true", "train.fused_optimizer=true"],
    "fp16": ["train.precision=fp16"],  # GPUs: on a CPU fp16 is emulated and slow
    "fp16+cl": ["train.precision=fp16", "train.channels_last=true"],
    "fp32+compile": ["train.precision=fp32", "train.compile=true"],
    "bf16+cl+compile": ["train.precision=bf16", "train.channels_last=true", "train.compile=true"],
    "fp16+cl+compile": ["train.precision=fp16", "train.channels_last=true", "train.compile=true"],
    # The modern regularizers' cost, each on top of bf16+cl (compare with bf16+cl of the same run):
    "bf16+cl+sn": ["train.precision=bf16", "train.channels_last=true", "model.d_spectral_norm=true"],
    "bf16+cl+r1": ["train.precision=bf16", "train.channels_last=true", "loss.r1_gamma=0.01"],
    "bf16+cl+r1lazy": ["train.precision=bf16", "train.channels_last=true", "loss.r1_gamma=0.01", "loss.reg_every=16"],
    "bf16+cl+diffaug": ["train.precision=bf16", "train.channels_last=true", "augment.policy=diffaugment"],
    # ADA at a fixed p = 0.5 (no adaptation): every op's draws, one resampling and one colour matrix per image.
    "bf16+cl+ada": ["train.precision=bf16", "train.channels_last=true", "augment.policy=ada", "augment.p=0.5",
                    "augment.target=null"],
}
# On a GPU the CPU's sizes would time kernel launches, not arithmetic: 8192^3 and batch 256 at 32x32.
PEAK_SIZES = {"cpu": {"n": 2048, "batch": 64, "size": 16}, "cuda": {"n": 8192, "batch": 256, "size": 32}}


def variant_precision(variant: str) -> str:
    return next((p for p in ("fp16", "bf16") if p in variant), "fp32")


def device_description(device: torch.device) -> dict:
    """What the figures were measured on."""
    described = {"device": device.type, "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        described.update(device_name=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                         cudnn=torch.backends.cudnn.version())
    return described


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="default: all")
    parser.add_argument("--variants", default="fp32,bf16,bf16+cl",
                        help=f"comma-separated gankit variants from: {', '.join(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=30, help="timed generator steps per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of reference and gankit variants")
    parser.add_argument("--extra", action="append", default=[], help="extra gankit --set overrides")
    parser.add_argument("--json", help="also write the results here (rewritten after each measurement)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where both loops train")
    parser.add_argument("--data-path", help="folder of Fashion-MNIST's IDX files (default: Debian's location)")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU")
    device = torch.device(args.device)

    sizes = PEAK_SIZES[device.type]
    precisions = ["fp32", "bf16"] + (["fp16"] if any(variant_precision(v) == "fp16" for v in variants) else [])
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    peaks = {p: matmul_peak(dtypes[p], sizes["n"], device=device) for p in precisions}
    conv_peaks = {p: conv_peak(dtypes[p], batch=sizes["batch"], size=sizes["size"], device=device) for p in precisions}
    print(f"matmul peak: {', '.join(f'{p} {peaks[p]:.0f} GFLOP/s' for p in precisions)}; 3x3 convolution: "
          f"{', '.join(f'{p} {conv_peaks[p]:.0f}' for p in precisions)} GFLOP/s "
          f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'})",
          flush=True)
    images, _ = load_idx_images("fashion-mnist", args.data_path, "train")
    if args.data_path:
        args.extra = [f"data.path={args.data_path}", *args.extra]
    results, measured = [], {}

    def write_json(complete: bool) -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(
                {**device_description(device), "complete": complete, "peaks": peaks, "conv_peaks": conv_peaks,
                 "results": results, "measurements": measured}, indent=2))

    for case in args.case or sorted(CASES):
        preset, overrides, loss, n_critic, resolution, batch = CASES[case]
        overrides = overrides + args.extra
        flops = gankit_step_flops(preset, overrides)
        runs: dict[str, list[float]] = {"reference": [], **{v: [] for v in variants}}
        steps = max(5, args.steps // n_critic)
        measured[case] = runs
        for _ in range(args.rounds):  # alternate, so that drifts in machine load hit every variant alike
            if loss == "stylegan2":
                if device.type != "cpu":
                    parser.error("the StyleGAN2 reference loop runs on the CPU only")
                from stylegan2_reference import run_stylegan2_reference

                runs["reference"].append(run_stylegan2_reference(PerSamplePILDataset(images, resolution), preset,
                                                                 overrides, steps))
            else:
                runs["reference"].append(run_reference(images, resolution, loss, n_critic, steps, batch,
                                                       device=device))
            write_json(complete=False)
            for variant in variants:
                runs[variant].append(run_gankit(preset, overrides + VARIANTS[variant], steps, device=args.device))
                write_json(complete=False)
        ref = statistics.median(runs["reference"])
        print(f"{case}: reference {ref:.1f} img/s; {flops / 1e9:.1f} GFLOP per generator step", flush=True)
        for variant in variants:
            ours = statistics.median(runs[variant])
            precision = variant_precision(variant)
            gflops = flops * ours / (batch * n_critic) / 1e9
            row = {"case": case, "variant": variant, "reference_img_s": ref, "gankit_img_s": ours,
                   "ratio": ours / ref, "gflop_per_step": flops / 1e9, "gankit_gflop_s": gflops,
                   "fraction_of_peak": gflops / peaks[precision], "peak": precision,
                   "fraction_of_conv_peak": gflops / conv_peaks[precision]}
            results.append(row)
            print(f"  {variant:16s} {ours:7.1f} img/s  ratio {ours / ref:5.2f}  {gflops:6.1f} GFLOP/s = "
                  f"{100 * gflops / peaks[precision]:4.1f}% of the {precision} matmul peak, "
                  f"{100 * gflops / conv_peaks[precision]:4.1f}% of the conv peak", flush=True)
    write_json(complete=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
