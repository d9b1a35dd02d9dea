"""The display matrix: how a stored video frame is turned to be shown upright.

Phones store the sensor's frame plus a display matrix (the MP4 track's matrix; FFmpeg's ``DISPLAYMATRIX`` side
data, which its decoders attach to every decoded frame); players and ffmpeg show the frame turned by it. The readers
turn every frame upright here, right after decoding and scaling (scaling the shorter or the longer side commutes
with quarter turns), so a crop or a letterbox is always taken from the upright frame's axes.

Only quarter turns and mirror images are applied: a matrix whose angle is not a multiple of 90 degrees (more than
``TOLERANCE_DEG`` off) is turned by the nearest quarter turn, with a warning naming the file.
"""

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import av
import numpy as np

# A matrix this close to a quarter turn is that quarter turn (FFmpeg's own autorotation uses the same 1 degree).
TOLERANCE_DEG = 1.0


@dataclass(frozen=True)
class Orientation:
    """How a stored frame becomes upright: swap its axes (``transpose``), then flip rows and / or columns.
    The 8 combinations are the 4 quarter turns and their mirror images."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """Upright view of ``frames`` [..., H, W, C] (no copy: negative strides where flipped)."""
        if self.transpose:
            frames = frames.swapaxes(-3, -2)  # [..., H, W, C] -> [..., W, H, C]
        if self.flip_rows:
            frames = frames[..., ::-1, :, :]
        if self.flip_cols:
            frames = frames[..., ::-1, :]
        return frames


UPRIGHT = Orientation()


def rotation_degrees(matrix: Sequence[int]) -> float:
    """The counter-clockwise angle of the matrix, as ``av_display_rotation_get`` (and ffprobe, and PyAV's
    ``VideoFrame.rotation``) give it, in [-180, 180]."""
    a, b, c, d = matrix[0], matrix[1], matrix[3], matrix[4]
    return -math.degrees(math.atan2(b / (math.hypot(b, d) or 1), a / (math.hypot(a, c) or 1))) + 0.0


def from_display_matrix(matrix: Sequence[int] | None, path: str = "") -> Orientation:
    """The quarter turn (and mirror image) nearest to FFmpeg's display ``matrix`` (9 ints, as
    ``libavutil/display.h`` lays it out); ``UPRIGHT`` for None. Warns, naming ``path``, when the matrix is not a
    quarter turn."""
    if matrix is None:
        return UPRIGHT
    # A pixel (p, q) of the stored frame (x to the right, y down) is shown at (a p + c q, b p + d q), shifted.
    a, b, c, d = matrix[0], matrix[1], matrix[3], matrix[4]
    straight, quarter = abs(a) + abs(d), abs(b) + abs(c)
    if math.degrees(math.atan2(min(straight, quarter), max(straight, quarter))) > TOLERANCE_DEG:
        angle = rotation_degrees(matrix)
        nearest = 90 * round(angle / 90) % 360
        warnings.warn(
            f"{path}: display rotation of {round(angle, 1):g} degrees is not a multiple of 90; the frames are turned by the "
            f"nearest multiple, {nearest} degrees",
            stacklevel=2,
        )
    if straight >= quarter:
        return Orientation(transpose=False, flip_rows=d < 0, flip_cols=a < 0)
    return Orientation(transpose=True, flip_rows=b < 0, flip_cols=c < 0)


def display_matrix(frame: av.VideoFrame) -> tuple[int, ...] | None:
    """The display matrix a decoder attached to ``frame`` (9 ints), or None."""
    data = frame.side_data.get("DISPLAYMATRIX")
    return tuple(np.frombuffer(bytes(data), dtype=np.int32)[:9].tolist()) if data is not None else None


class FrameOrientation:
    """Decoded frames -> their ``Orientation``, worked out (and warned about) once per matrix met in one file."""

    def __init__(self, path: str = "") -> None:
        self.path = path
        self._known: dict[tuple[int, ...] | None, Orientation] = {None: UPRIGHT}

    def __call__(self, frame: av.VideoFrame) -> Orientation:
        matrix = display_matrix(frame)
        if matrix not in self._known:
            self._known[matrix] = from_display_matrix(matrix, self.path)
        return self._known[matrix]
