"""Learning-rate schedules for ``--model.lr_scheduler``: linear warm-up, then a cosine decay.

In YAML (LightningCLI builds it with the optimizer; every parameter group, head and backbone, follows it)::

    lr_scheduler:
      class_path: video_cnn_rnn.models.schedules.WarmupCosineLR
      init_args: {warmup_epochs: 1, min_lr_ratio: 0.01}
"""

from __future__ import annotations

import math
from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class WarmupCosineLR(LRScheduler):
    """Each group's lr rises linearly over ``warmup_epochs`` to its base value, then follows half a cosine down to
    ``min_lr_ratio`` times it at the end of training, where it stays.

    Args:
        optimizer: the optimizer (LightningCLI passes it).
        warmup_epochs: length of the warm-up in epochs (fractions allowed); 0 starts at the base lr.
        max_epochs: where the cosine ends; None: at the end of the run (the trainer's max_epochs / max_steps).
        min_lr_ratio: the final lr as a share of each group's base lr.
        interval: ``step`` updates the lr after every optimizer step (smooth for short runs; ``VideoClassifier``
            tells it the run's steps per epoch), ``epoch`` once per epoch.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_epochs: float = 1.0,
        max_epochs: int | None = None,
        min_lr_ratio: float = 0.0,
        interval: Literal["step", "epoch"] = "step",
        last_epoch: int = -1,
    ) -> None:
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        if max_epochs is not None and max_epochs <= warmup_epochs:
            raise ValueError(f"max_epochs ({max_epochs}) must be greater than warmup_epochs ({warmup_epochs})")
        if not 0 <= min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        if interval not in ("step", "epoch"):
            raise ValueError(f"interval must be 'step' or 'epoch', got {interval!r}")
        self.warmup_epochs, self.max_epochs, self.min_lr_ratio = warmup_epochs, max_epochs, min_lr_ratio
        self.interval = interval
        self.steps_per_epoch = 1  # scheduler steps per epoch: 1 until set_run_length says otherwise
        self.total_steps: int | None = max_epochs
        super().__init__(optimizer, last_epoch)

    def set_run_length(self, total_steps: int, steps_per_epoch: int) -> None:
        """The run's optimizer steps and steps per epoch (for ``interval="step"``); the current lr is recomputed."""
        if self.interval == "epoch":
            steps_per_epoch, total_steps = 1, math.ceil(total_steps / max(steps_per_epoch, 1))
        self.steps_per_epoch = max(int(steps_per_epoch), 1)
        self.total_steps = self.max_epochs * self.steps_per_epoch if self.max_epochs else max(int(total_steps), 1)
        self._last_lr = self._closed_form()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = lr

    def factor(self, step: int) -> float:
        """The share of the base lr at scheduler step ``step`` (0 = the first optimizer step)."""
        warmup = self.warmup_epochs * self.steps_per_epoch
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if self.total_steps is None:
            raise RuntimeError("WarmupCosineLR: pass max_epochs, or call set_run_length (VideoClassifier does)")
        progress = min((step - warmup) / max(self.total_steps - warmup, 1), 1.0)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def _closed_form(self) -> list[float]:
        factor = self.factor(self.last_epoch)
        return [base_lr * factor for base_lr in self.base_lrs]

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return self._closed_form()
