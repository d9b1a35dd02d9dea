"""Deprecated: the streaming window reader is ``video_cnn_rnn.data.decode.iter_windows`` (issue 27). Importing this
module warns; it goes in the next minor release, as the CHANGELOG says."""

import warnings

from video_cnn_rnn.data.decode import Window, iter_windows

warnings.warn(
    "video_cnn_rnn.data.windows is deprecated: import Window and iter_windows from video_cnn_rnn.data.decode",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["Window", "iter_windows"]
