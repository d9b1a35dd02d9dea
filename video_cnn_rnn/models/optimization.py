"""A ``VideoClassifier``'s optimiser and learning-rate scheduler: parameter groups (trainable backbone parameters
at their own ``backbone_lr``), how the scheduler is stepped, and telling run-length-aware schedulers
(``schedules.WarmupCosineLR``) how long the run is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn


def configure_optimizers(
    module: nn.Module,
    backbone: nn.Module,
    optimizer_factory: Callable[..., torch.optim.Optimizer],
    lr_scheduler_factory: Callable[..., Any] | None,
    backbone_lr: float | None,
) -> Any:
    """What ``configure_optimizers`` returns: head/classifier parameters of ``module`` at the optimizer's lr;
    trainable ``backbone`` parameters at ``backbone_lr`` if set. A scheduler scales both groups alike; one with an
    ``interval`` attribute (``WarmupCosineLR``) is stepped at that interval, told the run's optimizer steps by
    ``set_run_length``."""
    backbone_ids = {id(p) for p in backbone.parameters()}
    head_params = [p for p in module.parameters() if p.requires_grad and id(p) not in backbone_ids]
    backbone_params = [p for p in backbone.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": head_params}]
    if backbone_params:
        group: dict[str, Any] = {"params": backbone_params}
        if backbone_lr is not None:
            group["lr"] = backbone_lr
        groups.append(group)
    optimizer = optimizer_factory(groups)
    if lr_scheduler_factory is None:
        return optimizer
    scheduler = lr_scheduler_factory(optimizer)
    # A scheduler that says how it is stepped (WarmupCosineLR's interval) is stepped so; on_train_start tells it
    # the run's length.
    config: dict[str, Any] = {"scheduler": scheduler, "interval": getattr(scheduler, "interval", "epoch")}
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        config["monitor"] = "val_loss"
    return {"optimizer": optimizer, "lr_scheduler": config}


def set_run_length(trainer: L.Trainer) -> None:
    """Tell schedulers with ``set_run_length`` (``WarmupCosineLR``) the run's optimizer steps and steps per epoch.

    Called from ``on_train_start``, not ``configure_optimizers``: ``trainer.estimated_stepping_batches`` there
    sets the training loader up before a checkpoint is restored, and Lightning then never gives the loader its
    saved position, so a resumed run would restart its epoch's data. Here the loader is set up and restored; a
    resumed scheduler recomputes the lr of its restored step.
    """
    schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
    if not any(hasattr(scheduler, "set_run_length") for scheduler in schedulers):
        return
    total = trainer.estimated_stepping_batches  # the loader is set up already: nothing is rebuilt
    batches = trainer.num_training_batches
    per_epoch = math.ceil(batches / trainer.accumulate_grad_batches) if math.isfinite(batches) else 1
    for scheduler in schedulers:
        if hasattr(scheduler, "set_run_length"):
            scheduler.set_run_length(int(min(total, 2**62)), per_epoch)
