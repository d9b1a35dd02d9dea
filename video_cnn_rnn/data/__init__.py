"""The data side: annotations -> sampled, decoded, padded uint8 clips."""

from video_cnn_rnn.data.annotations import ManifestError, read_source, split_train_val
from video_cnn_rnn.data.augment import ClipAugment
from video_cnn_rnn.data.collate import collate_clips
from video_cnn_rnn.data.datamodule import VideoDataModule
from video_cnn_rnn.data.dataset import VideoDataset
from video_cnn_rnn.data.decode import DamagedVideoError, VideoDecodeError, load_clip, load_clips
from video_cnn_rnn.data.sampling import sample_indices
from video_cnn_rnn.data.synthetic import generate_synthetic_dataset

__all__ = [
    "ClipAugment",
    "DamagedVideoError",
    "ManifestError",
    "VideoDataModule",
    "VideoDataset",
    "VideoDecodeError",
    "collate_clips",
    "generate_synthetic_dataset",
    "load_clip",
    "load_clips",
    "read_source",
    "sample_indices",
    "split_train_val",
]
