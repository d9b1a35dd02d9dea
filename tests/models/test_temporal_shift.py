"""Temporal shift: channels move between neighbouring frames of one clip only, never across clips or from padding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from video_cnn_rnn.models import VideoClassifier
from video_cnn_rnn.models.temporal_shift import clip_layout, shift_channels

STEPS, IMG = 4, 32


def make_model(**kwargs: Any) -> VideoClassifier:
    """A small model with the shift on; timm's zero-initialised last BatchNorm of each residual branch is set to
    ones, or the branches the shift feeds would add nothing."""
    torch.manual_seed(0)
    settings = {
        "backbone": "test_resnet",
        "num_classes": 3,
        "num_frames": STEPS,
        "img_size": IMG,
        "freeze": "last_n",
        "trainable_blocks": 2,
        "temporal_shift": 0.25,
        "head": "mean",
    }
    model = VideoClassifier(**{**settings, **kwargs}).eval()
    for module in model.network.backbone.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(module.weight)
    return model


def padded_batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (len(lengths), STEPS, 3, IMG, IMG), generator=generator).to(torch.uint8)
    mask = torch.arange(STEPS).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return frames, mask


def _rows(mask: torch.Tensor, real_frames_only: bool) -> torch.Tensor:
    """[N, 8, 1, 1] rows whose every channel holds 100 * (clip + 1) + frame + 1 (padding rows: -1000)."""
    batch, steps = mask.shape
    ids = (100 * (torch.arange(batch)[:, None] + 1) + torch.arange(steps)[None, :] + 1).float()  # [B, T]
    ids = ids.masked_fill(~mask, -1000.0)
    ids = ids[mask] if real_frames_only else ids.flatten()
    return ids.view(-1, 1, 1, 1).expand(-1, 8, 1, 1).contiguous()


@pytest.mark.parametrize("real_frames_only", [True, False])
def test_shift_moves_channels_between_neighbouring_frames_of_one_clip(real_frames_only: bool) -> None:
    mask = torch.tensor([[True, True, True, False], [True, False, False, False], [True, True, True, True]])
    x = _rows(mask, real_frames_only)
    out = shift_channels(x, clip_layout(mask, real_frames_only), 0.25)  # 2 channels each way
    assert out.shape == x.shape
    own, forward, backward = out[:, 4:, 0, 0], out[:, :2, 0, 0], out[:, 2:4, 0, 0]
    assert torch.equal(own, x[:, 4:, 0, 0])  # the rest stays
    rows = x[:, 0, 0, 0]
    for row, value in enumerate(rows.tolist()):
        if value < 0:
            continue  # a padded row's own output is never read
        clip, frame = divmod(int(value), 100)
        length = int(mask[clip - 1].sum())
        expected_prev = value - 1 if frame > 1 else 0.0  # none before a clip's first frame
        expected_next = value + 1 if frame < length else 0.0  # none after its last real frame: no padding leaks
        assert forward[row].tolist() == [expected_prev] * 2, (row, value)
        assert backward[row].tolist() == [expected_next] * 2, (row, value)


def test_zero_channels_to_shift_is_a_no_op() -> None:
    mask = torch.ones(1, 3, dtype=torch.bool)
    x = torch.randn(3, 3, 2, 2)
    assert shift_channels(x, clip_layout(mask), 0.125) is x  # int(3 * 0.125) == 0


def test_off_by_default_with_the_same_state_dict_keys() -> None:
    plain, shifted = make_model(temporal_shift=0.0), make_model()
    assert plain.network.temporal_shift is None
    assert not any(m._forward_pre_hooks for m in plain.network.backbone.modules())
    assert shifted.state_dict().keys() == plain.state_dict().keys()
    hooked = shifted.network.temporal_shift.hooked
    assert hooked and all(name.startswith(("layer3.", "layer4.")) for name in hooked)  # the trainable stages only
    frames, mask = padded_batch([4, 2])
    with torch.no_grad():
        features = plain.network.extract_features(frames, mask), shifted.network.extract_features(frames, mask)
        assert not torch.allclose(*features, atol=1e-4)  # same weights: the shift acts


@pytest.mark.parametrize("backbone", ["test_resnet", "test_efficientnet"])
def test_clips_stay_apart_and_padding_does_not_matter(backbone: str) -> None:
    model = make_model(backbone=backbone, backbone_batch_size=3)  # calls of whole clips
    frames, mask = padded_batch([4, 2, 3])
    with torch.no_grad():
        logits = model(frames, mask)
        assert logits.shape == (3, 3)
        other = frames.clone()
        other[~mask] = 255  # other padding
        other[0] = 17  # another first clip
        changed = model(other, mask)
        assert torch.allclose(changed[1:], logits[1:], atol=1e-5)  # clip 0 does not reach its neighbours
        all_frames = model.network.forward_features(
            model.network.extract_features(frames, mask, real_frames_only=False), mask
        )
        assert torch.allclose(all_frames, logits, atol=1e-5)  # the padded layout gives the same
        alone = model(frames[1:2], mask[1:2])
        assert torch.allclose(alone, logits[1:2], atol=1e-5)  # unchanged by batching and chunking


def test_trains_and_predicts_video(tmp_path: Path) -> None:
    model = make_model().train()
    frames, mask = padded_batch([4, 3])
    model(frames, mask).sum().backward()
    assert all(p.grad is not None for p in model.network.backbone.layer4.parameters())
    top = model.predict_video(frames[0])
    assert len(top) == 3 and abs(sum(p for _, p in top) - 1) < 1e-5


def test_survives_checkpoint_and_model_folder(tmp_path: Path) -> None:
    model = make_model(temporal_shift=0.125)
    checkpoint = tmp_path / "tsm.ckpt"
    hparams = dict(model.hparams)
    torch.save(
        {"state_dict": model.state_dict(), "hyper_parameters": hparams, "pytorch-lightning_version": "2.6.0"},
        checkpoint,
    )
    loaded = VideoClassifier.load_from_checkpoint(checkpoint)
    assert loaded.hparams.temporal_shift == 0.125 and loaded.network.temporal_shift is not None
    folder = VideoClassifier.from_pretrained(model.save_pretrained(tmp_path / "folder"))
    frames, mask = padded_batch([4, 1])
    with torch.no_grad():
        assert torch.allclose(folder(frames, mask), model(frames, mask), atol=1e-5)


def test_needs_trainable_residual_blocks() -> None:
    with pytest.raises(ValueError, match="temporal_shift.*freeze"):
        make_model(freeze="frozen")
    with pytest.raises(ValueError, match=r"temporal_shift must be in \(0, 0.5\]"):
        make_model(temporal_shift=0.75)


def test_backbone_called_without_the_clip_layout_fails_readably() -> None:
    model = make_model()
    with pytest.raises(RuntimeError, match="clip layout"):
        model.network.backbone(torch.zeros(2, 3, IMG, IMG))
