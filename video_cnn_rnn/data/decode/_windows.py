"""Sliding windows over a long video, read in one streaming PyAV pass: the input of ``predict_timeline``.

Window k covers ``[k * hop_s, k * hop_s + window_s)`` seconds from the first frame. Its clip is sampled from the
frames inside it the way a clip is sampled from a whole video (``sample_indices`` with the model's sampling and
``num_frames``), scaled by the decoder's scaler, turned upright by the file's display matrix and centre-cropped
(or letterboxed, ``crop="pad"``) as ``load_clip`` does, so a window looks like a training clip of a video that long.

Memory: only the frames of the windows still open are kept, already at ``img_size`` (a window's worth at most,
``window_s * fps`` small frames; with ``crop="motion"`` whole frames at up to ``MOTION_ZOOM`` x ``img_size``,
since each window finds its own box), so peak memory does not grow with the video's length. Frames that fall in no
window (``hop_s > window_s``) are decoded but never converted.

- Only windows that fit inside the video are read; the tail after the last one (shorter than ``hop_s``) is not.
- A video shorter than the window gives one window over the whole video, with a ``note`` saying so.
- ``window_s`` or ``hop_s`` <= 0 is a ``ValueError`` naming it, raised before the file is opened.
- A file that fails mid-way (a decoder error, or a stream that ends well before the duration its header gives):
  the windows completed before the failure are yielded, then ``VideoDecodeError`` names the file and the time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

from video_cnn_rnn.data.crops import Crop, check_crop, decoder_scale, to_clip
from video_cnn_rnn.data.decode._clips import VideoDecodeError
from video_cnn_rnn.data.frames import RGBConverter, frame_rate, single_threaded_video
from video_cnn_rnn.data.sampling import SamplingMode, check_sampling, sample_indices

# Frame times and window edges are floats from pts * time_base: compare them with this slack, so a frame at
# exactly 1.0 s lands in the window starting at 1.0 s whatever the rounding.
EPS = 1e-6
# A stream that ends this much before the duration its header gives is reported as truncated.
TRUNCATION_SLACK_S = 0.5
# A frame kept for the open windows: cropped [C, H, W], or whole and upright [H, W, 3] for the motion crop.
Frame = torch.Tensor | np.ndarray


@dataclass
class Window:
    """One window's clip: uint8 ``frames`` [L, C, img_size, img_size], L = ``length`` <= num_frames."""

    start_s: float
    end_s: float
    frames: torch.Tensor
    length: int
    note: str = ""


def check_window(window_s: float, hop_s: float) -> None:
    """Reject window settings that cannot tile a video, before any file is opened."""
    if not window_s > 0:
        raise ValueError(f"window_s must be > 0 seconds, got {window_s}")
    if not hop_s > 0:
        raise ValueError(f"hop_s must be > 0 seconds, got {hop_s}")


def in_window(time_s: float, start_s: float, window_s: float) -> bool:
    """Whether a frame shown at ``time_s`` belongs to the window ``[start_s, start_s + window_s)``."""
    return start_s - EPS <= time_s < start_s + window_s - EPS


def _clip(
    frames: list[Frame], num_frames: int, sampling: SamplingMode, fps: float | None, img_size: int, crop: Crop
) -> torch.Tensor:
    """The window's frames -> the sampled clip [L, C, img_size, img_size]. Frames are cropped already ([C, H, W]
    tensors), or, for the motion crop, whole upright [H, W, 3] arrays, cropped here by the sampled frames' box:
    the window's own box, as ``load_clip`` finds a clip's."""
    indices = sample_indices(len(frames), num_frames, sampling, video_fps=fps)
    if crop == "motion":
        return to_clip(np.stack([frames[i] for i in indices]), img_size, crop)
    return torch.stack([frames[i] for i in indices])


def iter_windows(
    path: str | Path,
    window_s: float,
    hop_s: float,
    num_frames: int = 8,
    img_size: int = 112,
    sampling: SamplingMode = "uniform",
    decoder_threads: int = 1,
    crop: Crop = "centre",
) -> Iterator[Window]:
    """Yield the windows of ``path`` in order, decoding the file once from start to end (see the module doc).

    ``decoder_threads``: 1 decodes on the calling thread's core (the model gets the others); 0 lets FFmpeg pick.
    """
    check_window(window_s, hop_s)
    check_sampling(num_frames, sampling)
    check_crop(crop)
    path = str(path)
    if not Path(path).is_file():
        raise VideoDecodeError(f"{path}: no such file")
    try:
        container = av.open(path)
    except (av.error.FFmpegError, ValueError) as error:
        raise VideoDecodeError(f"{path}: cannot open ({type(error).__name__}: {error})") from error
    with container:
        if not container.streams.video:
            raise VideoDecodeError(f"{path}: no video stream")
        stream = single_threaded_video(container)
        if decoder_threads != 1:
            stream.codec_context.thread_count = decoder_threads
            stream.thread_type = "AUTO"
        fps = frame_rate(stream)
        declared_s = _declared_duration(container, stream, fps)
        use_pts = "avi" not in container.format.name  # AVI's derived B-frame pts are wrong (_readers.py)
        to_rgb = RGBConverter(decoder_scale(img_size, crop), path)

        buffer: deque[tuple[float, Frame]] = deque()  # (time, frame [C, H, W]) of the open windows
        next_window, emitted, first_pts, time_s, count = 0, 0, None, -1.0, 0
        failure: Exception | None = None
        try:
            for frame in container.decode(stream):
                if use_pts and frame.pts is not None:
                    first_pts = frame.pts if first_pts is None else first_pts
                    shown = float((frame.pts - first_pts) * frame.time_base)
                else:
                    shown = count / (fps or 25.0)
                time_s, count = max(shown, time_s), count + 1  # never backwards, even with odd pts
                # Every window that ends at or before this frame has all its frames: emit it.
                while next_window * hop_s + window_s - EPS <= time_s:
                    window = _window_from(
                        buffer, next_window * hop_s, window_s, num_frames, sampling, fps, img_size, crop
                    )
                    emitted, next_window = emitted + (window is not None), next_window + 1
                    if window is not None:
                        yield window
                    while buffer and buffer[0][0] < next_window * hop_s - EPS:
                        buffer.popleft()
                if _in_some_window(time_s, next_window, window_s, hop_s):
                    # The motion crop needs the window's frames before it knows its box: keep them whole.
                    rgb = to_rgb(frame)
                    buffer.append((time_s, rgb if crop == "motion" else to_clip(rgb[None], img_size, crop)[0]))
        except (av.error.FFmpegError, ValueError) as error:
            failure = error
        end_s = time_s + 1.0 / fps if fps and count else max(time_s, 0.0)  # the last frame's end
        slack = max(TRUNCATION_SLACK_S, 2.0 / (fps or 25.0))
        if failure is None and declared_s is not None and end_s < declared_s - slack:
            failure = VideoDecodeError(f"the stream ends at {end_s:.2f} s of the {declared_s:.2f} s its header gives")
        while next_window * hop_s + window_s <= end_s + EPS:  # windows that end with the last frame decoded
            window = _window_from(buffer, next_window * hop_s, window_s, num_frames, sampling, fps, img_size, crop)
            emitted, next_window = emitted + (window is not None), next_window + 1
            if window is not None:
                yield window
        if failure is None and emitted == 0 and buffer:
            note = f"window of {window_s:g} s longer than the video ({end_s:.2f} s): one window over the whole video"
            clip = _clip([frame for _, frame in buffer], num_frames, sampling, fps, img_size, crop)
            yield Window(0.0, round(end_s, 6), clip, len(clip), note)
        if failure is not None:
            raise VideoDecodeError(
                f"{path}: decoding failed at {max(time_s, 0.0):.2f} s after {emitted} window(s) "
                f"({type(failure).__name__}: {failure})"
            ) from failure
        if count == 0:
            raise VideoDecodeError(f"{path}: no decodable video frames")


def _declared_duration(container, stream, fps: float | None) -> float | None:
    """The video's duration by its header, in seconds: the longer of the stream's duration and its frame count
    (AVI's duration field can say half the count), else the container's; None when the header says nothing."""
    by_stream = [
        float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0,
        stream.frames / fps if stream.frames and fps else 0.0,
    ]
    if max(by_stream) > 0:
        return max(by_stream)
    return container.duration / av.time_base if container.duration else None


def _in_some_window(time_s: float, first_open: int, window_s: float, hop_s: float) -> bool:
    """Whether a frame at ``time_s`` lies in an open window (windows ``first_open``, ``first_open + 1``, ...)."""
    last = int((time_s + EPS) // hop_s)  # the latest window starting at or before time_s
    return last >= first_open and in_window(time_s, last * hop_s, window_s)


def _window_from(
    buffer: deque[tuple[float, Frame]],
    start_s: float,
    window_s: float,
    num_frames: int,
    sampling: SamplingMode,
    fps: float | None,
    img_size: int,
    crop: Crop,
) -> Window | None:
    """The window starting at ``start_s``, or None when no frame falls in it (a gap in a variable-rate stream)."""
    frames = [frame for time_s, frame in buffer if in_window(time_s, start_s, window_s)]
    if not frames:
        return None
    clip = _clip(frames, num_frames, sampling, fps, img_size, crop)
    return Window(round(start_s, 6), round(start_s + window_s, 6), clip, len(clip))
