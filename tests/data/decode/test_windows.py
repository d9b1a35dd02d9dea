"""The streaming window reader: window boundaries, frames identical to a full decode, bad input, flat memory."""

import errno
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from video_cnn_rnn.data.crops import to_clip
from video_cnn_rnn.data.decode import VideoDecodeError, in_window, iter_windows
from video_cnn_rnn.data.decode import _windows as windows_module
from video_cnn_rnn.data.frames import RGBConverter, Scale
from video_cnn_rnn.data.sampling import sample_indices
from video_cnn_rnn.data.synthetic import write_video

FPS = 10


def _noise_video(path: Path, num_frames: int, width: int, height: int, fps: int, seed: int = 0) -> Path:
    """Every frame different (blocky noise shifted by its index), so a wrong frame cannot pass for a right one."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    base = blocks.repeat(4, 0).repeat(4, 1)[:height, :width]
    frames = np.stack([np.roll(base, 2 * i, axis=1) for i in range(num_frames)])
    write_video(path, frames, fps=fps, x264_options={"preset": "veryfast"})  # with B-frames
    return path


@pytest.fixture(scope="module")
def clip_5s5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5.5 s at 10 fps, 64x48 H.264 with B-frames."""
    return _noise_video(tmp_path_factory.mktemp("windows") / "clip.mp4", 55, 64, 48, FPS)


def _reference(path: Path, window_s: float, hop_s: float, num_frames: int, img_size: int, sampling: str):
    """Every frame decoded into memory, then each window sampled from the frames inside it."""
    to_rgb = RGBConverter(Scale(img_size))
    times, frames = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            times.append(frame.time)
            frames.append(to_clip(to_rgb(frame)[None], img_size)[0])
    times = [t - times[0] for t in times]
    end = times[-1] + 1 / FPS
    out, k = [], 0
    while k * hop_s + window_s <= end + 1e-6:
        inside = [f for t, f in zip(times, frames, strict=True) if in_window(t, k * hop_s, window_s)]
        picked = sample_indices(len(inside), num_frames, sampling)
        out.append((k * hop_s, k * hop_s + window_s, torch.stack([inside[i] for i in picked])))
        k += 1
    return out


@pytest.mark.parametrize(
    ("window_s", "hop_s", "starts"),
    [(2.0, 1.0, [0, 1, 2, 3]), (2.0, 1.5, [0, 1.5, 3]), (1.0, 2.0, [0, 2, 4]), (0.5, 0.5, [i / 2 for i in range(11)])],
)
def test_window_boundaries_and_counts(clip_5s5: Path, window_s: float, hop_s: float, starts: list[float]) -> None:
    windows = list(iter_windows(clip_5s5, window_s, hop_s, num_frames=4, img_size=32))
    assert [(w.start_s, w.end_s) for w in windows] == [(s, s + window_s) for s in starts]
    frames_per_window = round(window_s * FPS)
    assert all(w.length == min(4, frames_per_window) and w.frames.shape == (w.length, 3, 32, 32) for w in windows)
    assert all(w.note == "" for w in windows)


@pytest.mark.parametrize("sampling", ["uniform", "segment", "first"])
@pytest.mark.parametrize(("window_s", "hop_s"), [(2.0, 1.0), (1.0, 2.0)])
def test_streaming_equals_decoding_everything(clip_5s5: Path, sampling: str, window_s: float, hop_s: float) -> None:
    expected = _reference(clip_5s5, window_s, hop_s, 8, 32, sampling)
    windows = list(iter_windows(clip_5s5, window_s, hop_s, num_frames=8, img_size=32, sampling=sampling))
    assert len(windows) == len(expected)
    for window, (start, end, frames) in zip(windows, expected, strict=True):
        assert (window.start_s, window.end_s) == pytest.approx((start, end))
        assert torch.equal(window.frames, frames)  # bit-identical


def test_window_longer_than_the_video_covers_it_once_with_a_note(clip_5s5: Path) -> None:
    (window,) = iter_windows(clip_5s5, 60.0, 1.0, num_frames=8, img_size=32)
    assert (window.start_s, window.end_s) == (0.0, pytest.approx(5.5))
    assert "longer than the video" in window.note and window.length == 8
    expected = _reference(clip_5s5, 5.5, 5.5, 8, 32, "uniform")[0][2]
    assert torch.equal(window.frames, expected)


@pytest.mark.parametrize(
    ("window_s", "hop_s", "name"), [(2.0, 0.0, "hop_s"), (2.0, -1.0, "hop_s"), (0, 1.0, "window_s")]
)
def test_bad_window_settings_fail_before_any_decode(tmp_path: Path, window_s: float, hop_s: float, name: str) -> None:
    with pytest.raises(ValueError, match=name):  # the file does not even exist: nothing was opened
        next(iter_windows(tmp_path / "missing.mp4", window_s, hop_s))


def test_truncated_file_keeps_the_windows_before_the_cut(tmp_path: Path) -> None:
    full = _noise_video(tmp_path / "full.avi", 80, 64, 48, FPS)  # AVI: readable up to where it is cut
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    got = []
    with pytest.raises(VideoDecodeError, match="cut.avi"):
        for window in iter_windows(cut, 1.0, 1.0, num_frames=4, img_size=32):
            got.append(window)
    assert 2 <= len(got) < 8
    assert [w.start_s for w in got] == list(range(len(got)))


def test_decoder_error_mid_way_keeps_earlier_windows(clip_5s5: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class FailingConverter(RGBConverter):
        calls = 0

        def __call__(self, frame):
            FailingConverter.calls += 1
            if FailingConverter.calls > 35:  # during the 4th second
                raise av.error.InvalidDataError(errno.EINVAL, "corrupt packet")
            return super().__call__(frame)

    monkeypatch.setattr(windows_module, "RGBConverter", FailingConverter)
    got = []
    with pytest.raises(VideoDecodeError, match=r"decoding failed at 3\.\d+ s after 2 window"):
        for window in iter_windows(clip_5s5, 2.0, 1.0, num_frames=4, img_size=32):
            got.append(window)
    assert [(w.start_s, w.end_s) for w in got] == [(0.0, 2.0), (1.0, 3.0)]


def test_not_a_video_is_a_decode_error(tmp_path: Path) -> None:
    text = tmp_path / "text.mp4"
    text.write_text("not a video\n" * 20)
    with pytest.raises(VideoDecodeError, match="text.mp4"):
        list(iter_windows(text, 2.0, 1.0))


# ---- memory: peak RSS of the reader is flat from a 1-minute to a 1-hour video ----------------------------------

LONG_FPS = 5


def _write_tiny_long(path: Path, seconds: int) -> Path:
    """32x24 at 5 fps, x264 ultrafast with long GOPs: an hour encodes in seconds."""
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (16, 24, 32, 3), dtype=np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=LONG_FPS)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "30", "g": "250"}
        for i in range(seconds * LONG_FPS):
            frame = av.VideoFrame.from_ndarray(frames[(i // LONG_FPS) % len(frames)], format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="session")
def long_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("long_videos")
    return {
        "1 min": _write_tiny_long(folder / "one_minute.mp4", 60),
        "1 h": _write_tiny_long(folder / "hour.mp4", 3600),
    }


# Both videos in one process (one torch import): ru_maxrss only grows, so the hour's figure is the peak of both.
_MEASURE = """
import json, resource, sys, time
from video_cnn_rnn.data.decode import iter_windows
for path in sys.argv[1:]:
    start = time.perf_counter()
    count = sum(1 for _ in iter_windows(path, 2.0, 1.0, num_frames=4, img_size=32))
    print(json.dumps({"windows": count, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "seconds": round(time.perf_counter() - start, 2)}))
"""


def test_peak_memory_is_flat_from_one_minute_to_one_hour(long_videos: dict[str, Path]) -> None:
    paths = [str(long_videos["1 min"]), str(long_videos["1 h"])]
    result = subprocess.run([sys.executable, "-c", _MEASURE, *paths], capture_output=True, text=True, check=True)
    minute, hour = (json.loads(line) for line in result.stdout.splitlines()[-2:])
    assert (minute["windows"], hour["windows"]) == (59, 3599)
    print(f"peak RSS after 1 minute: {minute}, after 1 hour: {hour}")
    growth = hour["maxrss_mb"] - minute["maxrss_mb"]
    assert growth < 5, f"peak RSS grew by {growth:.1f} MB from a 1-minute to a 1-hour video"
