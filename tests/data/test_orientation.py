"""The frame as a person sees it: rotated phone videos come out upright on every path (as ffmpeg shows them), and
``crop: pad`` letterboxes the whole upright frame, at any aspect ratio.

Rotated files are made by the ffmpeg command line (``-display_rotation``, stream copied: the frames stay as stored,
the MP4 gets a display matrix), and ffmpeg's own decode of them (autorotated, as players show them) is the
reference. The ffmpeg binary is imageio-ffmpeg's (the dev extra), or one on PATH.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
import pytest
import torch

from video_cnn_rnn.data import VideoDataset
from video_cnn_rnn.data.crops import to_clip
from video_cnn_rnn.data.decode import BACKENDS, decode_frames, iter_windows, load_clip, load_clips
from video_cnn_rnn.data.decode import _readers as readers
from video_cnn_rnn.data.frames import Scale
from video_cnn_rnn.data.orientation import UPRIGHT, Orientation, from_display_matrix
from video_cnn_rnn.data.synthetic import write_video

if TYPE_CHECKING:
    from conftest import AddDisplayRotation

FPS = 10
FRAMES = 6
HEIGHT, WIDTH = 48, 64  # stored landscape; upright portrait after a quarter turn
# (display rotation counter-clockwise in degrees, mirrored): the four quarter turns, and one mirror image.
TURNS = [(0, False), (90, False), (180, False), (270, False), (90, True)]


def _run(ffmpeg: str, *args: str) -> bytes:
    return subprocess.run([ffmpeg, "-loglevel", "error", *args], capture_output=True, check=True).stdout


def _ffmpeg_frames(ffmpeg: str, path: Path, width: int, height: int) -> np.ndarray:
    """Every frame as ffmpeg shows it (autorotated, its default): RGB uint8 [T, height, width, 3]."""
    raw = _run(ffmpeg, "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-")
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, height, width, 3)


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64x48 frames with a different gradient on each axis and over time: every turn and mirror image differs."""
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    frames = np.stack([np.stack([cols * 4, rows * 5, cols + rows + 10 * t], axis=-1) for t in range(FRAMES)])
    path = tmp_path_factory.mktemp("orientation") / "stored.mp4"
    write_video(path, (frames % 256).astype(np.uint8), fps=FPS)
    return path


@pytest.fixture(scope="module")
def turned(
    ffmpeg: str, add_display_rotation: AddDisplayRotation, stored: Path
) -> dict[tuple[int, bool], tuple[Path, np.ndarray]]:
    """(degrees, mirrored) -> (the rotated file, ffmpeg's upright frames of it)."""
    files = {}
    for degrees, mirrored in TURNS:
        path = add_display_rotation(stored, stored.with_name(f"turned_{degrees}_{mirrored}.mp4"), degrees, mirrored)
        width, height = (HEIGHT, WIDTH) if degrees % 180 else (WIDTH, HEIGHT)
        files[degrees, mirrored] = path, _ffmpeg_frames(ffmpeg, path, width, height)
    return files


def _assert_same_picture(got: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor) -> None:
    """Equal up to the decoders' rounding (another FFmpeg build may convert colours a little differently); a
    wrongly turned frame differs by ~95 levels on average."""
    got, reference = np.asarray(got, dtype=np.int16), np.asarray(reference, dtype=np.int16)
    assert got.shape == reference.shape
    assert np.abs(got - reference).max() <= 3


def _all(num_video_frames: int, fps: float | None) -> list[int]:
    return list(range(num_video_frames))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("degrees", "mirrored"), TURNS)
def test_rotated_files_decode_as_ffmpeg_shows_them(turned, degrees: int, mirrored: bool, backend: str) -> None:
    path, reference = turned[degrees, mirrored]
    _assert_same_picture(decode_frames(path, _all, backend=backend), reference)


def test_the_stored_frames_differ_from_the_upright_ones(turned, stored: Path) -> None:
    """What the tests above would catch: the frames as stored are not what ffmpeg shows."""
    as_stored = decode_frames(stored, _all).astype(np.int16)
    upside_down = turned[180, False][1].astype(np.int16)
    assert np.abs(as_stored - upside_down).mean() > 30


@pytest.fixture(scope="module")
def recorded(
    ffmpeg: str, add_display_rotation: AddDisplayRotation, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, int], Path]:
    """(codec, display rotation) -> a file as phones write them: HEVC (tagged hvc1, iPhones' default) or H.264, an AAC
    audio track, a variable frame rate (timestamps jittered by up to 10 ms, in a 1/30000 s time base fine enough
    to keep them) and a display matrix; 64x48 stored. A codec the ffmpeg binary cannot encode is left out."""
    encoders = _run(ffmpeg, "-hide_banner", "-encoders").decode()
    folder = tmp_path_factory.mktemp("recorded")
    files = {}
    for codec in ("libx265", "libx264"):
        if f" {codec} " not in encoders:
            continue
        stored = folder / f"{codec}.mp4"
        sources = ["-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate=30:duration=1", "-f", "lavfi", "-i",
                   "sine=frequency=440:duration=1"]  # fmt: skip
        jitter = ["-vf", "settb=1/30000,setpts='PTS+0.01*sin(N)/TB'", "-fps_mode", "vfr", "-enc_time_base:v", "1/30000"]
        video = [*jitter, "-c:v", codec, "-pix_fmt", "yuv420p"]
        quiet = ["-tag:v", "hvc1", "-x265-params", "log-level=error"] if codec == "libx265" else []
        _run(ffmpeg, "-y", *sources, *video, *quiet, "-c:a", "aac", "-shortest", str(stored))
        for degrees in (0, 90):
            files[codec, degrees] = add_display_rotation(stored, folder / f"{codec}_{degrees}.mp4", degrees)
    return files


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("degrees", [0, 90])
@pytest.mark.parametrize("codec", ["libx265", "libx264"])
def test_phone_recordings_decode_as_ffmpeg_shows_them(
    ffmpeg: str, recorded: dict[tuple[str, int], Path], codec: str, degrees: int, backend: str
) -> None:
    """Every frame, with its audio track and uneven timestamps, as ffmpeg shows it (each decoded frame once:
    ``-fps_mode passthrough``, no frame duplicated or dropped to even out the rate)."""
    if (codec, degrees) not in recorded:
        pytest.skip(f"this ffmpeg binary has no {codec} encoder")
    path = recorded[codec, degrees]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert len(container.streams.audio) == 1
        times = sorted(packet.pts for packet in container.demux(stream) if packet.pts is not None)
    assert len(set(np.diff(times).tolist())) > 1, "the frame rate came out constant"
    width, height = (HEIGHT, WIDTH) if degrees % 180 else (WIDTH, HEIGHT)
    raw = _run(ffmpeg, "-i", str(path), "-map", "0:v", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt",
               "rgb24", "-")  # fmt: skip
    reference = np.frombuffer(raw, dtype=np.uint8).reshape(-1, height, width, 3)
    assert len(reference) == 30
    _assert_same_picture(decode_frames(path, _all, backend=backend), reference)


def test_decord_leaves_rotated_files_to_pyav(turned) -> None:
    """decord 0.6 mishandles display matrices (it turns 180 degree files itself, and fails on or scrambles the
    quarter turns), so its reader hands every rotated file to PyAV."""
    pytest.importorskip("decord")
    assert readers.read_decord(str(turned[0, False][0]), _all, None) is not None
    for degrees in (90, 180, 270):
        assert readers.read_decord(str(turned[degrees, False][0]), _all, None) is None


@pytest.mark.parametrize("backend", ["pyav", "decord"])
@pytest.mark.parametrize("degrees", [90, 270])
def test_the_crop_is_taken_from_the_upright_frame(turned, degrees: int, backend: str) -> None:
    """img_size 48 = the shorter side: no scaling, so the centre square of the upright 48x64 portrait frame (its
    rows 8 to 56) is compared as it is, through the dataset and through load_clips."""
    path, reference = turned[degrees, False]
    expected = torch.from_numpy(reference[:, 8:56].transpose(0, 3, 1, 2).copy())  # [T, H, W, 3] -> [T, 3, H, W]
    item = VideoDataset([(str(path), 0)], num_frames=FRAMES, img_size=48, sampling="first", backend=backend)[0]
    _assert_same_picture(item["frames"], expected)
    clips, length = load_clips(path, 1, num_frames=FRAMES, img_size=48, backend=backend)
    _assert_same_picture(clips[0], expected[:length])


@pytest.mark.parametrize(("degrees", "mirrored"), TURNS)
def test_timeline_windows_are_upright(turned, degrees: int, mirrored: bool) -> None:
    """One frame per window (windows of one frame's duration), so window k holds frame k."""
    path, reference = turned[degrees, mirrored]
    windows = list(iter_windows(path, 1 / FPS, 1 / FPS, num_frames=1, img_size=48))
    assert len(windows) == FRAMES
    got = torch.cat([window.frames for window in windows])
    _assert_same_picture(got, to_clip(reference, 48))


@pytest.mark.parametrize("backend", ["pyav", "decord"])
@pytest.mark.parametrize(("degrees", "nearest"), [(30, 0), (60, 90), (-100, 270)])
def test_a_rotation_off_the_quarter_turns_takes_the_nearest_with_a_warning(
    add_display_rotation: AddDisplayRotation,
    stored: Path,
    turned,
    degrees: int,
    nearest: int,
    backend: str,
    tmp_path: Path,
) -> None:
    path = add_display_rotation(stored, tmp_path / f"tilted_{degrees}.mp4", degrees)
    with pytest.warns(UserWarning, match=rf"tilted_{degrees}\.mp4: display rotation of {degrees} degrees .* {nearest}"):
        frames = decode_frames(path, _all, backend=backend)
    _assert_same_picture(frames, turned[nearest, False][1])


def test_display_matrices_map_to_quarter_turns() -> None:
    """FFmpeg's layout (libavutil/display.h), 16.16 fixed point: identity, and a matrix without one."""
    one = 1 << 16
    assert from_display_matrix([one, 0, 0, 0, one, 0, 0, 0, 1 << 30]) == UPRIGHT
    assert from_display_matrix(None) == UPRIGHT
    assert from_display_matrix([-one, 0, 0, 0, -one, 0, 0, 0, 1 << 30]) == Orientation(False, True, True)
    frames = np.arange(2 * 3 * 1).reshape(1, 2, 3, 1)
    assert Orientation(True, False, False).apply(frames).shape == (1, 3, 2, 1)


# --- crop: pad --------------------------------------------------------------------------------------------------


def _portrait_bars(height: int = 64, width: int = 32) -> np.ndarray:
    """Portrait frames: 8 red rows at the top, 8 blue rows at the bottom, green between. [T, H, W, 3]"""
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    frame[:, :] = (0, 200, 0)
    frame[:8] = (255, 0, 0)
    frame[-8:] = (0, 0, 255)
    return np.repeat(frame[None], FRAMES, axis=0)


@pytest.fixture(scope="module")
def portraits(add_display_rotation: AddDisplayRotation, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``plain``: 32x64 portrait frames stored as they are; ``phone``: the same picture stored landscape (turned
    a quarter clockwise), with a display rotation of 90 degrees that turns it back, as phones record."""
    folder = tmp_path_factory.mktemp("portrait")
    write_video(folder / "plain.mp4", _portrait_bars(), fps=FPS)
    write_video(folder / "sideways.mp4", np.ascontiguousarray(np.rot90(_portrait_bars(), k=-1, axes=(1, 2))), fps=FPS)
    phone = add_display_rotation(folder / "sideways.mp4", folder / "phone.mp4", 90)
    return {"plain": folder / "plain.mp4", "phone": phone}


def _is(pixels: torch.Tensor, colour: str) -> bool:
    """Whether every pixel of [3, ...] ``pixels`` is mostly ``colour``."""
    red, green, blue = pixels.float().flatten(1)
    strong = {"red": red, "green": green, "blue": blue}[colour]
    weak = [
        channel for name, channel in zip(("red", "green", "blue"), (red, green, blue), strict=True) if name != colour
    ]
    return bool((strong > 150).all() and all((channel < 80).all() for channel in weak))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["plain", "phone"])
def test_pad_keeps_the_top_and_bottom_rows_that_centre_crops(portraits, name: str, backend: str) -> None:
    path = portraits[name]
    centre, _ = load_clip(path, num_frames=2, img_size=32, backend=backend, crop="centre")
    assert _is(centre[0, :, 1:-1], "green")  # the centre square holds neither bar
    pad, _ = load_clip(path, num_frames=2, img_size=32, backend=backend, crop="pad")
    assert pad.shape == (2, 3, 32, 32)
    # The 32x64 frame scaled to 16x32 and centred: black columns 0-7 and 24-31, the bars in rows 0-3 and 28-31.
    frame = pad[0]
    assert frame[:, :, :8].max() == 0 and frame[:, :, 24:].max() == 0
    assert _is(frame[:, :3, 9:23], "red") and _is(frame[:, -3:, 9:23], "blue") and _is(frame[:, 8:24, 9:23], "green")


def test_pad_through_the_dataset_and_the_timeline(portraits) -> None:
    path = portraits["phone"]
    item = VideoDataset([(str(path), 0)], num_frames=FRAMES, img_size=32, sampling="first", crop="pad")[0]
    clip, _ = load_clip(path, num_frames=FRAMES, img_size=32, sampling="first", backend="pyav", crop="pad")
    assert torch.equal(item["frames"], clip)
    windows = list(iter_windows(path, 1 / FPS, 1 / FPS, num_frames=1, img_size=32, crop="pad"))
    assert torch.equal(torch.cat([window.frames for window in windows]), clip)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("width", "height"), [(16, 64), (64, 16)])
def test_pad_at_one_to_four_and_four_to_one(width: int, height: int, backend: str, tmp_path: Path) -> None:
    path = tmp_path / f"{width}x{height}.mp4"
    write_video(path, np.full((FRAMES, height, width, 3), 160, dtype=np.uint8), fps=FPS)
    clip, length = load_clip(path, num_frames=4, img_size=32, backend=backend, crop="pad")
    assert clip.shape == (4, 3, 32, 32) and length == 4
    picture = clip[0, 0] > 100  # [H, W]: where the frame is, the rest black
    rows, cols = picture.any(dim=1).nonzero().flatten(), picture.any(dim=0).nonzero().flatten()
    assert (len(rows), len(cols)) == ((32, 8) if height > width else (8, 32))
    assert (rows[0] + rows[-1], cols[0] + cols[-1]) == (31, 31)  # centred
    assert int(clip[0, 0][~picture].max()) == 0


@pytest.mark.parametrize("shape", [(1, 1000), (1000, 1), (1, 1), (3, 2000)])
def test_pad_of_extreme_frames_neither_crashes_nor_divides_by_zero(shape: tuple[int, int]) -> None:
    frames = np.full((2, *shape, 3), 200, dtype=np.uint8)
    clip = to_clip(frames, 32, "pad")
    assert clip.shape == (2, 3, 32, 32) and clip.dtype == torch.uint8 and clip.max() > 0
    height, width = shape
    assert min(Scale(32, fit=True).size(width, height)) >= 1 and max(Scale(32, fit=True).size(width, height)) == 32
    assert min(Scale(32).size(width, height)) == 32


def test_an_unknown_crop_is_refused_by_name(portraits) -> None:
    with pytest.raises(ValueError, match="unknown crop 'square'"):
        load_clip(portraits["plain"], crop="square")
    with pytest.raises(ValueError, match="unknown crop 'square'"):
        VideoDataset([], crop="square")
