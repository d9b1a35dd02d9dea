"""Decoding: a video file (or its encoded bytes) -> upright RGB frames -> the model's clip. The one public face of
the sub-package; its modules are private (``_clips`` ... ``_probe``) and may change without notice.

- ``load_clip`` / ``load_clips`` / ``decode_frames`` (``_clips``): the one planner that picks a reader per file, and
  the one policy for damaged streams (``VideoDecodeError``, ``DamagedVideoError``, ``describe_damage``);
- ``iter_windows`` (``_windows``): sliding windows over a long video in one streaming PyAV pass;
- ``check_videos`` / ``probe_video`` (``_probe``): every video opened and its first frame decoded before training;
- ``Damage`` / ``DamageWatch`` / ``ffmpeg_errors`` (``_damage``): what a PyAV pass meets, for other PyAV passes
  (the proxy writer) to watch the same way;
- ``probe_pyav`` (``_packets``): what demuxing alone learns of a video (frame count, rate, packet index).

The readers (``_readers``: PyAV, and decord, imported nowhere else) and the packet index (``_packets``) stay behind
the planner. Below this package: ``data/frames.py`` (opening a video, frames to upright RGB), ``data/orientation.py``,
``data/crops.py`` (decoded frames -> the square input) and ``data/sampling.py`` (which frames).
"""

from video_cnn_rnn.data.decode._clips import (
    BACKENDS,
    Backend,
    DamagedVideoError,
    VideoDecodeError,
    decode_frames,
    describe_damage,
    load_clip,
    load_clips,
)
from video_cnn_rnn.data.decode._damage import Damage, DamageWatch, ffmpeg_errors
from video_cnn_rnn.data.decode._packets import IndexPicker, probe_pyav
from video_cnn_rnn.data.decode._probe import check_videos, probe_video, probe_videos
from video_cnn_rnn.data.decode._windows import Window, check_window, in_window, iter_windows

__all__ = [
    "BACKENDS",
    "Backend",
    "Damage",
    "DamageWatch",
    "DamagedVideoError",
    "IndexPicker",
    "VideoDecodeError",
    "Window",
    "check_videos",
    "check_window",
    "decode_frames",
    "describe_damage",
    "ffmpeg_errors",
    "in_window",
    "iter_windows",
    "load_clip",
    "load_clips",
    "probe_pyav",
    "probe_video",
    "probe_videos",
]
