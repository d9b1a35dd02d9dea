"""What PyAV learns of a video before decoding it, by demuxing alone: the packet index (each shown packet's pts and
whether it is a keyframe, in decode order), whether pts give display order, the frames wanted, and what reading them
costs with seeks (``seek_stretches``) against one sequential pass. ``_readers.py`` decodes by it; ``_clips.py``'s
planner chooses decord's random access by it (``random_access_pays``).
"""

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

from video_cnn_rnn.data.decode._damage import Damage, DamageWatch, ffmpeg_errors
from video_cnn_rnn.data.frames import Source, frame_rate, open_video, single_threaded_video

# Cost of one frame decoded through decord's random access (seek, flush, threaded decoder), in frames of PyAV's
# sequential pass (which also drops unwanted B-frames): on 320x240 files of 60 s with a keyframe a second, decord
# decoded 1/6 of the frames and was still ~1.06x slower (benchmarks/bench_data.py, 1b, an earlier release). Random
# access goes to decord only where it decodes less than 1/8 of what the pass would; elsewhere PyAV seeks itself
# where that pays (_readers._PYAV_SEEK_GAIN).
_DECORD_RELATIVE_COST = 8.0
# Picks frame indices from (number of frames in the video, its frame rate).
IndexPicker = Callable[[int, float | None], list[int]]


def _packet_index(container, stream, watch: "DamageWatch") -> list[tuple[int | None, bool]]:
    """(pts, is keyframe) of every shown video packet in decode order, read by demuxing alone (no decoding).
    Frame i of the video is the packet with the i-th smallest pts. ``watch`` notes what the demuxer reports.

    Packets an MP4 edit list hides (a file cut without re-encoding) are decoded as references but never shown,
    so they are not frames of the video.
    """
    index = []
    for packet in container.demux(stream):
        watch.packet(packet)
        if packet.size > 0 and not packet.is_discard:
            index.append((packet.pts, packet.is_keyframe))
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
    pass is saved: the decoder's first outputs are the frames wanted and nothing can be skipped. ``damage``: what
    the demuxer reported while reading the index (damage to the container, which may hide frames).
    """

    wanted: list[int]
    index: list[tuple[int | None, bool]]
    pts_ordered: bool
    damage: list[Damage] = field(default_factory=list)

    @property
    def is_prefix(self) -> bool:
        return bool(self.wanted) and self.wanted == list(range(len(self.wanted)))


def probe_pyav(path: Source, pick: IndexPicker) -> PyAVProbe:
    """Pick the frames (over the packets present, which a truncated file's header overstates) by demuxing alone."""
    with ffmpeg_errors() as log, open_video(path) as container:
        stream = single_threaded_video(container)
        fps = frame_rate(stream)
        wanted = pick(stream.frames, fps) if stream.frames > 0 else []
        if wanted and wanted == list(range(len(wanted))):
            return PyAVProbe(wanted, [], False)
        watch = DamageWatch(stream, lambda pts: None, log)
        index = _packet_index(container, stream, watch)
        watch.short(container, stream, len(index))
        wanted = pick(len(index), fps) if index else []
        pts_ordered = bool(index) and _pts_give_display_order(container, index)
        return PyAVProbe(wanted, index, pts_ordered, watch.finish())


def seek_stretches(index: list[tuple[int | None, bool]], wanted: list[int], pts_ordered: bool) -> list[list[int]]:
    """What decoding ``wanted`` with seeks reads: ``[keyframe, last wanted frame]`` stretches of decode-order
    positions, each decoded from the keyframe that starts it. A stretch starts with a seek only where that skips
    frames; empty where no packet is flagged a keyframe (damaged or odd muxers: nothing to seek to).

    The keyframe for a frame is the last one before it in decode order that is also shown no later than it: an open
    GOP's leading frames (HEVC's RASL) follow their keyframe in decode order but predict from the GOP before.
    """
    keyframes = [position for position, (_, key) in enumerate(index) if key]
    if not keyframes:
        return []
    positions_by_frame = range(len(index))  # without usable pts, decode order stands in for display order
    if pts_ordered:
        positions_by_frame = sorted(positions_by_frame, key=lambda position: index[position][0])
    stretches: list[list[int]] = []
    for target in sorted({positions_by_frame[i] for i in wanted}):  # decode-order positions of the wanted frames
        k = bisect.bisect_right(keyframes, target) - 1
        while pts_ordered and k >= 0 and index[keyframes[k]][0] > index[target][0]:
            k -= 1
        keyframe = keyframes[k] if k >= 0 else 0
        if stretches and keyframe <= stretches[-1][1] + 1:
            stretches[-1][1] = target  # decoding on from the last stretch reads no more than a seek would
        else:
            stretches.append([keyframe, target])
    return stretches


def frames_decoded_with_seeks(index: list[tuple[int | None, bool]], wanted: list[int], pts_ordered: bool) -> int:
    return sum(last - first + 1 for first, last in seek_stretches(index, wanted, pts_ordered))


def random_access_pays(index: list[tuple[int | None, bool]], wanted: list[int], pts_ordered: bool) -> bool:
    """Whether seeking to the keyframe before each wanted frame (decord's random access) decodes so much less
    than one sequential pass to the last wanted frame that it beats PyAV's cheaper sequential decoding."""
    decoded = frames_decoded_with_seeks(index, wanted, pts_ordered)
    return decoded > 0 and _DECORD_RELATIVE_COST * decoded < last_position(index, wanted, pts_ordered) + 1


def last_position(index: list[tuple[int | None, bool]], wanted: list[int], pts_ordered: bool) -> int:
    """The decode-order position of the last wanted frame: where a sequential pass stops."""
    if not pts_ordered:
        return max(wanted)
    by_pts = sorted(range(len(index)), key=lambda position: index[position][0])
    return max(by_pts[i] for i in wanted)
