"""Video decoding: the one planner that turns a file into model input, ``load_clip`` / ``load_clips`` on top.

``load_clip`` is the one function that turns a video file into model input. The dataset, ``predict`` and
users' own code all call it, so training and inference see identical frames.

Only the sampled frames are decoded into memory, and the decoder itself scales them (shorter side to
``img_size`` before the centre crop; longer side for ``crop="pad"``), so memory per clip depends on ``num_frames``
and ``img_size``, not on the video's resolution or length.

The frame as a person sees it: every reader turns frames upright by the file's display matrix (phones store the
sensor's frame and a rotation, ``orientation.py``) before the crop, so the crop is taken from the upright frame.
``crop`` then makes the square input (``crops.py``): ``centre`` (the centre square, the Keras examples' crop),
``pad`` (the whole frame letterboxed) or ``motion`` (one square per clip around where the clip moves).

Backends, by name (the readers themselves are ``_readers.py``): ``pyav`` reads a video in one sequential pass, or
seeks to the keyframe before each wanted frame where that halves the decoding;
``decord`` seeks to the keyframe before each wanted frame; ``auto`` (the default) reads the packet index first and
takes decord only where seeking saves most of the decoding (sparse frames of a short-GOP video), PyAV everywhere
else (a prefix of the video, or frames spread over a long-GOP video where every frame must be decoded anyway), and
PyAV alone where decord has no wheel. decord mishandles display matrices, so a rotated video is read by PyAV
whatever the backend (``_readers.read_decord``).

Damaged streams: FFmpeg conceals damage in the middle of a stream, so a damaged file decodes into frames patched
from their neighbours. The PyAV readers report what they meet (``damage.Damage``: frame, time, what the decoder
said), and ``decode_frames`` applies the one policy: a ``DamagedVideoError`` naming the file and where, or, when
the caller passes a ``damage`` list, only the frames that decoded cleanly, with the damage appended to the list.
A read that seeks (decord, or PyAV on sparse frames) never decodes the frames between its keyframes, so damage
there, which no frame it returns predicts from, goes unseen.
"""

import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from video_cnn_rnn.data.crops import Crop, check_crop, decoder_scale, to_clip
from video_cnn_rnn.data.decode import _packets, _readers
from video_cnn_rnn.data.decode._damage import Damage
from video_cnn_rnn.data.decode._packets import IndexPicker
from video_cnn_rnn.data.decode._readers import Decoded
from video_cnn_rnn.data.frames import Scale, Source, source_name
from video_cnn_rnn.data.motion import MotionBox
from video_cnn_rnn.data.sampling import SamplingMode, check_sampling, sample_indices, segment_indices

Backend = Literal["auto", "decord", "pyav"]
BACKENDS: tuple[str, ...] = ("auto", "decord", "pyav")


class VideoDecodeError(RuntimeError):
    """A video could not be decoded; the message names the file and the reason."""


class DamagedVideoError(VideoDecodeError):
    """The decoder met damage in the video's stream; the message names the file and where (``damage``).

    One message argument, like its base class, so it pickles and crosses DataLoader workers as itself.
    """

    def __init__(self, message: str, damage: list[Damage] | None = None) -> None:
        super().__init__(message)
        self.damage: list[Damage] = list(damage or [])


def describe_damage(damage: list[Damage], shown: int = 2) -> str:
    """One line: ``damaged stream: frame 20 (0.80 s): <what was reported there>, ...; <next place> (+N more
    places)``. Notes at the same time are one place, named by the first note there that names a frame."""
    places: dict[float | None, list[Damage]] = {}
    for note in sorted(damage, key=lambda note: (note.seconds is None, note.seconds or 0.0)):
        places.setdefault(note.seconds, []).append(note)
    parts = []
    for notes in list(places.values())[:shown]:
        where = next((note for note in notes if note.frame is not None), notes[0]).where
        parts.append(f"{where}: " + ", ".join(dict.fromkeys(note.reason for note in notes)))
    more = f" (+{len(places) - shown} more places)" if len(places) > shown else ""
    return "damaged stream: " + "; ".join(parts) + more


def _decode(path: Source, pick: IndexPicker, scale: Scale | None, backend: Backend) -> Decoded:
    """The planner: which reader decodes ``path``, and the fallback when its stream is shorter than its header."""
    probe = _packets.probe_pyav(path, pick) if backend != "decord" else None
    seek = backend == "decord" or (
        backend == "auto"
        and isinstance(path, str)  # bytes in memory: PyAV only (_readers.read_decord)
        and bool(probe.index)
        and _readers.decord_available()
        and _packets.random_access_pays(probe.index, probe.wanted, probe.pts_ordered)
    )
    frames = _readers.read_decord(path, pick, scale) if seek else None
    if frames is not None:
        return Decoded.undamaged(frames)
    probe = probe or _packets.probe_pyav(path, pick)
    decoded = _readers.read_pyav(path, probe, scale)
    if len(decoded.positions) < len(probe.wanted) and not decoded.damage:
        # The stream ended before its header's count (a file cut at a frame's end): re-sample over the frames
        # that decode. (Frames that damage lost are just missing: the clean ones keep their places.)
        decoded = _readers.read_pyav_decodable(path, pick, scale)
    return decoded


def _run_with_timeout(fn: Callable[[], Decoded], timeout_s: float | None, path: str) -> Decoded:
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

    thread = threading.Thread(target=target, name=f"decode:{Path(path).name}", daemon=True)  # path: a name
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise VideoDecodeError(f"{path}: decoding did not finish within {timeout_s:g} s (decode_timeout)")
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]  # type: ignore[return-value]


def _replayable(rng: random.Random | None) -> Callable[[], random.Random]:
    """Fresh generators that all draw the same numbers: a backend may call a picker more than once (header count,
    then packet index; or PyAV, then decord), and each call must pick what one call would. Takes one draw from
    ``rng`` (the global generator when None), so successive clips still differ."""
    seed = (rng or random).getrandbits(64)
    return lambda: random.Random(seed)


def _source_and_name(path: str | Path | Source) -> tuple[Source, str]:
    """The reader's source and the name messages give it: a path, or a file-like object's ``name`` (set one on an
    ``io.BytesIO``, e.g. the video's original path, so that errors name the video)."""
    if isinstance(path, (str, Path)):
        if not Path(path).is_file():
            raise VideoDecodeError(f"{path}: no such file")
        path = str(path)
    return path, source_name(path)


def _decode_checked(
    path: str | Path | Source,
    pick: IndexPicker,
    scale: Scale | None,
    backend: Backend,
    decode_timeout: float | None,
    damage: list[Damage] | None,
) -> tuple[np.ndarray, list[int]]:
    """``decode_frames`` with, for each frame, its position among the frames ``pick`` chose last."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choose one of {BACKENDS}")
    source, path = _source_and_name(path)
    try:
        decoded = _run_with_timeout(lambda: _decode(source, pick, scale, backend), decode_timeout, path)
    except VideoDecodeError:
        raise
    except ImportError:
        raise
    except Exception as error:
        raise VideoDecodeError(f"{path}: cannot decode ({type(error).__name__}: {error})") from error
    if not decoded.damage:
        if len(decoded.positions) == 0:
            raise VideoDecodeError(f"{path}: no decodable video frames")
        return decoded.frames, decoded.positions
    # The policy for damaged streams, in one place: raise, or keep the clean frames and tell the caller.
    kept = [row for row, clean in enumerate(decoded.clean) if clean]
    if damage is None:
        raise DamagedVideoError(f"{path}: {describe_damage(decoded.damage)}", decoded.damage)
    if not kept:
        message = f"{path}: {describe_damage(decoded.damage)}; no frame decoded cleanly"
        raise DamagedVideoError(message, decoded.damage)
    damage.extend(decoded.damage)
    return decoded.frames[kept], [decoded.positions[row] for row in kept]


def decode_frames(
    path: str | Path | Source,
    pick: IndexPicker,
    short_side: int | None = None,
    backend: Backend = "auto",
    decode_timeout: float | None = 60.0,
    damage: list[Damage] | None = None,
    long_side: int | None = None,
) -> np.ndarray:
    """Decode the frames ``pick`` chooses, as upright RGB uint8 [L, H, W, 3] (turned by the file's display
    matrix), scaled so the shorter side is ``short_side``, or the longer side ``long_side`` (aspect kept; neither:
    the stored size). Raises ``VideoDecodeError`` naming the file for anything that goes wrong.

    A damaged stream (the decoder concealed errors or rejected packets) raises ``DamagedVideoError`` naming the
    file and where, unless ``damage`` is a list: then only the frames that decoded cleanly are returned (fewer
    than picked) and the damage is appended to the list; still an error when no frame is clean.
    """
    if short_side is not None and long_side is not None:
        raise ValueError("decode_frames: give short_side or long_side, not both")
    side = short_side if long_side is None else long_side
    scale = Scale(side, fit=long_side is not None) if side is not None else None
    return _decode_checked(path, pick, scale, backend, decode_timeout, damage)[0]


def load_clip(
    path: str | Path | Source,
    num_frames: int = 20,
    img_size: int = 224,
    sampling: SamplingMode = "uniform",
    random_sampling: bool = False,
    backend: Backend = "auto",
    stride: int = 1,
    target_fps: float | None = None,
    decode_timeout: float | None = 60.0,
    rng: random.Random | None = None,
    segment_offset: float | None = None,
    damage: list[Damage] | None = None,
    crop: Crop = "centre",
    boxes: list[MotionBox] | None = None,
) -> tuple[torch.Tensor, int]:
    """Load one clip: ``num_frames`` sampled frames, upright, centre-square-cropped (``crop="pad"``: letterboxed;
    ``crop="motion"``: the square around the clip's motion, appended to ``boxes`` when given) and resized to
    ``img_size``.

    Returns ``(frames, length)``: frames uint8 ``[L, 3, img_size, img_size]`` holding the ``L <= num_frames``
    real frames (fewer when the video is shorter), and ``L``.

    ``path`` may also be the encoded video in a seekable file-like object (``io.BytesIO``, e.g. a shard's item),
    read by PyAV alone (decord is never given bytes): the same frames as the file with ``backend="pyav"``, and
    with ``auto`` wherever auto reads the file with PyAV. Errors name the object's ``name`` attribute.

    A damaged stream raises ``DamagedVideoError`` naming the file and where the damage is. With a ``damage`` list,
    the clip keeps the sampled frames that decoded cleanly instead (fewer), and the damage is appended to the list.
    """
    check_sampling(num_frames, sampling, stride, target_fps)
    check_crop(crop)
    draws = _replayable(rng)

    def pick(num_video_frames: int, fps: float | None) -> list[int]:
        return sample_indices(
            num_video_frames,
            num_frames,
            sampling,
            random_sampling,
            stride,
            video_fps=fps,
            target_fps=target_fps,
            rng=draws(),
            offset=segment_offset,
        )

    frames = _decode_checked(path, pick, decoder_scale(img_size, crop), backend, decode_timeout, damage)[0]
    clip = to_clip(frames, img_size, crop, boxes)
    return clip, clip.shape[0]


def load_clips(
    path: str | Path | Source,
    clips_per_video: int,
    num_frames: int = 20,
    img_size: int = 224,
    random_sampling: bool = False,
    backend: Backend = "auto",
    decode_timeout: float | None = 60.0,
    rngs: list[random.Random] | None = None,
    damage: list[Damage] | None = None,
    crop: Crop = "centre",
    boxes: list[MotionBox] | None = None,
) -> tuple[torch.Tensor, int]:
    """K ``segment`` clips of one video from a single decode (frames shared between clips are decoded once).

    Training draws a random frame per segment for each clip (``rngs[k]`` for clip k); evaluation takes the
    evenly offset positions (k + 0.5) / K of every segment, as multi-clip testing does.
    Returns ``(frames, length)``: uint8 ``[K, L, 3, img_size, img_size]`` and ``L``.

    ``damage`` as for ``load_clip``; each clip keeps its clean frames, cut to the shortest clip's count so the K
    clips stay one tensor. ``crop="motion"`` finds each clip's own box (appended to ``boxes`` in clip order).
    """
    check_sampling(num_frames, "segment")
    check_crop(crop)
    per_clip: list[list[int]] = []
    draws = [_replayable(rngs[k] if rngs else None) for k in range(clips_per_video)]

    def pick(num_video_frames: int, fps: float | None) -> list[int]:
        per_clip[:] = [
            segment_indices(
                num_video_frames,
                num_frames,
                random_sampling,
                rng=draws[k](),
                offset=None if random_sampling else (k + 0.5) / clips_per_video,
            )
            for k in range(clips_per_video)
        ]
        return sorted({index for indices in per_clip for index in indices})

    frames, positions = _decode_checked(path, pick, decoder_scale(img_size, crop), backend, decode_timeout, damage)
    path = _source_and_name(path)[1]  # for the messages below
    union = sorted({index for indices in per_clip for index in indices})
    if damage is None and len(frames) != len(union):
        raise VideoDecodeError(f"{path}: decoded {len(frames)} of the {len(union)} frames requested")
    row = {union[position]: j for j, position in enumerate(positions)}
    kept = [[row[index] for index in indices if index in row] for indices in per_clip]
    length = min(len(rows) for rows in kept)
    if length == 0:  # only with a damage list: without one, missing frames raised above
        raise DamagedVideoError(f"{path}: {describe_damage(damage)}; a clip has no clean frame", damage)
    if crop == "motion":  # a box per clip, from that clip's frames
        clips = torch.stack([to_clip(frames[rows[:length]], img_size, crop, boxes) for rows in kept])
    else:  # the frames the clips share are cropped once
        frames = to_clip(frames, img_size, crop)  # [N, H, W, 3] -> [N, C, img_size, img_size]
        clips = torch.stack([frames[rows[:length]] for rows in kept])  # [K, L, C, H, W]
    return clips, clips.shape[1]
