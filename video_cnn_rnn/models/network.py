"""VideoNetwork: uint8 frames -> timm features of the real frames -> temporal head -> class logits.

A plain ``nn.Module`` with no training logic, so the Lightning module (``classifier.py``), feature extraction
(``video_cnn_rnn.extraction``) and inference share one forward path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from video_cnn_rnn.data.collate import flatten_clips
from video_cnn_rnn.models.backbone import (
    FreezePolicy,
    apply_freeze_policy,
    backbone_data_config,
    create_backbone,
    is_convolutional,
    keep_frozen_in_eval,
)
from video_cnn_rnn.models.heads import HeadKind, build_head
from video_cnn_rnn.models.temporal_shift import TemporalShift, clip_layout


class VideoNetwork(nn.Module):
    """A timm CNN on every real frame, a GRU/LSTM/Transformer/mean/max head over time, a small classifier.

    Args:
        num_classes: output classes.
        backbone: timm model name; ``pretrained``, ``freeze`` and ``trainable_blocks`` as in ``backbone.py``.
        head: temporal head kind; ``head_settings`` its settings by name (see ``heads.HEAD_SETTINGS``).
        max_len: most frames per clip (the Transformer's positional embedding).
        fc_hidden: width of the hidden ReLU layer before the output; None skips it.
        dropout: dropout before the classifier layers.
        feature_dropout: dropout on the per-frame features, before the head.
        channels_last: run convolutional backbones in channels_last memory format.
        compile_backbone: ``torch.compile`` the backbone in place (state-dict keys are unchanged).
        backbone_batch_size: at most this many frames per backbone call; None runs all real frames at once.
            With ``temporal_shift`` a call holds whole clips (one clip longer than this goes alone).
        temporal_shift: share of channels shifted one frame forward and as many one frame back in every residual
            block of the trainable stages (TSM; 0.125 is the paper's 1/8); 0 turns it off. Adds no parameter.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "efficientnet_lite0",
        pretrained: bool | str = False,
        freeze: FreezePolicy = "frozen",
        trainable_blocks: int = 1,
        head: HeadKind = "gru",
        head_settings: dict[str, Any] | None = None,
        max_len: int = 20,
        fc_hidden: int | None = 8,
        dropout: float = 0.4,
        feature_dropout: float = 0.0,
        channels_last: bool = True,
        compile_backbone: bool = False,
        backbone_batch_size: int | None = None,
        temporal_shift: float = 0.0,
    ) -> None:
        super().__init__()
        self.backbone_name, self.freeze = backbone, freeze
        self.backbone_batch_size = backbone_batch_size
        self.backbone = create_backbone(backbone, pretrained)
        apply_freeze_policy(self.backbone, freeze, trainable_blocks)
        # Hooks only: the state dict is the same with and without the shift.
        self.temporal_shift: TemporalShift | None = None
        if temporal_shift:
            self.temporal_shift = TemporalShift(temporal_shift)
            self.temporal_shift.attach(self.backbone, f"backbone '{backbone}' with freeze '{freeze}'")
        data_config = backbone_data_config(self.backbone)
        # Folding /255 into the stats lets extract_features normalise uint8 frames in one step. Not
        # persistent: they derive from the backbone name, which the hyperparameters already record.
        mean = torch.tensor(data_config["mean"]).view(1, -1, 1, 1) * 255.0
        std = torch.tensor(data_config["std"]).view(1, -1, 1, 1) * 255.0
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self.use_channels_last = channels_last and is_convolutional(self.backbone)
        if self.use_channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        if compile_backbone:
            # In-place compile keeps the state-dict keys free of an "_orig_mod." prefix.
            self.backbone.compile()

        self.feature_dim: int = self.backbone.num_features
        self.head = build_head(head, self.feature_dim, max_len=max_len, **(head_settings or {}))
        self.feature_dropout = nn.Dropout(feature_dropout)
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        width = self.head.out_features
        if fc_hidden:
            layers += [nn.Linear(width, fc_hidden), nn.ReLU()]
            width = fc_hidden
        layers.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*layers)

    def train(self, mode: bool = True) -> VideoNetwork:
        """Switch modes, keeping frozen backbone parts (and their BatchNorm statistics) in eval mode."""
        super().train(mode)
        if mode:
            keep_frozen_in_eval(self.backbone)
        return self

    def extract_features(self, frames: torch.Tensor, mask: torch.Tensor, real_frames_only: bool = True) -> torch.Tensor:
        """Backbone features of the real frames: uint8 [B, T, C, H, W], bool [B, T] -> [B, T, D].

        Only ``frames[mask]`` go through the backbone, so compute scales with the real frame count;
        padding positions are zeros. ``real_frames_only=False`` runs every frame (benchmark baseline) and
        then zeroes the padding, giving the same result.
        """
        batch, steps = mask.shape
        if real_frames_only:
            images = frames[mask]  # [B, T, C, H, W] -> [N, C, H, W], N = real frames
        else:
            images = frames.flatten(0, 1)  # [B, T, C, H, W] -> [B * T, C, H, W]
        feats = torch.cat(
            [
                self._backbone_forward(part, part_mask, real_frames_only)
                for part, part_mask in self._chunks(images, mask, real_frames_only)
            ]
        )  # [N, D]
        if not real_frames_only:
            feats = feats.view(batch, steps, -1)  # [B * T, D] -> [B, T, D]
            return feats * mask.unsqueeze(-1).to(feats.dtype)
        out = feats.new_zeros(batch, steps, feats.shape[-1])
        out[mask] = feats  # [N, D] -> [B, T, D]
        return out

    def _chunks(
        self, images: torch.Tensor, mask: torch.Tensor, real_frames_only: bool
    ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Backbone calls of at most ``backbone_batch_size`` frames: (images, the mask rows of their clips, or None
        without the temporal shift). With the shift each call holds whole clips: it reads a frame's neighbours."""
        chunk = self.backbone_batch_size or max(len(images), 1)
        if self.temporal_shift is None:
            return [(part, None) for part in images.split(chunk)]
        frames_per_clip = mask.sum(1).tolist() if real_frames_only else [mask.shape[1]] * mask.shape[0]
        sizes: list[int] = []  # frames per call
        counts: list[int] = []  # clips per call
        for count in frames_per_clip:
            if sizes and sizes[-1] + count <= chunk:
                sizes[-1] += count
                counts[-1] += 1
            else:
                sizes.append(count)
                counts.append(1)
        return list(zip(images.split(sizes), mask.split(counts), strict=True))

    def _backbone_forward(
        self, images: torch.Tensor, mask: torch.Tensor | None = None, real_frames_only: bool = True
    ) -> torch.Tensor:
        """uint8 [N, C, H, W] (any device) -> normalised on the model's device -> features [N, D]. ``mask`` [B, T]
        says which clips the rows are (``frames[mask]``, or with ``real_frames_only=False`` all B * T frames):
        needed with the temporal shift, ignored without it."""
        images = (images.to(self.pixel_mean.device).float() - self.pixel_mean) / self.pixel_std
        if self.use_channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.temporal_shift is None:
            return self.backbone(images)
        if mask is None:
            raise ValueError("temporal_shift: _backbone_forward needs the clips' mask")
        with self.temporal_shift.clips(clip_layout(mask.to(images.device), real_frames_only)):
            return self.backbone(images)

    def forward_features(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Head and classifier only: features [B, T, D], mask [B, T] -> logits [B, num_classes]."""
        return self.classifier(self.head(self.feature_dropout(features.float()), mask))

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """uint8 frames [B, T, C, H, W] and mask [B, T] -> logits [B, num_classes]."""
        return self.forward_features(self.extract_features(frames, mask), mask)

    def batch_logits(self, batch: dict[str, Any]) -> torch.Tensor:
        """Logits of a collated batch of frames or cached features, averaging its K clips when it has them.

        For K clips the result is log(mean softmax): softmax/argmax/cross-entropy of it are those of the
        averaged probabilities, so callers treat it like ordinary logits.
        """
        is_features = "features" in batch
        inputs, mask, clips = flatten_clips(batch["features" if is_features else "frames"], batch["mask"].bool())
        logits = self.forward_features(inputs, mask) if is_features else self(inputs, mask)
        if clips is None:
            return logits
        probs = logits.float().softmax(dim=-1).view(-1, clips, logits.shape[-1])  # [B * K, C] -> [B, K, C]
        return probs.mean(dim=1).clamp_min(1e-12).log()
