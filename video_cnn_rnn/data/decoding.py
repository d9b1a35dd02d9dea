"""Video decoding: the only module that imports decord or PyAV.

``load_clip`` is the one function that turns a video file into model input. The dataset, ``predict`` and
users' own code all call it, so training and inference see identical frames.

Only the sampled frames are decoded into memory, and the decoder itself scales them (shorter side to
``img_size``) before the centre crop, so memory per clip depends on ``num_frames`` and ``img_size``, not on
the video's resolution or length.

Backends, by name: ``pyav`` reads a video in one sequential pass that stops at the last wanted frame and,
outside AVI and for the decoders in ``_PER_PACKET_SKIP_CODECS``, lets the decoder drop unwanted non-reference
frames; ``decord`` seeks to the keyframe before each wanted frame (its scaler gives slightly different pixels). ``auto`` (the default) reads the packet index first and takes decord only where seeking saves most of
the decoding (sparse frames of a short-GOP video), PyAV everywhere else (a prefix of the video, or frames
spread over a long-GOP video where every frame must be decoded anyway), and PyAV alone where decord has no
wheel.
"""

import bisect
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from video_cnn_rnn.data.sampling import SamplingMode, check_sampling, sample_indices, segment_indices

Backend = Literal["auto", "decord", "pyav"]
BACKENDS: tuple[str, ...] = ("auto", "decord", "pyav")
# Cost of one frame decoded through decord's random access (seek, flush, threaded decoder), in frames of PyAV's
# sequential pass (which also drops unwanted B-frames): on 60 s files with a keyframe a second, decord decodes 1/6
# of the frames and is still ~1.06x slower (benchmarks/bench_data.py, 1b). Random access goes to decord only where
# it decodes less than 1/8 of what the pass would.
_DECORD_RELATIVE_COST = 8.0
# Decoders that read ``skip_frame`` anew for every packet. Others (libdav1d for AV1) fix it at the first packet,
# so switching it per packet would drop wanted frames.
_PER_PACKET_SKIP_CODECS = frozenset({"h264", "hevc", "mpeg4", "mpeg2video", "mpeg1video"})
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
            "Use backend='auto' (the default: PyAV where decord is missing) or backend='pyav' (--data.backend pyav)."
        ) from error
    return decord


def _scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the shorter side at ``short_side`` and the aspect ratio kept."""
    scale = short_side / min(width, height)
    return max(short_side, round(width * scale)), max(short_side, round(height * scale))


def _decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def _probe_size(path: str) -> tuple[int, int]:
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


class _RGBConverter:
    """Decoded PyAV frames -> RGB uint8 [H, W, 3], the shorter side scaled to ``short_side`` first.

    Two swscale contexts, made once per video and reused for every frame: ``frame.reformat`` makes a new one
    per frame, which costs more than the conversion itself. Scale (in YUV), then convert: one combined
    scale-and-convert pass measured ~3x slower here.
    """

    def __init__(self, short_side: int | None) -> None:
        self.short_side = short_side
        self._scaler, self._to_rgb = VideoReformatter(), VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if self.short_side is not None:
            width, height = _scaled_size(frame.width, frame.height, self.short_side)
            frame = self._scaler.reformat(frame, width=width, height=height)
        return self._to_rgb.reformat(frame, format="rgb24").to_ndarray()


def _single_threaded_video(container):
    """The first video stream, decoded on one thread, as decord's readers are: parallelism comes from
    DataLoader workers, and a decoder thread pool per worker oversubscribes the cores."""
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1
    return stream


def _packet_index(container, stream) -> list[tuple[int | None, bool]]:
    """(pts, is keyframe) of every shown video packet in decode order, read by demuxing alone (no decoding),
    then rewound to the start. Frame i of the video is the packet with the i-th smallest pts.

    Packets an MP4 edit list hides (a file cut without re-encoding) are decoded as references but never shown,
    so they are not frames of the video.
    """
    index = [
        (packet.pts, packet.is_keyframe)
        for packet in container.demux(stream)
        if packet.size > 0 and not packet.is_discard
    ]
    container.seek(0, backward=True, any_frame=False, stream=stream)
    return index


def _pts_give_display_order(container, index: list[tuple[int | None, bool]]) -> bool:
    """Whether sorting packets by pts gives the frames' display order.

    Not in AVI: it stores no presentation times, and those FFmpeg derives come out wrong for B-frames
    (measured on UCF101's XviD files). Nor where a packet has no pts or two share one. Frames are then told
    apart by counting what the decoder outputs, which is display order.
    """
    pts = [p for p, _ in index]
    return "avi" not in container.format.name and None not in pts and len(set(pts)) == len(pts)


def _random_access_pays(index: list[tuple[int | None, bool]], wanted: list[int], pts_ordered: bool) -> bool:
    """Whether seeking to the keyframe before each wanted frame (decord's random access) decodes so much less
    than one sequential pass to the last wanted frame that it beats PyAV's cheaper sequential decoding."""
    positions_by_frame = range(len(index))  # without usable pts, decode order stands in for display order
    if pts_ordered:
        positions_by_frame = sorted(positions_by_frame, key=lambda position: index[position][0])
    positions = sorted(positions_by_frame[i] for i in wanted)  # decode-order positions of the wanted frames
    keyframes = [position for position, (_, key) in enumerate(index) if key]
    if not keyframes:  # a stream that flags none (damaged or odd muxers): nothing to seek to
        return False
    decoded, current = 0, -1
    for target in positions:
        if target <= current:
            continue
        keyframe = keyframes[bisect.bisect_right(keyframes, target) - 1] if keyframes[0] <= target else 0
        start = keyframe if keyframe > current + 1 else current + 1  # seek only when it skips frames
        decoded += target - start + 1
        current = target
    return _DECORD_RELATIVE_COST * decoded < positions[-1] + 1


def _decode_indexed(container, stream, index, wanted: list[int], to_rgb: _RGBConverter) -> list[np.ndarray]:
    """Decode the frames at display positions ``wanted`` in one sequential pass that stops after the last.

    With decoders that read ``skip_frame`` per packet (``_PER_PACKET_SKIP_CODECS``), packets of frames nobody
    wants are sent with ``skip_frame=NONREF``: the decoder drops them when no other frame references them (most
    B-frames), so such frames cost a demux and nothing else. Frames are matched by pts, which stays right when
    frames are reordered or skipped.
    """
    display_pts = sorted(pts for pts, _ in index)
    wanted_pts = [display_pts[i] for i in wanted]
    missing = set(wanted_pts)
    found: dict[int, np.ndarray] = {}
    codec, skip = stream.codec_context, "DEFAULT"
    can_skip = codec.name in _PER_PACKET_SKIP_CODECS
    try:
        for packet in container.demux(stream):
            wanted_here = "DEFAULT" if packet.pts in missing else "NONREF"
            if can_skip and packet.size > 0 and wanted_here != skip:
                codec.skip_frame = skip = wanted_here
            for frame in codec.decode(packet):
                if frame.pts in missing:
                    found[frame.pts] = to_rgb(frame)
                    missing.discard(frame.pts)
            if not missing:
                break
    except av.error.FFmpegError:
        pass  # a damaged packet: the caller falls back to decoding what decodes
    return [found[pts] for pts in wanted_pts if pts in found]


def _decode_counting(container, stream, wanted: list[int], to_rgb: _RGBConverter) -> list[np.ndarray]:
    """Decode to the last wanted frame, telling frames apart by their place in the decoder's output."""
    wanted_set, last = set(wanted), max(wanted)
    frames: list[np.ndarray] = []
    try:
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted_set:  # convert and scale only the frames that are kept
                frames.append(to_rgb(frame))
            if index >= last:
                break
    except av.error.FFmpegError:
        pass  # a damaged tail: the caller falls back to decoding what decodes
    return frames


def _decode_pyav(path: str, pick: IndexPicker, short_side: int | None, random_access: bool = False) -> np.ndarray:
    """Decode the picked frames with PyAV in one sequential pass; with ``random_access``, hand reads that
    seeking makes much cheaper (sparse frames in a short-GOP video) to decord instead."""
    to_rgb = _RGBConverter(short_side)
    with av.open(path) as container:
        stream = _single_threaded_video(container)
        fps = float(stream.average_rate) if stream.average_rate else None
        wanted = pick(stream.frames, fps) if stream.frames > 0 else []
        if wanted and wanted == list(range(len(wanted))):
            # A prefix (``first``): the decoder's first outputs are the frames wanted and nothing can be skipped,
            # so the header's frame count will do and the index pass is saved.
            frames = _decode_counting(container, stream, wanted, to_rgb)
        else:
            index = _packet_index(container, stream)
            if not index:
                return np.zeros((0, 0, 0, 3), dtype=np.uint8)
            wanted = pick(len(index), fps)  # over the packets present, which a truncated file's header overstates
            pts_ordered = _pts_give_display_order(container, index)
            if random_access and _random_access_pays(index, wanted, pts_ordered):
                frames = None
            elif pts_ordered:
                frames = _decode_indexed(container, stream, index, wanted, to_rgb)
            else:
                frames = _decode_counting(container, stream, wanted, to_rgb)
    if frames is None:
        return _decode_decord(path, pick, short_side)
    if len(frames) < len(wanted):
        # The stream ended early or a packet is damaged (truncated file): re-sample over the frames that
        # really decode.
        return _decode_pyav_all(path, pick, short_side)
    return np.stack(frames)


def _decode_auto(path: str, pick: IndexPicker, short_side: int | None) -> np.ndarray:
    """PyAV's sequential pass by default; decord where its random access pays and it is installed."""
    return _decode_pyav(path, pick, short_side, random_access=_decord_available())


def _decode_pyav_all(path: str, pick: IndexPicker, short_side: int | None) -> np.ndarray:
    """Only for damaged files: count the frames that decode, pick among them, then decode again keeping only the
    picked ones, so memory stays flat however long the file is."""
    with av.open(path) as container:
        stream = _single_threaded_video(container)
        fps = float(stream.average_rate) if stream.average_rate else None
        count = 0
        try:
            for _ in container.decode(stream):
                count += 1
        except av.error.FFmpegError:
            pass
    if count == 0:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    with av.open(path) as container:
        frames = _decode_counting(
            container, _single_threaded_video(container), pick(count, fps), _RGBConverter(short_side)
        )
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), dtype=np.uint8)


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
    height, width = frames.shape[1:3]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    # Crop, then copy only the crop channel-first: numpy's strided copy measured 2x faster than torch's here.
    crop = frames[:, top : top + side, left : left + side].transpose(0, 3, 1, 2)  # [L, H, W, 3] -> [L, 3, H, W]
    clip = torch.from_numpy(np.ascontiguousarray(crop))
    if side != img_size:
        # The decoder already scaled the shorter side; this only runs for decoders that could not.
        from torchvision.transforms.v2.functional import resize

        clip = resize(clip, [img_size, img_size], antialias=True).contiguous()
    return clip


def _replayable(rng: random.Random | None) -> Callable[[], random.Random]:
    """Fresh generators that all draw the same numbers: a backend may call a picker more than once (header count,
    then packet index; or PyAV, then decord), and each call must pick what one call would. Takes one draw from
    ``rng`` (the global generator when None), so successive clips still differ."""
    seed = (rng or random).getrandbits(64)
    return lambda: random.Random(seed)


def decode_frames(
    path: str | Path,
    pick: IndexPicker,
    short_side: int | None = None,
    backend: Backend = "auto",
    timeout_s: float | None = 60.0,
) -> np.ndarray:
    """Decode the frames ``pick`` chooses, as RGB uint8 [L, H, W, 3], scaled so the shorter side is
    ``short_side``. Raises ``VideoDecodeError`` naming the file for anything that goes wrong."""
    path = str(path)
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choose one of {BACKENDS}")
    if not Path(path).is_file():
        raise VideoDecodeError(f"{path}: no such file")
    decode = {"auto": _decode_auto, "decord": _decode_decord, "pyav": _decode_pyav}[backend]
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
    backend: Backend = "auto",
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
    draws = _replayable(rng)

    def pick(num_video_frames: int, fps: float | None) -> list[int]:
        return sample_indices(
            num_video_frames,
            num_frames,
            sampling,
            training,
            stride,
            video_fps=fps,
            target_fps=target_fps,
            rng=draws(),
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
    backend: Backend = "auto",
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
    draws = [_replayable(rngs[k] if rngs else None) for k in range(num_clips)]

    def pick(num_video_frames: int, fps: float | None) -> list[int]:
        per_clip[:] = [
            segment_indices(
                num_video_frames,
                num_frames,
                training,
                rng=draws[k](),
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
