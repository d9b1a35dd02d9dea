"""Clip-consistent augmentation: one draw per clip, alike for all its frames, none at evaluation."""

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from video_cnn_rnn.data.augment import ClipAugment
from video_cnn_rnn.data.datamodule import VideoDataModule

SIZE = 32


def _augment(flip: bool = True, jitter: float = 0.4) -> ClipAugment:
    return ClipAugment(SIZE, crop_scale=(0.3, 0.9), flip=flip, color_jitter=jitter)


def _full_mask(batch: int, steps: int) -> torch.Tensor:
    return torch.ones(batch, steps, dtype=torch.bool)


def test_identical_frames_stay_identical_and_clips_differ() -> None:
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, SIZE, SIZE), dtype=torch.uint8)
    frames = image.expand(6, 5, 3, SIZE, SIZE).clone()  # 6 identical clips of 5 identical frames
    out = _augment()(frames, _full_mask(6, 5))
    assert out.dtype == torch.uint8 and out.shape == frames.shape
    assert torch.equal(out, out[:, :1].expand_as(out))  # every frame of a clip got the same transform
    assert len({out[b, 0].sum().item() for b in range(6)}) == 6  # every clip got its own draw
    assert not torch.equal(out, frames)


def test_marked_pixel_moves_alike_in_every_frame() -> None:
    torch.manual_seed(1)
    frames = torch.randint(0, 60, (4, 6, 3, SIZE, SIZE), dtype=torch.uint8)  # dim, different noise in every frame
    frames[..., 20:24, 9:13] = 255  # a bright square, same place in every frame
    out = ClipAugment(SIZE, crop_scale=(0.5, 0.9), flip=True)(frames, _full_mask(4, 6))
    bright = out.float().mean(2) > 200  # [B, T, H, W]
    for clip in bright:
        assert clip[0].any()
        assert all(torch.equal(frame, clip[0]) for frame in clip)  # the square lands on the same pixels
    assert len({tuple(clip[0].nonzero()[0].tolist()) for clip in bright}) > 1  # but not alike across clips


def test_padded_frames_are_untouched_and_do_not_matter() -> None:
    torch.manual_seed(2)
    frames = torch.randint(0, 256, (2, 4, 3, SIZE, SIZE), dtype=torch.uint8)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    other = frames.clone()
    other[0, 2:] = 7  # different padding content
    torch.manual_seed(3)
    first = _augment()(frames, mask)
    torch.manual_seed(3)
    second = _augment()(other, mask)
    assert torch.equal(first[0, :2], second[0, :2]) and torch.equal(first[1], second[1])
    assert torch.equal(first[0, 2:], frames[0, 2:])  # padding is neither transformed nor read


def test_reproducible_under_seed_everything_and_multi_clip_layout() -> None:
    frames = torch.randint(0, 256, (2, 3, 4, 3, SIZE, SIZE), dtype=torch.uint8)  # [B, K, T, C, H, W]
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    L.seed_everything(5)
    first = _augment()(frames, mask)
    L.seed_everything(5)
    assert torch.equal(first, _augment()(frames, mask))
    assert first.shape == frames.shape


def test_nothing_to_do_returns_input() -> None:
    frames = torch.randint(0, 256, (1, 2, 3, SIZE, SIZE), dtype=torch.uint8)
    assert ClipAugment(SIZE)(frames, _full_mask(1, 2)) is frames


@pytest.mark.parametrize("scale", [(0.0, 1.0), (0.9, 0.5), (0.5, 1.5)])
def test_bad_crop_scale_is_named(scale: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="crop_scale"):
        ClipAugment(SIZE, crop_scale=scale)


def _batch() -> dict:
    torch.manual_seed(0)
    frames = torch.randint(0, 256, (3, 4, 3, SIZE, SIZE), dtype=torch.uint8)
    return {"frames": frames, "mask": _full_mask(3, 4)}


@pytest.mark.parametrize(("training", "changed"), [(True, True), (False, False)])
def test_datamodule_augments_training_batches_only(synthetic_root: Path, training: bool, changed: bool) -> None:
    data = VideoDataModule(
        train=str(synthetic_root / "train.csv"), img_size=SIZE, augment=True, crop_scale=(0.4, 0.8), train_flip=True
    )
    data.trainer = SimpleNamespace(training=training)  # validating / testing / predicting: training is False
    batch = _batch()
    frames = batch["frames"].clone()
    out = data.on_after_batch_transfer(batch, 0)["frames"]
    assert out.shape == frames.shape and out.dtype == torch.uint8
    assert torch.equal(out, frames) != changed


def test_datamodule_without_augment_or_with_features_passes_batches(synthetic_root: Path) -> None:
    plain = VideoDataModule(train=str(synthetic_root / "train.csv"), img_size=SIZE)
    plain.trainer = SimpleNamespace(training=True)
    batch = _batch()
    assert torch.equal(plain.on_after_batch_transfer(batch, 0)["frames"], _batch()["frames"])
    augmenting = VideoDataModule(train=str(synthetic_root / "train.csv"), img_size=SIZE, augment=True)
    augmenting.trainer = SimpleNamespace(training=True)
    features = {"features": torch.ones(2, 4, 8), "mask": _full_mask(2, 4)}
    assert torch.equal(augmenting.on_after_batch_transfer(features, 0)["features"], torch.ones(2, 4, 8))


def test_augment_with_feature_cache_is_refused(synthetic_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="feature_cache"):
        VideoDataModule(train=str(synthetic_root / "train.csv"), augment=True, feature_cache=str(tmp_path))


def test_augment_moves_the_flip_off_the_dataset(synthetic_root: Path) -> None:
    data = VideoDataModule(train=str(synthetic_root / "train.csv"), augment=True, train_flip=True, val_fraction=0)
    data.setup("fit")
    assert not data.datasets["train"].random_flip  # drawn on the device instead, never twice
    assert data.train_augment is not None and "RandomHorizontalFlip" in repr(data.train_augment.transform)
