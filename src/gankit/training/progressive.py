"""Progressive GAN inside the training loop: the schedule applied to the networks at each step."""

from __future__ import annotations

import torch

from gankit.config import Config
from gankit.models.pgan import real_for_stage
from gankit.training.lr_schedule import set_learning_rate
from gankit.training.schedule import Progress, Schedule, run_length


class Growth:
    """Sets stage, alpha and learning rates before each generator step, from the step count alone
    (so a resumed run continues mid-stage or mid-fade-in exactly)."""

    def __init__(self, config: Config):
        self.schedule = Schedule.from_config(config.train)
        # total_steps: the run's length; length_note: the start-up line when train.steps overrides the schedule
        self.total_steps, self.length_note = run_length(config.train.steps, self.schedule)

    @property
    def max_batch_size(self) -> int:
        return max(self.schedule.batch_sizes)

    def begin_step(self, step: int, networks, optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer]) -> Progress:
        progress = self.schedule.at(step)
        for net in networks:
            if net is not None:
                net.set_progress(progress.stage, progress.alpha)
        opt_g, opt_d = optimizers
        set_learning_rate(opt_g, progress.g_lr)
        set_learning_rate(opt_d, progress.d_lr)
        return progress

    @staticmethod
    def real(images: torch.Tensor, progress: Progress) -> torch.Tensor:
        """Real images pooled to the stage's resolution and faded like G's output."""
        return real_for_stage(images, progress.stage, progress.alpha)

    def stage_finished(self, step: int) -> int | None:
        """The stage whose last step was `step` (1-based count of steps done), else None."""
        if step <= 0 or step >= self.schedule.scheduled_steps:
            return None
        before, after = self.schedule.stage_at(step - 1)[0], self.schedule.stage_at(step)[0]
        return before if after != before else None

    def stage_of_checkpoint(self, step: int) -> int:
        """The stage of the weights saved after `step` steps: that of their last update."""
        return self.schedule.stage_at(max(step - 1, 0))[0]
