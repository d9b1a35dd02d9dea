"""Probing every video before the first epoch (issue 26): a bad file named in seconds, the result cached."""

import os
import shutil
from pathlib import Path

import pytest

from video_cnn_rnn.data.datamodule import VideoDataModule
from video_cnn_rnn.data.decode import VideoDecodeError
from video_cnn_rnn.data.decode import _probe as probe


@pytest.fixture(autouse=True)
def probe_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    file = tmp_path / "probed.json"
    monkeypatch.setenv(probe.CACHE_VARIABLE, str(file))
    return file


@pytest.fixture
def probed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths ``probe_video`` opened, in any order."""
    calls: list[str] = []
    original = probe.probe_video

    def counting(path: str, *args, **kwargs) -> None:
        calls.append(path)
        original(path, *args, **kwargs)

    monkeypatch.setattr(probe, "probe_video", counting)
    return calls


def _train_csv(synthetic_root: Path, folder: Path, extra: list[Path]) -> Path:
    rows = (synthetic_root / "train.csv").read_text().splitlines()[1:]
    lines = [f"{synthetic_root / row.split(',')[0]},{row.split(',')[1]}" for row in rows]
    lines += [f"{path},disc_grow" for path in extra]
    csv_path = folder / "train.csv"
    csv_path.write_text("video_name,tag\n" + "\n".join(lines) + "\n")
    return csv_path


def test_a_bad_video_stops_the_run_before_training_naming_it(synthetic_root: Path, tmp_path: Path) -> None:
    fake = tmp_path / "fake.mp4"
    fake.write_text("this is a text file, not a video\n")
    data = VideoDataModule(train=str(_train_csv(synthetic_root, tmp_path, [fake])), num_frames=4, img_size=32)
    with pytest.raises(VideoDecodeError, match=rf"1 of 19 videos cannot be decoded: {fake}: .*--data.on_error skip"):
        data.setup("fit")


def test_under_skip_bad_videos_are_named_at_once_and_left_to_the_loader(synthetic_root: Path, tmp_path: Path) -> None:
    fake, empty = tmp_path / "fake.mp4", tmp_path / "empty.mp4"
    fake.write_text("not a video")
    empty.write_bytes(b"")
    csv_path = _train_csv(synthetic_root, tmp_path, [fake, empty])
    data = VideoDataModule(train=str(csv_path), val_fraction=0.0, num_frames=4, img_size=32, on_error="skip")
    with pytest.warns(UserWarning, match=r"2 of 20 videos cannot be decoded; they are skipped") as caught:
        data.setup("fit")
    assert str(fake) in str(caught[0].message) and str(empty) in str(caught[0].message)
    assert len(data.datasets["train"]) == 20  # skipped and reported by the loader, as a video that breaks mid-run


def test_the_second_run_probes_nothing_and_a_changed_file_is_probed_again(
    synthetic_root: Path, tmp_path: Path, probed: list[str], probe_cache: Path
) -> None:
    videos = tmp_path / "videos"
    shutil.copytree(synthetic_root / "train", videos)
    paths = sorted(str(path) for path in videos.iterdir())
    assert probe.probe_videos(paths, progress=False) == {}
    assert sorted(probed) == paths and probe_cache.is_file()
    probed.clear()
    assert probe.probe_videos(paths, progress=False) == {} and probed == []
    os.utime(paths[0], ns=(0, 0))  # a changed file is another file
    Path(paths[1]).write_bytes(b"")  # now broken: found, and never remembered as clean
    failures = probe.probe_videos(paths, progress=False)
    assert sorted(probed) == paths[:2] and list(failures) == [paths[1]]
    probed.clear()
    assert list(probe.probe_videos(paths, progress=False)) == [paths[1]] and probed == [paths[1]]


def test_the_cache_can_be_switched_off(synthetic_root: Path, monkeypatch, probed: list[str]) -> None:
    monkeypatch.setenv(probe.CACHE_VARIABLE, "off")
    paths = sorted(str(path) for path in (synthetic_root / "test").iterdir())[:2]
    probe.probe_videos(paths, progress=False)
    probe.probe_videos(paths, progress=False)
    assert len(probed) == 4


def test_a_macos_resource_fork_in_a_class_folder_is_not_read_as_a_video(synthetic_root: Path, tmp_path: Path) -> None:
    """Issue 26: ``._clip.mp4`` beside the real clips stopped training mid-epoch under on_error: raise."""
    root = tmp_path / "classes"
    for path in sorted((synthetic_root / "train").iterdir())[:4]:
        (root / path.stem.rsplit("_", 1)[0]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / path.stem.rsplit("_", 1)[0] / path.name)
        (root / path.stem.rsplit("_", 1)[0] / f"._{path.name}").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    data = VideoDataModule(train=str(root), val_fraction=0.0, num_frames=4, img_size=32)
    data.setup("fit")
    assert len(data.datasets["train"]) == 4
    assert not any(Path(path).name.startswith("._") for path, _ in data.datasets["train"].items)
