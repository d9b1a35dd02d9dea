"""Moved: decoding is the ``video_cnn_rnn.data.decode`` sub-package (0.x, issue 27). This module only re-exports
the names that files still importing ``video_cnn_rnn.data.decoding`` use; new code imports
``video_cnn_rnn.data.decode``. It goes once nothing imports it."""

from video_cnn_rnn.data.decode import DamagedVideoError, VideoDecodeError, decode_frames, load_clip, load_clips

__all__ = ["DamagedVideoError", "VideoDecodeError", "decode_frames", "load_clip", "load_clips"]
