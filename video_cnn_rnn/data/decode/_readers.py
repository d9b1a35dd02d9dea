"""Video readers for clips: the only module that imports decord; ``_clips.py`` chooses between the readers.

Every reader takes a path (the PyAV readers also the encoded bytes as a seekable file-like object: ``Source``),
an ``IndexPicker`` (frame count, frame rate -> the frame indices wanted) and a ``Scale``
(the shorter side, or the longer one, to scale to), and returns frames upright: the PyAV readers turn them by the
file's display matrix (``orientation.py``) after scaling, and decord reads only files without one. decord returns
RGB uint8 ``[L, H, W, 3]`` (``None`` when it fails on the file, for PyAV to read it); the PyAV readers return a
``Decoded``: those frames, which of them decoded cleanly, and the ``Damage`` met on the way. Fewer frames than
wanted (the stream ended before its header's count, or damage lost some) send the planner to
``read_pyav_decodable``.

- ``read_pyav``: one sequential pass that stops at the last wanted frame; outside AVI, and for the decoders in
  ``_PER_PACKET_SKIP_CODECS``, the decoder drops unwanted non-reference frames. Where seeking to the keyframe
  before each wanted frame halves the frames decoded (sparse frames of a long video with a keyframe every second
  or two, as phones write them), it seeks instead, and falls back to the pass at any damage. Its ``PyAVProbe``
  (header count, packet index, whether pts give display order) is read first, by demuxing alone, so the planner
  can weigh it.
- ``read_decord``: seeks to the keyframe before each wanted frame (its scaler gives slightly different pixels).
  It cannot see damage the decoder conceals; a file it fails on goes to PyAV. So does a file with a display
  matrix (a rotated phone video), which PyAV reads from the first frame: decord 0.6 mishandles them (measured:
  a 180 degree file comes out turned, 90 and 270 degree ones fail with a size error, or come out scrambled when a
  size is asked for).
- ``read_pyav_decodable``: for truncated and damaged files: counts the frames that decode, picks among them,
  decodes again.

Damage (what it is, how it is seen): ``_damage.py``; opening files and converting frames: ``frames.py``; the
packet index and what seeking costs: ``_packets.py``.
"""

import bisect
from dataclasses import dataclass, field

import av
import numpy as np

from video_cnn_rnn.data.decode._damage import Damage, DamageWatch, ffmpeg_errors, unique
from video_cnn_rnn.data.decode._packets import (
    IndexPicker,
    PyAVProbe,
    frames_decoded_with_seeks,
    last_position,
    seek_stretches,
)
from video_cnn_rnn.data.frames import (
    RGBConverter,
    Scale,
    Source,
    frame_rate,
    open_video,
    single_threaded_video,
    source_name,
)
from video_cnn_rnn.data.orientation import UPRIGHT, FrameOrientation, Orientation

# PyAV's own seek costs no more than the frames it skips, so its pass seeks wherever that halves the frames decoded
# (sparse frames of a long video with a keyframe every second or two: phone and HD footage, 6x faster at 1080p).
_PYAV_SEEK_GAIN = 2.0
# Decoders that read ``skip_frame`` anew for every packet. Others (libdav1d for AV1) fix it at the first packet,
# so switching it per packet would drop wanted frames.
_PER_PACKET_SKIP_CODECS = frozenset({"h264", "hevc", "mpeg4", "mpeg2video", "mpeg1video"})


def _no_frames() -> np.ndarray:
    return np.zeros((0, 0, 0, 3), dtype=np.uint8)


@dataclass
class Decoded:
    """What a PyAV reader decoded: the wanted frames that came out, which of them are clean, the damage met.

    ``frames[j]`` (RGB uint8 ``[L, H, W, 3]``) is the frame at ``wanted[positions[j]]``; a wanted frame that never
    came out has no row. ``clean[j]`` is False for a frame the decoder concealed errors in, and for every frame
    decoded after damage up to the next intra frame, since those predict from the damaged picture. ``damage`` is
    empty for a clean decode.
    """

    frames: np.ndarray = field(default_factory=_no_frames)
    positions: list[int] = field(default_factory=list)
    clean: list[bool] = field(default_factory=list)
    damage: list[Damage] = field(default_factory=list)

    @classmethod
    def undamaged(cls, frames: np.ndarray) -> "Decoded":
        return cls(frames, list(range(len(frames))), [True] * len(frames), [])


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


def _probe_frame(path: str) -> tuple[int, int, Orientation]:
    """The stored (width, height) and the orientation of the first frame, which PyAV decodes to read it."""
    with av.open(path) as container:
        stream = single_threaded_video(container)
        for frame in container.decode(stream):
            return frame.width, frame.height, FrameOrientation(path)(frame)
        return stream.codec_context.width, stream.codec_context.height, Orientation()


def read_decord(path: str, pick: IndexPicker, scale: Scale | None) -> np.ndarray | None:
    decord = require_decord()
    try:
        width, height, orientation = _probe_frame(path)
    except av.error.FFmpegError:
        return None  # a first frame that does not decode: PyAV reads the file and reports the damage
    if orientation != UPRIGHT:
        return None  # decord mishandles display matrices (module doc): PyAV reads the file
    width, height = scale.size(width, height) if scale is not None else (-1, -1)
    # One thread per reader: parallelism comes from DataLoader workers, and decord's own thread pool
    # oversubscribes the cores when several workers decode at once.
    if not isinstance(path, str):
        # decord crashes the process (SIGSEGV) on some bytes it would reject from a file (a truncated AVI), so
        # it is never given bytes: PyAV reads them.
        return None
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), width=width, height=height, num_threads=1)
        indices = pick(len(reader), reader.get_avg_fps())
        return reader.get_batch(indices).asnumpy()  # [L, H, W, 3] RGB
    except decord.DECORDError:
        # A truncated file whose header promises more frames than the stream holds, or a damaged one: PyAV
        # decodes what decodes and reports the damage.
        return None


def _display_index(display_pts: list[int], pts: int | None) -> int | None:
    position = bisect.bisect_left(display_pts, pts) if pts is not None else len(display_pts)
    return position if position < len(display_pts) and display_pts[position] == pts else None


def _decoded(rows: dict[int, tuple[np.ndarray, bool]], keys: list, watch: DamageWatch) -> Decoded:
    """``Decoded`` of the wanted ``keys`` (pts or output positions, one per wanted frame) found in ``rows``."""
    positions = [j for j, key in enumerate(keys) if key in rows]
    if not positions:
        return Decoded(damage=watch.finish())
    frames = np.stack([rows[keys[j]][0] for j in positions])
    return Decoded(frames, positions, [rows[keys[j]][1] for j in positions], watch.finish())


def _decode_packet(codec, packet, watch: DamageWatch) -> list | None:
    """The frames the decoder gives for ``packet`` (after ``watch.packet``), None where it rejects the packet; the
    rejection, and what FFmpeg logged meanwhile, are noted by ``watch``."""
    try:
        return codec.decode(packet)
    except av.error.FFmpegError as error:
        watch.rejected(packet, error)
        return None
    finally:
        watch.read_log()


def _keep_wanted(frames: list, missing: set[int], found: dict, to_rgb: RGBConverter, watch: DamageWatch) -> None:
    """Note every decoded frame with ``watch`` (a damaged reference taints the wanted frames after it) and keep the
    wanted ones (``missing``, by pts) in ``found`` as upright RGB, with whether each decoded cleanly."""
    for frame in frames:
        clean = watch.frame(frame)
        if frame.pts in missing:
            found[frame.pts] = (to_rgb(frame), clean)
            missing.discard(frame.pts)


def _decode_indexed(container, stream, index, wanted: list[int], to_rgb: RGBConverter, log: list) -> Decoded:
    """Decode the frames at display positions ``wanted`` in one sequential pass that stops after the last.

    With decoders that read ``skip_frame`` per packet (``_PER_PACKET_SKIP_CODECS``), packets of frames nobody
    wants are sent with ``skip_frame=NONREF``: the decoder drops them when no other frame references them (most
    B-frames), so such frames cost a demux and nothing else. Frames are matched by pts, which stays right when
    frames are reordered or skipped. A packet the decoder rejects is noted and the pass goes on.
    """
    display_pts = sorted(pts for pts, _ in index)
    wanted_pts = [display_pts[i] for i in wanted]
    missing = set(wanted_pts)
    found: dict[int, tuple[np.ndarray, bool]] = {}
    watch = DamageWatch(stream, lambda pts: _display_index(display_pts, pts), log)
    codec, skip = stream.codec_context, "DEFAULT"
    can_skip = codec.name in _PER_PACKET_SKIP_CODECS
    try:
        for packet in container.demux(stream):
            watch.packet(packet)
            wanted_here = "DEFAULT" if packet.pts in missing else "NONREF"
            if can_skip and packet.size > 0 and wanted_here != skip:
                codec.skip_frame = skip = wanted_here
            frames = _decode_packet(codec, packet, watch)
            if frames is None:
                continue
            _keep_wanted(frames, missing, found, to_rgb, watch)
            if not missing:
                break
    except av.error.FFmpegError as error:
        watch.unreadable(error)
    if missing and not watch.damage:
        # Every packet was read, yet some gave no picture, with no other sign: the decoder dropped them.
        watch.missing(min(missing), len(missing))
    return _decoded(found, wanted_pts, watch)


def _decode_counting(container, stream, wanted: list[int], to_rgb: RGBConverter | None, log: list) -> Decoded:
    """Decode to the last wanted frame, telling frames apart by their place in the decoder's output.

    ``to_rgb=None`` decodes the whole stream and keeps no frame: ``positions`` then counts the frames that came out.
    """
    wanted_set, last = set(wanted), max(wanted, default=None)
    rows: dict[int, tuple[np.ndarray, bool]] = {}
    watch = DamageWatch(stream, lambda pts: None, log, counting=True)
    codec, count = stream.codec_context, 0
    try:
        for packet in container.demux(stream):
            watch.packet(packet)
            frames = _decode_packet(codec, packet, watch)
            for frame in frames or []:
                clean = watch.frame(frame, count)
                if count in wanted_set:  # convert and scale only the frames that are kept
                    rows[count] = (to_rgb(frame), clean)
                count += 1
            if last is not None and count > last:
                break
    except av.error.FFmpegError as error:
        watch.unreadable(error)
    if to_rgb is None:
        return Decoded(positions=list(range(count)), damage=watch.finish())
    return _decoded(rows, wanted, watch)


def _decode_seeking(container, stream, index, wanted: list[int], to_rgb: RGBConverter, log: list) -> Decoded | None:
    """Decode the frames at display positions ``wanted`` stretch by stretch (``seek_stretches``), seeking to the
    keyframe that starts each; unwanted non-reference frames are dropped as in ``_decode_indexed``.

    None where this cannot be trusted: a seek that lands after its keyframe, a wanted frame that does not come out,
    or any damage. The caller then makes the sequential pass, whose account of damage is the one ``Decoded``
    reports (a seek skips the frames that would show where damage began).
    """
    display_pts = sorted(pts for pts, _ in index)
    wanted_pts = [display_pts[i] for i in wanted]
    position_of = {pts: position for position, (pts, _) in enumerate(index)}
    found: dict[int, tuple[np.ndarray, bool]] = {}
    watch = DamageWatch(stream, lambda pts: _display_index(display_pts, pts), log)
    codec = stream.codec_context
    can_skip = codec.name in _PER_PACKET_SKIP_CODECS
    for first, last in seek_stretches(index, wanted, pts_ordered=True):
        missing = {pts for pts in wanted_pts if first <= position_of[pts] <= last}
        container.seek(index[first][0], stream=stream, backward=True, any_frame=False)
        codec.flush_buffers()
        reached = False
        for packet in container.demux(stream):
            watch.packet(packet)
            if not reached:
                here = position_of.get(packet.pts)
                if here is None or here > first:
                    return None  # landed past the keyframe (or found no packet of the index)
                if here < first:
                    continue  # an earlier keyframe: read on, undecoded, to the planned one
                reached = True
            elif packet.pts is not None and packet.pts < index[first][0]:
                continue  # an open GOP's leading frame: it predicts from before the seek, and no wanted frame does
            if can_skip and packet.size > 0:
                codec.skip_frame = "DEFAULT" if packet.pts in missing else "NONREF"
            frames = _decode_packet(codec, packet, watch)
            if frames is None:
                return None
            _keep_wanted(frames, missing, found, to_rgb, watch)
            if not missing:
                break
        if missing or watch.damage:
            return None
    return _decoded(found, wanted_pts, watch)


def read_pyav(path: Source, probe: PyAVProbe, scale: Scale | None) -> Decoded:
    """Decode ``probe.wanted``: with seeks where they halve the frames decoded, else in one sequential pass (fewer
    frames where the stream ended before its header's count, or damage lost them)."""
    if not probe.wanted:
        return Decoded()
    to_rgb = RGBConverter(scale, source_name(path))
    indexed = probe.pts_ordered and not probe.is_prefix
    if indexed:
        seeking = frames_decoded_with_seeks(probe.index, probe.wanted, pts_ordered=True)
        if 0 < _PYAV_SEEK_GAIN * seeking < last_position(probe.index, probe.wanted, pts_ordered=True) + 1:
            with ffmpeg_errors() as log, open_video(path) as container:
                stream = single_threaded_video(container)
                decoded = _decode_seeking(container, stream, probe.index, probe.wanted, to_rgb, log)
            if decoded is not None:
                decoded.damage = unique(probe.damage + decoded.damage)
                return decoded
    with ffmpeg_errors() as log, open_video(path) as container:
        stream = single_threaded_video(container)
        if indexed:
            decoded = _decode_indexed(container, stream, probe.index, probe.wanted, to_rgb, log)
        else:
            decoded = _decode_counting(container, stream, probe.wanted, to_rgb, log)
    decoded.damage = unique(probe.damage + decoded.damage)
    return decoded


def read_pyav_decodable(path: Source, pick: IndexPicker, scale: Scale | None) -> Decoded:
    """For damaged and truncated files: count the frames that decode, pick among them, then decode again keeping
    only the picked ones, so memory stays flat however long the file is. Damage met in either pass is reported."""
    with ffmpeg_errors() as log, open_video(path) as container:
        stream = single_threaded_video(container)
        fps = frame_rate(stream)
        counted = _decode_counting(container, stream, [], None, log)
    if not counted.positions:
        return counted
    with ffmpeg_errors() as log, open_video(path) as container:
        stream = single_threaded_video(container)
        decoded = _decode_counting(
            container, stream, pick(len(counted.positions), fps), RGBConverter(scale, source_name(path)), log
        )
    decoded.damage = unique(counted.damage + decoded.damage)
    return decoded
