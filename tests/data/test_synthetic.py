"""The embedded synthetic dataset: CSVs, class balance, determinism by seed, reuse, and real decodable videos
whose classes differ only in the direction of time."""

import csv
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from video_cnn_rnn.data import load_clip
from video_cnn_rnn.data.synthetic import CLASSES, generate_synthetic_dataset, make_clip, write_video

# As small as the API allows while keeping both containers: two training videos per class (.mp4 and .avi).
SETTINGS = dict(train_per_class=2, test_per_class=1, min_frames=3, max_frames=6, width=32, height=24, seed=7)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def _frames(path: Path) -> np.ndarray:
    """Every decoded frame as float [T, C, H, W] (centre square crop at the video's height)."""
    frames, length = load_clip(path, num_frames=100, img_size=SETTINGS["height"], sampling="first")
    assert frames.shape == (length, 3, SETTINGS["height"], SETTINGS["height"])
    return frames.numpy().astype(np.float32)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "data", **SETTINGS)


def test_csvs_list_every_video_once_with_balanced_classes(tiny_root):
    for split, per_class in (("train", 2), ("test", 1)):
        with (tiny_root / f"{split}.csv").open() as file:
            assert file.readline().strip() == "video_name,tag"
        rows = _rows(tiny_root / f"{split}.csv")
        assert Counter(row["tag"] for row in rows) == {name: per_class for name in CLASSES}
        names = [row["video_name"] for row in rows]
        assert len(set(names)) == len(names) and all(name.startswith(f"{split}/") for name in names)
        assert sorted(names) == sorted(f"{split}/{path.name}" for path in (tiny_root / split).iterdir())
    train = [row["video_name"] for row in _rows(tiny_root / "train.csv")]
    assert train[:2] == ["train/disc_grow_000.mp4", "train/disc_grow_001.avi"]  # containers alternate
    assert sum(name.endswith(".avi") for name in train) == sum(name.endswith(".mp4") for name in train) == 6


def test_videos_are_h264_mp4_and_mpeg4_avi(tiny_root):
    for name, codec in (("train/fade_in_000.mp4", "h264"), ("train/fade_in_001.avi", "mpeg4")):
        with av.open(str(tiny_root / name)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == codec
            assert (stream.codec_context.width, stream.codec_context.height) == (32, 24)


def test_every_video_decodes_with_a_length_within_the_requested_range(tiny_root):
    lengths = []
    for split in ("train", "test"):
        for row in _rows(tiny_root / f"{split}.csv"):
            frames = _frames(tiny_root / row["video_name"])
            lengths.append(len(frames))
    assert len(lengths) == 18 and min(lengths) >= 3 and max(lengths) <= 6
    assert len(set(lengths)) > 1  # random lengths, so padding is exercised


def test_paired_classes_differ_only_in_the_direction_of_time(tiny_root):
    """Decoded: the disc grows or shrinks, the square brightens or darkens, red turns blue or blue turns red."""
    for row in _rows(tiny_root / "train.csv"):
        frames = _frames(tiny_root / row["video_name"])
        first, last = frames[0], frames[-1]
        tag = row["tag"]
        if tag in ("disc_grow", "fade_in"):
            assert last.mean() > first.mean() + 10, row
        elif tag in ("disc_shrink", "fade_out"):
            assert last.mean() < first.mean() - 10, row
        elif tag == "red_to_blue":
            assert last[0].mean() < first[0].mean() - 10 and last[2].mean() > first[2].mean() + 10, row
        else:
            assert last[0].mean() > first[0].mean() + 10 and last[2].mean() < first[2].mean() - 10, row


@pytest.mark.parametrize(("forward", "backward"), [("disc_grow", "disc_shrink"), ("red_to_blue", "blue_to_red")])
def test_make_clip_draws_a_pair_as_the_same_frames_reversed(forward, backward):
    clip = make_clip(forward, 5, 16, 12, np.random.default_rng(3))
    assert clip.shape == (5, 12, 16, 3) and clip.dtype == np.uint8
    assert np.array_equal(make_clip(backward, 5, 16, 12, np.random.default_rng(3)), clip[::-1])
    assert not np.array_equal(clip[0], clip[-1])


def test_same_seed_gives_identical_files_and_another_seed_different_ones(tiny_root, tmp_path):
    again = generate_synthetic_dataset(tmp_path / "again", **SETTINGS)
    other = generate_synthetic_dataset(tmp_path / "other", **{**SETTINGS, "seed": 8})
    files = sorted(path.relative_to(tiny_root) for path in tiny_root.rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(again) for path in again.rglob("*") if path.is_file())
    assert all((tiny_root / name).read_bytes() == (again / name).read_bytes() for name in files)
    assert (other / "train.csv").read_text() == (tiny_root / "train.csv").read_text()  # same names
    assert (other / "train/disc_grow_000.mp4").read_bytes() != (tiny_root / "train/disc_grow_000.mp4").read_bytes()


def test_existing_dataset_with_the_same_settings_is_reused_and_other_settings_rewrite_it(tmp_path):
    settings = {**SETTINGS, "train_per_class": 1, "test_per_class": 0}
    root = generate_synthetic_dataset(tmp_path / "data", **settings)
    assert root == tmp_path / "data" and len(_rows(root / "train.csv")) == 6 and _rows(root / "test.csv") == []
    stamp = (root / "train" / "disc_grow_000.mp4").stat().st_mtime_ns
    (root / "note.txt").write_text("kept while the settings match")
    assert generate_synthetic_dataset(root, **settings) == root
    assert (root / "note.txt").is_file() and (root / "train" / "disc_grow_000.mp4").stat().st_mtime_ns == stamp
    generate_synthetic_dataset(root, **{**settings, "test_per_class": 1})
    assert not (root / "note.txt").exists() and len(_rows(root / "test.csv")) == 6
    assert [path.name for path in tmp_path.iterdir()] == ["data"]  # no staging folder left behind


def test_write_video_round_trips_frames_through_the_decoder(tmp_path):
    frames = make_clip("fade_in", 4, 32, 24, np.random.default_rng(0))
    for suffix in (".mp4", ".avi"):
        path = tmp_path / f"clip{suffix}"
        write_video(path, frames)
        decoded = _frames(path)
        assert len(decoded) == 4
        # The centre 24x24 of each frame, within codec error.
        original = frames[:, :, 4:28].transpose(0, 3, 1, 2).astype(np.float32)
        assert np.abs(decoded - original).mean() < 10  # about 5; an off-centre crop gives about 17
