"""video_cnn_rnn: video classification with a timm CNN per frame and a GRU / Transformer head."""

from video_cnn_rnn.data import VideoDataModule, VideoDataset, load_clip

__all__ = ["VideoClassifier", "VideoDataModule", "VideoDataset", "load_clip"]


def __getattr__(name: str):
    # The model pulls in timm; importing it lazily keeps `import video_cnn_rnn.data` light for workers.
    if name == "VideoClassifier":
        from video_cnn_rnn.models.classifier import VideoClassifier

        return VideoClassifier
    raise AttributeError(f"module 'video_cnn_rnn' has no attribute {name!r}")
