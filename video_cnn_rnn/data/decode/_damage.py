"""Damage met while PyAV decodes a video: where it was, what the decoder or the demuxer reported.

FFmpeg conceals errors rather than failing, so a damaged stream decodes into frames
patched from their neighbours. PyAV's passes watch every frame and packet they read: ``frame.is_corrupt`` (the
decoder concealed errors in it: H.264, MPEG-4 Part 2), a packet the decoder rejects (``FFmpegError``: AV1, H.264
slices it cannot parse), packets the demuxer flags corrupt (a cut AVI chunk), and errors the demuxer logs
(``ffmpeg_errors``: a damaged Matroska block, after which it loses frames without any other sign), errors the
decoder logs (a damaged H.264 slice header while it skips non-reference frames), and an AVI stream holding fewer
packets than its header promises frames (cut short at a frame's end, or chunks lost; seen where the packet index
is read, so not for ``first`` sampling).

``Damage`` is one such note; ``DamageWatch`` follows one pass over a file and notes what it meets;
``ffmpeg_errors`` collects what FFmpeg logs meanwhile; ``unique`` merges the notes of two passes.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import av
import av.logging
from av.video.frame import PictureType


@dataclass(frozen=True)
class Damage:
    """One place where a decode met damage: the frame (its index in the video in display order; in the decoder's
    output order where timestamps cannot tell, as in AVI; None where no frame came out), its time, and what the
    decoder reported."""

    frame: int | None
    seconds: float | None
    reason: str

    @property
    def where(self) -> str:
        """``frame 20 (0.80 s)``, or as much of it as is known."""
        if self.frame is not None and self.seconds is not None:
            return f"frame {self.frame} ({self.seconds:.2f} s)"
        if self.frame is not None or self.seconds is not None:
            return f"frame {self.frame}" if self.frame is not None else f"{self.seconds:.2f} s"
        return "unknown position"

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@contextmanager
def ffmpeg_errors() -> Iterator[list[tuple[int, str, str]]]:
    """FFmpeg's error messages (level, source, text) logged in this thread while the block runs.

    PyAV drops FFmpeg's log unless a level is set, and by default drops a message identical to the previous one
    logged by any thread (two damaged files in a row would hide the second's): both are set here, for the
    process. Errors logged outside such a block go to Python's ``libav`` loggers.
    """
    if av.logging.get_level() is None:
        av.logging.set_level(av.logging.ERROR)
    if av.logging.get_skip_repeated():
        av.logging.set_skip_repeated(False)
    with av.logging.Capture() as logs:
        yield logs


class DamageWatch:
    """Follows one pass over a file and notes the damage it meets (see the module's docstring for the signals).

    ``locate`` maps a timestamp to the frame's index in the video (None where timestamps cannot tell); ``log``
    is the pass's ``ffmpeg_errors()``: an error logged while the demuxer reads a packet (damage to the container,
    or, for H.264, to a slice header its parser reads) is noted at that packet; one the decoder logs, at the
    packet it decodes. The decoder's log is needed where it drops a damaged packet without an error: while it
    skips non-reference frames (``skip_frame=NONREF``), a reference frame whose slice header is damaged just
    vanishes, and the frames after it predict from a stand-in.
    """

    def __init__(self, stream, locate: Callable[[int | None], int | None], log: list, counting: bool = False) -> None:
        self.damage: list[Damage] = []
        self._time_base, self._locate = stream.time_base, locate
        self._decoder, self._log, self._read = stream.codec_context.name, log, 0
        self._tainted = False  # damage met since the last clean intra frame
        # Where frames are told apart by their place in the decoder's output, a packet the decoder rejected may
        # have lost a frame and moved every later one by a place: none of them is kept.
        self._counting, self._lost = counting, False
        self._last_pts: int | None = None  # of the last packet demuxed

    def _note(self, pts: int | None, reason: str, frame: int | None = None) -> None:
        """``frame``: the frame's index where timestamps cannot tell."""
        seconds = float(pts * self._time_base) if pts is not None and self._time_base else None
        self.damage.append(Damage(self._locate(pts) if frame is None else frame, seconds, reason))
        self._tainted = True

    def read_log(self) -> None:
        """Note the errors logged since the last call, at the last packet demuxed."""
        for level, source, message in self._log[self._read :]:
            if level <= av.logging.ERROR:
                part = "decoder" if source == self._decoder else "container"
                self._note(self._last_pts, f"the {part} ({source or 'FFmpeg'}) reported: {' '.join(message.split())}")
        self._read = len(self._log)

    def finish(self) -> list[Damage]:
        self.read_log()
        return self.damage

    def packet(self, packet) -> None:
        """Before decoding ``packet``; call ``read_log`` after."""
        if packet.pts is not None:  # the flush packet at the end has none
            self._last_pts = packet.pts
        self.read_log()  # logged while the demuxer read this packet
        if packet.is_corrupt:
            self._note(packet.pts, "the demuxer flagged the packet corrupt (damaged or cut short)")

    def rejected(self, packet, error: Exception) -> None:
        self._note(packet.pts, f"the decoder rejected a packet ({_strerror(error)})")
        self._lost = self._counting

    def short(self, container, stream, found: int) -> None:
        """``found`` packets where an AVI header promises more: the file was cut short, or lost chunks to damage.
        (Only AVI's count is one to trust: other containers' count frames an edit list hides, or are absent; and
        only packets, not decoded frames: packed B-frames leave a frame or two fewer in clean files.)"""
        if "avi" in container.format.name and 0 < found < stream.frames:
            reason = f"the stream ends after {found} of the {stream.frames} frames its header promises (cut or lost)"
            self._note(self._last_pts, reason)

    def missing(self, pts: int, count: int) -> None:
        self._note(pts, f"no picture came out of its packet ({count} wanted frame(s) missing)")

    def unreadable(self, error: Exception) -> None:
        self._note(self._last_pts, f"the container cannot be read further ({_strerror(error)})")

    def frame(self, frame, position: int | None = None) -> bool:
        """Whether ``frame`` decoded cleanly; ``position``: its index where timestamps cannot tell."""
        if frame.is_corrupt:
            self._note(frame.pts, "the decoder concealed errors in this frame", position)
            return False
        if frame.pict_type == PictureType.I:
            self._tainted = False  # nothing after a clean intra frame predicts from before it
        return not self._tainted and not self._lost


def _strerror(error: Exception) -> str:
    return getattr(error, "strerror", None) or type(error).__name__


def unique(damage: list[Damage]) -> list[Damage]:
    """The same damage met by two passes over the file, once: the note that names the frame, if one does."""
    kept: dict[tuple[float | None, str], Damage] = {}
    for note in damage:
        key = (note.seconds, note.reason)
        if key not in kept or (kept[key].frame is None and note.frame is not None):
            kept[key] = note
    return list(kept.values())
