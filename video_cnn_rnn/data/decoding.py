"""Deprecated: decoding is the ``video_cnn_rnn.data.decode`` sub-package (issue 27). Importing this module warns;
it goes in the next minor release, as the CHANGELOG says."""

import warnings

from video_cnn_rnn.data.decode import DamagedVideoError, VideoDecodeError, decode_frames, load_clip, load_clips

warnings.warn(
    "video_cnn_rnn.data.decoding is deprecated: import its names from video_cnn_rnn.data.decode",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["DamagedVideoError", "VideoDecodeError", "decode_frames", "load_clip", "load_clips"]
