"""VideoNetwork: uint8 frames -> timm features of the real frames -> (spatial pooling) -> temporal head -> logits.

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
from video_cnn_rnn.models.spatial import DEFAULT_SPATIAL_MAPS, SpatialAttentionPool, SpatialPool
from video_cnn_rnn.models.temporal_shift import TemporalShift, clip_layout


def zero_padding(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-frame values [B, T, ...] with the padded frames' (mask False) set to zero."""
    return features * mask.view(*mask.shape, *[1] * (features.dim() - 2)).to(features.dtype)


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
        spatial_pool: ``"avg"``: the backbone's pooled vector per frame; ``"attention"``: the backbone's last
            feature map per frame, pooled by ``SpatialAttentionPool`` (learned attention over space) before the head.
        spatial_maps: (attention) attention maps per frame; None = 4.
        spatial_dim: (attention) width the maps' concatenation is projected to; None = no projection.
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
        spatial_pool: SpatialPool = "avg",
        spatial_maps: int | None = None,
        spatial_dim: int | None = None,
        temporal_shift: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_pool not in ("avg", "attention"):
            raise ValueError(f"Unknown spatial_pool '{spatial_pool}'; expected 'avg' or 'attention'")
        self.backbone_name, self.freeze = backbone, freeze
        self.spatial_pool = spatial_pool
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

        # What the head sees per frame: the pooled backbone vector, or the attention-pooled feature map.
        self.spatial: SpatialAttentionPool | None = None
        self.feature_dim: int = self.backbone.num_features
        if spatial_pool == "attention":
            self.spatial = SpatialAttentionPool(self.feature_dim, spatial_maps or DEFAULT_SPATIAL_MAPS, spatial_dim)
            self.feature_dim = self.spatial.out_features
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
        """Backbone features of the real frames: uint8 [B, T, C, H, W], bool [B, T] -> [B, T, D], or the feature
        maps [B, T, D, h, w] with ``spatial_pool="attention"`` (what a feature cache stores).

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
        )  # [N, D] or [N, D, h, w]
        if not real_frames_only:
            return zero_padding(feats.unflatten(0, (batch, steps)), mask)  # [B * T, ...] -> [B, T, ...]
        out = feats.new_zeros(batch, steps, *feats.shape[1:])
        out[mask] = feats  # [N, ...] -> [B, T, ...]
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
        """uint8 [N, C, H, W] (any device) -> normalised on the model's device -> features [N, D] (avg) or feature
        maps [N, D, h, w] (attention). ``mask`` [B, T] says which clips the rows are (``frames[mask]``, or with
        ``real_frames_only=False`` all B * T frames): needed with the temporal shift, ignored without it."""
        images = (images.to(self.pixel_mean.device).float() - self.pixel_mean) / self.pixel_std
        if self.use_channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.temporal_shift is None:
            return self._backbone_call(images)
        if mask is None:
            raise ValueError("temporal_shift: _backbone_forward needs the clips' mask")
        with self.temporal_shift.clips(clip_layout(mask.to(images.device), real_frames_only)):
            return self._backbone_call(images)

    def _backbone_call(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images [N, C, H, W] -> the backbone's pooled features [N, D] or last feature map [N, D, h, w]."""
        if self.spatial is None:
            return self.backbone(images)
        # timm's forward_features stops before the global pool: the last feature map, same weights.
        maps = self.backbone.forward_features(images)
        if maps.dim() != 4:
            raise ValueError(
                f"spatial_pool='attention' needs a backbone whose forward_features returns a feature map "
                f"[N, C, h, w]; '{self.backbone_name}' returns shape {tuple(maps.shape)} (a transformer's tokens?). "
                "Use a convolutional backbone (efficientnet_*, resnet*, convnext_*, ...) or spatial_pool='avg'."
            )
        return maps

    def pool_frames(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One vector per frame for the head: [B, T, D] as it is (avg), or maps [B, T, D, h, w] pooled by attention
        to [B, T, D'] (padded frames zero). Every frame is pooled, padding included, so no shape depends on the
        mask's values (the export traces this too); pooling is tiny next to the backbone."""
        expected = 3 if self.spatial is None else 5
        if features.dim() != expected:
            want, other = (
                ("vectors [B, T, D]", "attention") if self.spatial is None else ("maps [B, T, D, h, w]", "avg")
            )
            raise ValueError(
                f"spatial_pool='{self.spatial_pool}' needs per-frame feature {want}, got shape "
                f"{tuple(features.shape)}: features extracted by a model with spatial_pool='{other}'? Extract them "
                "again with this model."
            )
        if self.spatial is None:
            return features
        pooled = self.spatial(features.flatten(0, 1))  # [B, T, D, h, w] -> [B * T, D, h, w] -> [B * T, D']
        return zero_padding(pooled.unflatten(0, features.shape[:2]), mask)  # -> [B, T, D']

    def forward_features(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Everything after ``extract_features``: features [B, T, D] (or maps [B, T, D, h, w]) of any float dtype,
        float16 from a cache included, and mask [B, T] -> logits [B, num_classes]."""
        pooled = self.pool_frames(features.float(), mask)
        return self.classifier(self.head(self.feature_dropout(pooled), mask))

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
