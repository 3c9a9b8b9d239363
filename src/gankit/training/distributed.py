"""Data-parallel training under torchrun (DDP): the process group, the rank's share of each batch, the
wrapped networks, and the few points where the ranks must agree.

Launched by `torchrun` (WORLD_SIZE > 1 in the environment), `gankit train` joins a process group (nccl
on CUDA, gloo on CPU) and trains with DistributedDataParallel; otherwise nothing here does anything
and training runs as one process. The design (docs/distributed.md):

- `train.batch_size` is the global batch. Every rank draws the same global random values (the data
  order, latents, flips, the gradient penalty's weights) from the same seed and keeps its share, the
  samples rank::world_size. Without batch-dependent layers, K ranks then compute exactly what one
  process computes with the global batch (to float rounding), and a run resumes with any world size.
- Rank 0 alone writes the run folder; the others receive the plan and the checkpoint from it over the
  process group, so the machines need no shared file system (each needs the dataset).
- Progressive GAN: DDP expects a gradient for every parameter it reduces, and a PGAN stage uses only
  some of its layers, so the networks are re-wrapped whenever the set of used layers changes (a new
  stage, the end of a fade-in), covering exactly the parameters in use.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gankit import losses
from gankit.device import resolve_device
from gankit.errors import GankitError

TIMEOUT_VARIABLE = "GANKIT_DIST_TIMEOUT"  # seconds a rank waits in a collective before giving up
DEFAULT_TIMEOUT_S = 600
# How long the other ranks wait for rank 0's periodic evaluation (it can take hours on large sample counts).
EVALUATION_TIMEOUT = datetime.timedelta(hours=24)


class PeerLostError(GankitError):
    """A collective failed: another rank died or hung. Not the user's input: exit 75 (EX_TEMPFAIL, retry)."""

    exit_code = 75


@dataclass
class Replica:
    """This process's place in a data-parallel run; the default is the single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None  # the rank's device (set under torchrun)
    control: Any = None  # gloo group for CPU-side agreement (plans, stop flags), normal timeout
    patient: Any = None  # gloo group for waiting on rank 0's evaluation, long timeout

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def local_device(self, device: torch.device) -> torch.device:
        """Under torchrun the rank's own device (cuda:LOCAL_RANK or the CPU), else `device` unchanged."""
        return self.device if self.is_distributed else device

    def local_part(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's share of a global batch: samples rank, rank + world_size, ...

        Strided rather than contiguous so that Progressive GAN's minibatch-stddev groups (sample i
        in group i mod N/4) stay the same groups as in the global batch."""
        return batch if not self.is_distributed else batch[self.rank :: self.world_size]

    def restore_device_rng(self, rng_state: dict, device: torch.device) -> None:
        """On CUDA under torchrun, this rank's GPU continues the generator of the GPU the checkpoint's
        process drew on (cuda:0, rank 0's or a single process's), so every rank draws the same values."""
        if self.is_distributed and device.type == "cuda" and rng_state.get("cuda"):
            torch.cuda.set_rng_state(rng_state["cuda"][0], device)

    def penalty_epsilon(self, loss_cfg, real: torch.Tensor) -> torch.Tensor | None:
        """The gradient penalty's weights for this rank's samples, from a draw for the global batch;
        None in a single process (the penalty draws them itself, as it always has)."""
        if not self.is_distributed or loss_cfg.kind != "wgan-gp" or loss_cfg.gp_weight <= 0:
            return None
        return self.local_part(losses.penalty_epsilon(real.shape[0] * self.world_size, real))

    def on_main(self, fn: Callable, *args) -> Any:
        """Runs fn on rank 0 only and hands its result (or its error) to every rank."""
        if not self.is_distributed:
            return fn(*args)
        payload, error = None, None
        if self.is_main:
            try:
                payload = ("ok", fn(*args))
            except GankitError as err:
                payload, error = ("error", str(err), getattr(err, "exit_code", 2)), err
            except BaseException as err:  # a bug: still tell the others, so they do not wait for a timeout
                payload, error = ("error", f"rank 0 failed: {type(err).__name__}: {err}", 1), err
        box = [payload]
        dist.broadcast_object_list(box, src=0, group=self.control)
        if error is not None:
            raise error
        if box[0][0] == "error":
            err = GankitError(f"{box[0][1]} (reported by rank 0)")
            err.exit_code = box[0][2]
            raise err
        return box[0][1]

    def agree_on_plan(self, plan_run: Callable, *args):
        """rank 0 plans the run (config, checkpoint) and checks it fits the world size; every rank gets it."""

        def checked_plan():
            plan = plan_run(*args)
            self.check_config(plan.config, self.device)
            return plan

        return self.on_main(checked_plan) if self.is_distributed else plan_run(*args)

    def mean_over_ranks(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each logged sum averaged over the ranks, in one all_reduce (called at the log interval only)."""
        if not self.is_distributed or not sums:
            return sums
        keys = list(sums)  # the same order on every rank: the same code filled it
        stacked = torch.stack([sums[k].float() for k in keys])
        dist.all_reduce(stacked)
        stacked /= self.world_size
        return {k: stacked[i] for i, k in enumerate(keys)}

    def agreed_signal(self, signum: int | None, step: int) -> int | None:
        """The stop signal any rank has received (all ranks stop after the same step). Also the point
        where the ranks wait for rank 0's checkpoints and sample grids before the next step."""
        if not self.is_distributed:
            return signum
        flag = torch.tensor([signum or 0], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.control)
        return int(flag.item()) or None

    def main_only_evaluator(self, build: Callable[[], Callable]):
        """Periodic evaluation on rank 0 while the other ranks wait (built on rank 0 only)."""
        evaluate = build() if self.is_main else None
        if not self.is_distributed:
            return evaluate

        def evaluate_on_main(generator: nn.Module, step: int) -> str:
            summary = evaluate(generator, step) if evaluate is not None else ""
            dist.barrier(group=self.patient)
            return summary

        return evaluate_on_main

    def check_config(self, config, device: torch.device) -> None:
        """Refuses what data-parallel training cannot do with this config (exit 2, with the fix)."""
        if config.train.sync_batchnorm and device.type != "cuda":
            raise GankitError("train.sync_batchnorm needs CUDA devices: SyncBatchNorm does not run on the CPU. "
                              "Set train.sync_batchnorm=false (each rank then normalizes its own share of the "
                              "batch, see docs/distributed.md)")
        if not self.is_distributed:
            return
        sizes = {"train.batch_size": [config.train.batch_size]}
        if config.model.arch == "pgan" and config.train.batch_size_at_scale:
            sizes["train.batch_size_at_scale"] = list(config.train.batch_size_at_scale)
        for key, values in sizes.items():
            bad = [v for v in values if v % self.world_size]
            if bad:
                raise GankitError(
                    f"{key} {values if len(values) > 1 else values[0]} is the global batch and must divide "
                    f"evenly among the {self.world_size} processes: use a multiple of {self.world_size} "
                    f"(e.g. --set {key}=...) or another --nproc_per_node")


_current = Replica()


def current() -> Replica:
    """The running process's replica (rank 0 of 1 outside torchrun)."""
    return _current


def torchrun_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextlib.contextmanager
def session(device_name: str = "auto"):
    """Under torchrun (WORLD_SIZE > 1): joins the process group for the duration, one device per local
    rank, and turns a failed collective into a PeerLostError. Otherwise does nothing."""
    global _current
    if torchrun_world_size() <= 1 or dist.is_initialized():
        yield _current
        return
    rank, world_size = int(os.environ["RANK"]), torchrun_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise GankitError(f"local rank {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                              "use --nproc_per_node at most that")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(seconds=_timeout_seconds())
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, timeout=timeout, device_id=device if backend == "nccl" else None)
        control = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else dist.group.WORLD
        patient = dist.new_group(backend="gloo", timeout=max(timeout, EVALUATION_TIMEOUT))
    except Exception as err:
        raise PeerLostError(f"rank {rank} could not join the other {world_size - 1} processes "
                            f"({_first_line(err)}): check that every node runs the same torchrun command and "
                            "can reach the rendezvous endpoint") from None
    _current = Replica(rank, world_size, local_rank, device, control, patient)
    try:
        yield _current
        dist.barrier(group=control)  # no rank reports success before every rank has finished
    except Exception as err:
        if _is_communication_failure(err):
            raise PeerLostError(
                f"rank {rank} lost contact with the other processes ({_first_line(err)}). Another rank stopped "
                "or hung: its own message (above, or in its node's log) names the cause. Nothing was saved "
                "after the newest checkpoint; run the same torchrun command again to resume from it"
            ) from None
        raise
    finally:
        _current = Replica()
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def _timeout_seconds() -> float:
    text = os.environ.get(TIMEOUT_VARIABLE)
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1
    if seconds <= 0:
        raise GankitError(f"{TIMEOUT_VARIABLE}={text!r}: give a positive number of seconds")
    return seconds


def _is_communication_failure(err: BaseException) -> bool:
    if isinstance(err, dist.DistError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and any(
        marker in text for marker in ("gloo", "Gloo", "NCCL", "Connection closed", "Connection reset",
                                      "Timed out", "timed out", "Broken pipe"))


def _first_line(err: BaseException) -> str:
    """The error's first line without gloo's source location and advice."""
    lines = str(err).strip().splitlines()
    text = re.sub(r"^\[[^\]]*\.cc:\d+\]\s*", "", lines[0] if lines else "")
    return f"{type(err).__name__}: {text.split('. This is typically')[0][:300]}"


_DDP_OPTIONS = inspect.signature(DistributedDataParallel.__init__).parameters


class DataParallel:
    """The modules that run a training step. Single process: (G_run, D_run) as given, and D_run for G's
    loss. Under torchrun: G and D wrapped in DistributedDataParallel (compiled if asked), and the unwrapped
    D for G's loss, so that G's update never starts a gradient reduction of D's parameters."""

    def __init__(self, replica: Replica, config, G: nn.Module, D: nn.Module, G_run: nn.Module, D_run: nn.Module):
        self.replica, self.config = replica, config
        self.G, self.D = G, D
        self.single = (G_run, D_run, D_run)
        self.key: object = ()  # what the current wrappers were built for
        self.wrapped: tuple | None = None
        if replica.is_distributed and config.train.sync_batchnorm:
            # In place: the optimizers keep the same parameters; state_dict keys do not change.
            nn.SyncBatchNorm.convert_sync_batchnorm(G)
            nn.SyncBatchNorm.convert_sync_batchnorm(D)
        self.D_for_g = (torch.compile(D) if config.train.compile else D) if replica.is_distributed else None

    def modules(self, progress=None) -> tuple[nn.Module, nn.Module, nn.Module]:
        """(G to train, D to train, D for G's loss) for this step; Progressive GAN passes its progress."""
        if not self.replica.is_distributed:
            return self.single
        key = (progress.stage, progress.alpha < 1.0) if progress is not None else None
        if key != self.key:
            self.wrapped = None  # drop the old wrappers (and their gradient hooks) first
            used_g = used_d = None
            if progress is not None:
                used_g, used_d = self._used_parameters(progress)
            G_ddp, D_ddp = self._wrap(self.G, used_g), self._wrap(self.D, used_d)
            if self.config.train.compile:
                G_ddp, D_ddp = torch.compile(G_ddp), torch.compile(D_ddp)
            self.key, self.wrapped = key, (G_ddp, D_ddp, self.D_for_g)
        return self.wrapped

    def _wrap(self, module: nn.Module, used: set[int] | None) -> nn.Module:
        # DDP reduces the parameters that require gradients when it is built: leave out the unused ones.
        unused = [p for p in module.parameters() if p.requires_grad and used is not None and id(p) not in used]
        for p in unused:
            p.requires_grad_(False)
        try:
            device_ids = [self.replica.device.index] if self.replica.device.type == "cuda" else None
            # No buffer sync at each forward: batch norm running statistics stay per rank (rank 0's are
            # saved). The option was renamed in torch 2.14; older versions only know broadcast_buffers.
            no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in _DDP_OPTIONS
                              else {"broadcast_buffers": False})
            return DistributedDataParallel(module, device_ids=device_ids, **no_buffer_sync)
        finally:
            for p in unused:
                p.requires_grad_(True)

    def _used_parameters(self, progress) -> tuple[set[int], set[int]]:
        """The parameters of G and D that the stage's forward passes reach, found by differentiating
        one pass on zeros (no randomness, no running statistics in PGAN)."""
        device, data = self.replica.device, self.config.data
        z = torch.zeros(1, self.config.model.z_dim, device=device)
        size = 4 * 2**progress.stage
        x = torch.zeros(4, data.channels, size, size, device=device)
        found = []
        for module, run in ((self.G, lambda: self.G(z, progress.stage, progress.alpha)),
                            (self.D, lambda: self.D(x, progress.stage, progress.alpha))):
            params = [p for p in module.parameters() if p.requires_grad]
            with torch.enable_grad():
                grads = torch.autograd.grad(run().float().sum(), params, allow_unused=True)
            found.append({id(p) for p, g in zip(params, grads) if g is not None})
        return found[0], found[1]


class _Silent:
    """The run log on ranks other than 0."""

    def __call__(self, message: str) -> None:
        pass

    def close(self) -> None:
        pass


def run_log(replica: Replica, make_log: Callable):
    """Rank 0's log (make_log()); a silent one elsewhere."""
    return make_log() if replica.is_main else _Silent()
