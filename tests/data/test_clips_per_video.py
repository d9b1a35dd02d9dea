"""train_clips_per_video: K independent clips of every training video an epoch, sharded under DDP, resumed exactly."""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from video_cnn_rnn.data import VideoDataModule
from video_cnn_rnn.models import VideoClassifier
from video_cnn_rnn.models.schedules import WarmupCosineLR

K = 3


def _data(root: Path, **kwargs: Any) -> VideoDataModule:
    settings = dict(train=str(root / "train.csv"), val_fraction=0.0, num_frames=4, img_size=32, sampling="segment")
    settings.update(batch_size=4, num_workers=0, train_clips_per_video=K)
    return VideoDataModule(**{**settings, **kwargs})


def test_every_video_gives_k_independent_clips_an_epoch(synthetic_root: Path) -> None:
    data = _data(synthetic_root)
    data.setup("fit")
    videos = len(data.datasets["train"].items)
    loader = data.train_dataloader()
    assert len(loader.dataset) == K * videos
    batches = list(loader)
    assert Counter(path for batch in batches for path in batch["paths"]) == Counter(
        {path: K for path, _ in data.datasets["train"].items}
    )
    # One video's K entries are drawn apart: different frame positions (segment sampling).
    copies = [loader.dataset[(0, index)]["frames"] for index in range(0, K * videos, videos)]
    assert not all(torch.equal(copies[0], other) for other in copies[1:])


def test_ddp_ranks_share_the_k_clips_of_every_video_disjointly(synthetic_root: Path) -> None:
    shards = []
    for rank in range(2):
        data = _data(synthetic_root)
        data.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        data.setup("fit")
        shards.append(list(data.train_dataloader().sampler))
    videos = len(data.datasets["train"].items)
    indices = [index for shard in shards for _, index in shard]
    assert len(shards[0]) == len(shards[1]) == K * videos // 2
    assert sorted(indices) == list(range(K * videos))  # each (video, draw) once, on one rank


def test_bad_count_is_named(synthetic_root: Path) -> None:
    with pytest.raises(ValueError, match="train_clips_per_video"):
        _data(synthetic_root, train_clips_per_video=0)
    with pytest.warns(UserWarning, match="same frames"):
        _data(synthetic_root, sampling="uniform")


def _fit(root: Path, folder: Path, max_epochs: int, ckpt_path: str | None = None) -> tuple[dict, int]:
    """-> (the final state dict, how many training batches the device augmentation transformed)."""
    L.seed_everything(7)
    model = VideoClassifier(
        backbone="test_efficientnet",
        num_classes=6,
        num_frames=4,
        img_size=32,
        freeze="last_n",
        backbone_lr=0.01,
        head="mean",
        fc_hidden=None,
        dropout=0.3,
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
        lr_scheduler=functools.partial(WarmupCosineLR, warmup_epochs=0.5),
    )
    data = _data(root, augment=True, crop_scale=(0.5, 1.0), color_jitter=0.3, train_flip=True)
    augment, calls = data.train_augment, []
    data.train_augment = lambda frames, mask: calls.append(len(frames)) or augment(frames, mask)
    checkpoint = ModelCheckpoint(dirpath=folder, every_n_train_steps=5, save_top_k=-1, filename="{step}")
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoint],
        default_root_dir=folder,
    )
    trainer.fit(model, data, ckpt_path=ckpt_path)
    return model.state_dict(), len(calls)


@pytest.mark.slow
def test_mid_epoch_resume_with_k_clips_and_augmentation_is_exact(synthetic_root: Path, tmp_path: Path) -> None:
    """18 videos x 3 clips in batches of 4: 14 steps an epoch; stopped after step 5 (mid-epoch) and resumed, the
    weights at the end equal an uninterrupted run's (frame draws, crops, flips, jitter, dropout, and the per-step
    lr schedule, whose run length must not be read before the loader's position is restored)."""
    uninterrupted, augmented = _fit(synthetic_root, tmp_path / "a", max_epochs=1)
    resumed, augmented_after_resume = _fit(
        synthetic_root, tmp_path / "b", max_epochs=1, ckpt_path=str(tmp_path / "a" / "step=5.ckpt")
    )
    assert (augmented, augmented_after_resume) == (14, 9)  # every training batch, and only those
    assert uninterrupted.keys() == resumed.keys()
    assert not [key for key in resumed if not torch.equal(resumed[key], uninterrupted[key])]
