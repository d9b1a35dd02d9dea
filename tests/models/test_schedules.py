"""WarmupCosineLR: the lr curve, both parameter groups, per-step stepping in a fit, and YAML through the CLI."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from video_cnn_rnn.cli import run_cli
from video_cnn_rnn.models import VideoClassifier
from video_cnn_rnn.models.schedules import WarmupCosineLR


def _optimizer() -> torch.optim.Optimizer:
    head, backbone = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    return torch.optim.SGD([{"params": [head]}, {"params": [backbone], "lr": 0.01}], lr=0.1)


def _curve(scheduler: WarmupCosineLR, steps: int) -> list[list[float]]:
    lrs = []
    for _ in range(steps):
        lrs.append([group["lr"] for group in scheduler.optimizer.param_groups])
        scheduler.optimizer.step()
        scheduler.step()
    return lrs


def test_lr_curve_per_step_both_groups() -> None:
    scheduler = WarmupCosineLR(_optimizer(), warmup_epochs=1, min_lr_ratio=0.1)
    scheduler.set_run_length(total_steps=20, steps_per_epoch=4)  # 5 epochs of 4 steps
    lrs = _curve(scheduler, 25)
    head = [lr[0] for lr in lrs]
    assert head[:4] == pytest.approx([0.1 * (s + 1) / 5 for s in range(4)])  # linear warm-up
    assert head[4] == pytest.approx(0.1)  # the peak, then the cosine
    assert head[12] == pytest.approx(0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 8 / 16))))
    assert all(a >= b for a, b in zip(head[4:], head[5:], strict=False))  # never rises after the warm-up
    assert head[20:] == pytest.approx([0.01] * 5)  # min_lr_ratio * base, then stays
    assert [lr[1] for lr in lrs] == pytest.approx([lr * 0.1 for lr in head])  # the backbone group follows


def test_epoch_interval_and_explicit_max_epochs() -> None:
    scheduler = WarmupCosineLR(_optimizer(), warmup_epochs=0, max_epochs=4, interval="epoch")
    scheduler.set_run_length(total_steps=40, steps_per_epoch=10)  # ignored but for the epoch count
    head = [lr[0] for lr in _curve(scheduler, 5)]
    assert head == pytest.approx([0.1 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(5)])


@pytest.mark.parametrize(
    "kwargs", [{"warmup_epochs": -1}, {"min_lr_ratio": 2}, {"warmup_epochs": 3, "max_epochs": 2}, {"interval": "x"}]
)
def test_bad_settings_are_named(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        WarmupCosineLR(_optimizer(), **kwargs)


def _batches(count: int) -> DataLoader:
    frames = torch.randint(0, 256, (2, 3, 3, 32, 32), dtype=torch.uint8)
    batch = {"frames": frames, "mask": torch.ones(2, 3, dtype=torch.bool), "labels": torch.tensor([0, 1])}
    return DataLoader([batch] * count, batch_size=None)


def test_fit_steps_the_schedule_per_optimizer_step(tmp_path: Path) -> None:
    model = VideoClassifier(
        backbone="test_efficientnet",
        num_classes=2,
        num_frames=3,
        img_size=32,
        freeze="last_n",
        backbone_lr=0.01,
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
        lr_scheduler=functools.partial(WarmupCosineLR, warmup_epochs=1, min_lr_ratio=0.0),
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, _batches(4))  # 4 steps an epoch, 12 in all
    scheduler = trainer.lr_scheduler_configs[0]
    assert scheduler.interval == "step"
    assert (scheduler.scheduler.steps_per_epoch, scheduler.scheduler.total_steps) == (4, 12)
    assert scheduler.scheduler.last_epoch == 12  # stepped after every optimizer step
    head, backbone = trainer.optimizers[0].param_groups
    assert head["lr"] == pytest.approx(0.0) and backbone["lr"] == pytest.approx(0.0)  # the end of the cosine


def test_yaml_scheduler_through_the_cli(synthetic_root: Path, tmp_path: Path) -> None:
    config = tmp_path / "schedule.yaml"
    config.write_text(
        "model:\n"
        "  optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 0.001}}\n"
        "  lr_scheduler:\n"
        "    class_path: video_cnn_rnn.models.schedules.WarmupCosineLR\n"
        "    init_args: {warmup_epochs: 0.5, min_lr_ratio: 0.05}\n"
    )
    args = ["--trainer.accelerator", "cpu", "--trainer.logger", "false", "--model.backbone", "test_efficientnet"]
    args += ["--data.train", str(synthetic_root / "train.csv"), "--data.img_size", "32", "--data.num_workers", "0"]
    cli = run_cli([*args, "--config", str(config)], run=False)
    scheduler = cli.model.lr_scheduler_factory(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0))
    assert isinstance(scheduler, WarmupCosineLR)
    assert (scheduler.warmup_epochs, scheduler.min_lr_ratio, scheduler.interval) == (0.5, 0.05, "step")
