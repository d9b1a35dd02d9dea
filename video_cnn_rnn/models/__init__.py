"""Model layer: timm frame backbones, temporal heads and the Lightning video classifier."""

from video_cnn_rnn.models.backbone import (
    apply_freeze_policy,
    backbone_blocks,
    backbone_data_config,
    create_backbone,
    keep_frozen_in_eval,
    load_local_weights,
)
from video_cnn_rnn.models.classifier import VideoClassifier
from video_cnn_rnn.models.heads import MeanHead, RecurrentHead, TransformerHead, build_head
from video_cnn_rnn.models.schedules import WarmupCosineLR

__all__ = [
    "MeanHead",
    "RecurrentHead",
    "TransformerHead",
    "VideoClassifier",
    "WarmupCosineLR",
    "apply_freeze_policy",
    "backbone_blocks",
    "backbone_data_config",
    "build_head",
    "create_backbone",
    "keep_frozen_in_eval",
    "load_local_weights",
]
