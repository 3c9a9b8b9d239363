"""The Progressive GAN schedule: stage, fade-in alpha, batch size and learning rates as pure functions
of the generator step.

`Schedule.at(step)` describes the generator update number `step` (0-based: the update that runs
when `step` updates are done), so a run resumed at a checkpoint's step continues the schedule where it
was. Scale s lasts `max_iter_at_scale[s]` steps, fade-in included. Each scale after the first starts
with `fade_iters` steps of fade-in in which alpha, the weight of the new scale, rises linearly:
alpha = t / fade_iters at step t of the scale, so its first step (alpha = 0) is exactly the previous
network and step `fade_iters` is the first with alpha = 1. Steps past the sum of `max_iter_at_scale`
stay at the last scale. A run lasts that sum unless `train.steps` is given, which wins (see `run_length`).
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass

from gankit.errors import GankitError


@dataclass(frozen=True)
class Progress:
    stage: int  # scale index: 0 is 4x4, s is 4 * 2**s pixels
    alpha: float  # weight of the new scale's path in [0, 1]; 1 outside fade-ins and at stage 0
    step_in_stage: int  # steps already made at this stage
    batch_size: int
    g_lr: float
    d_lr: float

    @property
    def resolution(self) -> int:
        return 4 * 2**self.stage

    @property
    def fading(self) -> bool:
        return self.alpha < 1.0


@dataclass(frozen=True)
class Schedule:
    max_iter_at_scale: tuple[int, ...]  # generator steps per scale, fade-in included
    fade_iters: int  # steps of fade-in at the start of each scale after the first
    batch_sizes: tuple[int, ...]  # per scale
    g_lrs: tuple[float, ...]  # per scale
    d_lrs: tuple[float, ...]  # per scale

    def __post_init__(self):
        n = len(self.max_iter_at_scale)
        if n == 0 or any(len(v) != n for v in (self.batch_sizes, self.g_lrs, self.d_lrs)):
            raise ValueError("the per-scale lists must be non-empty and of the same length")
        if any(i < 1 for i in self.max_iter_at_scale):
            raise ValueError("each scale needs at least one step")
        if self.fade_iters < 0 or any(self.fade_iters > i for i in self.max_iter_at_scale[1:]):
            raise ValueError(f"fade_iters {self.fade_iters} must be in 0..min(max_iter_at_scale[1:])")

    @classmethod
    def from_config(cls, train) -> "Schedule":
        """From a validated TrainConfig of a pgan run; unset per-scale lists use batch_size, g_lr, d_lr."""
        for key in ("max_iter_at_scale", "fade_iters"):
            if getattr(train, key) is None:  # a config without a train section skips that check
                raise GankitError(f"model.arch pgan needs train.{key} (see docs/pgan.md)")
        counts = tuple(train.max_iter_at_scale)
        n = len(counts)
        batch_sizes = tuple(train.batch_size_at_scale or [train.batch_size] * n)
        g_lrs = tuple(train.lr_at_scale or [train.g_lr] * n)
        d_lrs = tuple(train.lr_at_scale or [train.d_lr] * n)
        return cls(counts, train.fade_iters, batch_sizes, g_lrs, d_lrs)

    @property
    def num_scales(self) -> int:
        return len(self.max_iter_at_scale)

    @property
    def stage_starts(self) -> tuple[int, ...]:
        """The first step of each scale."""
        return (0, *itertools.accumulate(self.max_iter_at_scale[:-1]))

    @property
    def scheduled_steps(self) -> int:
        """Steps until the last scale has had its max_iter_at_scale."""
        return sum(self.max_iter_at_scale)

    def stage_at(self, step: int) -> tuple[int, int]:
        """(stage, steps already made at that stage) for generator step `step`."""
        if step < 0:
            raise ValueError(f"step {step} is negative")
        stage = bisect.bisect_right(self.stage_starts, step) - 1
        return stage, step - self.stage_starts[stage]

    def alpha_at(self, stage: int, step_in_stage: int) -> float:
        if stage == 0 or step_in_stage >= self.fade_iters:
            return 1.0
        return step_in_stage / self.fade_iters

    def images_before(self, step: int, n_critic: int = 1) -> int:
        """Real images the discriminator has seen before generator step `step` (n_critic batches a step)."""
        seen = 0
        for stage, (start, count) in enumerate(zip(self.stage_starts, self.max_iter_at_scale)):
            last = stage == self.num_scales - 1
            steps = max(0, step - start) if last else min(max(0, step - start), count)
            seen += steps * self.batch_sizes[stage] * n_critic
        return seen

    def at(self, step: int) -> Progress:
        stage, step_in_stage = self.stage_at(step)
        return Progress(stage, self.alpha_at(stage, step_in_stage), step_in_stage,
                        self.batch_sizes[stage], self.g_lrs[stage], self.d_lrs[stage])


def run_length(steps: int | None, schedule: Schedule) -> tuple[int, str | None]:
    """A Progressive GAN run's length in generator steps, and a note when train.steps and the schedule disagree.

    train.steps, when given, wins: a longer run stays at the last scale, a shorter one stops early.
    Without it (the pgan presets leave it out) the run lasts the schedule's sum."""
    scheduled = schedule.scheduled_steps
    if steps is None or steps == scheduled:
        return scheduled, None
    stage = schedule.stage_at(min(steps, scheduled) - 1)[0]
    scale = f"{4 * 2**stage}x{4 * 2**stage}"
    where = (f"the steps after {scheduled} stay at the last scale ({scale})" if steps > scheduled
             else f"the run stops early, at the {scale} scale")
    return steps, (f"train.steps {steps} differs from the sum of train.max_iter_at_scale ({scheduled}): train.steps "
                   f"wins and {where} (leave train.steps out, or --set train.steps=null, to follow the schedule)")
