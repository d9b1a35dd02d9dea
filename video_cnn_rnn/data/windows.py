"""Moved: the streaming window reader is ``video_cnn_rnn.data.decode.iter_windows`` (issue 27). This module only
re-exports it for files that still import ``video_cnn_rnn.data.windows``; it goes once nothing imports it."""

from video_cnn_rnn.data.decode import Window, iter_windows

__all__ = ["Window", "iter_windows"]
