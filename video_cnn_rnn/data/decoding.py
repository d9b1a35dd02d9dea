"""Video decoding: the only module that imports decord or PyAV.

``load_clip`` is the one function that turns a video file into model input. The dataset, ``predict`` and
users' own code all call it, so training and inference see identical frames.

Only the sampled frames are decoded into memory, and the decoder itself scales them (shorter side to
``img_size``) before the centre crop, so memory per clip depends on ``num_frames`` and ``img_size``, not on
the video's resolution or length.
"""

import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from video_cnn_rnn.data.sampling import SamplingMode, check_sampling, sample_indices, segment_indices

Backend = Literal["decord", "pyav"]
BACKENDS: tuple[str, ...] = ("decord", "pyav")
# Picks frame indices from (number of frames in the video, its frame rate).
IndexPicker = Callable[[int, float | None], list[int]]


class VideoDecodeError(RuntimeError):
    """A video could not be decoded; the message names the file and the reason."""


def _require_decord():
    try:
        import decord
    except ImportError as error:
        raise ImportError(
            "decord is not installed (it has no wheel for this platform, e.g. macOS arm64 or aarch64 Linux). "
            "Use the PyAV backend instead: backend='pyav' (--data.backend pyav)."
        ) from error
    return decord


def _scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the shorter side at ``short_side`` and the aspect ratio kept."""
    scale = short_side / min(width, height)
    return max(short_side, round(width * scale)), max(short_side, round(height * scale))


def _probe_size(path: str) -> tuple[int, int]:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        return stream.codec_context.width, stream.codec_context.height


def _decode_decord(path: str, pick: IndexPicker, short_side: int | None) -> np.ndarray:
    decord = _require_decord()
    width = height = -1
    if short_side is not None:
        width, height = _scaled_size(*_probe_size(path), short_side)
    # One thread per reader: parallelism comes from DataLoader workers, and decord's own thread pool
    # oversubscribes the cores when several workers decode at once.
    reader = decord.VideoReader(path, ctx=decord.cpu(0), width=width, height=height, num_threads=1)
    indices = pick(len(reader), reader.get_avg_fps())
    try:
        return reader.get_batch(indices).asnumpy()  # [L, H, W, 3] RGB
    except decord.DECORDError:
        # A truncated file whose header promises more frames than the stream holds: fall back to
        # decoding what is there, so the clip keeps the frames that do exist.
        del reader
        return _decode_pyav(path, pick, short_side)


def _rgb(frame, short_side: int | None) -> np.ndarray:
    """A decoded PyAV frame as RGB [H, W, 3], scaled first.

    Scale, then convert: ``to_ndarray(width=..., height=...)`` in one call measured ~2x slower here.
    """
    if short_side is not None:
        width, height = _scaled_size(frame.width, frame.height, short_side)
        frame = frame.reformat(width=width, height=height)
    return frame.to_ndarray(format="rgb24")


def _frame_count_pyav(container, stream) -> int:
    if stream.frames > 0:
        return stream.frames
    # Containers without a frame count in the header: count packets (no decoding), then rewind.
    count = sum(1 for packet in container.demux(stream) if packet.size > 0)
    container.seek(0, backward=True, any_frame=False, stream=stream)
    return count


def _decode_pyav(path: str, pick: IndexPicker, short_side: int | None) -> np.ndarray:
    import av

    frames: list[np.ndarray] = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate) if stream.average_rate else None
        num_video_frames = _frame_count_pyav(container, stream)
        wanted = pick(num_video_frames, fps) if num_video_frames > 0 else []
        wanted_set, last = set(wanted), (max(wanted) if wanted else -1)
        index = -1
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index in wanted_set:  # convert and scale only the frames that are kept
                    frames.append(_rgb(frame, short_side))
                if index >= last:
                    break
        except av.error.FFmpegError:
            pass  # a damaged tail: keep the frames decoded before it
    if len(frames) < len(wanted) and index + 1 < num_video_frames:
        # The stream ended early (truncated file): re-sample over the frames that really exist.
        return _decode_pyav_all(path, pick, short_side)
    if not frames:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    return np.stack(frames)


def _decode_pyav_all(path: str, pick: IndexPicker, short_side: int | None) -> np.ndarray:
    """Decode every frame that decodes, then sample among them. Only for damaged files."""
    import av

    frames: list[np.ndarray] = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate) if stream.average_rate else None
        try:
            for frame in container.decode(stream):
                frames.append(_rgb(frame, short_side))
        except av.error.FFmpegError:
            pass
    if not frames:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    return np.stack([frames[i] for i in pick(len(frames), fps)])


def _run_with_timeout(fn: Callable[[], np.ndarray], timeout_s: float | None, path: str) -> np.ndarray:
    """Run ``fn`` in a daemon thread and give up after ``timeout_s``.

    decord can hang forever on some files (dmlc/decord#373). A hung native call cannot be interrupted, so
    the thread is abandoned (daemon: it never blocks interpreter exit) and the file is reported as bad;
    training goes on instead of stalling on one video.
    """
    if timeout_s is None or timeout_s <= 0:
        return fn()
    result: dict[str, object] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as error:  # re-raised in the caller's thread
            result["error"] = error

    thread = threading.Thread(target=target, name=f"decode:{Path(path).name}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise VideoDecodeError(f"{path}: decoding did not finish within {timeout_s:g} s (decode_timeout)")
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]  # type: ignore[return-value]


def _to_clip(frames: np.ndarray, img_size: int) -> torch.Tensor:
    """[L, H, W, 3] uint8 -> centre square crop resized to img_size -> [L, 3, img_size, img_size] uint8."""
    clip = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # [L, H, W, 3] -> [L, 3, H, W]
    height, width = clip.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    clip = clip[:, :, top : top + side, left : left + side]
    if side != img_size:
        # The decoder already scaled the shorter side; this only runs for decoders that could not.
        from torchvision.transforms.v2.functional import resize

        clip = resize(clip, [img_size, img_size], antialias=True)
    return clip.contiguous()


def decode_frames(
    path: str | Path,
    pick: IndexPicker,
    short_side: int | None = None,
    backend: Backend = "decord",
    timeout_s: float | None = 60.0,
) -> np.ndarray:
    """Decode the frames ``pick`` chooses, as RGB uint8 [L, H, W, 3], scaled so the shorter side is
    ``short_side``. Raises ``VideoDecodeError`` naming the file for anything that goes wrong."""
    path = str(path)
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choose one of {BACKENDS}")
    if not Path(path).is_file():
        raise VideoDecodeError(f"{path}: no such file")
    decode = _decode_decord if backend == "decord" else _decode_pyav
    try:
        frames = _run_with_timeout(lambda: decode(path, pick, short_side), timeout_s, path)
    except VideoDecodeError:
        raise
    except ImportError:
        raise
    except Exception as error:
        raise VideoDecodeError(f"{path}: cannot decode ({type(error).__name__}: {error})") from error
    if len(frames) == 0:
        raise VideoDecodeError(f"{path}: no decodable video frames")
    return frames


def load_clip(
    path: str | Path,
    num_frames: int = 20,
    img_size: int = 224,
    sampling: SamplingMode = "uniform",
    training: bool = False,
    backend: Backend = "decord",
    stride: int = 1,
    target_fps: float | None = None,
    timeout_s: float | None = 60.0,
    rng: random.Random | None = None,
    segment_offset: float | None = None,
) -> tuple[torch.Tensor, int]:
    """Load one clip: ``num_frames`` sampled frames, centre-square-cropped and resized to ``img_size``.

    Returns ``(frames, length)``: frames uint8 ``[L, 3, img_size, img_size]`` holding the ``L <= num_frames``
    real frames (fewer when the video is shorter), and ``L``.
    """
    check_sampling(num_frames, sampling, stride, target_fps)

    def pick(num_video_frames: int, fps: float | None) -> list[int]:
        return sample_indices(
            num_video_frames,
            num_frames,
            sampling,
            training,
            stride,
            video_fps=fps,
            target_fps=target_fps,
            rng=rng,
            offset=segment_offset,
        )

    frames = decode_frames(path, pick, short_side=img_size, backend=backend, timeout_s=timeout_s)
    clip = _to_clip(frames, img_size)
    return clip, clip.shape[0]


def load_clips(
    path: str | Path,
    num_clips: int,
    num_frames: int = 20,
    img_size: int = 224,
    training: bool = False,
    backend: Backend = "decord",
    timeout_s: float | None = 60.0,
    rngs: list[random.Random] | None = None,
) -> tuple[torch.Tensor, int]:
    """K ``segment`` clips of one video from a single decode (frames shared between clips are decoded once).

    Training draws a random frame per segment for each clip (``rngs[k]`` for clip k); evaluation takes the
    evenly offset positions (k + 0.5) / K of every segment, as multi-clip testing does.
    Returns ``(frames, length)``: uint8 ``[K, L, 3, img_size, img_size]`` and ``L``.
    """
    check_sampling(num_frames, "segment")
    per_clip: list[list[int]] = []

    def pick(num_video_frames: int, fps: float | None) -> list[int]:
        per_clip[:] = [
            segment_indices(
                num_video_frames,
                num_frames,
                training,
                rng=rngs[k] if rngs else None,
                offset=None if training else (k + 0.5) / num_clips,
            )
            for k in range(num_clips)
        ]
        return sorted({index for indices in per_clip for index in indices})

    frames = _to_clip(decode_frames(path, pick, short_side=img_size, backend=backend, timeout_s=timeout_s), img_size)
    union = sorted({index for indices in per_clip for index in indices})
    if len(frames) != len(union):
        raise VideoDecodeError(f"{path}: decoded {len(frames)} of the {len(union)} frames requested")
    row = {index: position for position, index in enumerate(union)}
    clips = torch.stack([frames[[row[index] for index in indices]] for indices in per_clip])  # [K, L, C, H, W]
    return clips, clips.shape[1]
