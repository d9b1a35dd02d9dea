"""Frames out of PyAV, for every reader of a video (the clip readers, the streaming window reader): opening a
path or encoded bytes, the video stream set up for decoding, and decoded frames scaled and turned upright as RGB.
"""

from dataclasses import dataclass
from typing import BinaryIO

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from video_cnn_rnn.data.orientation import FrameOrientation

# H.264 without CABAC (the Baseline profiles: video calls, webcams, x264's ultrafast preset) decodes damage into
# plausible macroblocks; "aggressive" error recognition also checks that a slice's data ends where its last
# macroblock does, and sees it. Not for CABAC streams, where it finds nothing more and costs ~4% of the decode,
# nor for MPEG-4 Part 2, where it flags every B-frame of UCF101's clean XviD files.
_CAVLC_ONLY_PROFILES = frozenset({"Baseline", "Constrained Baseline", "Extended"})
# A video file's path, or its encoded bytes in a seekable file-like object (``io.BytesIO``: an item of a shard).
Source = str | BinaryIO


@dataclass(frozen=True)
class Scale:
    """The size the decoder scales frames to, aspect ratio kept: the shorter side to ``side`` (for a centre crop),
    or with ``fit`` the longer side (for a letterbox); without ``upscale``, never above the stored size (the
    motion crop reads frames larger than ``img_size`` to zoom into, and a small video has nothing more to give)."""

    side: int
    fit: bool = False
    upscale: bool = True

    def size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) scaled; no side below one pixel, however extreme the aspect ratio."""
        scale = self.side / (max(width, height) if self.fit else min(width, height))
        if not self.upscale and scale >= 1:
            return width, height
        floor = 1 if self.fit else self.side  # the side that is exactly ``side`` must not round below it
        return max(floor, round(width * scale)), max(floor, round(height * scale))


def open_video(source: Source):
    """``av.open`` for a path or a file-like object; each pass reads a file-like object from its start."""
    if not isinstance(source, str):
        source.seek(0)
    return av.open(source)


def source_name(source: Source) -> str:
    """What messages call ``source``: its path, or a file-like object's ``name`` (the video's source path)."""
    return source if isinstance(source, str) else str(getattr(source, "name", "<video bytes>"))


class RGBConverter:
    """Decoded PyAV frames -> upright RGB uint8 [H, W, 3], scaled by ``scale`` first, then turned by the frame's
    display matrix (``path`` names the file in the warning about a matrix that is not a quarter turn).

    Two swscale contexts, made once per video and reused for every frame: ``frame.reformat`` makes a new one
    per frame, which costs more than the conversion itself. Scale (in YUV), then convert: one combined
    scale-and-convert pass measured ~3x slower here.
    """

    def __init__(self, scale: Scale | None, path: str = "") -> None:
        self.scale = scale
        self._scaler, self._to_rgb = VideoReformatter(), VideoReformatter()
        self._orientation = FrameOrientation(path)

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        orientation = self._orientation(frame)
        if self.scale is not None:
            width, height = self.scale.size(frame.width, frame.height)
            frame = self._scaler.reformat(frame, width=width, height=height)
        return orientation.apply(self._to_rgb.reformat(frame, format="rgb24").to_ndarray())


def frame_rate(stream) -> float | None:
    """The stream's average frame rate by its header, None where the header gives none."""
    return float(stream.average_rate) if stream.average_rate else None


def single_threaded_video(container):
    """The first video stream, decoded on one thread, as decord's readers are: parallelism comes from
    DataLoader workers, and a decoder thread pool per worker oversubscribes the cores."""
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1
    if stream.codec_context.name == "h264" and stream.codec_context.profile in _CAVLC_ONLY_PROFILES:
        stream.codec_context.options = {"err_detect": "aggressive"}
    return stream
