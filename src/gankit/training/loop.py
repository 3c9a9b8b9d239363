"""The training loop: one readable function from a resolved config to checkpoints and samples."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from gankit import losses
from gankit.checkpoint import (checkpoint_path, export_generator, load_state_into, load_training_state,
                               prune_checkpoints, save_training_state)
from gankit.config import Config, to_yaml
from gankit.data import build_batches
from gankit.device import resolve_device
from gankit.errors import GankitError
from gankit.models import build_discriminator, build_generator
from gankit.training.ema import make_ema, update_ema
from gankit.viz.grid import save_grid, save_scatter, to_uint8

STATE_FORMAT = "gankit-training-state"


def discriminator_norm(config: Config) -> str:
    """`auto` means batch norm, except for WGAN-GP whose per-sample penalty rules batch statistics out."""
    if config.model.d_norm != "auto":
        return config.model.d_norm
    return "layer" if config.loss.kind == "wgan-gp" else "batch"


def make_optimizer(config: Config, params, lr: float) -> torch.optim.Optimizer:
    if config.train.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    return torch.optim.Adam(params, lr=lr, betas=config.train.betas)


class RunLog:
    """Prints above the progress bar and appends the same lines to log.txt."""

    def __init__(self, run_dir: Path):
        self.file = open(run_dir / "log.txt", "a", buffering=1)

    def __call__(self, message: str) -> None:
        tqdm.write(message, file=sys.stdout)
        self.file.write(message + "\n")

    def close(self) -> None:
        self.file.close()


class StopSignal:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps, so it can save and exit."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train(config: Config, run_dir: Path, resume_from: Path | None = None, device_name: str = "auto") -> dict:
    """Trains until config.train.steps generator updates; returns a summary with the final grid's path.

    Time is counted in generator steps; each step makes n_critic discriminator updates first, each
    on a fresh real batch and fresh latents. The last critic update's fakes feed the generator update."""
    device = resolve_device(device_name)
    tcfg = config.train
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(config))
    log = RunLog(run_dir)
    state = load_training_state(resume_from) if resume_from else None

    # Build the data, the networks and their optimizers.
    torch.manual_seed(config.seed)
    batches = build_batches(config.data, tcfg.batch_size, config.seed)
    G = build_generator(config.model, config.data).to(device)
    D = build_discriminator(config.model, config.data, discriminator_norm(config)).to(device)
    G_ema = make_ema(G) if tcfg.ema is not None else None
    opt_g = make_optimizer(config, G.parameters(), tcfg.g_lr)
    opt_d = make_optimizer(config, D.parameters(), tcfg.d_lr)
    step, images_seen = 0, 0

    if state is not None:
        load_state_into(G, state["G"], "generator", resume_from)
        load_state_into(D, state["D"], "discriminator", resume_from)
        if G_ema is not None:
            load_state_into(G_ema, state["G_ema"] if state.get("G_ema") is not None else state["G"],
                            "EMA generator", resume_from)
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        batches.load_state_dict(state["data"])
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and state["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        step, images_seen = int(state["step"]), int(state["images_seen"])
        log(f"resumed {run_dir} from {resume_from} at step {step}")
    else:
        log(f"training {config.name} into {run_dir} on {device}")

    # The sample grid's latents depend on the seed only, so grids are comparable over time and runs.
    fixed_z = torch.randn(tcfg.grid_size, config.model.z_dim,
                          generator=torch.Generator().manual_seed(config.seed + 1)).to(device)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if tcfg.precision == "bf16"
                else contextlib.nullcontext())
    writer = _tensorboard(run_dir)
    sums: dict[str, torch.Tensor] = {}
    interval_start, interval_images = time.perf_counter(), 0
    last_saved_step = step if state is not None else -1

    def prepare_real(batch: torch.Tensor) -> torch.Tensor:
        real = batch.to(device, non_blocking=True)
        if config.data.is_toy:
            return real.float()
        real = real.float().div_(127.5).sub_(1.0)  # uint8 -> [-1, 1] on the device
        if config.data.hflip:
            flip = torch.rand(real.shape[0], device=device) < 0.5
            real = torch.where(flip.view(-1, 1, 1, 1), real.flip(3), real)
        return real

    def save_everything(final: bool = False) -> Path | None:
        nonlocal last_saved_step
        if step != last_saved_step:
            save_training_state(checkpoint_path(run_dir, step), {
                "format": STATE_FORMAT, "version": 1, "step": step, "images_seen": images_seen,
                "config": config.model_dump(mode="json"),
                "G": G.state_dict(), "D": D.state_dict(),
                "G_ema": G_ema.state_dict() if G_ema is not None else None,
                "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                "data": batches.state_dict(),
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else []},
            })
            prune_checkpoints(run_dir, tcfg.keep_checkpoints)
            export_generator(run_dir, G_ema or G, config.model.model_dump(mode="json"),
                             config.data.model_dump(mode="json"), step)
            last_saved_step = step
        return save_samples() if final else None

    @torch.no_grad()
    def save_samples() -> Path:
        sampler = G_ema or G
        was_training = sampler.training
        sampler.eval()
        fakes = sampler(fixed_z)
        sampler.train(was_training)
        if config.data.is_toy:
            path = save_scatter(fakes, run_dir / "samples" / f"step_{step:06d}.png", config.data.source,
                                f"{config.name}, step {step}")
        else:
            images = to_uint8(fakes)
            path = save_grid(images, run_dir / "samples" / f"step_{step:06d}.png")
            if writer is not None:
                writer.add_images("samples", images.float().div(255), step)
        return path

    def flush_stats() -> None:
        nonlocal interval_start, interval_images, sums
        elapsed = time.perf_counter() - interval_start
        values = {k: v.item() / count for k, v in sums.items()}
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            raise GankitError(
                f"{', '.join(bad)} became {values[bad[0]]} by step {step}; training stopped. The last good "
                f"checkpoint is in {run_dir / 'checkpoints'}: lower the learning rates (--set train.g_lr=... "
                "train.d_lr=...) and resume"
            )
        record = {"step": step, "images_seen": images_seen, **values,
                  "img_per_s": interval_images / max(elapsed, 1e-9), "time": time.time()}
        with open(run_dir / "stats.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if writer is not None:
            for k, v in record.items():
                if k not in ("step", "time"):
                    writer.add_scalar(f"train/{k}", v, step)
        progress.set_postfix({k: f"{record[k]:.3g}" for k in ("d_loss", "g_loss", "img_per_s") if k in record})
        sums, interval_start, interval_images = {}, time.perf_counter(), 0

    def accumulate(stats: dict[str, torch.Tensor]) -> None:
        # Kept as device tensors: reading values would synchronize with the device every step.
        for k, v in stats.items():
            sums[k] = sums[k] + v.float() if k in sums else v.float().clone()

    G.train()
    D.train()
    progress = tqdm(total=tcfg.steps, initial=step, desc=config.name, unit="step", dynamic_ncols=True,
                    disable=None, file=sys.stderr)
    count = 0
    interrupted = None
    try:
        with StopSignal() as stop:
            while step < tcfg.steps:
                # Discriminator updates.
                for critic_step in range(tcfg.n_critic):
                    real = prepare_real(batches.next())
                    z = torch.randn(real.shape[0], config.model.z_dim, device=device)
                    last = critic_step == tcfg.n_critic - 1
                    with autocast:
                        with torch.set_grad_enabled(last):  # the last fakes are reused by G's update
                            fake = G(z)
                        d_loss, d_stats = losses.discriminator_loss(config.loss, D, real, fake.detach())
                    opt_d.zero_grad(set_to_none=True)
                    d_loss.backward()
                    opt_d.step()
                    if config.loss.kind == "wgan":
                        losses.clip_weights(D, config.loss.clip)
                    images_seen += real.shape[0]
                    interval_images += real.shape[0]

                # Generator update; D's parameters need no gradients here.
                D.requires_grad_(False)
                with autocast:
                    g_loss, g_stats = losses.generator_loss(config.loss, D, fake)
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
                D.requires_grad_(True)
                if G_ema is not None:
                    update_ema(G_ema, G, tcfg.ema)
                step += 1
                count += 1
                accumulate({**d_stats, **g_stats})
                progress.update(1)

                # Log, sample, checkpoint.
                if step % tcfg.log_every == 0 or step == tcfg.steps:
                    flush_stats()
                    count = 0
                if step % tcfg.sample_every == 0:
                    save_samples()
                if step % tcfg.checkpoint_every == 0:
                    save_everything()
                if stop.signum is not None:
                    interrupted = stop.signum
                    break
    finally:
        progress.close()

    if count:
        flush_stats()
    final_grid = save_everything(final=True)
    if writer is not None:
        writer.close()
    if interrupted is not None:
        log(f"stopped by signal {signal.Signals(interrupted).name} at step {step}; checkpoint saved. "
            f"Continue with: gankit train {run_dir}")
    else:
        log(f"done: {step} steps, {images_seen} images seen")
    log(f"final samples: {final_grid}")
    log.close()
    return {"step": step, "images_seen": images_seen, "final_grid": final_grid, "interrupted": interrupted}


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but a broken install should not stop training
        return None
    return SummaryWriter(str(run_dir / "tb"))
