"""Proxies for HD footage: each source decoded once into an upright, low-resolution, short-GOP H.264 file that every
epoch, fold and recipe then decodes instead of the original (``data.proxy_cache``; ``video-cnn-rnn proxy`` builds
them ahead of time).

A 16-frame training clip of 1080p phone H.264 costs seconds of decoding (every frame from the keyframe before each
sampled one, at full size); from a proxy with a keyframe every ``GOP`` frames and no B-frames, a few small frames.
A proxy keeps every frame of its source, in order, at the source's average frame rate (frame i at i / fps), so
the samplers (``sampling.py``), which pick by frame count and frame rate, pick the same frames from it. It is
turned upright by the source's display matrix (``orientation.py``) and carries none, and its short side is
``ProxySettings.for_recipe``: the short side the recipe's crop decodes to (``decoding.decoded_short_side``) times
``MARGIN`` (never above the source's own, even).

Layout, in one flat folder shared by every fold and recipe (like the feature store):

    <root>/<name>.mp4     a proxy; its container comment holds {"proxy": name, "frames": the source's count}
    <root>/<name>.json    a source that is read as is, and why (no larger than the proxy, damaged, frames the
                          decoder drops); asked once, not at every epoch

``name`` is the SHA-1 of the source's identity (resolved path, size, mtime_ns: a changed source is a new proxy)
and the proxy's settings (``ProxySettings.key``: short side, GOP, codec, quality, ``PROXY_FORMAT``). Files are
written to a temporary name in the folder and renamed, so concurrent builders (DataLoader workers, ``--jobs``)
are safe and a killed one leaves a ``.*.tmp`` that is never read. A proxy is read only once it checks out (its
comment names this key, and it demuxes into the frame count its comment promises); anything else is built again.
A folder that cannot be written (read-only, disk full) leaves the originals in use, with one warning naming it.
"""

import hashlib
import json
import math
import os
import warnings
from contextlib import suppress
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.frame import PictureType
from av.video.reformatter import VideoReformatter

from video_cnn_rnn.data.atomic import temporary_beside, write_text_atomically
from video_cnn_rnn.data.crops import decoded_short_side
from video_cnn_rnn.data.decode import DamageWatch, describe_damage, ffmpeg_errors
from video_cnn_rnn.data.frames import Scale, single_threaded_video
from video_cnn_rnn.data.orientation import UPRIGHT, FrameOrientation

PROXY_FORMAT = 1
# The proxy's short side over what the crop decodes: a random resized crop or a letterbox still resamples from
# more pixels than it keeps.
MARGIN = 1.25
GOP = 8  # a sampled frame costs at most GOP decoded frames of a few hundred pixels a side
CRF = 18  # visually lossless at this size; the parity with the originals is measured in docs/data.md
# x264's fastest: at a few hundred pixels a side it encodes ~4x faster than veryfast, files ~1.8x larger, and the
# build is then mostly the source's decoding.
_X264_PRESET = "ultrafast"


@dataclass(frozen=True)
class ProxySettings:
    """How a proxy is encoded: everything here is in its name."""

    short_side: int
    gop: int = GOP
    crf: int = CRF
    codec: str = "libx264"

    @classmethod
    def for_recipe(cls, img_size: int, crop: str) -> "ProxySettings":
        """The proxy a recipe's clips need: ``MARGIN`` x the short side its crop decodes to, rounded up to even."""
        side = math.ceil(decoded_short_side(img_size, crop) * MARGIN)
        return cls(side + side % 2)

    def key(self) -> dict[str, Any]:
        return {"format": PROXY_FORMAT, **asdict(self)}


@dataclass(frozen=True)
class Outcome:
    """What ``ProxyStore.prepare`` did for a video: ``built``, ``reused``, ``original`` (read as is, ``reason`` says
    why) or ``failed`` (the folder cannot be written: the original is read); ``source`` is what to decode."""

    status: str
    source: str
    reason: str = ""


class ProxyUnsuitable(Exception):
    """The source is read as is; the message says why."""


class ProxyWriteError(OSError):
    """The proxy folder cannot be written (read-only, disk full, ...)."""


def source_identity(path: str) -> dict[str, Any]:
    """The source as its proxy knows it: resolved path, size and modification time (a changed file is a new one)."""
    stat = os.stat(path)
    return {"path": os.path.realpath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def proxy_name(path: str, settings: ProxySettings) -> str:
    key = {"source": source_identity(path), "proxy": settings.key()}
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _even_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) with the shorter side at ``side``, both even (yuv420p halves them)."""
    width, height = Scale(side).size(width, height)
    return max(2, 2 * round(width / 2)), max(2, 2 * round(height / 2))


class _ProxyWriter:
    """Upright frames -> the proxy's H.264 stream in a temporary file beside ``file``; ``finish`` renames it.
    Every failure to write is a ``ProxyWriteError``."""

    def __init__(self, file: Path, settings: ProxySettings, rate: Fraction, comment: str) -> None:
        self.file, self.settings, self.rate, self.comment = file, settings, rate, comment
        self.temporary = temporary_beside(file)
        self.container = self.stream = None
        self.count = 0

    def _open(self, width: int, height: int) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.temporary), "w", format="mp4")
        self.container.metadata["comment"] = self.comment
        self.stream = self.container.add_stream(self.settings.codec, rate=self.rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.codec_context.thread_count = 1  # parallelism comes from DataLoader workers and --jobs
        gop = str(self.settings.gop)
        self.stream.options = {"preset": _X264_PRESET, "crf": str(self.settings.crf), "bf": "0", "g": gop}
        self.stream.options.update({"keyint_min": gop, "sc_threshold": "0"})  # a keyframe exactly every GOP frames

    def write(self, frame: av.VideoFrame) -> None:
        try:
            if self.container is None:
                self._open(frame.width, frame.height)
            frame.pts, frame.time_base = self.count, 1 / self.rate  # frame i at i / rate, whatever the source's
            frame.pict_type = PictureType.NONE  # the source's keyframes are not the proxy's: x264 would force them
            self.container.mux(self.stream.encode(frame))
            self.count += 1
        except (OSError, av.error.FFmpegError) as error:
            raise ProxyWriteError(f"{error}") from error

    def finish(self) -> None:
        try:
            self.container.mux(self.stream.encode())
            self.container.close()
            os.replace(self.temporary, self.file)  # atomic: readers see the whole proxy or none
        except (OSError, av.error.FFmpegError) as error:
            raise ProxyWriteError(f"{error}") from error

    def abort(self) -> None:
        """Close and remove the temporary file, if any (after ``finish``: nothing to do)."""
        with suppress(OSError, av.error.FFmpegError):
            if self.container is not None:
                self.container.close()
        with suppress(OSError):  # e.g. not a directory: nothing was written
            self.temporary.unlink(missing_ok=True)


def _shown_frames(path: str) -> tuple[int, int, int, Fraction]:
    """(frames, stored width, stored height, average rate) of the source, by demuxing alone: frames as the packet
    index counts them (``packets._packet_index``), which is what the samplers pick among."""
    with av.open(path) as container:
        stream = single_threaded_video(container)
        rate = stream.average_rate or stream.guessed_rate or Fraction(30)
        frames = sum(1 for packet in container.demux(stream) if packet.size > 0 and not packet.is_discard)
        return frames, stream.codec_context.width, stream.codec_context.height, Fraction(rate)


def build_proxy(path: str, file: Path, settings: ProxySettings) -> int:
    """Decode ``path`` once into the proxy ``file`` (its name is the key); returns the frame count. Raises
    ``ProxyUnsuitable`` for a source to read as is, ``ProxyWriteError`` when the folder cannot be written."""
    try:
        frames, width, height, rate = _shown_frames(path)
    except (OSError, av.error.FFmpegError, IndexError) as error:
        raise ProxyUnsuitable(f"cannot be read ({type(error).__name__}: {error})") from error
    if min(width, height) <= settings.short_side:
        raise ProxyUnsuitable(f"its short side ({min(width, height)} px) is no larger than a proxy's")
    if frames == 0:
        raise ProxyUnsuitable("no video frames")
    size = _even_size(width, height, settings.short_side)
    writer = _ProxyWriter(file, settings, rate, json.dumps({"proxy": file.stem, "frames": frames}))
    try:
        decoded = _transcode(path, size, writer)
        if decoded != frames:
            raise ProxyUnsuitable(f"{decoded} frames decode, its packet index lists {frames}")
        writer.finish()
    finally:
        writer.abort()  # after finish: nothing left to remove
    return frames


def _transcode(path: str, size: tuple[int, int], writer: _ProxyWriter) -> int:
    """Every frame of ``path``, scaled to ``size`` (stored axes) and turned upright, into ``writer``; a damaged
    stream is ``ProxyUnsuitable`` (the loader's damage policy then applies to the original). Scaled straight to the
    encoder's yuv420p; only a frame to turn goes through RGB (``Orientation`` turns arrays)."""
    scaler, to_rgb = VideoReformatter(), VideoReformatter()
    orientation = FrameOrientation(path)
    count = 0
    with ffmpeg_errors() as log, av.open(path) as container:
        stream = single_threaded_video(container)
        watch = DamageWatch(stream, lambda pts: None, log, counting=True)
        try:
            for packet in container.demux(stream):
                watch.packet(packet)
                try:
                    frames = stream.codec_context.decode(packet)
                except av.error.FFmpegError as error:
                    watch.rejected(packet, error)
                    frames = []
                watch.read_log()
                for frame in frames:
                    watch.frame(frame, count)
                    if watch.damage:
                        break
                    turn = orientation(frame)  # side data of the decoded frame, before the scaler drops it
                    scaled = scaler.reformat(frame, width=size[0], height=size[1], format="yuv420p")
                    if turn != UPRIGHT:
                        rgb = turn.apply(to_rgb.reformat(scaled, format="rgb24").to_ndarray())
                        scaled = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                    writer.write(scaled)
                    count += 1
                if watch.damage:
                    break
        except av.error.FFmpegError as error:
            watch.unreadable(error)
    if watch.finish():
        raise ProxyUnsuitable(describe_damage(watch.damage))
    return count


def proxy_checks_out(file: Path) -> bool:
    """Whether ``file`` is a complete proxy under its own name: its comment names it and it demuxes into the frame
    count the comment promises (a truncated, overwritten or foreign file does not)."""
    try:
        with av.open(str(file)) as container:
            meta = json.loads(container.metadata.get("comment", "null")) or {}
            stream = container.streams.video[0]
            count = sum(1 for packet in container.demux(stream) if packet.size > 0)
            return meta.get("proxy") == file.stem and count == meta.get("frames") == stream.frames
    except (OSError, av.error.FFmpegError, ValueError, IndexError, AttributeError):
        return False


class ProxyStore:
    """The proxies of one ``ProxySettings`` under ``root``: ``source_for(path)`` is what to decode for ``path``.

    Builds a missing proxy on first use, rebuilds one that does not check out, and remembers per process what
    it found. When the folder cannot be written it warns once and decodes the originals (the proxies already
    there are still read). Pickles (DataLoader workers each keep their own memory of it).
    """

    def __init__(self, root: str | Path, settings: ProxySettings) -> None:
        self.root, self.settings = Path(root), settings
        self.writable = True
        self._known: dict[str, str] = {}  # proxy name -> what to decode

    def source_for(self, path: str) -> str:
        try:
            name = proxy_name(path, self.settings)
        except OSError:
            return path  # a missing source: the loader says so
        if name not in self._known:
            self._known[name] = self.prepare(path).source
        return self._known[name]

    def prepare(self, path: str) -> Outcome:
        """Reuse, build, or decline the proxy of ``path``."""
        name = proxy_name(path, self.settings)
        file, note = self.root / f"{name}.mp4", self.root / f"{name}.json"
        if file.is_file() and proxy_checks_out(file):
            return Outcome("reused", str(file))
        reason = _read_note(note, name)
        if reason is not None:
            return Outcome("original", path, reason)
        if not self.writable:
            return Outcome("failed", path, "the proxy folder cannot be written")
        try:
            build_proxy(path, file, self.settings)
            return Outcome("built", str(file))
        except ProxyUnsuitable as unsuitable:
            try:
                _write_note(note, name, str(unsuitable))
            except OSError as error:
                self._cannot_write(error)
            return Outcome("original", path, str(unsuitable))
        except ProxyWriteError as error:
            self._cannot_write(error)
            return Outcome("failed", path, f"cannot write {self.root}: {error}")

    def discard(self, path: str) -> None:
        """Forget and delete the proxy of ``path`` (it failed to decode): the next use builds it again."""
        name = proxy_name(path, self.settings)
        self._known.pop(name, None)
        (self.root / f"{name}.mp4").unlink(missing_ok=True)

    def _cannot_write(self, error: OSError) -> None:
        if self.writable:
            self.writable = False
            warnings.warn(
                f"proxy cache {self.root} cannot be written ({error}); decoding the original videos instead "
                "(free space or choose another data.proxy_cache)",
                stacklevel=4,
            )


def _read_note(note: Path, name: str) -> str | None:
    """The reason recorded for reading the source as is, or None (no note, or not one of this name)."""
    try:
        content = json.loads(note.read_text())
        return content["original"] if content.get("proxy") == name else None
    except (OSError, ValueError, KeyError, AttributeError):
        return None


def _write_note(note: Path, name: str, reason: str) -> None:
    write_text_atomically(note, json.dumps({"proxy": name, "original": reason}))
