"""video_cnn_rnn: video classification with a timm CNN per frame and a GRU / Transformer head."""

from typing import Any

__all__ = ["VideoClassifier", "VideoDataModule", "VideoDataset", "load_clip"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the data side pulls in Lightning and the model timm (seconds), and the command line's
    # --help, which imports this package first, needs neither. `import video_cnn_rnn.data` stays light for workers.
    if name == "VideoClassifier":
        from video_cnn_rnn.models.classifier import VideoClassifier

        return VideoClassifier
    if name in ("VideoDataModule", "VideoDataset", "load_clip"):
        from video_cnn_rnn import data

        return getattr(data, name)
    raise AttributeError(f"module 'video_cnn_rnn' has no attribute {name!r}")
