"""Frame samplers: pure index maths, no decoding.

Every sampler has one contract: given the number of frames in a video and the number wanted, return the
sorted frame indices to decode. A video shorter than ``num_frames`` keeps all its frames (the clip is then
shorter and the collate function pads it); no index is ever repeated to fill the clip.
"""

import math
import random
from typing import Literal

SamplingMode = Literal["first", "uniform", "segment", "stride"]
SAMPLING_MODES: tuple[str, ...] = ("first", "uniform", "segment", "stride")


def first_indices(num_video_frames: int, num_frames: int) -> list[int]:
    """The Keras example's sampling: the first ``num_frames`` consecutive frames."""
    return list(range(min(num_video_frames, num_frames)))


def uniform_indices(num_video_frames: int, num_frames: int) -> list[int]:
    """``num_frames`` frames spread evenly over the whole video, first and last included."""
    if num_video_frames <= num_frames:
        return list(range(num_video_frames))
    if num_frames == 1:
        return [num_video_frames // 2]
    step = (num_video_frames - 1) / (num_frames - 1)
    return [round(i * step) for i in range(num_frames)]


def segment_indices(
    num_video_frames: int,
    num_frames: int,
    random_sampling: bool,
    rng: random.Random | None = None,
    offset: float | None = None,
) -> list[int]:
    """TSN sampling: ``num_frames`` equal segments; a random frame of each with ``random_sampling``, else its centre.

    ``offset`` in [0, 1) picks the same relative position in every segment instead: K evaluation clips of
    one video use offsets (k + 0.5) / K, as multi-clip testing does.
    """
    if num_video_frames <= num_frames:
        return list(range(num_video_frames))
    rng = rng or random
    segment = num_video_frames / num_frames
    indices = []
    for i in range(num_frames):
        start, end = math.ceil(i * segment), math.ceil((i + 1) * segment) - 1
        end = max(start, min(end, num_video_frames - 1))
        if offset is not None:
            indices.append(start + min(int(offset * (end - start + 1)), end - start))
        else:
            indices.append(rng.randint(start, end) if random_sampling else (start + end) // 2)
    return indices


def stride_indices(
    num_video_frames: int,
    num_frames: int,
    stride: int = 1,
    video_fps: float | None = None,
    target_fps: float | None = None,
) -> list[int]:
    """Every ``stride``-th frame from the start; with ``target_fps``, the stride that gives that rate
    (the fine-tuning tutorial's ``int(fps / frame_rate)``)."""
    if target_fps is not None:
        if target_fps <= 0:
            raise ValueError(f"target_fps must be > 0, got {target_fps}")
        if not video_fps or video_fps <= 0:
            raise ValueError("stride sampling with target_fps needs the video's frame rate, which is unknown")
        stride = max(int(video_fps / target_fps), 1)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    return list(range(0, num_video_frames, stride))[:num_frames]


def check_sampling(num_frames: int, mode: str, stride: int = 1, target_fps: float | None = None) -> None:
    """Reject bad sampling settings up front, so they are reported as settings, not as undecodable videos."""
    if mode not in SAMPLING_MODES:
        raise ValueError(f"unknown sampling mode {mode!r}; choose one of {SAMPLING_MODES}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if target_fps is not None and target_fps <= 0:
        raise ValueError(f"target_fps must be > 0, got {target_fps}")


def sample_indices(
    num_video_frames: int,
    num_frames: int,
    mode: SamplingMode = "uniform",
    random_sampling: bool = False,
    stride: int = 1,
    video_fps: float | None = None,
    target_fps: float | None = None,
    rng: random.Random | None = None,
    offset: float | None = None,
) -> list[int]:
    """Dispatch to the sampler named ``mode``. ``random_sampling`` only changes ``segment`` (random vs centre)."""
    if num_video_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_video_frames}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if mode == "first":
        return first_indices(num_video_frames, num_frames)
    if mode == "uniform":
        return uniform_indices(num_video_frames, num_frames)
    if mode == "segment":
        return segment_indices(num_video_frames, num_frames, random_sampling, rng, offset)
    if mode == "stride":
        return stride_indices(num_video_frames, num_frames, stride, video_fps, target_fps)
    raise ValueError(f"unknown sampling mode {mode!r}; choose one of {SAMPLING_MODES}")
