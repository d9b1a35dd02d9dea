"""Video readers: the only module that imports decord or PyAV. ``decoding.py`` chooses between them.

Every reader takes a path, an ``IndexPicker`` (frame count, frame rate -> the frame indices wanted) and a short
side to scale to, and returns RGB uint8 ``[L, H, W, 3]``, or ``None`` when the stream holds fewer frames than its
header promised (a truncated or damaged file), for the planner to fall back to ``read_pyav_decodable``.

- ``read_pyav``: one sequential pass that stops at the last wanted frame; outside AVI, and for the decoders in
  ``_PER_PACKET_SKIP_CODECS``, the decoder drops unwanted non-reference frames. Its ``PyAVProbe`` (header count,
  packet index, whether pts give display order) is read first, by demuxing alone, so the planner can weigh it.
- ``read_decord``: seeks to the keyframe before each wanted frame (its scaler gives slightly different pixels).
- ``read_pyav_decodable``: for damaged files: counts the frames that decode, picks among them, decodes again.
"""

import bisect
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import VideoReformatter

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


def require_decord():
    try:
        import decord
    except ImportError as error:
        raise ImportError(
            "decord is not installed (it has no wheel for this platform, e.g. macOS arm64 or aarch64 Linux). "
            "Use backend='auto' (the default: PyAV where decord is missing) or backend='pyav' (--data.backend pyav)."
        ) from error
    return decord


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def _scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the shorter side at ``short_side`` and the aspect ratio kept."""
    scale = short_side / min(width, height)
    return max(short_side, round(width * scale)), max(short_side, round(height * scale))


def _probe_size(path: str) -> tuple[int, int]:
    with av.open(path) as container:
        stream = container.streams.video[0]
        return stream.codec_context.width, stream.codec_context.height


def read_decord(path: str, pick: IndexPicker, short_side: int | None) -> np.ndarray | None:
    decord = require_decord()
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
        return None  # a truncated file whose header promises more frames than the stream holds


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
    """(pts, is keyframe) of every shown video packet in decode order, read by demuxing alone (no decoding).
    Frame i of the video is the packet with the i-th smallest pts.

    Packets an MP4 edit list hides (a file cut without re-encoding) are decoded as references but never shown,
    so they are not frames of the video.
    """
    index = [
        (packet.pts, packet.is_keyframe)
        for packet in container.demux(stream)
        if packet.size > 0 and not packet.is_discard
    ]
    return index


def _pts_give_display_order(container, index: list[tuple[int | None, bool]]) -> bool:
    """Whether sorting packets by pts gives the frames' display order.

    Not in AVI: it stores no presentation times, and those FFmpeg derives come out wrong for B-frames
    (measured on UCF101's XviD files). Nor where a packet has no pts or two share one. Frames are then told
    apart by counting what the decoder outputs, which is display order.
    """
    pts = [p for p, _ in index]
    return "avi" not in container.format.name and None not in pts and len(set(pts)) == len(pts)


@dataclass
class PyAVProbe:
    """What PyAV learns of a file before decoding: the frames wanted, and how to find them in one pass.

    ``index`` is empty for a prefix (``first`` sampling), where the header's frame count will do and the index
    pass is saved: the decoder's first outputs are the frames wanted and nothing can be skipped.
    """

    wanted: list[int]
    index: list[tuple[int | None, bool]]
    pts_ordered: bool

    @property
    def is_prefix(self) -> bool:
        return bool(self.wanted) and self.wanted == list(range(len(self.wanted)))


def probe_pyav(path: str, pick: IndexPicker) -> PyAVProbe:
    """Pick the frames (over the packets present, which a truncated file's header overstates) by demuxing alone."""
    with av.open(path) as container:
        stream = _single_threaded_video(container)
        fps = float(stream.average_rate) if stream.average_rate else None
        wanted = pick(stream.frames, fps) if stream.frames > 0 else []
        if wanted and wanted == list(range(len(wanted))):
            return PyAVProbe(wanted, [], False)
        index = _packet_index(container, stream)
        wanted = pick(len(index), fps) if index else []
        return PyAVProbe(wanted, index, bool(index) and _pts_give_display_order(container, index))


def random_access_pays(index: list[tuple[int | None, bool]], wanted: list[int], pts_ordered: bool) -> bool:
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


def read_pyav(path: str, probe: PyAVProbe, short_side: int | None) -> np.ndarray | None:
    """Decode ``probe.wanted`` in one sequential pass; ``None`` when fewer decode (the stream ended early or a
    packet is damaged)."""
    if not probe.wanted:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    to_rgb = _RGBConverter(short_side)
    with av.open(path) as container:
        stream = _single_threaded_video(container)
        if probe.pts_ordered and not probe.is_prefix:
            frames = _decode_indexed(container, stream, probe.index, probe.wanted, to_rgb)
        else:
            frames = _decode_counting(container, stream, probe.wanted, to_rgb)
    return np.stack(frames) if len(frames) == len(probe.wanted) else None


def read_pyav_decodable(path: str, pick: IndexPicker, short_side: int | None) -> np.ndarray:
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
