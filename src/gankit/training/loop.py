"""The training loop: one readable function from a resolved config to checkpoints and samples."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from gankit import losses
from gankit.ada import AdaptiveAugment
from gankit.augment import build_augment
from gankit.checkpoint import (checkpoint_path, export_generator, list_checkpoints, load_state_into,
                               load_training_state, prune_checkpoints, save_training_state)
from gankit.config import Config, to_yaml
from gankit.data import build_batches
from gankit.device import resolve_device
from gankit.errors import GankitError
from gankit.files import atomic_write
from gankit.models import build_discriminator, build_generator, discriminator_norm  # noqa: F401 (re-exported)
from gankit.models.conditioning import cycling_labels, draw_labels, grid_labels
from gankit.models.spectral_norm import plain_state_dict
from gankit.losses_gdpp import generator_loss_with_gdpp
from gankit.training import distributed
from gankit.training.ema import ema_decay, ema_decay_from_half_life, make_ema, update_ema
from gankit.training.lr_schedule import lr_factor, set_learning_rate
from gankit.training.precision import Precision
from gankit.training.progressive import Growth
from gankit.viz.grid import save_grid, save_scatter, to_uint8

STATE_FORMAT = "gankit-training-state"


def make_optimizer(config: Config, params, lr: float) -> torch.optim.Optimizer:
    if config.train.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)  # torch has no fused RMSprop
    # fused=None lets torch pick its default (foreach); True asks for the single-kernel update.
    fused = True if config.train.fused_optimizer else None
    return torch.optim.Adam(params, lr=lr, betas=config.train.betas, fused=fused)


def memory_format(config: Config) -> torch.memory_format:
    convolutional = config.model.arch != "mlp" and not config.data.is_toy
    return torch.channels_last if config.train.channels_last and convolutional else torch.contiguous_format


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


def train(config: Config, run_dir: Path, resume_from: Path | None = None, device_name: str = "auto",
          init_from: str | None = None) -> dict:
    """Trains until config.train.steps generator updates (Progressive GAN without train.steps: the sum of
    train.max_iter_at_scale); returns a summary with the final grid's path.

    Time is counted in generator steps; each step makes n_critic discriminator updates first, each
    on a fresh real batch and fresh latents. The last critic update's fakes feed the generator update."""
    replica = distributed.current()  # under torchrun: this rank; rank 0 alone writes the run folder
    device = replica.local_device(resolve_device(device_name))
    replica.check_config(config, device)
    tcfg = config.train
    if device.type == "cuda":  # fixed shapes within a stage: let cuDNN pick its fastest kernels once
        torch.backends.cudnn.benchmark = True
    run_dir = Path(run_dir)

    def write_config() -> None:
        if replica.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(run_dir / "config.yaml", lambda tmp: Path(tmp).write_text(to_yaml(config)))

    write_config()  # before the data: a run that fails to load it can be corrected in place (rundir.py)
    growth = Growth(config) if config.model.arch == "pgan" else None
    conditional = config.model.conditioning != "none"
    batches = build_batches(config.data, growth.max_batch_size if growth else tcfg.batch_size, config.seed,
                            with_labels=conditional)
    if conditional:  # the class names come from the data, and go into config.yaml (hence every checkpoint)
        config = config.model_copy(deep=True)
        config.data.class_names = batches.class_names  # resolved by build_batches (data.class_names renames)
        write_config()
    num_classes = config.data.num_classes if conditional else 0
    log = distributed.run_log(replica, lambda: RunLog(run_dir))
    # Every rank restores rank 0's checkpoint, sent over the process group (no shared file system needed).
    state = replica.on_main(load_training_state, resume_from) if resume_from else None

    # Build the data, the networks and their optimizers.
    torch.manual_seed(config.seed)
    total_steps = growth.total_steps if growth else tcfg.steps
    layout = memory_format(config)
    G = build_generator(config.model, config.data).to(device, memory_format=layout)
    D = build_discriminator(config.model, config.data, discriminator_norm(config)).to(device, memory_format=layout)
    if hasattr(G, "batch_share"):  # StyleGAN2: G's own random draws are made for the global batch too
        G.batch_share = (replica.rank, replica.world_size)
    G_ema = (make_ema(G, lambda: build_generator(config.model, config.data, parametrized=False))
             if tcfg.ema is not None else None)
    if init_from is not None and state is None:  # --init (fine-tuning): training/init.py, not a resume
        from gankit.training.init import apply_init

        apply_init(init_from, config, G, D, G_ema, replica, log)
    opt_g = make_optimizer(config, G.parameters(), tcfg.g_lr)
    opt_d = make_optimizer(config, D.parameters(), tcfg.d_lr)
    step, images_seen = 0, 0
    precision = Precision(tcfg.precision, device)
    # LeCam's EMAs average D's means over the ranks, so every rank holds the same state.
    lecam = (losses.LeCam(average=lambda means: replica.mean_over_ranks({"lecam": means})["lecam"])
             if config.loss.lecam > 0 else None)
    # StyleGAN2's path-length regularizer; its running mean is averaged over the ranks, like LeCam's EMAs.
    path_length = (losses.PathLength(config.loss.pl_decay,
                                     average=lambda value: replica.mean_over_ranks({"pl": value})["pl"])
                   if config.loss.pl_weight > 0 else None)
    # Augmentation draws for the global batch and keeps this rank's part, as for the latents; ADA's r_t is
    # averaged over the ranks, so every rank holds the same p.
    augment = build_augment(config.augment, replica.local_part, replica.world_size,
                            lambda value: replica.mean_over_ranks({"ada": value})["ada"], device)
    ada = augment if isinstance(augment, AdaptiveAugment) else None

    # The world size goes into log.txt: a run's images/s and batch norm statistics depend on it.
    processes = f" ({replica.world_size} processes under torchrun)" if replica.is_distributed else ""
    if state is not None:
        load_state_into(G, state["G"], "generator", resume_from)
        load_state_into(D, state["D"], "discriminator", resume_from)
        if G_ema is not None:
            # A run that had no EMA generator starts it from G (in its plain form, see training/ema.py).
            load_state_into(G_ema, state["G_ema"] if state.get("G_ema") is not None else plain_state_dict(G),
                            "EMA generator", resume_from)
        saved_optimizer = state["config"]["train"].get("optimizer", "adam")
        if saved_optimizer != tcfg.optimizer:
            raise GankitError(f"{resume_from} was trained with train.optimizer={saved_optimizer}; its state cannot "
                              f"continue as {tcfg.optimizer}: keep {saved_optimizer} or use a new --out")
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        # The saved param groups carry the old learning rates and betas; the config's (--set may change
        # them on resume, e.g. to recover from a divergence) must win.
        for optimizer, lr in ((opt_g, tcfg.g_lr), (opt_d, tcfg.d_lr)):
            for group in optimizer.param_groups:
                group["lr"] = lr
                if "betas" in group:
                    group["betas"] = tuple(tcfg.betas)
        batches.load_state_dict(state["data"])
        precision.load_state_dict(state.get("scalers"))
        if lecam is not None:
            lecam.load_state_dict(state.get("lecam"))  # None in checkpoints from before LeCam: start afresh
        if ada is not None:
            ada.load_state_dict(state.get("augment"))  # None in checkpoints from before ADA: the config's p
        if path_length is not None:
            path_length.load_state_dict(state.get("path_length"))
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda":
            restore_cuda_rng(state["rng"].get("cuda") or [])
        replica.restore_device_rng(state["rng"], device)
        step, images_seen = int(state["step"]), int(state["images_seen"])
        if replica.is_main:
            drop_stats_after(run_dir / "stats.jsonl", step)  # the steps after the checkpoint are redone
            # ...and so are the evaluations training made after it (a user's `gankit eval` lines stay).
            drop_stats_after(run_dir / "metrics.jsonl", step, only_origin="training")
        log(f"resumed {run_dir} from {resume_from} at step {step}{processes}")
    else:
        log(f"training {config.name} into {run_dir} on {device}{processes}")
    if growth is not None and growth.length_note:
        log(growth.length_note)

    # The sample grid's latents depend on the seed only, so grids are comparable over time and runs.
    fixed_z = torch.randn(tcfg.grid_size, config.model.z_dim,
                          generator=torch.Generator().manual_seed(config.seed + 1)).to(device)
    fixed_labels, grid_columns = None, None
    if num_classes and not config.data.is_toy:
        # A row per class, each column one latent shown in every class.
        fixed_labels, grid_columns = grid_labels(num_classes, tcfg.grid_size)
        fixed_z, fixed_labels = fixed_z[:grid_columns].repeat(num_classes, 1), fixed_labels.to(device)
    if tcfg.precision == "auto":
        log(f"train.precision auto: {precision.name} on {device}")
    elif precision.name == "fp16" and device.type == "cpu":
        log("train.precision fp16 on a CPU: computed, but emulated and slower than fp32; use bf16 or fp32")
    autocast = precision.autocast()
    writer = _tensorboard(run_dir, purge_step=step if state is not None else None) if replica.is_main else None
    evaluator = None
    if config.eval.every:  # built now so that a bad eval setup fails before training starts
        from gankit.metrics.periodic import PeriodicEvaluator

        evaluator = replica.main_only_evaluator(lambda: PeriodicEvaluator(config, run_dir, device, writer))
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}  # updates behind each sum: lazy penalties are not computed at every one
    interval_start, interval_images = time.perf_counter(), 0
    last_saved_step = step if state is not None else -1
    checked_step = -1

    def stop_if_diverged() -> None:
        """Raises before anything is logged, sampled or saved from losses or weights holding NaN or Inf."""
        nonlocal checked_step
        if checked_step == step:
            return
        named = [(f"{prefix}.{k}", t) for prefix, module in (("G", G), ("D", D), ("G_ema", G_ema))
                 if module is not None for k, t in module.state_dict().items() if t.is_floating_point()]
        finite = torch.stack([t.isfinite().all() for t in [*sums.values(), *(t for _, t in named)]])
        if bool(finite.all()):  # one device sync for every loss and weight
            checked_step = step
            return
        problems = []
        bad_losses = [f"{k}={v.item() / counts[k]}" for k, v in sums.items() if not torch.isfinite(v).all()]
        if bad_losses:
            problems.append(f"{', '.join(bad_losses)} (means over steps {step - count + 1}-{step})")
        broken = [name for name, t in named if not t.isfinite().all()]
        if broken:
            problems.append(f"{len(broken)} weight tensors hold NaN or Inf ({', '.join(broken[:3])}"
                            f"{', ...' if len(broken) > 3 else ''})")
        saved = list_checkpoints(run_dir)
        last_good = f"the last good checkpoint is {saved[-1]}" if saved else "no checkpoint was written yet"
        raise GankitError(
            f"training diverged by step {step}: {'; '.join(problems)}. Training stopped and nothing was saved "
            f"from this state; {last_good}. Lower the learning rates (--set train.g_lr=... --set train.d_lr=...) "
            "and run the same command to resume"
        )

    def prepare_real(batch: torch.Tensor) -> torch.Tensor:
        real = batch.to(device, non_blocking=True)
        if config.data.is_toy:
            return real.float()
        real = real.float().div_(127.5).sub_(1.0).contiguous(memory_format=layout)  # uint8 -> [-1, 1] on the device
        if config.data.hflip:
            flip = torch.rand(real.shape[0], device=device) < 0.5
            real = torch.where(flip.view(-1, 1, 1, 1), real.flip(3), real)
        return real

    def save_everything(final: bool = False) -> Path | None:
        nonlocal last_saved_step
        if ada is not None:  # on every rank, so that rank 0's saved accumulators stand for all of them
            ada.share_accumulators()
        if not replica.is_main:  # rank 0 saves; the others check the same weights
            stop_if_diverged()
            return None
        if step != last_saved_step:
            stop_if_diverged()
            save_training_state(checkpoint_path(run_dir, step), {
                "format": STATE_FORMAT, "version": 1, "step": step, "images_seen": images_seen,
                "config": config.model_dump(mode="json"),
                "G": G.state_dict(), "D": D.state_dict(),
                "G_ema": G_ema.state_dict() if G_ema is not None else None,
                "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                "data": batches.state_dict(), "scalers": precision.state_dict(),
                "lecam": lecam.state_dict() if lecam is not None else None,
                "augment": ada.state_dict() if ada is not None else None,
                "path_length": path_length.state_dict() if path_length is not None else None,
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else []},
            })
            # Progressive GAN: the last checkpoint of every scale stays, as that scale's model.
            prune_checkpoints(run_dir, tcfg.keep_checkpoints, growth.stage_of_checkpoint if growth else None)
            export_generator(run_dir, G_ema or G, config.model.model_dump(mode="json"),
                             config.data.model_dump(mode="json"), step)
            last_saved_step = step
        return save_samples() if final else None

    @torch.no_grad()
    def save_samples(name: str | None = None) -> Path:
        stop_if_diverged()
        if not replica.is_main:
            return None
        sampler = G_ema or G
        was_training = sampler.training
        sampler.eval()
        fakes = sampler(fixed_z) if fixed_labels is None else sampler(fixed_z, fixed_labels)
        sampler.train(was_training)
        path = run_dir / "samples" / (name or f"step_{step:06d}.png")
        if config.data.is_toy:
            # A conditional toy G called without labels draws classes in turn: colour the points by them.
            classes = cycling_labels(len(fakes), num_classes, "cpu") if num_classes else None
            path = save_scatter(fakes, path, config.data.source, f"{config.name}, step {step}", classes,
                                config.data.class_names if num_classes else None)
        else:
            images = to_uint8(fakes)
            path = save_grid(images, path, grid_columns)
            if writer is not None:
                writer.add_images("samples", images.float().div(255), step)
        return path

    def flush_stats() -> None:
        nonlocal interval_start, interval_images, sums, counts
        if ada is not None:  # ADA's p (and r_t) as they stand now, the same on every rank
            for k, v in ada.log_values().items():
                sums[k], counts[k] = v, 1
        sums = replica.mean_over_ranks(sums)  # the losses of every rank's share of the batch
        stop_if_diverged()
        if not replica.is_main:
            sums, counts, interval_start, interval_images = {}, {}, time.perf_counter(), 0
            return
        elapsed = time.perf_counter() - interval_start
        values = {k: v.item() / counts[k] for k, v in sums.items()}
        if tcfg.lr_schedule != "constant":  # the factor the last update (step - 1) used, derived from the step
            values["lr_factor"] = lr_factor(tcfg, step - 1, total_steps)
        record = {"step": step, "images_seen": images_seen, **values,
                  "img_per_s": interval_images / max(elapsed, 1e-9), "time": time.time()}
        with open(run_dir / "stats.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if writer is not None:
            for k, v in record.items():
                if k not in ("step", "time"):
                    writer.add_scalar(f"train/{k}", v, step)
        bar.set_postfix({k: f"{record[k]:.3g}" for k in ("d_loss", "g_loss", "img_per_s") if k in record})
        sums, counts, interval_start, interval_images = {}, {}, time.perf_counter(), 0

    def accumulate(stats: dict[str, torch.Tensor]) -> None:
        # Kept as device tensors: reading values would synchronize with the device every step.
        for k, v in stats.items():
            sums[k] = sums[k] + v.float() if k in sums else v.float().clone()
            counts[k] = counts.get(k, 0) + 1

    G.train()
    D.train()
    # The modules that run the training step; state is always saved from G and D themselves.
    G_run, D_run = (torch.compile(G), torch.compile(D)) if tcfg.compile else (G, D)
    # Under torchrun: DDP wrappers of G and D, and the unwrapped D for G's loss (see distributed.py).
    parallel = distributed.DataParallel(replica, config, G, D, G_run, D_run)
    bar = tqdm(total=total_steps, initial=step, desc=config.name, unit="step", dynamic_ncols=True,
                    disable=None if replica.is_main else True, file=sys.stderr)
    count = 0
    interrupted = None
    try:
        with StopSignal() as stop:
            while step < total_steps:
                # Progressive GAN: stage, alpha, batch size and learning rates for this step.
                progress = growth.begin_step(step, (G, D, G_ema), (opt_g, opt_d)) if growth else None
                if tcfg.lr_schedule != "constant":  # the decay scales the step's base rates (pgan's per scale)
                    factor = lr_factor(tcfg, step, total_steps)
                    set_learning_rate(opt_g, factor * (progress.g_lr if progress else tcfg.g_lr))
                    set_learning_rate(opt_d, factor * (progress.d_lr if progress else tcfg.d_lr))
                G_run, D_run, D_for_g = parallel.modules(progress)

                # Discriminator updates.
                for critic_step in range(tcfg.n_critic):
                    # Global draws (batch, flips, latents, penalty weights), each rank keeping its share.
                    batch, real_labels = batches.next_labeled(progress.batch_size if progress else None)
                    real = replica.local_part(prepare_real(batch))
                    if progress is not None:
                        real = growth.real(real, progress)
                    z = replica.local_part(torch.randn(real.shape[0] * replica.world_size, config.model.z_dim,
                                                       device=device))
                    fake_labels = None  # real_labels is None too: an unconditional run's stream carries none
                    if num_classes:  # the reals' classes come with them; the fakes' are drawn
                        real_labels = replica.local_part(real_labels.to(device, non_blocking=True))
                        fake_labels = replica.local_part(draw_labels(real.shape[0] * replica.world_size,
                                                                     num_classes, device))
                    last = critic_step == tcfg.n_critic - 1
                    with autocast:
                        with torch.set_grad_enabled(last):  # the last fakes are reused by G's update
                            if progress:
                                fake = G_run(z, progress.stage, progress.alpha)
                            else:
                                fake = G_run(z) if fake_labels is None else G_run(z, fake_labels)
                        # d_update counts D's updates from the saved step alone, so lazy R1/R2 resume exactly.
                        d_loss, d_stats = losses.discriminator_loss(config.loss, D_run, real, fake.detach(),
                                                                    replica.penalty_epsilon(config.loss, real),
                                                                    precision.penalty_scale(),
                                                                    d_update=step * tcfg.n_critic + critic_step,
                                                                    lecam=lecam, augment=augment,
                                                                    real_labels=real_labels,
                                                                    fake_labels=fake_labels)
                    opt_d.zero_grad(set_to_none=True)
                    precision.update(precision.d_scaler, d_loss, opt_d, D.parameters(), tcfg.d_grad_clip)
                    accumulate(precision.finite_stats(d_stats))  # every D update's, lazy penalties included
                    if config.loss.kind == "wgan":
                        losses.clip_weights(D, config.loss.clip)
                    images_seen += real.shape[0] * replica.world_size
                    interval_images += real.shape[0] * replica.world_size

                # Generator update; D's parameters need no gradients here.
                D.requires_grad_(False)
                with autocast:
                    if growth is not None:
                        g_loss, g_stats = generator_loss_with_gdpp(config.loss, D_for_g, real, fake)
                    else:
                        g_loss, g_stats = losses.generator_loss(config.loss, D_for_g, fake, augment, fake_labels)
                    if path_length is not None and step % config.loss.pl_every == 0:
                        g_loss = g_loss + path_length_term(path_length, G_run, config, replica, fake.shape[0],
                                                           device, precision, g_stats, num_classes)
                opt_g.zero_grad(set_to_none=True)
                precision.update(precision.g_scaler, g_loss, opt_g, G.parameters(), tcfg.g_grad_clip)
                D.requires_grad_(True)
                if G_ema is not None:
                    decay = (ema_decay(tcfg.ema, step) if tcfg.ema_kimg is None else
                             ema_decay_from_half_life(tcfg.ema_kimg, tcfg.batch_size, images_seen, tcfg.ema_rampup))
                    update_ema(G_ema, G, decay)
                step += 1
                count += 1
                accumulate(precision.finite_stats(g_stats))
                if ada is not None:
                    ada.end_generator_step(step)  # every augment.interval steps: p towards the target
                bar.update(1)

                # Log, sample, checkpoint.
                if step % tcfg.log_every == 0 or step == total_steps:
                    flush_stats()
                    count = 0
                if step % tcfg.sample_every == 0:
                    save_samples()
                finished_stage = growth.stage_finished(step) if growth else None
                if finished_stage is not None:  # the last grid of each scale, kept under its own name
                    save_samples(f"scale_{4 * 2 ** finished_stage:04d}px.png")
                if evaluator is not None and step % config.eval.every == 0:
                    stop_if_diverged()
                    log(evaluator(G_ema or G, step))
                # A scale's last step is also checkpointed: that checkpoint is the scale's model (kept by pruning).
                if step % tcfg.checkpoint_every == 0 or finished_stage is not None:
                    save_everything()
                stop.signum = replica.agreed_signal(stop.signum, step)  # every rank stops after the same step
                if stop.signum is not None:
                    interrupted = stop.signum
                    break
    finally:
        bar.close()

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


def path_length_term(path_length: losses.PathLength, G_run, config: Config, replica, batch: int,
                     device: torch.device, precision: Precision, stats: dict, num_classes: int = 0) -> torch.Tensor:
    """StyleGAN2's lazy path-length term for G's loss: a forward of batch // pl_batch_shrink fresh samples
    (style mixing included, as in NVIDIA's loss), weighted by pl_weight * pl_every; the penalty and the
    running mean go into `stats`. Latents and y are drawn for the global batch, each rank keeping its share."""
    count = max(1, batch // config.loss.pl_batch_shrink)
    z = replica.local_part(torch.randn(count * replica.world_size, config.model.z_dim, device=device))
    # A conditional G's classes drawn as for the fakes of G's loss (NVIDIA's loss draws them from the data).
    labels = (replica.local_part(draw_labels(count * replica.world_size, num_classes, device)) if num_classes
              else None)
    images, ws = G_run(z, labels, return_ws=True)
    noise = replica.local_part(torch.randn(count * replica.world_size, *images.shape[1:], device=device))
    penalty = path_length(images, ws, precision.penalty_scale(), noise)
    stats["pl"], stats["pl_mean"] = penalty.detach(), path_length.mean.detach()
    return config.loss.pl_weight * config.loss.pl_every * penalty


def restore_cuda_rng(states: list[torch.Tensor]) -> None:
    """Restores the saved generator of each GPU that this machine also has. A checkpoint saves every
    visible GPU's state; resumed where fewer GPUs are visible, the extra states have no device to go to
    (torch.cuda.set_rng_state_all would fail on them), and the ones used for training come first."""
    for index, state in enumerate(states[: torch.cuda.device_count()]):
        torch.cuda.set_rng_state(state, index)


def drop_stats_after(stats_file: Path, step: int, only_origin: str | None = None) -> None:
    """Keeps the JSONL records up to step, and drops a line cut short by a killed process.
    only_origin: drop only the later records whose "origin" is this (the others are kept)."""
    if not stats_file.is_file():
        return
    kept = []
    for line in stats_file.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            continue
        if record["step"] <= step or (only_origin is not None and record.get("origin") != only_origin):
            kept.append(line + "\n")
    atomic_write(stats_file, lambda tmp: Path(tmp).write_text("".join(kept)))


def _tensorboard(run_dir: Path, purge_step: int | None = None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but a broken install should not stop training
        return None
    # On resume, purge_step makes TensorBoard drop what a killed run logged after its last checkpoint.
    return SummaryWriter(str(run_dir / "tb"), purge_step=purge_step)
